"""Initdata -> policy: device scan, digest binding to HOST_DATA/MRCONFIGID, atomic files, deny-all."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from kata_testdata import POLICIES

from attestation import initdata
from guest.measured import (
    EvidenceLaunchConfig,
    FixedLaunchConfig,
    deny_all_policy,
    find_initdata_device,
    install_measured_policy,
)
from guest.policy.engine import AgentPolicy
from guest.policy.errors import PolicyDeniedError

ALLOW_START = (
    "package agent_policy\n\ndefault StartContainerRequest := true\ndefault PauseContainerRequest := false\n"
)


def make_device(tmp: Path, data: dict[str, str], algorithm: str = "sha256") -> tuple[Path, bytes]:
    raw = initdata.encode(initdata.Initdata("0.1.0", algorithm, data))
    device = tmp / "vdb"
    device.write_bytes(initdata.encode_device(raw))
    return device, raw


def default_policy() -> AgentPolicy:
    p = AgentPolicy()
    p.set_policy("package agent_policy\n\ndefault StartContainerRequest := false\n")
    return p


@pytest.mark.parametrize(("platform", "size"), [("snp", 32), ("tdx", 48)])
@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_bound_initdata_installs_policy_and_files(
    tmp_path: Path, platform: str, size: int, algorithm: str
) -> None:
    device, raw = make_device(tmp_path, {"policy.rego": ALLOW_START, "aa.toml": "x = 1\n"}, algorithm)
    digest = hashlib.new(algorithm, raw).digest()
    source = FixedLaunchConfig(platform, digest[:size].ljust(size, b"\0"))
    p = default_policy()
    out = tmp_path / "measured"
    assert install_measured_policy(p, device, source, out)
    assert p.evaluate("StartContainerRequest", {}).allowed
    assert (out / "policy.rego").read_text() == ALLOW_START
    assert (out / "aa.toml").read_text() == "x = 1\n"
    assert sorted(x.name for x in out.iterdir()) == ["aa.toml", "policy.rego"]  # no temp files left


@pytest.mark.parametrize(
    "bad",
    ["digest", "magic", "toml", "version", "platform", "key", "rego"],
)
def test_any_failure_installs_deny_all_with_reason(tmp_path: Path, bad: str) -> None:
    data = {"policy.rego": ALLOW_START}
    if bad == "key":
        data = {"../escape": "x"}
    if bad == "rego":
        data = {"policy.rego": "package agent_policy\nthis is not rego"}
    device, raw = make_device(tmp_path, data)
    good = FixedLaunchConfig("snp", hashlib.sha256(raw).digest())
    source = good
    if bad == "digest":
        source = FixedLaunchConfig("snp", bytes(32))
    elif bad == "magic":
        device.write_bytes(b"imgpullr" + device.read_bytes()[8:])
    elif bad == "toml":
        device.write_bytes(initdata.encode_device(b"version = [broken"))
    elif bad == "version":
        device.write_bytes(initdata.encode_device(b"version = '9.9'\nalgorithm = 'sha256'\n"))
    elif bad == "platform":
        source = FixedLaunchConfig("sgx", bytes(32))
    p = default_policy()
    assert not install_measured_policy(p, device, source, tmp_path / "measured")
    with pytest.raises(PolicyDeniedError) as err:
        p.check("StartContainerRequest", {})
    assert "measured policy not installed" in err.value.prints
    with pytest.raises(PolicyDeniedError):  # the host cannot replace it with SetPolicy either
        p.check("SetPolicyRequest", {"policy": ALLOW_START})
    assert not (tmp_path / "escape").exists()


def test_deny_all_policy_covers_every_checked_endpoint() -> None:
    p = AgentPolicy()
    p.set_policy(deny_all_policy('quote " and \\ survive'))
    for endpoint in ("CreateContainerRequest", "ExecProcessRequest", "CopyFileRequest", "ReadStreamRequest"):
        with pytest.raises(PolicyDeniedError) as err:
            p.check(endpoint, {})
        assert 'quote " and \\ survive' in err.value.prints
    assert not p.allow_failures


def test_find_initdata_device(tmp_path: Path) -> None:
    other = tmp_path / "vda"
    other.write_bytes(b"\0" * 512)
    device, _ = make_device(tmp_path, {})
    missing = tmp_path / "sdz"
    assert find_initdata_device([missing, other, device]) == device
    assert find_initdata_device([other]) is None


def test_evidence_adapter_reads_snp_host_data(tmp_path: Path) -> None:
    from attestation import testing as simulated
    device, raw = make_device(tmp_path, {"policy.rego": ALLOW_START})
    provider = simulated.SimulatedSnpProvider(host_data=hashlib.sha256(raw).digest())
    p = default_policy()
    assert install_measured_policy(p, device, EvidenceLaunchConfig(provider), tmp_path / "m")
    assert p.evaluate("StartContainerRequest", {}).allowed
    wrong = simulated.SimulatedSnpProvider(host_data=bytes(32))
    assert not install_measured_policy(p, device, EvidenceLaunchConfig(wrong), tmp_path / "m")


def test_real_generated_policy_via_initdata(tmp_path: Path) -> None:
    text = (POLICIES / "copyfile" / "policy.rego").read_text()
    device, raw = make_device(tmp_path, {"policy.rego": text})
    p = default_policy()
    source = FixedLaunchConfig("snp", hashlib.sha256(raw).digest())
    assert install_measured_policy(p, device, source, tmp_path / "m")
    assert p.policy_name == "agent_policy"
    assert p.evaluate("StartContainerRequest", {}).allowed


def test_serve_initdata_without_tee_fails_closed(tmp_path: Path) -> None:
    import argparse

    from guest.cli import _install_initdata

    device, raw = make_device(tmp_path, {"policy.rego": ALLOW_START})
    if Path("/dev/sev-guest").exists() or Path("/sys/kernel/config/tsm/report").exists():
        pytest.skip("this machine has a TEE interface")
    p = default_policy()
    args = argparse.Namespace(initdata=str(device), evidence="auto", measured_dir=str(tmp_path / "m"))
    _install_initdata(p, args)
    with pytest.raises(PolicyDeniedError) as err:
        p.check("StartContainerRequest", {})
    assert "reading launch config" in err.value.prints
    args = argparse.Namespace(initdata=str(device), evidence="snp:" + hashlib.sha256(raw).hexdigest(),
                              measured_dir=str(tmp_path / "m"))
    _install_initdata(p, args)
    assert p.evaluate("StartContainerRequest", {}).allowed
