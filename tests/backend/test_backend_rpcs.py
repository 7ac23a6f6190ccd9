"""UpdateContainer, GetDiagnosticData, IPTables and the policy entries of the RPCs beyond a pod's
run (the VM side is in test_backend_vm.py): mapping, hostile values, nothing changed on refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guest.backend.diagnostics import MAX_TERMINATION_LOG, termination_log
from guest.backend.errors import AgentError, InvalidRequestError
from guest.backend.layout import Layout
from guest.backend.resources import apply_update, plan_update
from guest.policy.engine import AgentPolicy
from guest.protocols import oci_pb2
from tests.support import shared_path

REPO = Path(__file__).resolve().parents[2]
KATA_RULES = shared_path("kata-policy", "kata", "rules.rego")


def _resources(**fields: int) -> oci_pb2.LinuxResources:
    r = oci_pb2.LinuxResources()
    for dotted, value in fields.items():
        group, name = dotted.split("__")
        setattr(getattr(r, group), name, value)
    return r


def test_update_maps_onto_cgroup_v2_files_like_the_oci_runtimes() -> None:
    plan = plan_update(_resources(Memory__Limit=64 << 20, Memory__Swap=96 << 20, Memory__Reservation=32 << 20,
                                  CPU__Shares=1024, CPU__Quota=50000, CPU__Period=100000, Pids__Limit=-1))
    assert plan == [("memory.max", str(64 << 20)), ("memory.low", str(32 << 20)),
                    ("memory.swap.max", str(32 << 20)), ("cpu.weight", "39"), ("cpu.max", "50000 100000"),
                    ("pids.max", "max")]
    assert plan_update(_resources(Memory__Limit=-1, CPU__Quota=-1)) == [("memory.max", "max"),
                                                                        ("cpu.max", "max 100000")]
    assert plan_update(_resources(CPU__Shares=2)) == [("cpu.weight", "1")]
    assert plan_update(_resources(CPU__Shares=262144)) == [("cpu.weight", "10000")]
    assert plan_update(oci_pb2.LinuxResources()) == []


@pytest.mark.parametrize(("fields", "named"), [
    ({"Memory__Limit": -5}, "Memory.Limit"),
    ({"Memory__Limit": 4095}, "Memory.Limit"),
    ({"Memory__Limit": -(1 << 62)}, "Memory.Limit"),
    ({"Memory__Reservation": -2}, "Memory.Reservation"),
    ({"Memory__Limit": 64 << 20, "Memory__Swap": 32 << 20}, "Memory.Swap"),
    ({"Memory__Swap": 32 << 20}, "Memory.Swap"),
    ({"Memory__Swappiness": 101}, "Memory.Swappiness"),
    ({"Memory__Kernel": 1 << 20}, "Memory.Kernel"),
    ({"CPU__Shares": 1}, "CPU.Shares"),
    ({"CPU__Shares": 1 << 63}, "CPU.Shares"),
    ({"CPU__Quota": 999}, "CPU.Quota"),
    ({"CPU__Quota": -2}, "CPU.Quota"),
    ({"CPU__Quota": 1 << 50}, "CPU.Quota"),
    ({"CPU__Quota": 20000, "CPU__Period": 999}, "CPU.Period"),
    ({"CPU__Quota": 20000, "CPU__Period": 1_000_001}, "CPU.Period"),
    ({"CPU__Period": 100000}, "CPU.Period"),
    ({"CPU__RealtimeRuntime": 1000}, "CPU.RealtimeRuntime"),
    ({"Pids__Limit": -7}, "Pids.Limit"),
    ({"Memory__Limit": 64 << 20, "Pids__Limit": -3}, "Pids.Limit"),  # a later bad field refuses it all
])
def test_hostile_limits_are_refused_naming_the_field(fields: dict[str, int], named: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        plan_update(_resources(**fields))
    assert named in str(info.value) and info.value.code.name == "INVALID_ARGUMENT"


def test_a_write_the_kernel_refuses_restores_what_was_written(tmp_path: Path) -> None:
    cgroup = tmp_path / "kata" / "c1"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "pids.max").mkdir()  # the write fails with EISDIR, as a kernel EINVAL would
    plan = plan_update(_resources(Memory__Limit=64 << 20, Pids__Limit=10))
    with pytest.raises(AgentError, match=r"pids\.max"):
        apply_update(cgroup, plan)
    assert (cgroup / "memory.max").read_text() == "max"
    with pytest.raises(AgentError, match="does not exist"):
        apply_update(tmp_path / "kata" / "absent", plan)


def _spec(source: str, destination: str = "/dev/termination-log", **annotations: str) -> dict[str, object]:
    return {"mounts": [{"destination": destination, "type": "bind", "source": source, "options": ["rbind"]}],
            "annotations": annotations}


def test_termination_log_reads_only_an_agent_provided_regular_file(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.shared.mkdir(parents=True)
    named = "/run/kata-containers/shared/containers"
    (layout.shared / "c1-x-termination-log").write_bytes(b"last words\n")
    assert termination_log(_spec(f"{named}/c1-x-termination-log"), layout) == "last words\n"
    (layout.shared / "big").write_bytes(b"a" * (3 * MAX_TERMINATION_LOG))
    assert termination_log(_spec(f"{named}/big"), layout) == "a" * MAX_TERMINATION_LOG
    (layout.shared / "bad-utf8").write_bytes(b"\xff\xfeok")
    assert termination_log(_spec(f"{named}/bad-utf8"), layout) == "\ufffd\ufffdok"
    # the path the kubelet chose (annotation), another destination not read
    custom = _spec(f"{named}/c1-x-termination-log", "/tmp/msg",
                   **{"io.kubernetes.container.terminationMessagePath": "/tmp/msg"})
    assert termination_log(custom, layout) == "last words\n"
    assert termination_log(_spec(f"{named}/c1-x-termination-log", "/tmp/msg"), layout) == ""
    # hostile: a planted symlink, a fifo (must not block), a path outside, traversal, missing
    secret = tmp_path / "secret"
    secret.write_text("agent secret")
    (layout.shared / "link").symlink_to(secret)
    os.mkfifo(layout.shared / "fifo")
    for source in (f"{named}/link", f"{named}/fifo", str(secret), f"{named}/../../../../secret",
                   f"{named}/absent", named, "/etc/passwd"):
        assert termination_log(_spec(source), layout) == "", source
    assert termination_log({"mounts": []}, layout) == ""
    with pytest.raises(InvalidRequestError):
        termination_log(_spec(f"{named}/c1-x-termination-log",
                              **{"io.kubernetes.container.terminationMessagePath": "relative"}), layout)


_IPTABLES_CHILD = """
import asyncio, json, sys
from guest.backend.iptables import get_ip_tables, set_ip_tables
from guest.backend.processes import Reaper

