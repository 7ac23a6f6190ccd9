"""Pick the best evidence provider on this machine.

Order: configfs-tsm (the kernel's generic interface, SNP or TDX), then /dev/sev-guest, then, only
if the caller allows it, the simulator. `ATTESTATION_SIMULATED_ROOT=<dir>` makes the simulator
load a saved simulated AMD root (so a dev cluster's verifier can trust the same one).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import NoProviderError
from ..evidence import EvidenceProvider, Platform
from .configfs_tsm import TSM_REPORT_ROOT, ConfigfsTsmProvider, probe_provider
from .sevguest import DEVICE_PATH, SevGuestProvider

# The simulator (and with it `cryptography`, ~14 MiB) is imported only when it is allowed and used:
# a guest agent probing for its TEE at boot never needs it.

SIMULATED_ROOT_ENV = "ATTESTATION_SIMULATED_ROOT"
TDX_GUEST_PATH = "/dev/tdx_guest"
CPUINFO_PATH = "/proc/cpuinfo"


def detect_platform(
    *,
    configfs_root: Path = TSM_REPORT_ROOT,
    sev_guest_path: str = DEVICE_PATH,
    tdx_guest_path: str = TDX_GUEST_PATH,
    cpuinfo_path: str = CPUINFO_PATH,
) -> Platform | None:
    """Which TEE this guest runs in: the configfs-tsm provider, else the guest device nodes, else the
    CPU flags the kernel reports for confidential guests (`sev_snp`, `tdx_guest`). None if none."""
    platform = probe_provider(configfs_root)
    if platform is not None:
        return platform
    if os.path.exists(sev_guest_path):
        return "snp"
    if os.path.exists(tdx_guest_path):
        return "tdx"
    try:
        with open(cpuinfo_path, encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if "tdx_guest" in flags:
        return "tdx"
    if "sev_snp" in flags:
        return "snp"
    return None


def detect_provider(
    allow_simulated: bool = False, *, configfs_root: Path = TSM_REPORT_ROOT, sev_guest_path: str = DEVICE_PATH
) -> EvidenceProvider:
    platform = probe_provider(configfs_root)
    if platform is not None:
        return ConfigfsTsmProvider(platform, root=configfs_root)
    if os.path.exists(sev_guest_path):
        from .sevguest import LinuxSevGuestDevice

        return SevGuestProvider(LinuxSevGuestDevice(sev_guest_path))
    if allow_simulated:
        from ..testing.simulated import SimulatedAmdRoot, SimulatedSnpProvider

        root_dir = os.environ.get(SIMULATED_ROOT_ENV)
        if root_dir:
            return SimulatedSnpProvider(root=SimulatedAmdRoot.load(root_dir))
        return SimulatedSnpProvider()
    # No hint here: each command names its own switch for the simulator.
    raise NoProviderError(
        f"no TEE found: no configfs-tsm provider in {configfs_root} and no {sev_guest_path}"
    )
