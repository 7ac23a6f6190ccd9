"""Inside the pod VM: the image's Python (Debian 3.11 with the shipped backports.zstd) pulls an
image from a local OCI layout through oci.pull and unpacks it under /run/kata-containers on the
guest's tmpfs, with devices, file capabilities and ownership; the pulled busybox runs; a traversal
layer fails closed. (Pulling from a registry over the VM's network is the next step.)"""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from tarbuild import Entry, compress, tar_bytes

from oci import (
    BlobCache,
    Digest,
    LayoutSource,
    LayoutWriter,
    Reference,
    UnpackError,
    pull_image,
    unpack_pulled,
)
from oci import mediatypes as mt

pytestmark = pytest.mark.vm(guest=True)

BUSYBOX = Path("/usr/bin/busybox")
# vfs_cap_data revision 2: effective bit set, permitted CAP_NET_RAW (13)
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def _image(root: Path, layers: list[bytes], media: list[str]) -> Digest:
    w = LayoutWriter(root)
    entries = [(compress(t, {mt.OCI_LAYER_GZIP: "gzip", mt.OCI_LAYER_ZSTD: "zstd"}[m]), m, Digest.of(t))
               for t, m in zip(layers, media, strict=True)]
    index = w.add_index([w.add_image(entries)])
    w.finish([index])
    return index.digest


def test_pull_and_unpack_in_the_guest() -> None:
    work = Path(tempfile.mkdtemp(dir="/run"))
    base = tar_bytes([
        Entry("bin", tarfile.DIRTYPE, mode=0o755),
        Entry("bin/busybox", data=BUSYBOX.read_bytes(), mode=0o755),
        Entry("bin/ping", tarfile.LNKTYPE, linkname="bin/busybox"),
        Entry("dev", tarfile.DIRTYPE, mode=0o755),
        Entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        Entry("etc", tarfile.DIRTYPE, mode=0o755), Entry("etc/old", data=b"gone"),
        Entry("usr", tarfile.DIRTYPE), Entry("usr/netraw", data=b"cap", mode=0o755,
                                               pax={"SCHILY.xattr.security.capability":
                                                    CAP_NET_RAW.decode("utf-8", "surrogateescape")}),
    ])
    upper = tar_bytes([Entry("etc", tarfile.DIRTYPE, mode=0o755), Entry("etc/.wh.old"),
                       Entry("etc/motd", data=b"pulled in the guest\n", uid=1000, gid=1000, mode=0o640)])
    digest = _image(work / "layout", [base, upper], [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD])
    ref = Reference.parse(f"localhost/guest@{digest}")
    image = pull_image(LayoutSource(work / "layout"), BlobCache(work / "cache"), ref)
    bundle = Path("/run/kata-containers") / ("9" * 64)
    bundle.mkdir(parents=True)
    rootfs = unpack_pulled(image, bundle / "rootfs")
    out = subprocess.run([str(rootfs / "bin/busybox"), "cat", str(rootfs / "etc/motd")],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout == "pulled in the guest\n"
    assert not (rootfs / "etc/old").exists()
    null = os.stat(rootfs / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
    assert os.getxattr(rootfs / "usr/netraw", "security.capability") == CAP_NET_RAW
    motd = os.stat(rootfs / "etc/motd")
    assert (motd.st_uid, motd.st_gid, stat.S_IMODE(motd.st_mode)) == (1000, 1000, 0o640)
    assert os.stat(rootfs / "bin/ping").st_ino == os.stat(rootfs / "bin/busybox").st_ino


def test_traversal_layer_fails_closed_in_the_guest() -> None:
    work = Path(tempfile.mkdtemp(dir="/run"))
    evil = tar_bytes([Entry("etc", tarfile.DIRTYPE), Entry("etc/../../escape", data=b"x")])
    digest = _image(work / "layout", [tar_bytes([Entry("ok", data=b"1")]), evil],
                    [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD])
    image = pull_image(LayoutSource(work / "layout"), BlobCache(work / "cache"),
                       Reference.parse(f"localhost/evil@{digest}"))
    (work / "bundle").mkdir()
    with pytest.raises(UnpackError, match="escape"):
        unpack_pulled(image, work / "bundle" / "rootfs")
    assert os.listdir(work / "bundle") == []
    assert not (work / "escape").exists() and not Path("/run/escape").exists()
