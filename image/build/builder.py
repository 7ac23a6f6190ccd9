"""Build the pod-VM image: kernel + measured initramfs + erofs root with an appended verity tree.

Steps (each reported on stderr): collect inputs → digest → cache lookup → stage rootfs →
compile bytecode → mkfs.erofs → verity tree → initramfs → description. Everything that goes into
the image is described first (``FileTree``), so the inputs digest is known before building and
a cached image with that digest is reused as is.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from common.files import atomic_write

from .description import DESCRIPTION_NAME, ImageDescription, VerityParams, verity_table
from .erofs import GUEST_PYTHON, compile_bytecode, erofs_version, make_erofs
from .errors import BuildError
from .initramfs import build_initramfs_tree, pack_initramfs
from .kernel import DEFERRED_MODULES, GUEST_MODULES, find_kernel
from .rootfs import build_rootfs_tree, package_versions

__all__ = ["BUILDER_VERSION", "BuildOptions", "build_image", "default_cache_dir"]

BUILDER_VERSION = "1"
BLOCK = 4096
# Kata's name and devices for the root mapping (one disk: data, then the tree at hash_offset).
DM_NAME = "dm-verity"
ROOT_DEVICE = "/dev/vda"
# Kata's x86 defaults (tsc=reliable … pci=lastbus=0) minus reboot=k: microvm has no keyboard
# controller, and a triple-fault reboot (reboot=t) is what makes QEMU -no-reboot exit.
BASE_CMDLINE = ("console=ttyS0 quiet panic=-1 reboot=t tsc=reliable no_timer_check rcupdate.rcu_expedited=1 "
                "i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 noreplace-smp "
                "cryptomgr.notests net.ifnames=0 pci=lastbus=0")


def default_cache_dir() -> Path | None:
    env = os.environ.get("CG_IMAGE_CACHE")
    if env is not None:
        return Path(env) if env else None
    return Path("/var/cache/confidential-guest/images")


@dataclass(frozen=True, slots=True)
class BuildOptions:
    out: Path
    repo: Path
    kernel_flavour: str = "cloud-amd64"
    source_date_epoch: int = 0
    compression: str = "lz4hc"
    initdata_toml: Path | None = None
    cache_dir: Path | None = None
    quiet: bool = False


class _Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, step: str, detail: str = "") -> None:
        if not self.quiet:
            line = f"[{time.monotonic() - self.t0:6.1f}s] {step} {detail}".rstrip()
            print(line, file=sys.stderr, flush=True)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verity_format(disk: Path, data_blocks: int, salt: str) -> tuple[str, str]:
    """Append the tree to ``disk`` (no superblock, tree right after the data, like a Kata hash
    partition that starts at the end of the data); return (root hash, kernel table)."""
    from image import verity

    params = verity.VerityParams(hash_name="sha256", data_block_size=BLOCK, hash_block_size=BLOCK,
                                 salt=bytes.fromhex(salt), hash_type=1, superblock=False,
                                 data_blocks=data_blocks, hash_offset=data_blocks * BLOCK)
    result = verity.format_hash_tree(disk, disk, params)
    return result.root_hash.hex(), verity.kernel_table(result, ROOT_DEVICE, ROOT_DEVICE)


CACHE_KEEP = 4  # images kept in the cache (each ~75 MiB); every change of the project is a new key


def _prune_cache(cache: Path, keep: int) -> None:
    """Drop all but the ``keep`` most recently used entries (published copies are hard links, so
    images already handed out stay intact)."""
    entries = sorted((p for p in cache.iterdir() if (p / DESCRIPTION_NAME).is_file()),
                     key=lambda p: (p / DESCRIPTION_NAME).stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _publish(src_dir: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(src_dir.iterdir()):
        dest = out / f.name
        # A unique temp name: two builds publishing into one directory must not share it.
        tmp = out / f".{f.name}.{secrets.token_hex(8)}.tmp"
        try:
            try:
                os.link(f, tmp)
            except OSError:
                shutil.copyfile(f, tmp)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def build_image(opts: BuildOptions) -> ImageDescription:
    progress = _Progress(opts.quiet)
    t0 = time.monotonic()
    initdata_raw = None
    if opts.initdata_toml is not None:
        from attestation import initdata

        initdata_raw = opts.initdata_toml.read_bytes()
        try:
            initdata.parse(initdata_raw)  # refuse a malformed document before writing anything
        except initdata.InitdataError as e:
            raise BuildError(f"initdata {opts.initdata_toml}: {e}") from e
    progress("collect", "kernel, initramfs and rootfs inputs")
    kernel = find_kernel(opts.kernel_flavour)
    initramfs_tree = build_initramfs_tree(kernel)
    rootfs_tree = build_rootfs_tree(opts.repo, kernel=kernel)
    inputs = {
        "builder": BUILDER_VERSION,
        "kernel": kernel.release,
        "vmlinuz": _file_sha256(kernel.vmlinuz),
        "initramfs": initramfs_tree.digest(),
        "rootfs": rootfs_tree.digest(),
        "mkfs.erofs": erofs_version(),
        "compression": opts.compression,
        "python": _file_sha256(GUEST_PYTHON),
        "epoch": opts.source_date_epoch,
        "cmdline": BASE_CMDLINE,
        "contents": {"packages": package_versions(), "modules": list(GUEST_MODULES),
                     "deferred_modules": list(DEFERRED_MODULES)},
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    progress("inputs", f"digest={digest[:16]} rootfs_files={len(rootfs_tree.nodes)} "
             f"rootfs_bytes={rootfs_tree.file_bytes()}")
    cache = opts.cache_dir
    cached = cache / digest if cache else None
    if cached is not None and (cached / DESCRIPTION_NAME).is_file():
        progress("cache", f"hit {cached}")
        desc = ImageDescription.load(cached / DESCRIPTION_NAME)
        os.utime(cached / DESCRIPTION_NAME)  # most recently used, for pruning
    else:
        desc = _build(opts, progress, kernel.vmlinuz, initramfs_tree, rootfs_tree, digest, inputs, cached, t0)
    staging = cached if cached is not None and cached.is_dir() else None
    if staging is not None and staging.resolve() != opts.out.resolve():
        _publish(staging, opts.out)
    if opts.initdata_toml is not None:
        from attestation import initdata

        raw = opts.initdata_toml.read_bytes()
        initdata.parse(raw)  # refuse a malformed document before writing anything
        atomic_write(opts.out / "initdata.img", initdata.encode_device(raw))
        desc = replace(desc, initdata="initdata.img")
        atomic_write(opts.out / DESCRIPTION_NAME, desc.to_json().encode())
    disk_size = (opts.out / desc.disk).stat().st_size
    progress("done", f"out={opts.out} root_hash={desc.root_hash} disk_bytes={disk_size} "
             f"build_seconds={desc.build_seconds}")
    return desc


def _build(opts: BuildOptions, progress: _Progress, vmlinuz: Path, initramfs_tree: object,
           rootfs_tree: object, digest: str, inputs: dict[str, object], cached: Path | None,
           t0: float) -> ImageDescription:
    from .tree import FileTree

    assert isinstance(initramfs_tree, FileTree) and isinstance(rootfs_tree, FileTree)
    parent = cached.parent if cached is not None else opts.out
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        parent = opts.out
        cached = None
        parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=parent))
    try:
        result = work / "image"
        result.mkdir()
        stage = work / "rootfs"
        progress("stage", f"{stage}")
        rootfs_tree.materialize(stage)
        progress("compile", "bytecode (unchecked-hash)")
        compile_bytecode(stage, ["usr/lib/python3.11", "usr/lib/python3/dist-packages"])
        progress("erofs", f"mkfs.erofs -z{opts.compression}")
        disk = result / "rootfs.img"
        make_erofs(stage, disk, opts.source_date_epoch, opts.compression)
        size = disk.stat().st_size
        if size % BLOCK:
            with open(disk, "ab") as f:
                f.write(b"\0" * (-size % BLOCK))
            size = disk.stat().st_size
        data_blocks = size // BLOCK
        salt = hashlib.sha256(b"confidential-guest/image/verity-salt\0" + digest.encode()).hexdigest()
        progress("verity", f"data_blocks={data_blocks}")
        root_hash, table = _verity_format(disk, data_blocks, salt)
        verity = VerityParams(hash_algorithm="sha256", data_block_size=BLOCK, hash_block_size=BLOCK,
                              data_blocks=data_blocks, hash_offset=size, hash_start_block=data_blocks,
                              format=1, superblock=False, data_device=ROOT_DEVICE, hash_device=ROOT_DEVICE)
        if table != verity_table(verity, root_hash, salt):
            raise BuildError(f"verity table {table!r} does not match the description's parameters")
        from image.verity import dm_mod_create

        cmdline = (f"{BASE_CMDLINE} {dm_mod_create(table, name=DM_NAME)} root=/dev/dm-0 "
                   "rootfstype=erofs rootflags=ro")
        progress("initramfs", "cpio newc")
        (result / "initrd.img").write_bytes(pack_initramfs(initramfs_tree))
        shutil.copyfile(vmlinuz, result / "vmlinuz")
        desc = ImageDescription(
            kernel="vmlinuz", initrd="initrd.img", disk="rootfs.img", cmdline=cmdline, root_hash=root_hash,
            salt=salt, rootfs="erofs", verity=verity, initdata=None,
            build_seconds=round(time.monotonic() - t0, 1), inputs_digest=digest,
            extra={"contents": inputs["contents"], "inputs": inputs},
        )
        atomic_write(result / DESCRIPTION_NAME, desc.to_json().encode())
        if cached is not None:
            _prune_cache(cached.parent, keep=CACHE_KEEP - 1)
            try:
                os.replace(result, cached)  # atomic: a cache entry is complete or absent
            except OSError:
                if not (cached / DESCRIPTION_NAME).is_file():
                    raise
                # A concurrent build of the same inputs won; its bytes are identical to ours.
                return ImageDescription.load(cached / DESCRIPTION_NAME)
        else:
            _publish(result, opts.out)
        return desc
    finally:
        shutil.rmtree(work, ignore_errors=True)
