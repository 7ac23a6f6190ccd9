"""Property: whatever a layer contains, unpacking never touches anything outside the destination,
and on failure leaves nothing behind. Entries are drawn from names, link targets and whiteouts that
mix `..`, absolute paths, symlinks to outside and hard links."""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tarbuild import Entry, tar_bytes

from oci import LayerSource, UnpackError, unpack_image

PARTS = st.sampled_from(["a", "b", "..", ".", "", "out", ".wh.a", ".wh..wh..opq", ".wh...", "c"])
NAMES = st.lists(PARTS, min_size=1, max_size=4).map("/".join) | st.sampled_from(["/etc/x", "/", "../out/x"])
TARGETS = st.sampled_from(["a", "../out", "/", "..", "b/a", "../../", "out", "/tmp", "a/b"]) | NAMES
ENTRIES = st.one_of(
    st.builds(lambda n: Entry(n, data=b"payload"), NAMES),
    st.builds(lambda n: Entry(n, tarfile.DIRTYPE, mode=0o755), NAMES),
    st.builds(lambda n, t: Entry(n, tarfile.SYMTYPE, linkname=t), NAMES, TARGETS),
    st.builds(lambda n, t: Entry(n, tarfile.LNKTYPE, linkname=t), NAMES, TARGETS),
)


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = os.lstat(p)
            out[str(p.relative_to(root))] = (st_.st_mode, p.read_bytes() if p.is_file() and not p.is_symlink()
                                             else b"")
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(ENTRIES, max_size=8), min_size=1, max_size=3))
def test_nothing_outside_changes(layers: list[list[Entry]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "out").mkdir()
        (base / "out" / "x").write_bytes(b"sentinel")
        (base / "dest").mkdir()
        before = _snapshot(base / "out")
        sources = []
        for i, layer in enumerate(layers):
            path = base / f"l{i}.tar"
            try:
                path.write_bytes(tar_bytes(layer))
            except (ValueError, tarfile.TarError):
                return  # tarfile itself refuses to write this entry
            sources.append(LayerSource(f"sha256:l{i}", "", path))
        try:
            unpack_image(sources, base / "dest" / "rootfs")
            ok = True
        except UnpackError:
            ok = False
        assert _snapshot(base / "out") == before
        assert sorted(os.listdir(base)) == sorted(["out", "dest", *(f"l{i}.tar" for i in range(len(layers)))])
        assert os.listdir(base / "dest") == (["rootfs"] if ok else [])
