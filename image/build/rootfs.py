"""The pod VM's root filesystem, described as a ``FileTree``.

Contents, all from the build host's Debian packages and the project's pinned environment:
busybox-static (init scripts, mount, ip), Debian's python3.11 interpreter and standard library
(files listed by ``dpkg -L``, test suites and GUI modules left out), the shared libraries they
load (``ldd`` closure), the project's pinned runtime dependencies (from the build venv, by the
names in pyproject.toml and their requirements), and the project's own packages. ``.pyc`` files
are compiled after staging (see ``erofs.compile_bytecode``).
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import subprocess
import tomllib
from pathlib import Path

from .elf import is_elf, library_closure
from .errors import BuildError, ToolError
from .initramfs import BUSYBOX, merged_usr_links
from .inside import INIT_SCRIPT
from .kernel import Kernel, deferred_load_order
from .tree import FileTree

__all__ = [
    "CONTAINER_PACKAGES", "DEFERRED_MODULES_LIST", "PROJECT_PACKAGES", "PYTHON_PACKAGES", "TESTING_PACKAGES",
    "build_rootfs_tree",
    "distribution_closure", "package_versions", "project_files",
    "runtime_distributions",
]

PYTHON_PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib")
# Left out of the image unless a build asks for them (build_rootfs_tree(..., testing=True)).
TESTING_PACKAGES = ("attestation/testing",)
PROJECT_PACKAGES = ("common", "guest", "initializer", "meshproxy", "image", "attestation", "coordinator",
                    "oci")
_PROJECT_SUFFIXES = {".py", ".proto", ".pem", ".json", ".rego", ".typed"}
_STDLIB_SKIP = re.compile(
    r"^usr/lib/python3\.11/(test|idlelib|tkinter|turtledemo|ensurepip|lib2to3|pydoc_data|"
    r"config-3\.11-[^/]*|site-packages|dist-packages|sitecustomize\.py|"
    r"[^/]*/tests?|unittest/test)(/|$)|/__pycache__/"
)
_DIST_PACKAGES = "usr/lib/python3/dist-packages"
# Encrypted volumes (guest/storage/crypt.py): Debian's cryptsetup (LUKS2, dm-integrity) and the ext4
# tools that format and check the volume's filesystem; their libraries come with the ldd closure.
STORAGE_TOOLS = (Path("/usr/sbin/cryptsetup"), Path("/usr/sbin/mke2fs"), Path("/usr/sbin/e2fsck"))
STORAGE_PACKAGES = ("cryptsetup-bin", "e2fsprogs")
_STORAGE_TOOL_LINKS = {"usr/sbin/mkfs.ext4": "mke2fs", "usr/sbin/fsck.ext4": "e2fsck"}
_RPC = re.compile(r"rpc\s+\w+\s*\(\s*([\w.]+)\s*\)")


def default_policy(agent_proto: Path) -> bytes:
    """The policy agent's boot-time policy until initdata supplies one: every request of the agent
    API (from guest/protocols/agent.proto) is explicitly denied, SetPolicyRequest included."""
    names = sorted({m.split(".")[-1] for m in _RPC.findall(agent_proto.read_text())})
    if not names:
        raise BuildError(f"no rpc definitions in {agent_proto}")
    lines = ["# Pod-VM default policy: every agent request is denied until the measured initdata",
             "# carries a policy.", "package agent_policy", ""]
    lines += [f"default {n} := false" for n in names]
    return ("\n".join(lines) + "\n").encode()
_BUSYBOX_APPLETS = ("unshare", "nsenter", "insmod",
                    "sh", "mount", "umount", "cat", "echo", "sleep", "reboot", "poweroff", "ip",
                    "hostname", "grep", "sed", "ls", "mkdir", "dmesg", "sha256sum", "dd", "losetup",
                    "head", "tail", "cut", "tr", "wc", "ps", "kill", "true", "false", "test", "[",
                    "uname", "sync", "xxd", "cmp", "od", "rm", "cp", "ln", "stat", "env", "printf")


# The container side (guest.backend): the OCI runtime and the pause process, from Debian packages.
# crun over runc: 0.5 MB + 2.4 MB of shared libraries vs a 8.4 MB static Go binary, no Go runtime
# start per call (docs/image.md has the measurement).
OCI_RUNTIME = Path("/usr/bin/crun")
PAUSE = Path("/usr/bin/catatonit")  # statically linked; -P = pause mode (reaps, exits on SIGTERM/SIGINT)
PAUSE_DEST = "usr/libexec/confidential-guest/pause"
CONTAINER_PACKAGES = ("crun", "catatonit", "busybox-static")


def package_versions(packages: tuple[str, ...] = (*CONTAINER_PACKAGES, *STORAGE_PACKAGES, *PYTHON_PACKAGES),
                     ) -> dict[str, str]:
    """What image.json reports as the image's Debian contents: package → installed version."""
    argv = ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *packages]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ToolError(argv, proc.returncode, proc.stderr)
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def _add_container_tools(tree: FileTree) -> list[Path]:
    for tool in (OCI_RUNTIME, PAUSE):
        if not tool.is_file():
            raise BuildError(f"{tool} missing: apt-get install {' '.join(CONTAINER_PACKAGES)}")
    tree.add_host_file(OCI_RUNTIME, "usr/bin/crun")
    tree.add_host_file(PAUSE, PAUSE_DEST)
    return [OCI_RUNTIME]


