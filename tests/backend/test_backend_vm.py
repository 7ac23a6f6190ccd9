"""The pod VM (TCG) driven over hybrid vsock with the Kata runtime's request sequence.

One boot for the whole module: measured initdata carries a policy that allows the pod's requests
(except a CreateContainer running /bin/forbidden) and pins the busybox layer's verity parameters;
the busybox image (Debian's busybox-static) is an erofs layer with dm-verity on a second disk.
Tests run in file order, like a pod's life: sandbox → containers → exec → signals → OOM → denied
and bad requests → DestroySandbox powers the VM off.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from guest.protocols import agent_pb2, health_pb2, types_pb2
from guest.ttrpc import Code, TtrpcError
from tools.vm.pod import (
    POD_MAC,
    SANDBOX_ID,
    SHARED,
    Agent,
    build_busybox_layer,
    container_request,
    corrupt_copy,
    initdata_disk,
    pause_request,
    pod_policy,
    running_pod,
)
from tools.vm.qemu import VirtualMachine

pytestmark = pytest.mark.vm

def _empty() -> Any:
    from google.protobuf import empty_pb2

    return empty_pb2.Empty


class Pod:
    def __init__(self, vm: VirtualMachine, agent: Agent, pin: dict[str, str]) -> None:
        self.vm, self.agent, self.pin = vm, agent, pin
        self.pending: dict[str, Future[Any]] = {}

    def call(self, method: str, req: Any, reply: Any = None, timeout: float = 120) -> Any:
        return self.agent.call(method, req, reply or _empty(), timeout)

    def fails(self, method: str, req: Any, code: Code, timeout: float = 120) -> str:
        with pytest.raises(TtrpcError) as info:
            self.call(method, req, timeout=timeout)
        assert info.value.code == code, info.value.status
        return info.value.status.message

    def read_all(self, cid: str, exec_id: str, *, stderr: bool = False, limit: float = 120) -> bytes:
        out = b""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            r = self.call("ReadStderr" if stderr else "ReadStdout",
                          agent_pb2.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=32768),
                          agent_pb2.ReadStreamResponse)
            if not r.data:
                return out
            out += r.data
        raise AssertionError(f"no EOF on {cid}/{exec_id} after {limit}s: {out!r}")

    def wait(self, cid: str, exec_id: str | None = None, timeout: float = 120) -> int:
        r = self.call("WaitProcess", agent_pb2.WaitProcessRequest(container_id=cid, exec_id=exec_id or cid),
                      agent_pb2.WaitProcessResponse, timeout=timeout)
        return int(r.status)

    def copy_file(self, cid: str, name: str, data: bytes) -> str:
        path = f"{SHARED}/{cid}-0123456789abcdef-{name}"
        self.call("CopyFile", agent_pb2.CopyFileRequest(path=path, file_size=len(data), file_mode=0o100644,
                                                         dir_mode=0x800001E8, data=data))
        return path

    def create(self, cid: str, args: list[str], *, memory: int = 0, tty: bool = False,
               root: str | None = None, pin: dict[str, str] | None = None) -> None:
        hosts = self.copy_file(cid, "hosts", b"127.0.0.1 localhost\n")
        self.call("CreateContainer", container_request(cid, args, pin or self.pin, hosts=hosts, memory=memory,
                                                       tty=tty, root=root))

    def exec(self, cid: str, exec_id: str, args: list[str], tty: bool = False) -> None:
        req = agent_pb2.ExecProcessRequest(container_id=cid, exec_id=exec_id)
        req.process.Args.extend(args)
        req.process.Env.append("PATH=/bin")
        req.process.Cwd = "/"
        req.process.Terminal = tty
        self.call("ExecProcess", req)

    def ps(self) -> str:
        self.exec("c2", "ps", ["ps", "-o", "pid,args"])
        out = self.read_all("c2", "ps").decode()
        assert self.wait("c2", "ps") == 0
        return out


@pytest.fixture(scope="module")
def pod(pod_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    work = tmp_path_factory.mktemp("pod")
    layer, pin = build_busybox_layer(work)
    corrupt_copy(layer, work / "busybox-flipped.img")  # same verity parameters, one flipped bit
    initdata, hostdata = initdata_disk(work, pod_policy(pin))
    with running_pod(pod_image, work, pod_policy(pin), layer, hostdata, initdata,
                     extra_disks=(work / "busybox-flipped.img",)) as (vm, agent):
        assert "event=measured_config_installed" in vm.text()
        yield Pod(vm, agent, pin)


def test_sandbox_network_and_pause_container(pod: Pod) -> None:
    raw = pod.agent.raw("grpc.Health", "Check", health_pb2.CheckRequest().SerializeToString())
    assert health_pb2.HealthCheckResponse.FromString(raw).status == health_pb2.HealthCheckResponse.SERVING
    iface = types_pb2.Interface(device="eth0", name="eth0", mtu=1450, hwAddr=POD_MAC, type="virtual",
                                IPAddresses=[types_pb2.IPAddress(family=0, address="10.244.1.5", mask="24")])
    got = pod.call("UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=iface), types_pb2.Interface)
    assert got.name == "eth0"
    wrong = types_pb2.Interface(name="eth1", hwAddr="52:54:00:00:00:01")
    assert "Link not found" in pod.fails("UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=wrong),
                                         Code.INTERNAL)
    default = types_pb2.Route(dest="", gateway="10.244.1.1", device="eth0", family=0)
    routes = agent_pb2.Routes(Routes=[default])
    pod.call("UpdateRoutes", agent_pb2.UpdateRoutesRequest(routes=routes), agent_pb2.Routes)
    neigh = types_pb2.ARPNeighbor(toIPAddress=types_pb2.IPAddress(address="10.244.1.1"), device="eth0",
                                  lladdr="52:54:00:00:00:aa", state=0x80)
    pod.call("AddARPNeighbors", agent_pb2.AddARPNeighborsRequest(neighbors=agent_pb2.ARPNeighbors(
        ARPNeighbors=[neigh])))
    shm = agent_pb2.Storage(driver="ephemeral", source="shm", fstype="tmpfs",
                            options=["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"],
                            mount_point="/run/kata-containers/sandbox/shm")
    pod.call("CreateSandbox", agent_pb2.CreateSandboxRequest(
        hostname="busybox-pod", dns=["nameserver 10.96.0.10", "search default.svc.cluster.local", ""],
        storages=[shm], sandbox_pidns=True, sandbox_id=SANDBOX_ID))
    details = pod.call("GetGuestDetails",
                       agent_pb2.GuestDetailsRequest(mem_block_size=True, mem_hotplug_probe=True),
                       agent_pb2.GuestDetailsResponse)
    assert "erofs.multi-layer" in details.agent_details.storage_handlers
    resolv = pod.copy_file(SANDBOX_ID, "resolv.conf", b"nameserver 10.96.0.10\n")
    pod.call("CreateContainer", pause_request(resolv))
    pod.call("StartContainer", agent_pb2.StartContainerRequest(container_id=SANDBOX_ID))
    pod.pending["pause"] = pod.agent.submit("WaitProcess", agent_pb2.WaitProcessRequest(
        container_id=SANDBOX_ID, exec_id=SANDBOX_ID), agent_pb2.WaitProcessResponse, timeout=0)
    pod.pending["oom"] = pod.agent.submit("GetOOMEvent", agent_pb2.GetOOMEventRequest(), agent_pb2.OOMEvent,
                                          timeout=0)
    time.sleep(1)
    assert not pod.pending["pause"].done() and not pod.pending["oom"].done()


def test_busybox_prints_and_exit_code_comes_back(pod: Pod) -> None:
    script = ("echo hello from busybox; echo to-stderr >&2; hostname; cat /etc/resolv.conf 2>&1; "
              "ip -4 addr show eth0; ip route; exit 3")
    pod.create("c1", ["sh", "-c", script])
    pod.call("StartContainer", agent_pb2.StartContainerRequest(container_id="c1"))
    out = pod.read_all("c1", "c1").decode()
    err = pod.read_all("c1", "c1", stderr=True).decode()
    assert pod.wait("c1") == 3
    assert out.startswith("hello from busybox\nbusybox-pod\n"), out
    assert "inet 10.244.1.5/24" in out and "default via 10.244.1.1 dev eth0" in out, out
    assert err == "to-stderr\n"
    assert "NOT_FOUND" not in out
    second = pod.fails("WaitProcess", agent_pb2.WaitProcessRequest(container_id="c1", exec_id="c1"),
                       Code.NOT_FOUND)
    assert "c1" in second
    pod.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="c1"))
    pod.vm.wait_for(r"event=container_removed container=c1 mounts_left=0 cgroup_left=false "
                    r"bundle_left=false", 30)


def test_exec_with_stdin_and_with_a_tty_and_stats(pod: Pod) -> None:
    pod.create("c2", ["sh", "-c", "echo up; exec sleep 100000"])
    pod.call("StartContainer", agent_pb2.StartContainerRequest(container_id="c2"))
    first = pod.call("ReadStdout", agent_pb2.ReadStreamRequest(container_id="c2", exec_id="c2", len=100),
                     agent_pb2.ReadStreamResponse)
    assert first.data == b"up\n"
    pod.exec("c2", "e1", ["cat"])
    assert pod.call("WriteStdin", agent_pb2.WriteStreamRequest(container_id="c2", exec_id="e1",
                                                               data=b"ping over stdin\n"),
                    agent_pb2.WriteStreamResponse).len == 16
    pod.call("CloseStdin", agent_pb2.CloseStdinRequest(container_id="c2", exec_id="e1"))
    assert pod.read_all("c2", "e1") == b"ping over stdin\n"
    assert pod.wait("c2", "e1") == 0
    pod.exec("c2", "e2", ["sh", "-c", "read x; stty size; echo got:$x; tty"], tty=True)
    pod.call("TtyWinResize",
             agent_pb2.TtyWinResizeRequest(container_id="c2", exec_id="e2", row=33, column=99))
    pod.call("WriteStdin", agent_pb2.WriteStreamRequest(container_id="c2", exec_id="e2", data=b"hi\n"),
             agent_pb2.WriteStreamResponse)
    out = pod.read_all("c2", "e2").decode()
    assert "33 99" in out and "got:hi" in out and "/dev/pts/" in out, out
    assert pod.wait("c2", "e2") == 0
    assert "no tty" in pod.fails("TtyWinResize", agent_pb2.TtyWinResizeRequest(
        container_id="c2", exec_id="c2", row=1, column=1), Code.UNAVAILABLE)
    stats = pod.call("StatsContainer", agent_pb2.StatsContainerRequest(container_id="c2"),
                     agent_pb2.StatsContainerResponse)
    cg = stats.cgroup_stats
    assert cg.memory_stats.usage.usage > 0 and cg.cpu_stats.cpu_usage.total_usage > 0, stats
    assert cg.pids_stats.current >= 1
    assert any(n.name == "eth0" for n in stats.network_stats)
    metrics = pod.call("GetMetrics", agent_pb2.GetMetricsRequest(), agent_pb2.Metrics).metrics
    assert "\nkata_agent_containers 2\n" in metrics  # pause + c2
    rss = re.search(r"^kata_agent_process_resident_memory_bytes (\d+)$", metrics, re.M)
    assert rss is not None and int(rss.group(1)) > 10 << 20, metrics


def _cgroup_file(pod: Pod, cid: str, name: str) -> str:
    """What the container itself sees in its cgroup (its cgroup namespace root)."""
    exec_id = f"cat-{name.replace('.', '-')}-{time.monotonic_ns()}"
    pod.exec(cid, exec_id, ["cat", f"/sys/fs/cgroup/{name}"])
    out = pod.read_all(cid, exec_id).decode().strip()
    assert pod.wait(cid, exec_id) == 0
    return out


def test_pause_resume_update_and_termination_log(pod: Pod) -> None:
    log_path = pod.copy_file("c8", "termination-log", b"")
    hosts = pod.copy_file("c8", "hosts", b"127.0.0.1 localhost\n")
    script = ("echo goodbye-from-c8 > /dev/termination-log; i=0; "
              "while :; do i=$((i+1)); echo tick$i; sleep 0.2; done")
    req = container_request("c8", ["sh", "-c", script], pod.pin, hosts=hosts)
    req.OCI.Mounts.add(destination="/dev/termination-log", type="bind", source=log_path,
                       options=["rbind", "rprivate", "rw"])
    pod.call("CreateContainer", req)
    pod.call("StartContainer", agent_pb2.StartContainerRequest(container_id="c8"))
    read = agent_pb2.ReadStreamRequest(container_id="c8", exec_id="c8", len=4096)
    assert pod.call("ReadStdout", read, agent_pb2.ReadStreamResponse).data.startswith(b"tick")
    # termination log: the bind source of /dev/termination-log, as the container wrote it
    diag = pod.call("GetDiagnosticData", agent_pb2.GetDiagnosticDataRequest(
        log_type="termination_log", container_id="c8"), agent_pb2.GetDiagnosticDataResponse)
    assert diag.data == "goodbye-from-c8\n"
    pod.fails("GetDiagnosticData", agent_pb2.GetDiagnosticDataRequest(log_type="kernel", container_id="c8"),
              Code.INVALID_ARGUMENT)
    assert "Invalid container id" in pod.fails("GetDiagnosticData", agent_pb2.GetDiagnosticDataRequest(
        log_type="termination_log", container_id="nope"), Code.INVALID_ARGUMENT)
    # paused: no output, no CPU time; resumed: output again
    pod.call("PauseContainer", agent_pb2.PauseContainerRequest(container_id="c8"))
    stats = agent_pb2.StatsContainerRequest(container_id="c8")
    cpu0 = pod.call("StatsContainer", stats, agent_pb2.StatsContainerResponse).cgroup_stats.cpu_stats
    pending = pod.agent.submit("ReadStdout", read, agent_pb2.ReadStreamResponse)
    time.sleep(1)
    if pending.done():  # what the container wrote before it froze
        pending = pod.agent.submit("ReadStdout", read, agent_pb2.ReadStreamResponse)
    time.sleep(2.5)
    assert not pending.done(), "a paused container made progress"
    cpu1 = pod.call("StatsContainer", stats, agent_pb2.StatsContainerResponse).cgroup_stats.cpu_stats
    assert cpu1.cpu_usage.total_usage == cpu0.cpu_usage.total_usage
    pod.call("ResumeContainer", agent_pb2.ResumeContainerRequest(container_id="c8"))
    assert pending.result(60).data.startswith(b"tick")
    assert "Invalid container id" in pod.fails("PauseContainer",
                                               agent_pb2.PauseContainerRequest(container_id="nope"),
                                               Code.INVALID_ARGUMENT)
    # UpdateContainer: cgroup v2 limits, seen from inside the container
    upd = agent_pb2.UpdateContainerRequest(container_id="c8")
    upd.resources.Memory.Limit = 64 << 20
    upd.resources.CPU.Shares = 512
    upd.resources.CPU.Quota = 50000
    upd.resources.CPU.Period = 100000
    upd.resources.Pids.Limit = 32
    pod.call("UpdateContainer", upd)
    assert _cgroup_file(pod, "c8", "memory.max") == str(64 << 20)
    assert _cgroup_file(pod, "c8", "cpu.max") == "50000 100000"
    assert _cgroup_file(pod, "c8", "cpu.weight") == "20"  # 1 + (512 - 2) * 9999 // 262142
    assert _cgroup_file(pod, "c8", "pids.max") == "32"
    for field, value in (("Memory.Limit", -5), ("Memory.Limit", 100), ("CPU.Quota", 10), ("CPU.Period", 5),
                         ("CPU.Shares", 1 << 40), ("Pids.Limit", -7), ("Memory.Kernel", 1 << 20)):
        bad = agent_pb2.UpdateContainerRequest(container_id="c8")
        group, name = field.split(".")
        setattr(getattr(bad.resources, group), name, value)
        if field == "CPU.Period":
            bad.resources.CPU.Quota = 20000
        assert field in pod.fails("UpdateContainer", bad, Code.INVALID_ARGUMENT), field
    assert _cgroup_file(pod, "c8", "memory.max") == str(64 << 20)  # refused requests changed nothing
    assert _cgroup_file(pod, "c8", "cpu.max") == "50000 100000"
    assert _cgroup_file(pod, "c8", "pids.max") == "32"
    for cid in ("nope", "../c8"):
        pod.fails("UpdateContainer", agent_pb2.UpdateContainerRequest(container_id=cid),
                  Code.INVALID_ARGUMENT)
    pod.call("SignalProcess", agent_pb2.SignalProcessRequest(container_id="c8", exec_id="", signal=9))
    assert pod.wait("c8") == 137
    pod.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="c8"))


def test_list_interfaces_routes_and_iptables(pod: Pod) -> None:
    ifaces = pod.call("ListInterfaces", agent_pb2.ListInterfacesRequest(), agent_pb2.Interfaces).Interfaces
    by_name = {i.name: i for i in ifaces}
    eth0 = by_name["eth0"]
    assert eth0.hwAddr == POD_MAC and eth0.mtu == 1450 and eth0.raw_flags & 0x1  # IFF_UP
    v4_addresses = [(a.address, a.mask) for a in eth0.IPAddresses if a.family == 0]
    assert v4_addresses == [("10.244.1.5", "24")], eth0
    assert any(a.address == "127.0.0.1" and a.mask == "8" for a in by_name["lo"].IPAddresses)
    routes = pod.call("ListRoutes", agent_pb2.ListRoutesRequest(), agent_pb2.Routes).Routes
    v4 = {(r.dest, r.gateway, r.device) for r in routes if r.family == 0}
    assert ("", "10.244.1.1", "eth0") in v4 and ("10.244.1.0/24", "", "eth0") in v4, routes
    assert not any(r.dest.startswith("127.") for r in routes)  # the local table is not listed
    # no iptables in the image: kata-agent's spawn error, for both directions
    not_found = 'Os { code: 2, kind: NotFound, message: "No such file or directory" }'
    for is_ipv6 in (False, True):
        assert not_found in pod.fails("GetIPTables", agent_pb2.GetIPTablesRequest(is_ipv6=is_ipv6),
                                      Code.INTERNAL)
        assert not_found in pod.fails("SetIPTables", agent_pb2.SetIPTablesRequest(
            is_ipv6=is_ipv6, data=b"*filter\nCOMMIT\n"), Code.INTERNAL)


def test_sigterm_then_sigkill(pod: Pod) -> None:
    pod.create("c3", ["sh", "-c", "trap 'echo got-term' TERM; echo ready; while :; do sleep 1; done"])
    pod.call("StartContainer", agent_pb2.StartContainerRequest(container_id="c3"))
    ready = pod.call("ReadStdout", agent_pb2.ReadStreamRequest(container_id="c3", exec_id="c3", len=100),
                     agent_pb2.ReadStreamResponse)
    assert ready.data == b"ready\n"
    waiting = pod.agent.submit("WaitProcess", agent_pb2.WaitProcessRequest(container_id="c3", exec_id="c3"),
                               agent_pb2.WaitProcessResponse, timeout=0)
    pod.call("SignalProcess", agent_pb2.SignalProcessRequest(container_id="c3", exec_id="", signal=15))
    term = pod.call("ReadStdout", agent_pb2.ReadStreamRequest(container_id="c3", exec_id="c3", len=100),
                    agent_pb2.ReadStreamResponse, timeout=60)
    assert term.data == b"got-term\n"
    assert not waiting.done()  # it handled SIGTERM and kept running
    pod.call("SignalProcess", agent_pb2.SignalProcessRequest(container_id="c3", exec_id="", signal=9))
    assert waiting.result(120).status == 137  # 128 + SIGKILL
    # already dead: ESRCH is not an error
    pod.call("SignalProcess", agent_pb2.SignalProcessRequest(container_id="c3", exec_id="", signal=9))
    pod.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="c3"))
    # no handler for SIGTERM in PID 1: the agent sends SIGKILL instead, like kata-agent
    pod.create("c3b", ["sleep", "100000"])
    pod.call("StartContainer", agent_pb2.StartContainerRequest(container_id="c3b"))
    pod.call("SignalProcess", agent_pb2.SignalProcessRequest(container_id="c3b", exec_id="", signal=15))
    assert pod.wait("c3b") == 137
    pod.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="c3b"))


def test_memory_limited_container_raises_an_oom_event(pod: Pod) -> None:
    pod.create("c4", ["sh", "-c", "echo start; tail /dev/zero"], memory=24 << 20)
    pod.call("StartContainer", agent_pb2.StartContainerRequest(container_id="c4"))
    event = pod.pending.pop("oom").result(180)
    assert event.container_id == "c4"
    assert pod.wait("c4", timeout=120) == 137
    pod.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="c4"))
    pod.pending["oom"] = pod.agent.submit("GetOOMEvent", agent_pb2.GetOOMEventRequest(), agent_pb2.OOMEvent,
                                          timeout=0)


def test_removed_containers_leave_no_process(pod: Pod) -> None:
    procs = pod.ps()
    # the pod shares one pid namespace: pause, c2's sleep and this ps are all that run
    assert "/pause" in procs and "sleep 100000" in procs
    assert "tail" not in procs and "sleep 1\n" not in procs, procs
    for cid in ("c1", "c3", "c3b", "c4"):
        assert re.search(rf"event=container_removed container={cid} mounts_left=0 cgroup_left=false "
                         r"bundle_left=false", pod.vm.text()), cid


def test_flipped_bit_in_a_verity_layer_reads_as_eio(pod: Pod) -> None:
    """The host flips one bit of the layer disk (the pinned root hash is unchanged): busybox's
    pages fail verification, the program never runs from tampered bytes."""
    hosts = pod.copy_file("c9", "hosts", b"")
    req = container_request("c9", ["sh", "-c", "echo from-tampered-layer"], pod.pin, hosts=hosts,
                            source="/dev/vdd")
    created = started = False
    try:
        pod.call("CreateContainer", req)
        created = True
        pod.call("StartContainer", agent_pb2.StartContainerRequest(container_id="c9"))
        started = True
    except TtrpcError:
        pass  # the runtime may already fail reading the binary
    if started:
        out = pod.read_all("c9", "c9")
        assert b"from-tampered-layer" not in out
        assert pod.wait("c9") != 0
    pod.vm.wait_for(r"device-mapper: verity: .* data block \d+ is corrupted", 60)
    if created:
        pod.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="c9"))
    assert "sleep 100000" in pod.ps()  # the other container is unaffected


def test_policy_denied_create_container_runs_nothing(pod: Pod) -> None:
    msg = pod.fails("CreateContainer", container_request("c5", ["/bin/forbidden"], pod.pin,
                                                         hosts=f"{SHARED}/x"), Code.PERMISSION_DENIED)
    assert "CreateContainerRequest is blocked by policy" in msg
    assert "forbidden" not in pod.ps()
    assert "container=c5" not in pod.vm.text()
    pod.fails("StartContainer", agent_pb2.StartContainerRequest(container_id="c5"), Code.INVALID_ARGUMENT)


def test_bad_requests_fail_closed_and_the_agent_keeps_serving(pod: Pod) -> None:
    hosts = f"{SHARED}/h"
    bad_root = container_request("c6", ["sh"], pod.pin, hosts=hosts, root="/")
    assert "OCI.Root.Path" in pod.fails("CreateContainer", bad_root, Code.INVALID_ARGUMENT)
    pod.fails("CreateContainer", container_request("../../etc", ["sh"], pod.pin, hosts=hosts),
              Code.INVALID_ARGUMENT)
    wrong = dict(pod.pin, roothash="0" * 64)
    msg = pod.fails("CreateContainer", container_request("c7", ["sh"], wrong, hosts=hosts), Code.INTERNAL)
    assert "root_hash" in msg
    pod.fails("CopyFile", agent_pb2.CopyFileRequest(path=f"{SHARED}/../../../etc/passwd", file_mode=0o100644,
                                                    file_size=1, data=b"x"), Code.INVALID_ARGUMENT)
    with pytest.raises(TtrpcError) as info:
        pod.agent.raw("grpc.AgentService", "CreateContainer", b"\xff\xff\xff")
    assert info.value.code == Code.UNKNOWN
    duplicate = container_request("c2", ["sh"], pod.pin, hosts=hosts)
    assert "already exists" in pod.fails("CreateContainer", duplicate, Code.INTERNAL)
    # nothing of the refused requests is left, and the running container still answers
    assert "container=c6" not in pod.vm.text() and "container=c7" not in pod.vm.text()
    assert "sleep 100000" in pod.ps()


def test_destroy_sandbox_stops_everything_and_powers_off(pod: Pod) -> None:
    pod.call("SignalProcess", agent_pb2.SignalProcessRequest(container_id="c2", exec_id="", signal=9))
    assert pod.wait("c2") == 137
    pod.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="c2"))
    pod.call("SignalProcess", agent_pb2.SignalProcessRequest(container_id=SANDBOX_ID, exec_id="", signal=9))
    assert pod.pending.pop("pause").result(60).status == 137
    pod.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id=SANDBOX_ID))
    pod.call("DestroySandbox", agent_pb2.DestroySandboxRequest())
    with pytest.raises(TtrpcError):
        pod.pending.pop("oom").result(60)  # the OOM channel is closed
    assert pod.vm.wait_exit(120) == 0
    assert "MARK agent exited rc=0" in pod.vm.text()
