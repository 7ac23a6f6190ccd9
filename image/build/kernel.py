"""The guest kernel: Debian's packaged kernel and the modules the initramfs must load.

Debian builds device-mapper, dm-verity, erofs, virtio and vsock as modules, so the image carries
the few ``.ko`` files it needs (with their dependencies from ``modules.dep``) in the initramfs and
loads them in dependency order before the verity root is mapped. See docs/image.md for why this
was chosen over a custom kernel with ``CONFIG_DM_INIT``.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError

__all__ = ["BOOT_MODULES", "DEFERRED_MODULES", "GUEST_MODULES", "Kernel", "deferred_load_order",
           "find_kernel", "module_load_order"]

# What the pod VM needs before and right after switch_root (BOOT_MODULES, loaded by the initramfs):
# disk and console drivers, the verity root (with sha256_ssse3, so the root mapping picks the
# accelerated SHA-256), erofs, and the vsock loopback transport so the agent's AF_VSOCK listener
# works without vhost. (The boot disks are virtio-mmio; no vhost-vsock device, so no virtio vsock
# transport — every module costs a signature check under TCG.)
# What only containers and volumes need (DEFERRED_MODULES) is carried in the verity root instead
# and loaded by the agent while its backend starts, after it listens (guest.backend.kmod): virtio_pci
# for disks hotplugged onto the PCIe root ports (volumeDevices, the image store), overlay
# for layered rootfs, loop for file-backed layers, virtio_net for the pod network device
# (configured only by UpdateInterface/UpdateRoutes), and dm-crypt and dm-integrity with the ecb,
# xts and authenc templates for guest/storage/crypt.py (sha256, hmac, aes are built in);
# aesni_intel replaces the generic AES (1.7x the encrypted volume's throughput under TCG, far more
# on hardware). cgroup v2 is built into the kernel.
BOOT_MODULES: tuple[str, ...] = (
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "dm_verity",
    "erofs",
    "vsock_loopback",
    "sha256_ssse3",
)
DEFERRED_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "overlay",
    "loop",
    "virtio_net",
    *("dm_crypt", "dm_integrity", "ecb", "xts", "authenc", "aesni_intel"),  # LUKS2 volumes
    # The mesh proxy sidecar's netfilter (meshproxy.rules, both families): mangle-table TPROXY
    # ingress with socket/mark matches and the filter table's conntrack default-deny. A container
    # cannot load modules, and the kernel's on-demand loading finds none in the image otherwise.
    *("iptable_mangle", "iptable_filter", "ip6table_mangle", "ip6table_filter", "xt_TPROXY", "xt_socket",
      "xt_mark", "xt_conntrack", "xt_tcpudp"),
)
GUEST_MODULES: tuple[str, ...] = BOOT_MODULES + DEFERRED_MODULES


@dataclass(frozen=True, slots=True)
class Kernel:
    release: str
    vmlinuz: Path
    modules_dir: Path


def find_kernel(flavour: str = "cloud-amd64", release: str | None = None, root: Path = Path("/")) -> Kernel:
    """Find an installed Debian kernel (``linux-image-<flavour>``), newest release first."""
    if release is None:
        pattern = str(root / "boot" / f"vmlinuz-*-{flavour}")
        # "vmlinuz-*-amd64" also matches "-cloud-amd64": keep exact flavours only.
        exact = re.compile(r"vmlinuz-\d[\w.]*-\d+-" + re.escape(flavour) + "$")
        candidates = sorted(p for p in glob.glob(pattern) if exact.match(os.path.basename(p)))
        if not candidates:
            raise BuildError(f"no kernel matching {pattern}; install linux-image-{flavour}")
        release = os.path.basename(candidates[-1]).removeprefix("vmlinuz-")
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    modules_dir = root / "lib" / "modules" / release
    if not vmlinuz.is_file() or not (modules_dir / "modules.dep").is_file():
        raise BuildError(f"kernel {release}: expected {vmlinuz} and {modules_dir}/modules.dep")
    return Kernel(release, vmlinuz, modules_dir)


def _module_name(path: str) -> str:
    return os.path.basename(path).split(".ko")[0].replace("-", "_")


def deferred_load_order(kernel: Kernel) -> list[str]:
    """DEFERRED_MODULES and their dependencies in load order, less what the initramfs loaded."""
    loaded = set(module_load_order(kernel, BOOT_MODULES))
    return [m for m in module_load_order(kernel, DEFERRED_MODULES) if m not in loaded]


def module_load_order(kernel: Kernel, wanted: tuple[str, ...] = BOOT_MODULES) -> list[str]:
    """Relative paths of ``wanted`` and their dependencies, each after everything it depends on.

    Modules built into this kernel (listed in ``modules.builtin``) are skipped.
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (kernel.modules_dir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[_module_name(mod)] = mod
    builtin_file = kernel.modules_dir / "modules.builtin"
    builtin = (
        {_module_name(p) for p in builtin_file.read_text().split()} if builtin_file.is_file() else set()
    )
    order: list[str] = []
    seen: set[str] = set()

    def visit(mod: str) -> None:
        if mod in seen:
            return
        seen.add(mod)
        for dep in deps.get(mod, []):
            visit(dep)
        order.append(mod)

    for name in wanted:
        key = name.replace("-", "_")
        if key in builtin:
            continue
        if key not in by_name:
            raise BuildError(f"kernel {kernel.release} has no module {name!r}")
        visit(by_name[key])
    return order