def _dpkg_files(package: str) -> list[str]:
    argv = ["dpkg", "-L", package]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ToolError(argv, proc.returncode, proc.stderr or f"package {package} not installed")
    return proc.stdout.splitlines()


def _add_python(tree: FileTree) -> list[Path]:
    elves = []
    for package in PYTHON_PACKAGES:
        for path in _dpkg_files(package):
            rel = path.lstrip("/")
            keep = rel == "usr/bin/python3.11" or rel.startswith("usr/lib/python3.11/")
            host = Path(path)
            if not keep or _STDLIB_SKIP.search(rel) or not host.is_file() or host.is_symlink():
                continue
            tree.add_file(rel, source=host)
            if rel.endswith(".so") or rel == "usr/bin/python3.11":
                elves.append(host)
    tree.add_symlink("usr/bin/python3", "python3.11")
    return elves


def _req_name(req: str) -> str | None:
    name, _, marker = req.partition(";")
    if "extra" in marker:
        return None
    m = re.match(r"\s*([A-Za-z0-9._-]+)", name)
    return m.group(1) if m else None


def runtime_distributions(pyproject: Path) -> list[metadata.Distribution]:
    """The pinned runtime dependencies and their (installed) requirements, sorted by name."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return distribution_closure([n for n in (_req_name(d) for d in deps) if n])


def distribution_closure(names: list[str]) -> list[metadata.Distribution]:
    """``names`` (all must be installed) and their installed requirements, sorted by name."""
    deps = list(names)
    todo = list(names)
    found: dict[str, metadata.Distribution] = {}
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in deps:
                raise BuildError(f"pinned dependency {name} is not installed in the build venv") from None
            continue  # an optional requirement for another interpreter version
        found[key] = dist
        todo.extend(n for n in (_req_name(r) for r in dist.requires or []) if n)
    return [found[k] for k in sorted(found)]


def _add_distributions(tree: FileTree, dists: list[metadata.Distribution]) -> tuple[list[Path], set[Path]]:
    elves: list[Path] = []
    roots: set[Path] = set()
    for dist in dists:
        for f in dist.files or []:
            rel = str(f)
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            host = Path(str(dist.locate_file(f)))
            if not host.is_file():
                continue
            roots.add(Path(str(dist.locate_file(""))).resolve())
            tree.add_file(f"{_DIST_PACKAGES}/{rel}", source=host)
            if rel.endswith(".so") or ".so." in rel:
                elves.append(host)
    return elves, roots


def project_files(repo: Path, *, testing: bool = False) -> list[Path]:
    """The project's package files: ``git ls-files`` in a checkout (what a clean clone has), else
    every file below the package directories. The TEE simulators (``TESTING_PACKAGES``) only with
    ``testing``: the pod VM attests with real hardware and never needs them."""
    proc = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--", *PROJECT_PACKAGES],
                          capture_output=True, check=False)
    if proc.returncode == 0:
        paths = [repo / p for p in proc.stdout.decode().split("\0") if p]
    else:
        paths = [p for pkg in PROJECT_PACKAGES if (repo / pkg).is_dir() for p in (repo / pkg).rglob("*")]
    skip = () if testing else tuple(repo / t for t in TESTING_PACKAGES)
    return sorted(p for p in paths if p.is_file() and p.suffix in _PROJECT_SUFFIXES
                  and "__pycache__" not in p.parts and not any(p.is_relative_to(t) for t in skip))


def _add_project(tree: FileTree, repo: Path, testing: bool) -> None:
    for host in project_files(repo, testing=testing):
        tree.add_file(f"{_DIST_PACKAGES}/{host.relative_to(repo)}", source=host, mode=0o644)


# The kernel modules loaded after boot (image.build.kernel.DEFERRED_MODULES): below this directory,
# with their load order (dependencies first, one path per line) in DEFERRED_MODULES_LIST.
MODULES_DIR = "usr/lib/modules"
DEFERRED_MODULES_LIST = f"{MODULES_DIR}/deferred.load"


def _add_deferred_modules(tree: FileTree, kernel: Kernel) -> None:
    order = deferred_load_order(kernel)
    for mod in order:
        tree.add_file(f"{MODULES_DIR}/{mod}", source=kernel.modules_dir / mod, mode=0o644)
    tree.add_file(DEFERRED_MODULES_LIST, data="".join(m + "\n" for m in order).encode())


def build_rootfs_tree(repo: Path, *, testing: bool = False, kernel: Kernel | None = None) -> FileTree:
    """The root filesystem; with ``kernel``, the modules loaded after boot are added (the image)."""
    tree = FileTree()
    merged_usr_links(tree)
    for d in ("dev", "proc", "sys", "run", "tmp", "mnt", "mnt/share", "root", "etc", "var", "usr/sbin",
              "usr/libexec", "usr/libexec/confidential-guest"):
        tree.add_dir(d, 0o700 if d == "root" else 0o755)
    tree.add_symlink("var/run", "../run")
    tree.add_symlink("var/tmp", "../tmp")
    tree.add_host_file(BUSYBOX, "usr/bin/busybox")
    for applet in _BUSYBOX_APPLETS:
        tree.add_symlink(f"usr/bin/{applet}", "busybox")
    tree.add_file("usr/sbin/init", data=INIT_SCRIPT.encode(), mode=0o755)
    tree.add_file("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
    tree.add_file("etc/group", data=b"root:x:0:\n")
    tree.add_file("etc/hostname", data=b"pod-vm\n")
    tree.add_file("etc/hosts", data=b"127.0.0.1 localhost pod-vm\n::1 localhost\n")
    tree.add_file("etc/os-release", data=b'ID=confidential-guest\nNAME="Confidential pod VM"\n')
    tree.add_file("etc/resolv.conf", data=b"")
    tree.add_file("etc/machine-id", data=b"")
    tree.add_file("etc/kata-opa/default-policy.rego",
                  data=default_policy(repo / "guest" / "protocols" / "agent.proto"))
    if kernel is not None:
        _add_deferred_modules(tree, kernel)
    elves = _add_python(tree)
    elves += _add_container_tools(tree)
    for tool in STORAGE_TOOLS:
        tree.add_host_file(tool, str(tool).lstrip("/"))
        elves.append(tool)
    for link, target in _STORAGE_TOOL_LINKS.items():
        tree.add_symlink(link, target)
    more, venv_roots = _add_distributions(tree, runtime_distributions(repo / "pyproject.toml"))
    elves += more
    _add_project(tree, repo, testing)
    for dest, src in sorted(library_closure(e for e in elves if is_elf(e)).items()):
        if any(src.is_relative_to(r) for r in venv_roots):
            continue  # a wheel's bundled library, already copied with the wheel
        if dest.lstrip("/") not in tree:
            tree.add_file(dest, source=src)
    return tree


# Shared with image.containers, which builds the container images of our own parts from the same parts.
add_python = _add_python
add_distributions = _add_distributions
dpkg_files = _dpkg_files
