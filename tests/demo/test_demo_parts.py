"""Parts of the real demo that run without a VM: the cluster DNS's answers (real UDP server, real
resolver), the state record's teardown of real processes, network namespaces, mounts and directories
(and never of a process that merely reuses a recorded pid), and the report's shape."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tools.demo.dns import answer
from tools.demo.errors import StepFailedError
from tools.demo.state import Proc, State, leftovers, teardown
from tools.demo.steps import Steps

REPO = Path(__file__).resolve().parents[2]


def _query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + q + struct.pack("!2H", qtype, 1)


def test_dns_answers_services_and_nothing_else() -> None:
    records = {"store": "10.1.2.3"}
    for name in ("store", "store.default.svc.cluster.local", "STORE.default"):
        reply = answer(_query(name), records)
        assert reply is not None
        ident, flags, _, an, _, _ = struct.unpack("!6H", reply[:12])
        assert (ident, flags & 0xF, an) == (0x1234, 0, 1)
        assert reply[-4:] == socket.inet_aton("10.1.2.3")
    nx = answer(_query("store.evil.example"), records)
    assert nx is not None and struct.unpack("!6H", nx[:12])[1] & 0xF == 3
    empty = answer(_query("store", qtype=28), records)  # AAAA: the name exists, no v6 address
    assert empty is not None and struct.unpack("!6H", empty[:12])[3] == 0
    # Hostile queries get no answer at all: truncated, a compression pointer, a response, two questions.
    assert answer(b"\x00" * 5, records) is None
    assert answer(_query("store")[:-3], records) is None
    assert answer(struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\0\1\0\1", records) is None
    assert answer(struct.pack("!6H", 1, 0x8100, 1, 0, 0, 0) + _query("store")[12:], records) is None
    assert answer(struct.pack("!6H", 1, 0x0100, 2, 0, 0, 0) + _query("store")[12:], records) is None


def test_dns_server_serves_the_records_file(tmp_path: Path) -> None:
    records = tmp_path / "dns.json"
    records.write_text(json.dumps({"coordinator": "10.9.8.7", "bad": "not-an-ip"}))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tools.demo.dns", "--listen", "127.0.0.1", "--port",
                             str(port), "--records", str(records)], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and b"dns_listening" in proc.stdout.readline()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.sendto(_query("coordinator.default.svc.cluster.local"), ("127.0.0.1", port))
            assert c.recv(512)[-4:] == socket.inet_aton("10.9.8.7")
            records.write_text(json.dumps({"coordinator": "10.9.8.6"}))  # updated as pods come up
            c.sendto(_query("coordinator"), ("127.0.0.1", port))
            assert c.recv(512)[-4:] == socket.inet_aton("10.9.8.6")
            c.sendto(_query("bad"), ("127.0.0.1", port))  # an invalid address is no record
            assert struct.unpack("!6H", c.recv(512)[:12])[1] & 0xF == 3
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_steps_report_and_prerequisites(tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    steps = Steps(out)

    def fails() -> str:
        raise StepFailedError("expected X, got Y")

    assert steps.run("a", "first", lambda: "did a")
    assert not steps.run("b", "second", fails)
    assert not steps.run("c", "third", lambda: "never", needs=["b"])
    report = tmp_path / "r.json"
    steps.write_report(report)
    doc = json.loads(report.read_text())
    assert [(s["id"], s["ok"]) for s in doc["steps"]] == [("a", True), ("b", False), ("c", False)]
    assert doc["steps"][1]["detail"] == "expected X, got Y"
    assert "not attempted: needs step b" in doc["steps"][2]["detail"]
    assert all(set(s) == {"id", "ok", "seconds", "detail"} for s in doc["steps"])
    assert "FAIL" in steps.table() and not steps.all_ok()


@pytest.mark.root
def test_teardown_removes_what_was_recorded_and_only_that(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    state = State(tmp_path / "state.json")
    work = Path(tempfile.mkdtemp(prefix=f"cgdemo-test-{os.getpid()}-", dir="/tmp"))
    state.directory(work)
    state.marker(work)
    # A child that is ours, a process naming our path (as a shim or QEMU would), a netns, a mount.
    ours = subprocess.Popen(["sleep", "600"], start_new_session=True)
    state.process(ours.pid, "sleep", group=True)
    marked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(work / "vm")],
                              start_new_session=True)
    ns = f"cgdemotest{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    state.netns(ns)
    (work / "mnt").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(work / "mnt")], check=True)
    # A recorded pid whose start time differs is someone else's process now: never signalled.
    bystander = subprocess.Popen(["sleep", "600"])
    state.record.processes.append(Proc(bystander.pid, "1", "reused pid"))
    state.save()
    try:
        assert len(leftovers(state.record)) >= 5
        assert teardown(state) == []
        assert ours.wait(10) is not None and marked.wait(10) is not None
        assert not os.path.exists(f"/run/netns/{ns}") and not work.exists()
        assert str(work) not in Path("/proc/self/mountinfo").read_text()
        assert not state.path.exists()
        time.sleep(0.2)
        assert bystander.poll() is None  # untouched
    finally:
        bystander.kill()
        bystander.wait()
        for p in (ours, marked):
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["umount", "-l", str(work / "mnt")], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_down_without_state_is_a_no_op(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "tools.demo", "down", "--state", str(tmp_path / "none.json")]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "nothing to remove" in done.stdout


def test_container_layout_cache_keeps_the_newest_and_never_a_staging_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.demo import images

    monkeypatch.setattr(images, "CACHE", tmp_path)
    made = []
    for i in range(7):
        d = tmp_path / f"containers-{i:032x}"
        d.mkdir()
        os.utime(d, (1000 + i, 1000 + i))
        made.append(d)
    staging = tmp_path / f"containers-{0:032x}-abc123"  # another run's build in progress
    staging.mkdir()
    current = made[0]  # the oldest, but the one just built
    images._prune(current)
    assert current.exists() and staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p not in (current, staging)) == [
        d.name for d in made[-images.KEEP:]]
