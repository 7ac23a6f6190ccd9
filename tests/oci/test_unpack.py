"""Layer unpacking: the tree it builds, and every escape attempt refused with nothing left behind."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest
from tarbuild import Entry, compress, huge_pax_tar, lying_size_tar, tar_bytes

from oci import LayerSource, Limits, UnpackError, unpack_image

DIR, SYM, LNK = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
CHR, FIFO = tarfile.CHRTYPE, tarfile.FIFOTYPE


def _layers(tmp: Path, *layers: list[Entry] | bytes, compression: str = "") -> list[LayerSource]:
    out = []
    for i, layer in enumerate(layers):
        raw = layer if isinstance(layer, bytes) else tar_bytes(layer)
        path = tmp / f"layer{i}"
        path.write_bytes(compress(raw, compression))
        out.append(LayerSource(f"sha256:layer{i}", compression, path))
    return out


def _unpack(tmp: Path, *layers: list[Entry] | bytes, compression: str = "",
            limits: Limits | None = None) -> Path:
    (tmp / "dest").mkdir(exist_ok=True)
    return unpack_image(_layers(tmp, *layers, compression=compression), tmp / "dest" / "rootfs",
                        limits=limits)


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
def test_tree_with_every_entry_type(tmp_path: Path, compression: str) -> None:
    layer = [
        Entry(".", DIR, mode=0o755),
        Entry("etc", DIR, mode=0o755, mtime=1_600_000_000),
        Entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n", mode=0o644),
        Entry("bin", DIR, mode=0o755),
        Entry("bin/busybox", data=b"\x7fELF...", mode=0o4755, uid=0, gid=0),
        Entry("bin/sh", SYM, linkname="busybox"),
        Entry("bin/ls", LNK, linkname="bin/busybox"),
        Entry("home", DIR, mode=0o750, uid=1000, gid=1000),
        Entry("home/user.txt", data=b"hi", uid=1000, gid=100, mode=0o600,
              pax={"SCHILY.xattr.user.note": "kept"}),
        Entry("dev", DIR, mode=0o755),
        Entry("dev/null", CHR, mode=0o666, devmajor=1, devminor=3),
        Entry("run", DIR),
        Entry("run/fifo", FIFO, mode=0o600),
    ]
    root = _unpack(tmp_path, layer, compression=compression)
    assert (root / "etc/passwd").read_bytes().startswith(b"root:")
    st = os.stat(root / "bin/busybox")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert os.readlink(root / "bin/sh") == "busybox"
    assert os.stat(root / "bin/ls").st_ino == st.st_ino
    home = os.stat(root / "home")
    assert (home.st_uid, home.st_gid, stat.S_IMODE(home.st_mode)) == (1000, 1000, 0o750)
    user = os.stat(root / "home/user.txt")
    assert (user.st_uid, user.st_gid, stat.S_IMODE(user.st_mode)) == (1000, 100, 0o600)
    assert user.st_mtime == 1_700_000_000
    assert os.stat(root / "etc").st_mtime == 1_600_000_000  # set after its children were written
    assert os.getxattr(root / "home/user.txt", "user.note") == b"kept"
    null = os.stat(root / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert stat.S_ISFIFO(os.stat(root / "run/fifo").st_mode)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o755
    assert os.listdir(tmp_path / "dest") == ["rootfs"]  # no temporary left


def test_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    lower = [Entry("a", DIR), Entry("a/x", data=b"x"), Entry("a/y", data=b"y"), Entry("b", DIR),
             Entry("b/old", data=b"old"), Entry("b/sub", DIR), Entry("b/sub/deep", data=b"d"),
             Entry("c", DIR), Entry("c/dir", DIR), Entry("c/dir/f", data=b"f")]
    upper = [Entry("a/.wh.x"), Entry("b", DIR), Entry("b/.wh..wh..opq"), Entry("b/new", data=b"new"),
             Entry("c/.wh.dir"), Entry("c/.wh.absent"), Entry("c/.wh..wh.plnk")]
    root = _unpack(tmp_path, lower, upper)
    assert sorted(os.listdir(root / "a")) == ["y"]
    assert sorted(os.listdir(root / "b")) == ["new"]
    assert os.listdir(root / "c") == []


def test_upper_layer_replaces_entries_of_lower_layers(tmp_path: Path) -> None:
    lower = [Entry("f", data=b"file"), Entry("d", DIR), Entry("d/x", data=b"x"),
             Entry("l", SYM, linkname="f")]
    upper = [Entry("f", DIR), Entry("f/inside", data=b"now a dir"), Entry("d", data=b"now a file"),
             Entry("l", data=b"no longer a link")]
    root = _unpack(tmp_path, lower, upper)
    assert (root / "f/inside").read_bytes() == b"now a dir"
    assert (root / "d").read_bytes() == b"now a file"
    assert not (root / "l").is_symlink() and (root / "l").read_bytes() == b"no longer a link"


ATTACKS = {
    "dotdot": ([[Entry("../evil", data=b"x")]], "../evil", "'..'"),
    "dotdot-inside": ([[Entry("a/../../evil", data=b"x")]], "a/../../evil", "'..'"),
    "absolute": ([[Entry("/etc/passwd", data=b"x")]], "/etc/passwd", "absolute"),
    "symlink-then-file": ([[Entry("l", SYM, linkname="/etc"), Entry("l/passwd", data=b"owned")]],
                          "l/passwd", "symlink"),
    "relative-symlink-then-file": ([[Entry("up", SYM, linkname=".."), Entry("up/x", data=b"x")]],
                                   "up/x", "symlink"),
    "symlink-in-lower-layer": ([[Entry("lib", SYM, linkname="/tmp")], [Entry("lib/x", data=b"x")]],
                               "lib/x", "symlink"),
    "hardlink-outside": ([[Entry("shadow", LNK, linkname="../../etc/shadow")]], "shadow", "'..'"),
    "hardlink-absolute": ([[Entry("shadow", LNK, linkname="/etc/shadow")]], "shadow", "absolute"),
    "hardlink-not-unpacked": ([[Entry("shadow", LNK, linkname="etc/shadow")]], "shadow", "not unpacked"),
    "hardlink-missing-dir": ([[Entry("s", LNK, linkname="nodir/shadow")]], "s", "does not exist"),
    "hardlink-through-symlink": ([[Entry("e", SYM, linkname="/etc"), Entry("s", LNK, linkname="e/shadow")]],
                                 "s", "symlink"),
    "hardlink-to-directory": ([[Entry("d", DIR), Entry("h", LNK, linkname="d")]], "h", "directory"),
    "whiteout-dotdot": ([[Entry("../.wh.x")]], "../.wh.x", "'..'"),
    "whiteout-of-parent": ([[Entry("a", DIR), Entry("a/.wh...")]], "a/.wh...", "whiteout"),
    "duplicate": ([[Entry("f", data=b"1"), Entry("f", data=b"2")]], "f", "duplicate"),
    "under-a-file": ([[Entry("f", data=b"1"), Entry("f/x", data=b"2")]], "f/x", "not a directory"),
    "root-not-dir": ([[Entry(".", data=b"x")]], ".", "root entry"),
    "empty-symlink-target": ([[Entry("l", SYM, linkname="")]], "l", "No such file"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_refused_and_nothing_is_left(tmp_path: Path, name: str) -> None:
    layers, entry, problem = ATTACKS[name]
    # a legitimate first layer, so there is something unpacked that must be discarded
    good = [Entry("etc", DIR), Entry("etc/hostname", data=b"pod\n")]
    outside = tmp_path / "evil"
    with pytest.raises(UnpackError) as exc:
        _unpack(tmp_path, good, *layers)
    assert exc.value.entry == entry and problem in exc.value.problem, str(exc.value)
    assert entry in str(exc.value)
    assert os.listdir(tmp_path / "dest") == []
    assert not outside.exists()
    assert not Path("/etc/passwd").read_bytes().startswith(b"owned")


def test_lying_size_header_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(UnpackError, match="exceeds the unpack limit") as exc:
        _unpack(tmp_path, lying_size_tar("big", 1 << 40))
    assert exc.value.entry == "big"
    with pytest.raises(UnpackError, match=r"truncated|unreadable"):
        _unpack(tmp_path, lying_size_tar("big", 1 << 20))
    assert os.listdir(tmp_path / "dest") == []


def test_huge_pax_header_is_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(UnpackError, match="extension header"):
        _unpack(tmp_path, huge_pax_tar(1 << 36))


def test_decompression_bomb_is_bounded(tmp_path: Path) -> None:
    bomb = [Entry("zeros", data=b"\0" * (8 << 20))]
    with pytest.raises(UnpackError, match="limit"):
        _unpack(tmp_path, bomb, compression="gzip", limits=Limits(max_bytes=1 << 20))
    assert os.listdir(tmp_path / "dest") == []


def test_entry_count_is_bounded(tmp_path: Path) -> None:
    many = [Entry(f"f{i}") for i in range(20)]
    with pytest.raises(UnpackError, match="more than 10 entries"):
        _unpack(tmp_path, many, limits=Limits(max_entries=10))


def test_corrupt_compressed_layer_is_an_error(tmp_path: Path) -> None:
    data = compress(tar_bytes([Entry("f", data=b"x" * 5000)]), "gzip")
    with pytest.raises(UnpackError, match="unreadable layer"):
        _unpack(tmp_path, data[: len(data) // 2], compression="")  # not gzip as plain tar
    path = tmp_path / "broken.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 10)
    (tmp_path / "dest").mkdir(exist_ok=True)
    with pytest.raises(UnpackError, match="unreadable layer"):
        unpack_image([LayerSource("sha256:z", "zstd", path)], tmp_path / "dest" / "rootfs")
    assert os.listdir(tmp_path / "dest") == []


def test_existing_destination_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dest" / "rootfs").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        unpack_image(_layers(tmp_path, [Entry("f")]), tmp_path / "dest" / "rootfs")


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
def test_a_blob_that_changed_after_it_was_cached_is_never_unpacked(tmp_path: Path, compression: str) -> None:
    """A layer carrying its descriptor is hashed while it is unpacked: the cached blob on a disk the
    host can roll back (one sector of an earlier file put back) leaves no rootfs; the right one
    unpacks, trailing bytes the decompressor never reads included in the check."""
    import hashlib

    from oci import BlobMismatchError, Digest

    blob = compress(tar_bytes([Entry("etc", DIR, mode=0o755), Entry("etc/marker", data=b"right\n")]),
                    compression)
    digest = Digest.parse("sha256:" + hashlib.sha256(blob).hexdigest())
    path = tmp_path / "blob"
    (tmp_path / "dest").mkdir()
    path.write_bytes(blob)
    good = LayerSource(str(digest), compression, path, digest, len(blob))
    root = unpack_image([good], tmp_path / "dest" / "rootfs")
    assert (root / "etc/marker").read_bytes() == b"right\n"
    for tampered in (blob[:-1] + bytes([blob[-1] ^ 1]), blob + b"\0"):
        path.write_bytes(tampered)
        with pytest.raises((BlobMismatchError, UnpackError)):
            unpack_image([LayerSource(str(digest), compression, path, digest, len(blob))],
                         tmp_path / "dest" / "again")
        assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["rootfs"]
