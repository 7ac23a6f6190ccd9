"""Runs inside the pod VM (test share, ``cg.test=1``) for ``tools.bench.pull --vm``: Debian's
docker-registry on the guest's loopback serves an image of random layers; oci's pull (in-process,
as the agent runs it) and ``skopeo copy`` fetch it by digest into tmpfs, interleaved, in the same VM.
The two tools come on the first extra disk (an erofs image with their libraries). Prints
``MARK pull-bench <json>`` on the console.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

from oci import BlobCache, Digest, LayoutWriter, Reference, RegistryClient, pull_image
from oci import mediatypes as mt

TOOLS = Path("/run/pull-tools")
WORK = Path("/run/pull-bench")


def _params() -> tuple[int, int, int]:
    for word in Path("/proc/cmdline").read_text().split():
        if word.startswith("cg.bench.pull="):
            size, layers, rounds = (int(v) for v in word.split("=", 1)[1].split(","))
            return size, layers, rounds
    return 100, 4, 3


def _tool(name: str, *args: str) -> list[str]:
    return [str(TOOLS / "lib/ld-linux-x86-64.so.2"), "--library-path", str(TOOLS / "lib"),
            str(TOOLS / "bin" / name), *args]


def _layer(size: int, index: int) -> tuple[bytes, str, Digest]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"data/blob{index}")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    raw = buf.getvalue()
    return raw, mt.OCI_LAYER, Digest.of(raw)


def test_pull_bench() -> None:
    size_mib, layer_count, rounds = _params()
    TOOLS.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "erofs", "-o", "ro", "/dev/vdc", str(TOOLS)], check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(WORK), "TMPDIR": str(WORK)}
    (WORK / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {WORK / 'storage'}\nhttp:\n  addr: 127.0.0.1:5000\n")
    registry = subprocess.Popen(_tool("docker-registry", "serve", str(WORK / "config.yml")),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", 5000), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "registry did not start"
                time.sleep(0.2)
        layers = [_layer((size_mib << 20) // layer_count, i) for i in range(layer_count)]
        total = sum(len(d) for d, _, _ in layers)
        w = LayoutWriter(WORK / "layout")
        index = w.add_index([w.add_image(layers)], tag="bench")
        w.finish([index])
        del layers
        subprocess.run(_tool("skopeo", "--insecure-policy", "copy", "--quiet", "--all", "--preserve-digests",
                             "--dest-tls-verify=false", f"oci:{WORK / 'layout'}:bench",
                             "docker://127.0.0.1:5000/bench/image:bench"), check=True, env=env, timeout=1800)
        shutil.rmtree(WORK / "layout")
        ref = f"127.0.0.1:5000/bench/image@{index.digest}"
        ours: list[float] = []
        peer: list[float] = []
        for r in range(rounds):
            t0 = time.perf_counter()
            pull_image(RegistryClient(), BlobCache(WORK / f"cache{r}"), Reference.parse(ref))
            ours.append(time.perf_counter() - t0)
            shutil.rmtree(WORK / f"cache{r}")
            t0 = time.perf_counter()
            argv = _tool("skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                         f"docker://{ref}", f"oci:{WORK / 'sk'}:x")
            subprocess.run(argv, check=True, env=env, timeout=1800)
            peer.append(time.perf_counter() - t0)
            shutil.rmtree(WORK / "sk")
        result = {"bytes": total, "layers": layer_count, "oci": ours, "skopeo": peer}
    finally:
        registry.terminate()
        registry.wait(30)
    with open("/dev/console", "w") as console:
        console.write(f"MARK pull-bench {json.dumps(result)}\n")
