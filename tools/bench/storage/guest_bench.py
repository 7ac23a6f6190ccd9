"""Runs inside the pod VM (picked by tools/bench/storage by node id): O_DIRECT throughput on one
virtio disk, plain and through the LUKS2 + dm-integrity mapping (journal on and off), and the cost
of formatting and of opening at pod start. Results go to the console as ``MARK bench`` lines."""

from __future__ import annotations

import json
import mmap
import os
import random
import time
from pathlib import Path

import pytest

from guest.storage import resolve_source
from guest.storage.crypt import CryptSettings, key_from_workload_secret, open_volume
from guest.storage.encrypted import open_ephemeral_volume

pytestmark = pytest.mark.skipif(os.environ.get("CG_IN_GUEST") != "1", reason="runs inside the pod VM only")

SEQ_BYTES = 32 << 20
SEQ_BLOCK = 1 << 20
RANDOM_OPS = 1024
REGION = 48 << 20  # random I/O offsets stay inside this (the encrypted device is smaller than the disk)


def _disk(serial: str) -> str:
    for s in sorted(Path("/sys/block").glob("vd*/serial")):
        if s.read_text().strip() == serial:
            return f"/dev/{s.parent.name}"
    raise AssertionError(f"no disk {serial}")


def _mark(obj: dict[str, object]) -> None:
    with open("/dev/ttyS0", "w") as f:
        f.write(f"\nMARK bench {json.dumps(obj)}\n")


def _io(path: str) -> dict[str, float]:
    buf = mmap.mmap(-1, SEQ_BLOCK)  # page aligned, as O_DIRECT needs
    buf.write(os.urandom(SEQ_BLOCK))
    small = mmap.mmap(-1, 4096)
    small.write(os.urandom(4096))
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    out: dict[str, float] = {}
    try:
        t = time.perf_counter()
        for i in range(SEQ_BYTES // SEQ_BLOCK):
            os.pwritev(fd, [buf], i * SEQ_BLOCK)
        os.fsync(fd)
        out["seq_write_MiBps"] = SEQ_BYTES / 2**20 / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(SEQ_BYTES // SEQ_BLOCK):
            os.preadv(fd, [buf], i * SEQ_BLOCK)
        out["seq_read_MiBps"] = SEQ_BYTES / 2**20 / (time.perf_counter() - t)
        rng = random.Random(7)
        offsets = [rng.randrange(REGION // 4096) * 4096 for _ in range(RANDOM_OPS)]
        t = time.perf_counter()
        for off in offsets:
            os.pwritev(fd, [small], off)
        os.fsync(fd)
        out["rand4k_write_iops"] = RANDOM_OPS / (time.perf_counter() - t)
        t = time.perf_counter()
        for off in offsets:
            os.preadv(fd, [small], off)
        out["rand4k_read_iops"] = RANDOM_OPS / (time.perf_counter() - t)
    finally:
        os.close(fd)
    return out


def test_bench() -> None:
    dev = _disk("cg-bench")
    _mark({"config": "plain", **_io(dev)})
    device = resolve_source(dev)
    key = key_from_workload_secret(b"\5" * 64)
    t = time.perf_counter()
    vol = open_volume(device, "bench", key)
    _mark({"config": "format", "format_s": vol.timings.get("format", 0.0),
           "mkfs_s": vol.timings.get("mkfs", 0.0), "total_s": time.perf_counter() - t})
    vol.close()
    for journal in (True, False):
        settings = CryptSettings(journal=journal)
        t = time.perf_counter()
        vol = open_volume(device, "bench", key, create=False, settings=settings)
        opened = time.perf_counter() - t
        try:
            _mark({"config": "encrypted, journal" if journal else "encrypted, no journal", "open_s": opened,
                   **_io(str(vol.mapper))})
        finally:
            vol.close(settings)


def test_bench_ephemeral(tmp_path: Path) -> None:
    """First use of an ephemeral volume (emptyDir, image store): formatted unwiped, so its cost does not
    grow with the disk; the 96 MiB disk (wiped above as a persistent volume) and a 64 GiB sparse one."""
    for serial in ("cg-bench", "cg-bench-big"):
        device = resolve_source(_disk(serial))
        t = time.perf_counter()
        vol = open_ephemeral_volume(device, tmp_path / serial)
        total = time.perf_counter() - t
        try:
            _mark({"config": f"ephemeral {serial}", "format_s": vol.timings.get("format", 0.0),
                   "mkfs_s": vol.timings.get("mkfs", 0.0), "total_s": total,
                   "size": int(Path(f"/sys/class/block/{device.name}/size").read_text()) * 512})
        finally:
            vol.close()
