"""Encrypted persistent volumes across pod-VM boots, with the host's view of the disk file.

Three boots of the real pod VM (TCG, Debian's kernel with dm-crypt/dm-integrity, cryptsetup),
sharing raw disk files the host keeps between them:

1. pod 1 (the initializer's ``cryptsetup`` subcommand with workload secret A) formats the empty
   disk ``cg-pv``, writes, stops; pod 1 again opens it without formatting and writes 8 MiB; the
   guest reports where that ciphertext landed on the disk.
2. a writer on ``cg-kill`` is killed with SIGKILL of QEMU in the middle of its writes.
3. after the "restart": pod 2 of workload A reads pod 1's data; a pod with workload secret B is
   refused and changes nothing; the host's copy of ``cg-pv`` with one flipped ciphertext byte
   reads EIO; the killed volume opens and passes e2fsck.

Guest steps are in crypt_phases.py; every scenario is one test here, named after it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tools.vm.guest_tests import GuestResults, run_in_guest
from tools.vm.qemu import Disk, VirtualMachine

pytestmark = [pytest.mark.vm, pytest.mark.encrypted_storage]

PHASES = "tests/storage/crypt_phases.py"
DISK_SIZE = 64 << 20
MARKER = b"PLAINTEXT-MARKER pod 1 of workload A wrote this"
KILL_AFTER_WRITES = 40


def _disk(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(DISK_SIZE)
    return path


@dataclass
class Boots:
    image: Path
    work: Path
    runs: dict[str, GuestResults] = field(default_factory=dict)
    flip_offset: int | None = None
    host_view: bytes = b""
    killed_after: str = ""

    def __post_init__(self) -> None:
        self.pv = _disk(self.work / "pv.img")
        self.kill = _disk(self.work / "kill.img")
        self.flipped = self.work / "pv-flipped.img"

    def boot(self, name: str, nodes: list[str], disks: list[Disk], on_console: Any = None) -> GuestResults:
        if name not in self.runs:
            self.runs[name] = run_in_guest(self.image, [f"{PHASES}::{n}" for n in nodes], disks=disks,
                                           on_console=on_console)
        return self.runs[name]

    def outcome(self, boot: str, node: str) -> None:
        run = self.runs[boot]
        result = run.results.get(f"{PHASES}::{node}")
        if result is None:
            pytest.fail(f"boot {boot}: no result for {node}: {run.error}\n{run.console[-4000:]}",
                        pytrace=False)
        if result["outcome"] != "passed":
            pytest.fail(f"boot {boot}, {node} in guest ({result['outcome']}):\n{result['longrepr']}",
                        pytrace=False)

    def write(self) -> None:
        run = self.boot("write", ["test_pod_1_writes"], [Disk(self.pv, "cg-pv", readonly=False)])
        self.outcome("write", "test_pod_1_writes")
        m = re.search(r"MARK crypt-flip-offset=(\d+)", run.console)
        assert m, run.console[-3000:]
        self.flip_offset = int(m.group(1))
        self.host_view = self.pv.read_bytes()
        shutil.copyfile(self.pv, self.flipped)
        with open(self.flipped, "r+b") as f:  # the host alters one byte of ciphertext
            f.seek(self.flip_offset)
            byte = f.read(1)
            f.seek(self.flip_offset)
            f.write(bytes([byte[0] ^ 0x40]))

    def kill_during_writes(self) -> None:
        def killer(vm: VirtualMachine) -> None:
            m = vm.wait_for(rf"MARK crypt-writing n={KILL_AFTER_WRITES}\b", 600)
            self.killed_after = m.group(0)
            vm.stop()  # SIGKILL of QEMU, by the PID this test started

        self.boot("kill", ["test_kill_writer"], [Disk(self.kill, "cg-kill", readonly=False)],
                  on_console=killer)
        assert self.killed_after, self.runs["kill"].console[-3000:]

    def restart(self) -> None:
        self.boot("restart", ["test_pod_2_reads_after_restart", "test_other_secret_cannot_open",
                              "test_flipped_byte_read_fails", "test_killed_volume_opens_and_passes_fsck"],
                  [Disk(self.pv, "cg-pv", readonly=False),
                   Disk(self.flipped, "cg-pv-flipped", readonly=False),
                   Disk(self.kill, "cg-kill", readonly=False)])


@pytest.fixture(scope="module")
def boots(pod_image: Path) -> Iterator[Boots]:
    work = Path(tempfile.mkdtemp(prefix="cg-crypt-vm-"))
    b = Boots(pod_image, work)
    try:
        b.write()
        b.kill_during_writes()
        b.restart()
        yield b
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_data_written_by_pod_1_is_read_back_by_pod_2_after_a_vm_restart(boots: Boots) -> None:
    boots.outcome("write", "test_pod_1_writes")
    boots.outcome("restart", "test_pod_2_reads_after_restart")


def test_the_host_reading_the_disk_file_finds_none_of_the_plaintext(boots: Boots) -> None:
    view = boots.host_view
    assert view[:6] == b"LUKS\xba\xbe", "not the volume's disk file"
    for needle in (MARKER, MARKER[:16], b"notes.txt", b"big.bin", b"secure-volume"):
        assert needle not in view, f"the host sees {needle!r} in the disk file"
    import hashlib

    first_block = b"".join(hashlib.sha256(b"big %d" % i).digest() for i in range(128))
    assert first_block[:64] not in view


def test_one_flipped_ciphertext_byte_makes_the_read_fail(boots: Boots) -> None:
    assert boots.flip_offset is not None and boots.flip_offset > 16 << 20  # past the LUKS2 header
    boots.outcome("restart", "test_flipped_byte_read_fails")


def test_another_workload_secret_cannot_open_it_and_the_data_stays_intact(boots: Boots) -> None:
    boots.outcome("restart", "test_other_secret_cannot_open")


def test_kill_9_of_the_vm_during_writes_leaves_a_volume_that_opens_and_passes_fsck(boots: Boots) -> None:
    assert boots.killed_after
    boots.outcome("restart", "test_killed_volume_opens_and_passes_fsck")
