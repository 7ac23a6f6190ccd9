"""Benchmark: pulling a 100 MiB image by digest from a local registry, ``oci`` vs ``skopeo copy``.

    .venv/bin/python -m tools.bench.pull [--size-mib 100] [--layers 4] [--repeat 3] [--vm]

Debian's docker-registry serves on 127.0.0.1 (a free port); an image of ``--layers`` gzip layers of
random bytes (about ``--size-mib`` MiB compressed) is written with oci.layout and pushed with skopeo.
Each round runs, as fresh processes with empty destinations and interleaved:

- ``oci pull``: index → manifest → config → layers into a new oci.cache (every blob digest- and
  size-checked while streamed, fsynced), no unpacking;
- ``oci pull+unpack``: the same plus unpacking into a rootfs (what the guest does);
- ``skopeo copy``: ``docker://…@digest`` to a new ``oci:`` directory (skopeo checks digests too).

Destinations are on tmpfs (/dev/shm), as in the guest (encrypted RAM). The table shows best and
median wall time, throughput and the ratio from the best, and the best CPU time (user+sys, robust
on a loaded machine). ``--vm`` runs the pull comparison inside the TCG pod VM (vm.py, guest_bench.py).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from oci import Digest, LayoutWriter
from oci import mediatypes as mt

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _layer(size: int, index: int) -> tuple[bytes, str, Digest]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"data/blob{index}")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0), mt.OCI_LAYER_GZIP, Digest.of(raw)


Sample = tuple[float, float, float]  # process wall s, CPU s (user+sys), in-process pull s


def _one(argv: list[str]) -> Sample:
    """One fresh process: its wall and CPU time, and the pull time it reported (else its wall)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    inner = float(out.split("pull_seconds=")[1].split()[0]) if "pull_seconds=" in out else wall
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), inner


def pull_once(ref: str, cache: str, unpack: str | None) -> None:
    """The measured body of the oci rows (run in a fresh process)."""
    from oci import BlobCache, Reference, RegistryClient, pull_image, unpack_pulled

    started = time.perf_counter()
    image = pull_image(RegistryClient(), BlobCache(Path(cache)), Reference.parse(ref))
    if unpack:
        unpack_pulled(image, Path(unpack))
    print(f"pull_seconds={time.perf_counter() - started:.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--vm", action="store_true", help="run the comparison inside the TCG pod VM instead")
    ap.add_argument("--one", nargs=3, metavar=("REF", "CACHE", "UNPACK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        pull_once(args.one[0], args.one[1], args.one[2] if args.one[2] != "-" else None)
        return
    registry, skopeo = shutil.which("docker-registry"), shutil.which("skopeo")
    if not registry or not skopeo:
        sys.exit("needs Debian's docker-registry and skopeo (.ci/apt/oci.txt)")
    if args.vm:
        from .vm import print_vm, run_vm

        with tempfile.TemporaryDirectory(prefix="bench-pull-vm-") as tmp:
            print_vm(run_vm(Path(tmp), args.size_mib, args.layers, args.repeat))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    # the guest keeps pulled blobs and the rootfs in (encrypted) memory: destinations on tmpfs
    dest_base = "/dev/shm" if os.path.isdir("/dev/shm") else str(work)
    port = _free_port()
    (work / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([registry, "serve", str(work / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("registry did not start")
                time.sleep(0.1)
        per_layer = (args.size_mib << 20) // args.layers
        layers = [_layer(per_layer, i) for i in range(args.layers)]
        total = sum(len(d) for d, _, _ in layers)
        w = LayoutWriter(work / "layout")
        index = w.add_index([w.add_image(layers)], tag="bench")
        w.finish([index])
        subprocess.run([skopeo, "--insecure-policy", "copy", "--quiet", "--all", "--preserve-digests",
                        "--dest-tls-verify=false", f"oci:{work / 'layout'}:bench",
                        f"docker://127.0.0.1:{port}/bench/image:bench"], check=True, timeout=600)
        ref = f"127.0.0.1:{port}/bench/image@{index.digest}"
        rows: dict[str, list[Sample]] = {"oci pull": [], "oci pull+unpack": [], "skopeo copy": []}
        py = sys.executable
        for r in range(args.repeat):
            run = Path(tempfile.mkdtemp(prefix=f"bench-pull-run{r}-", dir=dest_base))
            rows["oci pull"].append(_one([py, "-m", "tools.bench.pull", "--one", ref, str(run / "c1"), "-"]))
            rows["oci pull+unpack"].append(_one([py, "-m", "tools.bench.pull", "--one", ref, str(run / "c2"),
                                                 str(run / "rootfs")]))
            rows["skopeo copy"].append(_one([skopeo, "--insecure-policy", "copy", "--quiet",
                                             "--src-tls-verify=false", f"docker://{ref}",
                                             f"oci:{run / 'skopeo'}:x"]))
            shutil.rmtree(run)
        peer = min(w for w, _, _ in rows["skopeo copy"])
        peer_cpu = min(c for _, c, _ in rows["skopeo copy"])
        print(f"image: {args.layers} gzip layers, {total / 2**20:.1f} MiB compressed; registry "
              f"docker-registry on 127.0.0.1; destinations on {dest_base}; {args.repeat} interleaved "
              f"rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print("process = the whole command (interpreter start included); in-agent = the pull alone, as in "
              "the running guest agent (skopeo: its process)")
        head = ("row", "process s", "median", "in-agent s", "MiB/s", "vs skopeo", "CPU s", "CPU vs")
        print(f"{head[0]:<17}" + "".join(f"{h:>11}" for h in head[1:]))
        for label, samples in rows.items():
            best = min(w for w, _, _ in samples)
            inner = min(i for _, _, i in samples)
            cpu = min(c for _, c, _ in samples)
            cells = (f"{best:.3f}", f"{statistics.median(w for w, _, _ in samples):.3f}", f"{inner:.3f}",
                     f"{total / 2**20 / inner:.1f}", f"{peer / inner:.2f}x", f"{cpu:.2f}",
                     f"{peer_cpu / cpu:.2f}x")
            print(f"{label:<17}" + "".join(f"{c:>11}" for c in cells))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
