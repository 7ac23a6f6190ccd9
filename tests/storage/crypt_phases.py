"""Guest side of tests/storage/test_crypt_vm.py: each function is one step of a pod's life, run
inside the pod VM by a boot of its own (the host test picks them by node id; not collected alone).

Disks are found by their virtio serial (``/sys/block/vd*/serial``). Pods are the initializer's
``cryptsetup`` subcommand (Contrast's secure-pv sidecar) run as a process with the workload secret
in a file, as the initializer leaves it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guest.storage import DeviceMapper, resolve_source
from guest.storage.crypt import VolumeKeyError, key_from_workload_secret, open_volume

pytestmark = pytest.mark.skipif(os.environ.get("CG_IN_GUEST") != "1", reason="runs inside the pod VM only")

SECRET_1 = bytes(range(64))
SECRET_2 = bytes(range(1, 65))
MARKER = b"PLAINTEXT-MARKER pod 1 of workload A wrote this"
NOTES = MARKER * 100
BIG_SIZE = 8 << 20
DEADLINE = 300.0


def big_data() -> bytes:
    """8 MiB nobody could guess without the seed (a SHA-256 counter stream)."""
    return b"".join(hashlib.sha256(b"big %d" % i).digest() for i in range(BIG_SIZE // 32))


def disk(serial: str) -> str:
    for s in sorted(Path("/sys/block").glob("vd*/serial")):
        if s.read_text().strip() == serial:
            return f"/dev/{s.parent.name}"
    raise AssertionError(f"no disk with serial {serial}")


def console(line: str) -> None:
    with open("/dev/ttyS0", "w") as f:
        f.write(f"\nMARK {line}\n")


def _secret_file(tmp: Path, secret: bytes) -> Path:
    p = tmp / "secrets" / "workload-secret-seed"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(secret.hex())
    return p


class Pod:
    """``python -m initializer cryptsetup`` holding the volume while the test uses it."""

    def __init__(self, tmp: Path, device: str, secret: bytes, name: str) -> None:
        self.state = tmp / f"state-{name}"
        self.done = tmp / f"done-{name}"
        self.log = tmp / f"{name}.log"
        argv = [sys.executable, "-m", "initializer", "cryptsetup", "-d", device, "-m", str(self.state),
                "--secret-file", str(_secret_file(tmp / name, secret)), "--done-file", str(self.done)]
        with open(self.log, "wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self) -> bool:
        """True once /done exists, False if the initializer exited first."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if self.done.exists():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"initializer not ready in {DEADLINE}s: {self.output()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(DEADLINE)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _raw(device: str) -> bytes:
    with open(device, "rb") as f:
        return f.read()


def _no_mappings() -> None:
    left = [n for n in DeviceMapper().list_devices() if n != "dm-verity"]
    assert left == [], f"mappings left: {left}"


def test_pod_1_writes(tmp_path: Path) -> None:
    dev = disk("cg-pv")
    pod = Pod(tmp_path, dev, SECRET_1, "pod1")
    assert pod.wait_ready(), pod.output()
    assert "formatted=True" in pod.output(), pod.output()
    (pod.state / "notes.txt").write_bytes(NOTES)
    os.sync()
    assert pod.stop() == 0, pod.output()
    _no_mappings()
    before = _raw(dev)
    # Pod 1 again (its container restarted): the volume opens, nothing is reformatted.
    pod = Pod(tmp_path, dev, SECRET_1, "pod1b")
    assert pod.wait_ready(), pod.output()
    assert "formatted=False" in pod.output(), pod.output()
    assert (pod.state / "notes.txt").read_bytes() == NOTES
    with open(pod.state / "big.bin", "wb") as f:
        f.write(big_data())
        os.fsync(f.fileno())
    assert pod.stop() == 0, pod.output()
    after = _raw(dev)
    # Where big.bin's ciphertext went: the longest run of 4 KiB blocks that changed (8 MiB of data
    # against dm-integrity's 0.4 MiB journal and the tag areas). The host flips a byte in its middle.
    changed = [i for i in range(len(after) // 4096)
               if before[i * 4096:(i + 1) * 4096] != after[i * 4096:(i + 1) * 4096]]
    runs: list[tuple[int, int]] = []
    for b in changed:
        if runs and runs[-1][1] == b - 1:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((b, b))
    start, end = max(runs, key=lambda r: r[1] - r[0])
    assert end - start > 1000, f"longest changed run {start}..{end}"
    console(f"crypt-flip-offset={((start + end) // 2) * 4096 + 1234}")


def test_kill_writer(tmp_path: Path) -> None:
    """Writes until the host kills the VM (never returns normally)."""
    key = key_from_workload_secret(SECRET_1)
    open_volume(resolve_source(disk("cg-kill")), "killme", key, mount_point=tmp_path / "k")  # until killed
    n = 0
    chunk = os.urandom(256 << 10)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        p = tmp_path / "k" / f"f{n % 50}"
        with open(p, "ab") as f:
            f.write(chunk)
            if n % 3 == 0:
                os.fsync(f.fileno())
        if n % 50 == 49:
            for i in range(0, 50, 2):
                (tmp_path / "k" / f"f{i}").unlink(missing_ok=True)
        n += 1
        console(f"crypt-writing n={n}")
    raise AssertionError("the host did not kill the VM")


def test_pod_2_reads_after_restart(tmp_path: Path) -> None:
    pod = Pod(tmp_path, disk("cg-pv"), SECRET_1, "pod2")
    assert pod.wait_ready(), pod.output()
    assert "formatted=False" in pod.output(), pod.output()
    assert (pod.state / "notes.txt").read_bytes() == NOTES
    assert (pod.state / "big.bin").read_bytes() == big_data()
    assert pod.stop() == 0, pod.output()
    _no_mappings()


def test_other_secret_cannot_open(tmp_path: Path) -> None:
    dev = disk("cg-pv")
    digest = hashlib.sha256(_raw(dev)).hexdigest()
    pod = Pod(tmp_path, dev, SECRET_2, "other")
    assert not pod.wait_ready(), "a pod with another workload secret opened the volume"
    assert pod.proc.returncode == 1, pod.output()
    assert "does not open this volume" in pod.output(), pod.output()
    assert SECRET_2.hex() not in pod.output()
    _no_mappings()
    assert hashlib.sha256(_raw(dev)).hexdigest() == digest, "the refused open changed the disk"
    with pytest.raises(VolumeKeyError):
        open_volume(resolve_source(dev), "other", key_from_workload_secret(SECRET_2))
    _no_mappings()
    pod = Pod(tmp_path, dev, SECRET_1, "owner")
    assert pod.wait_ready(), pod.output()
    assert (pod.state / "notes.txt").read_bytes() == NOTES
    assert pod.stop() == 0, pod.output()


def test_flipped_byte_read_fails(tmp_path: Path) -> None:
    vol = open_volume(resolve_source(disk("cg-pv-flipped")), "flipped", key_from_workload_secret(SECRET_1),
                      mount_point=tmp_path / "f", create=False)
    try:
        assert (tmp_path / "f" / "notes.txt").read_bytes() == NOTES  # the rest of the volume reads
        with pytest.raises(OSError) as e, open(tmp_path / "f" / "big.bin", "rb") as f:
            while f.read(1 << 20):
                pass
        assert e.value.errno == errno.EIO
        dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
        assert "integrity" in dmesg.lower() or "crypt" in dmesg.lower(), dmesg[-2000:]
    finally:
        vol.close()


def test_killed_volume_opens_and_passes_fsck(tmp_path: Path) -> None:
    dev = resolve_source(disk("cg-kill"))
    key = key_from_workload_secret(SECRET_1)
    vol = open_volume(dev, "killed", key, mount_point=tmp_path / "k", create=False)
    assert not vol.formatted and not vol.created_filesystem
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert any(n.startswith("f") for n in names), names
    vol.close()  # the mount replayed ext4's journal, as a pod's mount would
    vol = open_volume(dev, "killed", key, create=False)
    try:
        # Every sector's tag verifies (a torn data/tag write would read as EIO here) ...
        with open(vol.mapper, "rb") as f:
            while f.read(4 << 20):
                pass
        # ... and the filesystem is clean.
        proc = subprocess.run(["e2fsck", "-f", "-n", str(vol.mapper)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        vol.close()
