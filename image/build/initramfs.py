"""The tiny measured initramfs: load modules, map the verity root, switch_root.

It does what ``CONFIG_DM_INIT`` does in Kata's kernel, so the kernel command line has the same
shape as Kata's (``dm-mod.create="<name>,<uuid>,<minor>,ro,<table>" root=/dev/dm-0``): the
verity table, and with it the root hash, is pinned by the measured command line. Anything that
does not parse, or any step that fails, powers the VM off (fail closed).
"""

from __future__ import annotations

from pathlib import Path

from .elf import library_closure, usr_merged
from .kernel import Kernel, module_load_order
from .tree import FileTree

__all__ = ["INIT_SCRIPT", "build_initramfs_tree", "merged_usr_links", "pack_initramfs"]

BUSYBOX = Path("/bin/busybox")
DMSETUP = Path("/sbin/dmsetup")

_APPLETS = ("sh", "mount", "umount", "insmod", "sed", "cat", "sleep", "switch_root", "reboot", "echo",
            "test", "[", "mkdir", "grep", "cut", "tr")

INIT_SCRIPT = r"""#!/bin/sh
# initramfs PID 1: modules, verity root from dm-mod.create on the measured command line, switch_root.
export PATH=/usr/bin:/usr/sbin
fatal() { echo "initramfs: FATAL: $*"; reboot -f; while :; do sleep 60; done; }
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev || fatal "mounts"
while read -r m; do insmod "/usr/lib/modules/$m" || fatal "insmod $m"; done < /etc/modules.load
cmdline=$(cat /proc/cmdline)
arg() { echo " $cmdline " | sed -n "s/.* $1=\([^ \"]*\) .*/\1/p"; }
create=$(echo "$cmdline" | sed -n 's/.*dm-mod\.create="\([^"]*\)".*/\1/p')
[ -n "$create" ] || fatal "no dm-mod.create on the kernel command line"
case "$create" in *";"*) fatal "only one dm device is supported";; esac
name=${create%%,*}; rest=${create#*,}
uuid=${rest%%,*}; rest=${rest#*,}
minor=${rest%%,*}; rest=${rest#*,}
flags=${rest%%,*}; table=${rest#*,}
[ "$flags" = ro ] || fatal "dm device flags must be ro, got '$flags'"
[ -z "$minor" ] || fatal "dm minor must be empty"
case "$table" in *,*) fatal "only one table line is supported";; esac
set -- $table
[ "$3" = verity ] || fatal "root table must be a verity target"
i=0; while [ ! -b "$5" ]; do i=$((i+1)); [ $i -le 500 ] || fatal "no data device $5"; sleep 0.01; done
export DM_DISABLE_UDEV=1
dmsetup create "$name" ${uuid:+--uuid "$uuid"} --readonly --table "$table" || fatal "dmsetup create"
root=$(arg root); fstype=$(arg rootfstype); init=$(arg init)
i=0; while [ ! -b "$root" ]; do i=$((i+1)); [ $i -le 500 ] || fatal "no root device $root"; sleep 0.01; done
mount -t "${fstype:-erofs}" -o ro "$root" /newroot || fatal "mount root"
for d in dev proc sys; do mount --move /$d /newroot/$d || fatal "move /$d"; done
exec switch_root /newroot "${init:-/sbin/init}"
fatal "switch_root"
"""


def merged_usr_links(tree: FileTree) -> None:
    for top in ("bin", "sbin", "lib", "lib64"):
        tree.add_dir(f"usr/{top}")
        tree.add_symlink(top, f"usr/{top}")


def build_initramfs_tree(kernel: Kernel) -> FileTree:
    tree = FileTree()
    merged_usr_links(tree)
    for d in ("dev", "proc", "sys", "newroot", "etc", "run"):
        tree.add_dir(d)
    tree.add_host_file(BUSYBOX, "usr/bin/busybox")
    for applet in _APPLETS:
        tree.add_symlink(f"usr/bin/{applet}", "busybox")
    tree.add_host_file(DMSETUP, usr_merged(str(DMSETUP)))
    for dest, src in sorted(library_closure([DMSETUP]).items()):
        tree.add_file(dest, source=src)
    order = module_load_order(kernel)
    for mod in order:
        tree.add_file(f"usr/lib/modules/{mod}", source=kernel.modules_dir / mod, mode=0o644)
    tree.add_file("etc/modules.load", data="".join(m + "\n" for m in order).encode())
    tree.add_file("init", data=INIT_SCRIPT.encode(), mode=0o755)
    return tree


def pack_initramfs(tree: FileTree) -> bytes:
    """The newc archive, uncompressed: the kernel's gzip inflate of ~10 MB took ~0.2 s of the boot
    under TCG, while QEMU (and the firmware on a TEE) load the plain archive at memory speed; the
    archive is measured either way."""
    return tree.to_cpio()