async def main() -> None:
    reaper = Reaper()
    reaper.start()
    out = {}
    await set_ip_tables(reaper, False, sys.stdin.buffer.read())
    out["saved"] = (await get_ip_tables(reaper, False)).decode()
    try:
        await set_ip_tables(reaper, False, b"*filter\\n-A NOCHAIN -j DROP\\nCOMMIT\\n")
    except Exception as e:
        out["refused"] = f"{type(e).__name__}: {e}"
    out["after"] = (await get_ip_tables(reaper, False)).decode()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.root
def test_iptables_set_and_get_in_a_network_namespace_of_the_test() -> None:
    """Where the image carries iptables, Set/GetIPTables are iptables-restore/-save (here inside a
    network namespace this test creates; the host's tables are never touched)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or not Path("/usr/sbin/iptables-save").exists():
        pytest.skip("needs root, unshare and iptables")
    rules = b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 15006 -j DROP\nCOMMIT\n"
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", _IPTABLES_CHILD], input=rules,
                          capture_output=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert "-A INPUT -p tcp -m tcp --dport 15006 -j DROP" in out["saved"]
    assert "iptables-restore failed with status" in out["refused"]
    assert out["after"].count("--dport 15006") == 1  # the refused restore changed nothing


@pytest.mark.parametrize("endpoint", [
    "UpdateContainerRequest", "PauseContainerRequest", "ResumeContainerRequest", "ListInterfacesRequest",
    "ListRoutesRequest", "GetIPTablesRequest", "SetIPTablesRequest", "GetDiagnosticDataRequest",
])
def test_kata_rules_deny_these_rpcs_by_default(endpoint: str) -> None:
    policy = AgentPolicy()
    policy.set_policy(KATA_RULES.read_text() + "\npolicy_data := {\"request_defaults\": {}}\n")
    assert not policy.evaluate(endpoint, {}).allowed


def test_kata_rules_allow_the_termination_log_only_with_its_request_default() -> None:
    policy = AgentPolicy()
    flag = {"request_defaults": {"GetDiagnosticDataRequest": True}}
    policy.set_policy(KATA_RULES.read_text() + f"\npolicy_data := {json.dumps(flag)}\n")
    request = {"log_type": "termination_log", "container_id": "c1"}
    assert policy.evaluate("GetDiagnosticDataRequest", request).allowed
    assert not policy.evaluate("UpdateContainerRequest", {"container_id": "c1"}).allowed
