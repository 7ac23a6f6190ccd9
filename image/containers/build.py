"""Deterministic OCI images from file trees.

Every image is a stack of layers, each a ``FileTree`` written as a tar with sorted entries, owner
root, mtime 0 and gzip without a timestamp, so the same inputs give the same layer digests, the same
config and the same manifest digest on every machine. Layers are shared: the Python base layer and
the project layer are the same bytes in every image, so a registry stores them once and the guest
pulls them once per pod VM.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from image.build.elf import is_elf, library_closure
from image.build.initramfs import BUSYBOX, merged_usr_links
from image.build.rootfs import add_distributions, add_python, dpkg_files, project_files, runtime_distributions
from image.build.tree import FileTree
from oci import Descriptor, Digest, LayoutWriter
from oci import mediatypes as mt

DIST_PACKAGES = "usr/lib/python3/dist-packages"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IPTABLES_PACKAGES = ("iptables", "libip4tc2", "libip6tc2", "libxtables12")
BUSYBOX_APPLETS = ("sh", "cat", "echo", "sleep", "test", "ls", "wget", "env", "true", "false")


def layer_tar(tree: FileTree) -> bytes:
    """The tree as an uncompressed, deterministic tar (what the layer's diff_id hashes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(tree.nodes):
            node = tree.nodes[rel]
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = node.mode
            if node.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif node.kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = node.target
                tar.addfile(info)
            else:
                data = node.content()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _base_tree(repo: Path) -> FileTree:
    """busybox, Debian's python3.11, the pinned runtime dependencies and their shared libraries."""
    tree = FileTree()
    merged_usr_links(tree)
    for d in ("tmp", "run", "etc", "root", "var", "proc", "sys", "dev"):
        tree.add_dir(d, 0o1777 if d == "tmp" else 0o700 if d == "root" else 0o755)
    tree.add_host_file(BUSYBOX, "usr/bin/busybox")
    for applet in BUSYBOX_APPLETS:
        tree.add_symlink(f"usr/bin/{applet}", "busybox")
    tree.add_file("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    tree.add_file("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n")
    elves = add_python(tree)
    more, venv_roots = add_distributions(tree, runtime_distributions(repo / "pyproject.toml"))
    for dest, src in sorted(library_closure(e for e in elves + more if is_elf(e)).items()):
        if not any(src.is_relative_to(r) for r in venv_roots) and dest.lstrip("/") not in tree:
            tree.add_file(dest, source=src)
    return tree


def _project_tree(repo: Path) -> FileTree:
    tree = FileTree()
    # With the TEE simulators: the Coordinator and the Initializer offer --simulate-tee for dev clusters.
    for host in project_files(repo, testing=True):
        tree.add_file(f"{DIST_PACKAGES}/{host.relative_to(repo)}", source=host, mode=0o644)
    return tree


def _iptables_tree(base: FileTree) -> FileTree:
    """iptables and ip6tables (legacy and nft front ends) with their extensions, for the mesh proxy."""
    tree = FileTree()
    binaries = []
    for package in IPTABLES_PACKAGES:
        for path in dpkg_files(package):
            host = Path(path)
            rel = path.lstrip("/")
            if host.is_symlink():
                if rel.startswith(("usr/sbin/", "usr/lib/")) and rel not in base:
                    tree.add_symlink(rel, str(host.readlink()))
            elif host.is_file() and rel.startswith(("usr/sbin/", "usr/lib/")) and rel not in base:
                tree.add_file(rel, source=host, mode=0o755 if rel.startswith("usr/sbin/") else 0o644)
                if is_elf(host):
                    binaries.append(host)
    for dest, src in sorted(library_closure(binaries).items()):
        if dest.lstrip("/") not in base and dest.lstrip("/") not in tree:
            tree.add_file(dest, source=src)
    return tree


# The initializer's secure-pv (``python -m initializer cryptsetup``, CRYPTSETUP_DEVICE) runs Debian's
# cryptsetup and mkfs.ext4 inside the container, as Contrast's initializer image carries them.
CRYPTSETUP_BINARIES = ("/sbin/cryptsetup", "/sbin/mke2fs")


def _cryptsetup_tree(base: FileTree) -> FileTree:
    """cryptsetup and mke2fs (as mkfs.ext4) with their configuration and shared libraries."""
    tree = FileTree()
    binaries = [Path(b).resolve() for b in CRYPTSETUP_BINARIES]
    for b in binaries:
        tree.add_file(f"usr/sbin/{b.name}", source=b, mode=0o755)
    tree.add_symlink("usr/sbin/mkfs.ext4", "mke2fs")
    tree.add_file("etc/mke2fs.conf", source=Path("/etc/mke2fs.conf"), mode=0o644)
    for dest, src in sorted(library_closure(binaries).items()):
        if dest.lstrip("/") not in base and dest.lstrip("/") not in tree:
            tree.add_file(dest, source=src)
    return tree


def _apps_tree(repo: Path) -> FileTree:
    tree = FileTree()
    for host in sorted((repo / "tools" / "demo" / "apps").glob("*.py")):
        tree.add_file(f"app/{host.name}", source=host, mode=0o644)
    return tree


@dataclass(frozen=True)
class ImageSpec:
    """One image: its name, extra layers above base + project, and its config."""

    name: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # names of extra layers: "iptables", "apps", "cryptsetup"
    env: tuple[str, ...] = field(default=(PATH_ENV, "PYTHONDONTWRITEBYTECODE=1"))
    working_dir: str = "/"


IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("initializer", ("python3", "-m", "initializer"), extra=("cryptsetup",)),
    ImageSpec("meshproxy", ("python3", "-m", "meshproxy"), extra=("iptables",)),
    ImageSpec("coordinator", ("python3", "-m", "coordinator")),
    ImageSpec("demo-frontend", ("python3", "/app/frontend.py"), extra=("apps",)),
    ImageSpec("demo-store", ("python3", "/app/store.py"), extra=("apps",)),
)


@dataclass
class _Layer:
    blob: bytes
    diff_id: Digest


def _layer(tree: FileTree) -> _Layer:
    raw = layer_tar(tree)
    return _Layer(
        gzip.compress(raw, compresslevel=6, mtime=0), Digest("sha256", hashlib.sha256(raw).hexdigest())
    )


def build_layout(
    repo: Path,
    out: Path,
    specs: Sequence[ImageSpec] = IMAGES,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Descriptor]:
    """Write every image into the OCI layout ``out`` (tagged with its name); return name → manifest."""
    progress("layer base (python, dependencies, libraries)")
    base_tree = _base_tree(repo)
    layers = {"base": _layer(base_tree)}
    progress("layer project")
    layers["project"] = _layer(_project_tree(repo))
    needed = {name for spec in specs for name in spec.extra}
    if "iptables" in needed:
        progress("layer iptables")
        layers["iptables"] = _layer(_iptables_tree(base_tree))
    if "cryptsetup" in needed:
        progress("layer cryptsetup")
        layers["cryptsetup"] = _layer(_cryptsetup_tree(base_tree))
    if "apps" in needed:
        progress("layer apps")
        layers["apps"] = _layer(_apps_tree(repo))
    writer = LayoutWriter(out)
    result = {}
    for spec in specs:
        stack = [layers["base"], layers["project"], *(layers[n] for n in spec.extra)]
        config = {"Entrypoint": list(spec.entrypoint), "Env": list(spec.env), "WorkingDir": spec.working_dir}
        if spec.cmd:
            config["Cmd"] = list(spec.cmd)
        result[spec.name] = writer.add_image(
            [(lay.blob, mt.OCI_LAYER_GZIP, lay.diff_id) for lay in stack], config=config, tag=spec.name
        )
        progress(f"image {spec.name} {result[spec.name].digest}")
    writer.finish()
    return result
