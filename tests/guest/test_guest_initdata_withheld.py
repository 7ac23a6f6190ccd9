"""The host withholds the initdata device: a non-zero launch binding without its document is deny-all.

The owner launches the VM with initdata whose digest the TEE measured into HOST_DATA (SNP) or
MRCONFIGID (TDX). The host then does not attach the initdata disk, hoping the agent keeps the
image's default policy. Here the attack runs against ``guest serve --initdata auto`` as a real
process (the host's view: a ttrpc request allowed by the default policy) and against the library
with reports from the simulated SNP and TDX providers (the real parsers read the field).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from agent_harness import FakeAgent

from attestation import initdata
from guest.cli import _install_initdata
from guest.measured import (
    EvidenceLaunchConfig,
    FixedLaunchConfig,
    check_no_initdata,
    find_initdata_device,
    install_measured_policy,
)
from guest.policy.engine import AgentPolicy
from guest.policy.errors import PolicyDeniedError
from guest.protocols import agent_pb2
from guest.ttrpc import Client, Code, Request, Server, parse_address

REPO = Path(__file__).resolve().parents[2]
# A default policy that lets StartContainer through: the point is that the host must not keep it.
PERMISSIVE = "package agent_policy\n\ndefault StartContainerRequest := true\n"
INITDATA = initdata.encode(initdata.Initdata("0.1.0", "sha256", {"policy.rego": PERMISSIVE}))
BOUND = {"snp": hashlib.sha256(INITDATA).digest(), "tdx": hashlib.sha256(INITDATA).digest().ljust(48, b"\0")}
FIELD = {"snp": "HOST_DATA", "tdx": "MRCONFIGID"}


@pytest.fixture(autouse=True)
def _no_initdata_device_here() -> None:
    if find_initdata_device() is not None:
        pytest.skip("this machine has an initdata device, so `--initdata auto` would find it")


def _permissive() -> AgentPolicy:
    p = AgentPolicy()
    p.set_policy(PERMISSIVE)
    return p


async def _serve_and_start(tmp_path: Path, evidence: str) -> tuple[int, str, str, int]:
    """``guest serve --initdata auto --evidence <evidence>``; StartContainer from the host's side."""
    policy = tmp_path / "default.rego"
    policy.write_text(PERMISSIVE)
    agent = FakeAgent()
    server = Server(agent.handlers())  # type: ignore[arg-type]
    await server.start(parse_address(f"unix://{tmp_path}/agent.sock"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "guest", "serve", "--listen", f"unix://{tmp_path}/proxy.sock",
        "--upstream", f"unix://{tmp_path}/agent.sock", "--policy", str(policy), "--initdata", "auto",
        "--evidence", evidence, "--measured-dir", str(tmp_path / "measured"),
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=asyncio.subprocess.PIPE,
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60  # a loaded machine starts Python slowly
        while not (tmp_path / "proxy.sock").exists():
            assert proc.returncode is None and loop.time() < deadline, "guest serve did not start"
            await asyncio.sleep(0.05)
        client = await Client().connect(parse_address(f"unix://{tmp_path}/proxy.sock"))
        reply = await client.request(Request("grpc.AgentService", "StartContainer",
                                             agent_pb2.StartContainerRequest(container_id="c").SerializeToString()))
        await client.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
        await server.close()
    return reply.status.code, reply.status.message, stderr.decode(), len(agent.received)


@pytest.mark.parametrize("platform", ["snp", "tdx"])
async def test_withheld_initdata_with_a_binding_is_deny_all(tmp_path: Path, platform: str) -> None:
    code, message, log, forwarded = await _serve_and_start(tmp_path, f"{platform}:{BOUND[platform].hex()}")
    assert code == Code.PERMISSION_DENIED, message
    assert forwarded == 0
    assert "no initdata device was found" in message and FIELD[platform] in message
    line = next(x for x in log.splitlines() if "event=measured_config_failed" in x)
    assert "device=none" in line and "withheld" in line and BOUND[platform].hex() in line
    assert not (tmp_path / "measured").exists()


@pytest.mark.parametrize("platform", ["snp", "tdx"])
async def test_zero_binding_without_device_keeps_the_default(tmp_path: Path, platform: str) -> None:
    size = len(BOUND[platform])
    code, message, log, forwarded = await _serve_and_start(tmp_path, f"{platform}:{'00' * size}")
    assert code == Code.OK, message
    assert forwarded == 1
    assert "event=no_initdata_device binding=zero" in log and f"field={FIELD[platform]}" in log


# -- the library, with evidence from the simulated providers -------------------------------------------


def _simulated(platform: str, binding: bytes) -> EvidenceLaunchConfig:
    if platform == "snp":
        from attestation.testing import SimulatedSnpProvider

        return EvidenceLaunchConfig(SimulatedSnpProvider(host_data=binding))
    from attestation.testing import SimulatedTdxProvider

    return EvidenceLaunchConfig(SimulatedTdxProvider(mr_config_id=binding))


@pytest.mark.parametrize("platform", ["snp", "tdx"])
def test_simulated_evidence_binding_decides(platform: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="guest.measured")
    p = _permissive()
    assert not check_no_initdata(p, _simulated(platform, BOUND[platform]))
    with pytest.raises(PolicyDeniedError) as err:
        p.check("StartContainerRequest", {})
    assert "was withheld" in err.value.prints
    with pytest.raises(PolicyDeniedError):  # and SetPolicy cannot lift it
        p.check("SetPolicyRequest", {"policy": PERMISSIVE})
    assert any("event=measured_config_failed" in r.getMessage() for r in caplog.records)

    p = _permissive()
    assert check_no_initdata(p, _simulated(platform, bytes(len(BOUND[platform]))))
    assert p.evaluate("StartContainerRequest", {}).allowed


class _Broken:
    platform = "snp"

    def read(self) -> bytes:
        raise OSError(5, "Input/output error")


@pytest.mark.parametrize("source", [FixedLaunchConfig("snp", bytes(31)), FixedLaunchConfig("tdx", bytes(32)),
                                    FixedLaunchConfig("sgx", bytes(32)), _Broken()], ids=repr)
def test_unreadable_or_malformed_binding_is_deny_all(source: object) -> None:
    p = _permissive()
    assert not check_no_initdata(p, source)  # type: ignore[arg-type]
    assert not p.evaluate("StartContainerRequest", {}).allowed


def test_no_evidence_source_keeps_the_default() -> None:
    p = _permissive()
    assert check_no_initdata(p, None)  # --evidence none: the operator chose no binding at all
    assert p.evaluate("StartContainerRequest", {}).allowed


def test_auto_evidence_without_a_tee_keeps_the_default(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from attestation.providers.detect import detect_platform

    if detect_platform() is not None:
        pytest.skip("this machine is a TEE guest")
    caplog.set_level(logging.WARNING, logger="guest.cli")
    p = _permissive()
    _install_initdata(p, argparse.Namespace(initdata="auto", evidence="auto", measured_dir=str(tmp_path)))
    assert p.evaluate("StartContainerRequest", {}).allowed
    assert any("binding=unchecked" in r.getMessage() and "no launch binding to check" in r.getMessage()
               for r in caplog.records)


def test_probing_for_a_binding_does_not_load_cryptography(tmp_path: Path) -> None:
    # The no-device path runs on every boot; it must not pull in the ~14 MiB the verifiers need.
    code = ("import argparse, sys\n"
            "from guest.cli import _install_initdata\n"
            "from guest.policy.engine import AgentPolicy\n"
            "p = AgentPolicy()\n"
            f"p.set_policy({PERMISSIVE!r})\n"
            "_install_initdata(p, argparse.Namespace(initdata='auto', evidence='auto',\n"
            f"                                        measured_dir={str(tmp_path)!r}))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("platform", ["snp", "tdx"])
def test_device_present_with_mismatching_digest_is_deny_all(tmp_path: Path, platform: str) -> None:
    other = initdata.encode(initdata.Initdata("0.1.0", "sha256", {"policy.rego": PERMISSIVE + "# other\n"}))
    device = tmp_path / "vdb"
    device.write_bytes(initdata.encode_device(other))
    p = _permissive()
    assert not install_measured_policy(p, device, _simulated(platform, BOUND[platform]), tmp_path / "m")
    with pytest.raises(PolicyDeniedError) as err:
        p.check("StartContainerRequest", {})
    assert f"does not match {FIELD[platform]}" in err.value.prints
    assert not (tmp_path / "m").exists()
