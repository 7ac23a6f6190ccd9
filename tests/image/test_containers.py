"""The container images of our own parts: reproducible, readable by the guest's image code, and
runnable (each image's root filesystem, unpacked by oci.unpack as the guest does, runs its entry)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from image.containers.build import IMAGES, build_layout
from oci import BlobCache, LayoutSource, Reference, pull_image, unpack_pulled

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("containers") / "layout"
    built = build_layout(REPO, out)
    return out, {name: str(desc.digest) for name, desc in built.items()}


def test_same_inputs_same_digests(layout: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    _, digests = layout
    again = build_layout(
        REPO, tmp_path / "again", [s for s in IMAGES if s.name in ("initializer", "meshproxy")]
    )
    assert {n: str(d.digest) for n, d in again.items()} == {
        n: digests[n] for n in ("initializer", "meshproxy")
    }


def test_layers_are_shared(layout: tuple[Path, dict[str, str]]) -> None:
    root, digests = layout
    manifests = {
        n: json.loads((root / "blobs" / "sha256" / d.split(":")[1]).read_bytes()) for n, d in digests.items()
    }
    bases = {m["layers"][0]["digest"] for m in manifests.values()}
    projects = {m["layers"][1]["digest"] for m in manifests.values()}
    assert len(bases) == 1 and len(projects) == 1


def unpacked(root: Path, digest: str, tmp_path: Path) -> Path:
    ref = Reference.parse(f"localhost/contrast/image@{digest}")
    image = pull_image(LayoutSource(root), BlobCache(tmp_path / "cache"), ref)
    return unpack_pulled(image, tmp_path / "rootfs")


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("chroot") is None, reason="needs root for chroot"
)


@needs_root
@pytest.mark.parametrize(
    ("name", "argv", "expect"),
    [
        ("initializer", ["/usr/bin/python3", "-m", "initializer", "--help"], "COORDINATOR_HOST"),
        ("coordinator", ["/usr/bin/python3", "-m", "coordinator", "--help"], "--state-dir"),
        ("meshproxy", ["/usr/sbin/ip6tables-legacy", "--version"], "legacy"),
        ("meshproxy", ["/usr/sbin/iptables-nft", "--version"], "nf_tables"),
        (
            "demo-store",
            ["/usr/bin/python3", "-c", "import runpy; print(runpy.run_path('/app/store.py')['KEY'])"],
            "kv",
        ),
    ],
)
def test_image_runs_its_entry(
    layout: tuple[Path, dict[str, str]], tmp_path: Path, name: str, argv: list[str], expect: str
) -> None:
    root, digests = layout
    rootfs = unpacked(root, digests[name], tmp_path)
    proc = subprocess.run(
        ["chroot", str(rootfs), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expect in proc.stdout + proc.stderr
