"""A pull whose destination fills up (the secure image store, or the VM's memory) fails with a typed
NoSpaceError naming ENOSPC, not as a registry or layer fault, and leaves nothing half written. The
destination is a real 1 MiB tmpfs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tarbuild import Entry, tar_bytes

from oci import BlobCache, Descriptor, Digest, LayerSource, NoSpaceError, unpack_image
from oci.cache import VerifyingWriter

pytestmark = pytest.mark.root


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts a tmpfs)")
    target = tmp_path / "small"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)], check=True, timeout=30)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, timeout=30)


def test_a_blob_bigger_than_the_cache_is_no_space_and_leaves_no_temp_file(small: Path) -> None:
    data = os.urandom(3 << 20)
    desc = Descriptor("application/octet-stream", Digest.parse("sha256:" + hashlib.sha256(data).hexdigest()),
                      len(data))

    def fetch(_: Descriptor, sink: VerifyingWriter) -> None:
        for i in range(0, len(data), 1 << 16):
            sink.write(memoryview(data)[i:i + (1 << 16)])

    cache = BlobCache(small / "cache")
    with pytest.raises(NoSpaceError) as info:
        cache.ensure(desc, fetch)
    assert "ENOSPC" in str(info.value) and "blob cache" in str(info.value)
    assert not cache.has(desc)
    assert [p for p in (small / "cache/blobs").rglob("*") if p.is_file()] == []


def test_a_layer_bigger_than_the_rootfs_room_is_no_space_and_leaves_no_tree(small: Path,
                                                                            tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar"
    entries = [Entry("etc", tarfile.DIRTYPE, mode=0o755), Entry("etc/big", data=os.urandom(3 << 20))]
    layer.write_bytes(tar_bytes(entries))
    with pytest.raises(NoSpaceError) as info:
        unpack_image([LayerSource("sha256:big", "", layer)], small / "rootfs")
    assert "ENOSPC" in str(info.value) and "etc/big" in str(info.value)
    with contextlib.suppress(FileNotFoundError):
        assert list(small.iterdir()) == []
