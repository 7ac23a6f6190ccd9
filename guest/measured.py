"""Policy from measured initdata: find the device, check it against the TEE launch claim, install it.

Boot order (as kata-agent's policy start-up and initdata handling), with the check kata-agent leaves
to others done here:

1. the default policy file is loaded first (``--policy``, else /etc/kata-opa/default-policy.rego);
2. the initdata device is found (``auto``: every /dev/vd* and /dev/sd* whose first 8 bytes are the
   magic ``initdata``), decoded, parsed and validated (attestation.initdata);
3. its digest, truncated or zero-padded to the platform field, must equal HOST_DATA (SNP, 32 bytes)
   or MRCONFIGID (TDX, 48 bytes) read from local evidence — otherwise the host could hand us any
   policy; the comparison is constant-time;
4. every ``[data]`` entry is written atomically to ``<measured dir>/<key>`` (temp file, fsync,
   rename) and ``policy.rego``, if present, replaces the policy (fresh engine, empty state).

Any failure in 2-4 installs a deny-all policy whose every rule prints the error, so the host sees the
reason in each PERMISSION_DENIED reply. Each measured file is replaced atomically.

Without an initdata device the default policy stays only if the launch evidence binds no initdata
(:func:`check_no_initdata`): a non-zero HOST_DATA / MRCONFIGID names a document the owner launched
this VM with, so a missing device means the host withheld it, and the answer is deny-all.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from common.files import atomic_write, fsync_dir
from guest.api import RPCS
from guest.policy.engine import AgentPolicy
from guest.policy.errors import PolicyError

__all__ = [
    "DEFAULT_POLICY_FILE",
    "MEASURED_DIR",
    "EvidenceLaunchConfig",
    "FixedLaunchConfig",
    "LaunchConfigSource",
    "MeasuredConfigError",
    "check_no_initdata",
    "deny_all_policy",
    "find_initdata_device",
    "install_measured_policy",
    "write_measured_files",
]

log = logging.getLogger("guest.measured")

DEFAULT_POLICY_FILE = Path("/etc/kata-opa/default-policy.rego")
MEASURED_DIR = Path("/run/measured-cfg")
POLICY_KEY = "policy.rego"
FIELD_SIZES = {"snp": 32, "tdx": 48}  # HOST_DATA, MRCONFIGID (attestation.initdata has the same names)
INITDATA_MAGIC = b"initdata"
# attestation.initdata is imported where it is used: the attestation package pulls in `cryptography`
# (about 14 MiB of RSS), which a guest without an initdata device never needs.


class MeasuredConfigError(Exception):
    """The measured configuration cannot be trusted or installed; the text names the step."""


class LaunchConfigSource(Protocol):
    """Reads the launch-time config digest the TEE measured: HOST_DATA (snp) or MRCONFIGID (tdx)."""

    @property
    def platform(self) -> str: ...

    def read(self) -> bytes: ...


@dataclass(frozen=True)
class FixedLaunchConfig:
    """A known value (simulated TEE, tests)."""

    platform: str
    value: bytes

    def read(self) -> bytes:
        return self.value


class EvidenceLaunchConfig:
    """Adapter over an attestation.evidence.EvidenceProvider: fetch a report and read the field."""

    def __init__(self, provider: object) -> None:
        self._provider = provider

    @property
    def platform(self) -> str:
        return str(getattr(self._provider, "platform", ""))

    def read(self) -> bytes:
        evidence = self._provider.get_evidence(bytes(64))  # type: ignore[attr-defined]
        if evidence.platform == "snp":
            from attestation import parse_report

            return bytes(parse_report(evidence.report).host_data)
        if evidence.platform == "tdx":
            from attestation import parse_quote

            return bytes(parse_quote(evidence.report).body.mr_config_id)
        raise MeasuredConfigError(f"reading launch config: unsupported platform {evidence.platform!r}")


def find_initdata_device(candidates: Iterable[Path] | None = None) -> Path | None:
    """The first block device starting with the initdata magic, like kata-agent's scan."""
    if candidates is None:
        dev = Path("/dev")
        candidates = sorted([*dev.glob("vd*"), *dev.glob("sd*")])
    for path in candidates:
        try:
            with open(path, "rb") as stream:
                if stream.read(len(INITDATA_MAGIC)) == INITDATA_MAGIC:
                    return path
        except OSError:
            continue
    return None


def _check_key(key: str) -> None:
    if not key or key in (".", "..") or "/" in key or "\0" in key:
        raise MeasuredConfigError(f"writing measured config: invalid [data] key {key!r}")


