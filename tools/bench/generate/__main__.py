"""Benchmark: policy generation, warm and cold, against the inherent work.

    .venv/bin/python -m tools.bench.generate [--size-mib 1024] [--layers 8] [--repeat 3]

- warm: ``python -m genpolicy`` on a 10-container Deployment (ten images) whose blobs and layer
  user files are already cached: what a user pays when regenerating after a YAML change;
- cold: one image of ``--size-mib`` MiB in ``--layers`` uncompressed layers, empty cache: every
  blob copied into the cache with its digest checked, every layer read for /etc/passwd and
  /etc/group;
- floor: hashing the same layer bytes once with hashlib (sha256), the least any generator that
  checks what it pins must do.

Images come from a local OCI layout on tmpfs (the same oci code path as a registry pull after the
transport), so the numbers show the generator, not the network. genpolicy itself (Rust) cannot run
here; its users report ~100 s for one slow layer and hours for a 10 GB image (registry bound).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
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
KATA = ROOT.parent / "shared" / "testdata" / "kata-policy" / "kata"
CHUNK = 1 << 20


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layer(data: bytes) -> tuple[bytes, str, Digest]:
    return data, mt.OCI_LAYER, Digest("sha256", hashlib.sha256(data).hexdigest())


def build(layout: Path, size_mib: int, layers: int) -> tuple[list[str], str]:
    """Ten small images and one big one; returns (small references, big reference)."""
    writer = LayoutWriter(layout)
    small = []
    users = _tar({"etc/passwd": b"root:x:0:0::/root:/bin/sh\n", "etc/group": b"root:x:0:\n"})
    for i in range(10):
        desc = writer.add_image(
            [_layer(users), _layer(_tar({f"bin/app{i}": os.urandom(64 << 10)}))],
            config={"Entrypoint": [f"/bin/app{i}"], "Env": ["PATH=/bin"]},
        )
        small.append(f"bench.local/app{i}@{desc.digest}")
    per_layer = (size_mib << 20) // layers
    big_layers = [_layer(users)] + [
        _layer(_tar({f"data/blob{i}": os.urandom(per_layer)})) for i in range(layers)
    ]
    desc = writer.add_image(big_layers, config={"Entrypoint": ["/bin/big"], "Env": ["PATH=/bin"]})
    writer.finish()
    return small, f"bench.local/big@{desc.digest}"


def _deployment(images: list[str]) -> str:
    containers = "".join(f"      - name: c{i}\n        image: {ref}\n" for i, ref in enumerate(images))
    return (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bench}\nspec:\n  template:\n"
        "    spec:\n      runtimeClassName: contrast-cc\n      containers:\n" + containers
    )


def run_genpolicy(
    workdir: Path, layout: Path, cache: Path, images: list[str], host_erofs: bool = False
) -> float:
    pod = workdir / "pod.yaml"
    pod.write_text(_deployment(images))
    settings = workdir / "settings.json"
    doc = json.loads((KATA / "genpolicy-settings.json").read_text())
    doc["cluster_config"]["pause_container_image"] = images[0]  # keep every image in the layout
    extra = []
    if host_erofs:
        doc["common"]["image_layer_verification"] = "host-erofs-dm-verity"
        doc["cluster_config"]["guest_pull"] = False
        extra = ["--layer-images", str(cache / "layer-images")]
    settings.write_text(json.dumps(doc))
    argv = [
        sys.executable,
        "-m",
        "genpolicy",
        "-y",
        str(pod),
        "-p",
        str(KATA / "rules.rego"),
        "-j",
        str(settings),
        "--oci-layout",
        str(layout),
        "--cache-dir",
        str(cache),
        "-q",
        *extra,
    ]
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode:
        raise SystemExit(f"genpolicy failed: {proc.stderr}")
    return time.perf_counter() - started


def hash_floor(layout: Path, big: str) -> float:
    manifest = json.loads((layout / "blobs" / "sha256" / big.split(":")[-1]).read_bytes())
    started = time.perf_counter()
    for layer in manifest["layers"]:
        h = hashlib.sha256()
        with open(layout / "blobs" / "sha256" / layer["digest"].split(":")[1], "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.generate")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(
        tempfile.mkdtemp(prefix="bench-generate-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    try:
        layout = workdir / "layout"
        print(f"building images ({args.size_mib} MiB in {args.layers} layers, 10 small) ...", file=sys.stderr)
        small, big = build(layout, args.size_mib, args.layers)
        warm_cache = workdir / "warm-cache"
        run_genpolicy(workdir, layout, warm_cache, small)  # fill
        warm = [run_genpolicy(workdir, layout, warm_cache, small) for _ in range(args.repeat)]
        cold, floor = [], []
        for i in range(args.repeat):
            cache = workdir / f"cold-{i}"
            cold.append(run_genpolicy(workdir, layout, cache, [big]))
            shutil.rmtree(cache)
            floor.append(hash_floor(layout, big))
        erofs = []
        if os.geteuid() == 0:
            for i in range(args.repeat):
                cache = workdir / f"erofs-{i}"
                erofs.append(run_genpolicy(workdir, layout, cache, [big], host_erofs=True))
                shutil.rmtree(cache)
        startup = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import genpolicy.cli"], check=True, cwd=ROOT)
            startup.append(time.perf_counter() - started)
        rows = [
            ("warm: 10-container Deployment", warm, "≤ 1 s"),
            (f"cold: {args.size_mib} MiB image", cold, "≤ 1.5× floor"),
            *(
                [(f"cold, host EROFS (layer images + verity): {args.size_mib} MiB", erofs, "")]
                if erofs
                else []
            ),
            (f"floor: sha256 of {args.size_mib} MiB", floor, ""),
            ("interpreter + imports", startup, ""),
        ]
        print("| run | best s | median s | target |")
        print("|---|---|---|---|")
        for name, values, target in rows:
            print(f"| {name} | {min(values):.2f} | {statistics.median(values):.2f} | {target} |")
        print(
            f"\ncold / floor (best): {min(cold) / min(floor):.2f}×; "
            f"cold without interpreter start: {(min(cold) - min(startup)) / min(floor):.2f}×"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
