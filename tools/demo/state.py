"""What a running demo made, recorded as it is made, so that ``python -m tools.demo down`` (or the run's own
clean-up after Ctrl-C or a failure) removes exactly that and nothing else.

The record is a JSON file written atomically after every change: processes (pid plus its start time from
/proc, so a reused pid is never signalled), network namespaces, directories, CRI sandboxes, and marker
paths: a process whose command line names one of our own unique paths (a shim's run directory, a QEMU's
image copy) is ours even if we did not start it directly (containerd starts the shims, the shims QEMU).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.files import atomic_write

DEFAULT_STATE = Path(os.environ.get("CG_DEMO_STATE", "/run/confidential-demo/state.json"))


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot): with the pid, names one process for ever.
    None when there is no such process or only its zombie (it has exited; its parent has not reaped it)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


@dataclass
class Proc:
    pid: int
    start: str
    what: str
    group: bool = False  # started in its own session: signal the whole group


@dataclass
class Record:
    owner: int = 0
    work: str = ""
    processes: list[Proc] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    cri_socket: str = ""
    sandboxes: list[str] = field(default_factory=list)
    node_netns: str = ""  # containerd's network namespace (/proc/PID/ns/net): the pods' veths end there


class State:
    def __init__(self, path: Path, record: Record | None = None) -> None:
        self.path = path
        self.record = record if record is not None else Record(owner=os.getpid())

    @classmethod
    def load(cls, path: Path) -> State:
        raw = json.loads(path.read_text())
        raw["processes"] = [Proc(**p) for p in raw.get("processes", [])]
        return cls(path, Record(**raw))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.path, json.dumps(asdict(self.record), indent=1).encode(), mode=0o600)

    def process(self, pid: int, what: str, *, group: bool = False) -> None:
        self.record.processes.append(Proc(pid, start_time(pid) or "", what, group))
        self.save()

    def netns(self, name: str) -> None:
        self.record.netns.append(name)
        self.save()

    def directory(self, path: Path) -> None:
        self.record.dirs.append(str(path))
        self.save()

    def marker(self, path: Path) -> None:
        self.record.markers.append(str(path))
        self.save()

    def cri(self, socket: Path, node_netns: Path) -> None:
        self.record.cri_socket = str(socket)
        self.record.node_netns = str(node_netns)
        self.save()

    def sandbox(self, socket: Path, sandbox_id: str) -> None:
        self.record.cri_socket = str(socket)
        self.record.sandboxes.append(sandbox_id)
        self.save()

    def forget_sandbox(self, sandbox_id: str) -> None:
        with contextlib.suppress(ValueError):
            self.record.sandboxes.remove(sandbox_id)
        self.save()


def marked_processes(markers: list[str]) -> list[int]:
    """Pids (not ours) whose command line contains one of our marker paths."""
    needles = [m.encode() for m in markers if m]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if any(n in cmdline for n in needles):
                found.append(int(entry.name))
    return found


def mounts_under(dirs: list[str]) -> list[str]:
    """Mount points at or below our directories, deepest first."""
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(point == d or point.startswith(d.rstrip("/") + "/") for d in dirs if d):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _signal(proc: Proc, sig: int) -> bool:
    """Signal the process only if it is still the one we started (same pid, same start time)."""
    if start_time(proc.pid) != proc.start:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if proc.group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        return True
    return False


def _wait_gone(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _stop_sandboxes(record: Record, say: Callable[[str], None]) -> None:
    """Stop and remove every pod of our private containerd (its CRI knows them all, also one still
    booting), so that containerd itself removes their network namespaces and shims."""
    if not record.cri_socket or not Path(record.cri_socket).exists():
        return
    try:
        from tools.vm.cri.client import CriClient

        client = CriClient(Path(record.cri_socket))
    except Exception as exc:  # no CRI left to ask: the processes are stopped below anyway
        say(f"CRI not reachable ({type(exc).__name__}); stopping processes directly")
        return
    try:
        sids = list(record.sandboxes)
        with contextlib.suppress(Exception):
            listed = client.call("ListPodSandbox", client.pb.ListPodSandboxRequest(), timeout=30)
            sids = list(dict.fromkeys([*sids, *(item.id for item in listed.items)]))
        for sid in sids:
            for method, request in (("StopPodSandbox", client.pb.StopPodSandboxRequest),
                                    ("RemovePodSandbox", client.pb.RemovePodSandboxRequest)):
                try:
                    client.call(method, request(pod_sandbox_id=sid), timeout=60)
                except Exception as exc:
                    say(f"{method} {sid[:12]}: {type(exc).__name__}")
    finally:
        client.close()


def pod_netns(node_netns: str) -> list[str]:
    """Named namespaces at the other end of the veths in containerd's namespace: our pods' (CNI puts one
    end of each pod's veth there). Found this way also for a pod whose RunPodSandbox never returned,
    which containerd's CRI does not list yet and would leave behind if containerd stopped."""
    if not node_netns or not os.path.exists(node_netns):
        return []
    shown = subprocess.run(["nsenter", f"--net={node_netns}", "--", "ip", "-o", "link", "show"],
                           capture_output=True, text=True, timeout=30, check=False)
    return sorted(set(re.findall(r"link-netns (cni-[0-9a-f-]+)", shown.stdout)))


def stop_pods(state: State, say: Callable[[str], None] = lambda _: None) -> None:
    """The first step of the teardown, also run before the harnesses stop containerd."""
    for ns in pod_netns(state.record.node_netns):
        if ns not in state.record.netns:
            state.netns(ns)
    _stop_sandboxes(state.record, say)


def teardown(state: State, say: Callable[[str], None] = lambda _: None) -> list[str]:
    """Remove everything in the record; returns what could not be removed (empty when all is gone)."""
    record = state.record
    stop_pods(state, say)
    for proc in reversed(record.processes):
        _signal(proc, signal.SIGTERM)
    for proc in reversed(record.processes):
        if not _wait_gone(lambda p=proc: start_time(p.pid) == p.start, 20):  # type: ignore[misc]
            _signal(proc, signal.SIGKILL)
            _wait_gone(lambda p=proc: start_time(p.pid) == p.start, 10)  # type: ignore[misc]
    # Shims and QEMUs outlive containerd (they are re-parented): ours name our paths.
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        for pid in marked_processes(record.markers):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        _wait_gone(lambda: bool(marked_processes(record.markers)), wait)
    for point in mounts_under(record.dirs):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)
    for ns in reversed(record.netns):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False, timeout=30)
    for d in reversed(record.dirs):
        shutil.rmtree(d, ignore_errors=True)
    left = leftovers(record)
    if not left:
        with contextlib.suppress(FileNotFoundError):
            state.path.unlink()
    return left


def leftovers(record: Record) -> list[str]:
    """What of the record still exists (the `down` check and the tests' check)."""
    left = [f"process {p.pid} ({p.what})" for p in record.processes if start_time(p.pid) == p.start]
    left += [f"process {pid} naming our paths" for pid in marked_processes(record.markers)]
    names = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    left += [f"netns {ns}" for ns in record.netns if ns in names]
    left += [f"mount {m}" for m in mounts_under(record.dirs)]
    left += [f"directory {d}" for d in record.dirs if os.path.exists(d)]
    return left


@contextlib.contextmanager
def recorded(path: Path) -> Iterator[State]:
    """A fresh record at ``path``; refuses to start over a record of a demo that may still run."""
    if path.exists():
        raise FileExistsError(f"{path} exists: a demo is running or was kept (--keep); "
                              "run `python -m tools.demo down` first")
    state = State(path)
    state.save()
    yield state
