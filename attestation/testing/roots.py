"""A simulated AMD root kept on disk, so a Coordinator, its restarts and the pods on one machine share it.

The root lives in ``<dir>`` (``ark.pem``/``ask.pem`` plus keys); ``ATTESTATION_SIMULATED_ROOT=<dir>``
points every process at the same one.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..initdata import digest as initdata_digest
from ..initdata import platform_digest
from ..providers.detect import SIMULATED_ROOT_ENV
from ..snp import certs
from ..snp.product import Product
from ..trust import AmdRoots
from .simulated import SimulatedAmdRoot, SimulatedSnpProvider


def load_trusted_roots(directory: Path) -> AmdRoots:
    """The trust anchors of a simulated root saved in `directory`: its ARK and ASK certificates only
    (a verifier needs no private key)."""
    return AmdRoots.from_certificates(
        [certs.load_certificate((directory / name).read_bytes()) for name in ("ark.pem", "ask.pem")]
    )


def load_root(directory: Path) -> SimulatedAmdRoot:
    """Like SimulatedAmdRoot.load, minus RSA private-key validation (~50 ms per key): the keys are our
    own files from `save`, and a broken key only breaks the simulator's own signatures."""
    ark = certs.load_certificate((directory / "ark.pem").read_bytes())
    ask = certs.load_certificate((directory / "ask.pem").read_bytes())
    keys = [
        serialization.load_pem_private_key(
            (directory / name).read_bytes(), None, unsafe_skip_rsa_key_validation=True
        )
        for name in ("ark.key", "ask.key")
    ]
    ark_key, ask_key = keys
    if not isinstance(ark_key, rsa.RSAPrivateKey) or not isinstance(ask_key, rsa.RSAPrivateKey):
        raise ValueError(f"simulated root keys in {directory} must be RSA")
    _role, product = certs.role_of(ark)
    if product is None:
        raise ValueError(f"{directory}/ark.pem names no product")
    return SimulatedAmdRoot(product, ark_key, ask_key, ark, ask)


def load_or_create_root(directory: Path) -> SimulatedAmdRoot:
    if (directory / "ark.pem").exists():
        return load_root(directory)
    root = SimulatedAmdRoot.generate(Product.MILAN)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.save(directory)
    return root


def host_data_for(initdata: bytes | None) -> bytes:
    """HOST_DATA a host would set for this initdata document (zeros without one)."""
    if initdata is None:
        return bytes(32)
    return platform_digest(initdata_digest(initdata), 32)


CMDLINE_HOST_DATA = "cg.test.hostdata"
CMDLINE = Path("/proc/cmdline")


class CmdlineHostDataError(ValueError):
    """The kernel command line carries no well-formed ``cg.test.hostdata=<64 hex>``."""


def host_data_from_cmdline(path: Path = CMDLINE) -> bytes:
    """HOST_DATA of a TEE-less pod VM: the shim's simulated mode puts it on the measured kernel command
    line (``cg.test.hostdata=<hex>``), which the guest agent also reads; containers see it in
    /proc/cmdline. Exactly one well-formed value, else an error naming what was found."""
    words = [w for w in path.read_text(encoding="ascii", errors="replace").split()
             if w.startswith(CMDLINE_HOST_DATA + "=")]
    if len(words) != 1:
        raise CmdlineHostDataError(
            f"{path}: expected one {CMDLINE_HOST_DATA}=<64 hex digits>, found {len(words)}")
    value = words[0].split("=", 1)[1]
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise CmdlineHostDataError(f"{path}: {CMDLINE_HOST_DATA} must be 64 lower-case hex digits, "
                                   f"got {len(value)} characters")
    return bytes.fromhex(value)


def root_dir(default: Path) -> Path:
    """Where the simulated root lives: $ATTESTATION_SIMULATED_ROOT if set, else `default`."""
    return Path(os.environ.get(SIMULATED_ROOT_ENV) or default)


def snp_provider(
    root_dir_default: Path, initdata: bytes | None = None, measurement: bytes = bytes(48),
    host_data: bytes | None = None,
) -> SimulatedSnpProvider:
    """A simulated SNP guest under the shared root whose HOST_DATA binds ``initdata`` (or is
    ``host_data`` as given, e.g. from :func:`host_data_from_cmdline`)."""
    root = load_or_create_root(root_dir(root_dir_default))
    bound = host_data if host_data is not None else host_data_for(initdata)
    return SimulatedSnpProvider(root=root, measurement=measurement, host_data=bound)