def write_measured_files(data: Mapping[str, str], directory: Path) -> None:
    """Write each entry atomically as ``directory/<key>`` (mode 0644 files, 0755 directory)."""
    for key in data:
        _check_key(key)
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    for key, value in data.items():
        atomic_write(directory / key, value.encode("utf-8"), mode=0o644, sync_dir=False)
    fsync_dir(directory)  # one directory fsync makes all the renames durable


def deny_all_policy(reason: str) -> str:
    """A policy denying every checked request; each denial prints ``reason`` for the host to see."""
    text = json.dumps(f"guest-agent: measured policy not installed: {reason}")
    lines = ["package agent_policy", "", "import future.keywords.if", "",
             "default AllowRequestsFailingPolicy := false"]
    for endpoint in sorted({rpc.endpoint for rpc in RPCS.values() if rpc.checked}):
        lines += [f"default {endpoint} := false", f"{endpoint} if {{", f"    print({text})", "    false", "}"]
    return "\n".join(lines) + "\n"


def _field(platform: str) -> str:
    return "HOST_DATA" if platform == "snp" else "MRCONFIGID"


def check_no_initdata(policy: AgentPolicy, source: LaunchConfigSource | None) -> bool:
    """No initdata device was found: keep the default policy only if the TEE binds no initdata.

    Returns True when the default policy stays (all-zero HOST_DATA / MRCONFIGID, or no evidence
    source at all, i.e. ``--evidence none``). A non-zero binding, a value of the wrong size or
    evidence that cannot be read installs a deny-all policy naming the reason and returns False.
    """
    if source is None:
        log.warning("event=no_initdata_device binding=unchecked msg=%s",
                    json.dumps("no TEE evidence source: default policy stays in force"))
        return True
    try:
        size = FIELD_SIZES.get(source.platform)
        if size is None:
            raise MeasuredConfigError(f"reading launch config: unsupported platform {source.platform!r}")
        field = _field(source.platform)
        try:
            measured = source.read()
        except Exception as exc:  # the evidence provider's own errors, whatever their type
            raise MeasuredConfigError(f"reading launch config: {type(exc).__name__}: {exc}") from exc
        if len(measured) != size:
            raise MeasuredConfigError(f"{field} has {len(measured)} bytes, expected {size}")
        if any(measured):
            raise MeasuredConfigError(
                f"the launch evidence binds initdata ({field} {measured.hex()}) but no initdata device "
                "was found: the document it names was withheld"
            )
    except MeasuredConfigError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.error("event=measured_config_failed device=none error=%s", json.dumps(reason))
        policy.set_policy(deny_all_policy(reason))
        return False
    log.warning("event=no_initdata_device binding=zero field=%s msg=%s", field,
                json.dumps("the launch evidence binds no initdata: default policy stays in force"))
    return True


def _verified(raw: bytes, source: LaunchConfigSource | None) -> Any:
    from attestation import initdata

    parsed = initdata.parse(raw)
    if source is None:
        log.warning("event=initdata_unbound msg=%s",
                    json.dumps("no TEE evidence: initdata digest not checked"))
        return parsed
    size = FIELD_SIZES.get(source.platform)
    if size is None:
        raise MeasuredConfigError(f"reading launch config: unsupported platform {source.platform!r}")
    expected = initdata.platform_digest(parsed.hash(raw), size)
    measured = source.read()
    if not hmac.compare_digest(expected, measured):
        field = _field(source.platform)
        raise MeasuredConfigError(
            f"initdata digest {expected.hex()} does not match {field} {measured.hex()}"
        )
    return parsed


def install_measured_policy(
    policy: AgentPolicy,
    device: Path,
    source: LaunchConfigSource | None,
    measured_dir: Path = MEASURED_DIR,
) -> bool:
    """Install the policy from the initdata on ``device``. Returns True on success.

    On failure a deny-all policy carrying the error is installed instead and False is returned.
    """
    from attestation import initdata

    try:
        raw = initdata.read_device(device)
        parsed = _verified(raw, source)
        write_measured_files(parsed.data, measured_dir)
        text = parsed.data.get(POLICY_KEY)
        if text is not None:
            policy.set_policy(text)
        log.warning("event=measured_config_installed device=%s keys=%s policy=%s", device,
                    json.dumps(sorted(parsed.data)), str(text is not None).lower())
        return True
    except (OSError, initdata.InitdataError, MeasuredConfigError, PolicyError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.error("event=measured_config_failed device=%s error=%s", device, json.dumps(reason))
        policy.set_policy(deny_all_policy(reason))
        return False
