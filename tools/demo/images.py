"""The demo's images: the pod-VM image and the OCI images of our parts, built once and reused.

Both builds are reproducible (same inputs, same bytes), so a cache keyed by the inputs is safe: the pod-VM
image uses image.build's own cache; the container layout is kept under
``/var/cache/confidential-guest/demo/containers-<key>``, the key hashing every file ``git ls-files`` names
(the project layer), Debian's package database (the base and iptables layers) and the builder's Python.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import StepFailedError

CACHE = Path(os.environ.get("CG_DEMO_CACHE", "/var/cache/confidential-guest/demo"))
NAMES = ("initializer", "meshproxy", "coordinator", "demo-frontend", "demo-store")


@dataclass(frozen=True)
class ContainerImages:
    layout: Path  # OCI layout, each image tagged with its name
    digests: dict[str, str]  # name -> sha256:...
    cached: bool


def _inputs_key(repo: Path) -> str:
    h = hashlib.sha256()
    files = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True,
                           timeout=60).stdout.split(b"\0")
    for name in sorted(f for f in files if f):
        path = repo / name.decode()
        h.update(name + b"\0")
        try:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            h.update(b"-")  # deleted in the work tree: not in the layer either
    for extra in (Path("/var/lib/dpkg/status"), Path(sys.executable).resolve()):
        h.update(str(extra).encode() + hashlib.sha256(extra.read_bytes()).digest())
    return h.hexdigest()[:32]


def container_images(repo: Path, log: Path) -> ContainerImages:
    """``python -m image containers`` into the cache unless a layout for these inputs is there."""
    key = _inputs_key(repo)
    target = CACHE / f"containers-{key}"
    summary = target / "images.json"
    if summary.is_file():
        digests = json.loads(summary.read_text())
        if set(NAMES) <= set(digests):
            return ContainerImages(target, digests, cached=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"containers-{key}-", dir=CACHE))
    out = staging / "layout"
    with log.open("ab") as f:
        made = subprocess.run([sys.executable, "-m", "image", "containers", "--out", str(out)], cwd=repo,
                              stdout=f, stderr=subprocess.STDOUT, timeout=900, check=False)
    if made.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise StepFailedError(f"python -m image containers exited {made.returncode} (log: {log})")
    try:
        out.rename(target)  # atomic: a reader sees a whole layout or none
    except OSError:
        if not summary.is_file():  # not a parallel run that won the race
            raise
    shutil.rmtree(staging, ignore_errors=True)
    _prune(target)
    return ContainerImages(target, json.loads(summary.read_text()), cached=False)


KEEP = 4  # layouts of other checkouts kept (each about 32 MB)


def _prune(current: Path) -> None:
    """Every checkout change adds a layout: keep the newest few, never the one just built."""
    # Only finished layouts (a run's staging directory has a suffix; each run hard-links its layout
    # into its own work directory before using it).
    finished = re.compile(r"containers-[0-9a-f]{32}")
    layouts = [p for p in CACHE.iterdir() if finished.fullmatch(p.name) and p != current and p.is_dir()]
    others = sorted(layouts, key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def pod_vm_image(repo: Path, out: Path) -> tuple[Path, bool]:
    """The pod-VM image (kernel, initramfs, verity root) in ``out``; True when image.build's cache had it."""
    from image.build import BuildOptions, build_image, default_cache_dir

    cache = default_cache_dir()
    before = set(cache.iterdir()) if cache is not None and cache.is_dir() else set()
    # The builder's worker processes inherit our handlers; SIGTERM from their pool must just end them
    # (Ctrl-C, SIGINT, still interrupts the demo).
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        build_image(BuildOptions(out=out, repo=repo, cache_dir=cache, quiet=True))
    finally:
        signal.signal(signal.SIGTERM, previous)
    after = set(cache.iterdir()) if cache is not None and cache.is_dir() else set()
    return out, cache is not None and after == before


def _pause_blobs() -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) of a Kata-shaped pause image: Entrypoint ``/pause``, user 65535:65535,
    one empty layer; the same bytes every time."""
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT):
        pass
    layer = gzip.compress(raw.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535", "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(), "size": len(layer)}],
    }, sort_keys=True).encode()
    return config, layer, manifest


def pause_archive(path: Path, name: str) -> str:
    """The pause image as an OCI archive named ``name`` (for ``ctr image import``: containerd's CRI
    builds the sandbox container's spec from its sandbox image's config, as with Kata's pause image);
    its manifest digest."""
    import io
    import tarfile

    config, layer, manifest = _pause_blobs()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(manifest),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "pause"}}]})
    with tarfile.open(path, "w") as tar:
        members = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index.encode())]
        members += [(f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b) for b in (config, layer, manifest)]
        for member, data in members:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return digest


def _blob(directory: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = directory / "blobs" / "sha256" / digest
    if not path.exists():
        path.write_bytes(data)
    return "sha256:" + digest


def with_pause_image(layout: Path, dest: Path) -> str:
    """``dest``: the layout (hard links, the cache stays untouched) plus the pause image. The pod VM runs
    its own pause process (the shim asks the guest for it by the source ``pause``), but the generator
    derives the pause container's policy from an image config, as genpolicy does from Kata's pause
    image. Its digest."""
    subprocess.run(["cp", "-al", str(layout), str(dest)], check=True, timeout=60)
    config, layer, manifest = _pause_blobs()
    for data in (config, layer, manifest):
        _blob(dest, data)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index_path = dest / "index.json"
    index = json.loads(index_path.read_text())
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                               "size": len(manifest),
                               "annotations": {"org.opencontainers.image.ref.name": "pause"}})
    index_path.unlink()  # a hard link to the cache's file: replace it, never write through it
    index_path.write_text(json.dumps(index))
    return digest
