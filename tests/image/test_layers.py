"""Layer images for host-EROFS mode: deterministic, verity-correct (checked with veritysetup), and the
layer's whiteouts kept as overlayfs markers for the guest's overlay of layers."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from image.layers import LAYER_SALT, build_layer_image
from oci import UnpackError
from oci.unpack import LayerSource

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mkfs.erofs") is None,
    reason="needs root (ownership, device nodes) and erofs-utils",
)


def make_layer(path: Path) -> LayerSource:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes = b"", **kw: object) -> None:
            info = tarfile.TarInfo(name)
            for k, v in kw.items():
                setattr(info, k, v)
            if info.type == tarfile.REGTYPE:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)

        add("etc", type=tarfile.DIRTYPE, mode=0o755)
        add("etc/app.conf", b"greeting=hello\n", uid=1000, gid=1000, mode=0o640)
        add("etc/.wh.passwd")
        add("var", type=tarfile.DIRTYPE, mode=0o755)
        add("var/cache", type=tarfile.DIRTYPE, mode=0o755)
        add("var/cache/.wh..wh..opq")
        add("bin", type=tarfile.DIRTYPE, mode=0o755)
        add("bin/sh", type=tarfile.SYMTYPE, linkname="busybox")
        add("bin/busybox", b"\x7fELF" + b"\0" * 5000, mode=0o755)
    blob = gzip.compress(raw.getvalue(), mtime=0)
    path.write_bytes(blob)
    return LayerSource("sha256:" + hashlib.sha256(blob).hexdigest(), "gzip", path)


def test_layer_image_is_deterministic_and_verifies(tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "layer.tar.gz")
    first = build_layer_image(layer, tmp_path / "cache1")
    second = build_layer_image(layer, tmp_path / "cache2")
    assert first.roothash == second.roothash
    assert Path(first.path).read_bytes() == Path(second.path).read_bytes()
    assert first.salt == LAYER_SALT.hex() and first.hashoffset % 4096 == 0
    image = first.path
    verify = [
        "veritysetup",
        "verify",
        image,
        image,
        first.roothash,
        "--no-superblock",
        "--hash-offset",
        str(first.hashoffset),
        "--data-blocks",
        str(first.data_blocks),
        "--salt",
        first.salt,
    ]
    assert subprocess.run(verify, capture_output=True, check=False).returncode == 0
    data = bytearray(Path(image).read_bytes())
    data[first.hashoffset // 2] ^= 1
    (tmp_path / "tampered").write_bytes(bytes(data))
    tampered = ["veritysetup", "verify", str(tmp_path / "tampered"), str(tmp_path / "tampered"), *verify[4:]]
    assert subprocess.run(tampered, capture_output=True, check=False).returncode != 0
    assert build_layer_image(layer, tmp_path / "cache1") == first  # cached per layer digest


def test_layer_keeps_whiteouts_for_overlayfs(tmp_path: Path) -> None:
    built = build_layer_image(make_layer(tmp_path / "layer.tar.gz"), tmp_path / "cache")
    data = bytes(Path(built.path).read_bytes()[: built.hashoffset])
    (tmp_path / "fs.erofs").write_bytes(data)
    out = tmp_path / "extracted"
    proc = subprocess.run(
        ["fsck.erofs", f"--extract={out}", "--preserve", str(tmp_path / "fs.erofs")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    whiteout = os.lstat(out / "etc" / "passwd")
    assert (os.major(whiteout.st_rdev), os.minor(whiteout.st_rdev)) == (0, 0)
    assert os.stat(out / "etc" / "app.conf").st_uid == 1000
    assert os.readlink(out / "bin" / "sh") == "busybox"
    dump = subprocess.run(
        ["dump.erofs", "--path=/var/cache", str(tmp_path / "fs.erofs")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert dump.returncode == 0 and "xattr" in dump.stdout.lower(), dump.stdout


@pytest.mark.parametrize("name", ["etc/.wh..", "etc/.wh.", "../.wh.x", "/etc/.wh.passwd"])
def test_hostile_whiteout_in_a_layer_is_refused_and_nothing_cached(tmp_path: Path, name: str) -> None:
    """A host-supplied layer whose whiteout would reach outside its directory: clear error, no image."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        tar.addfile(info, io.BytesIO(b""))
    blob = gzip.compress(raw.getvalue(), mtime=0)
    (tmp_path / "bad.tar.gz").write_bytes(blob)
    layer = LayerSource("sha256:" + hashlib.sha256(blob).hexdigest(), "gzip", tmp_path / "bad.tar.gz")
    with pytest.raises(UnpackError) as info_:
        build_layer_image(layer, tmp_path / "cache")
    assert name.lstrip("/").split("/")[-1] in str(info_.value) or name in str(info_.value)
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert not list((tmp_path / "cache").glob(".*"))  # the work directory is gone too
