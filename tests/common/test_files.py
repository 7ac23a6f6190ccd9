"""common.files: a reader never sees a partial file, a failed write keeps the old content."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from common.files import atomic_open, atomic_write, atomic_write_text


def _leftovers(directory: Path, name: str) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name != name]


def test_write_sets_mode_and_content(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"one", mode=0o444)
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o444
    atomic_write_text(target, "twö", mode=0o640)
    assert target.read_text("utf-8") == "twö"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert _leftovers(tmp_path, "f") == []


def test_concurrent_writers_never_leave_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "value"
    # Large enough that a non-atomic write would be observable half-done.
    contents = [bytes([c]) * (256 * 1024) for c in b"AB"]
    atomic_write(target, contents[0])
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(data: bytes) -> None:
        try:
            for _ in range(60):
                atomic_write(target, data, sync_dir=False)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def reader() -> None:
        while not stop.is_set():
            got = target.read_bytes()
            if got not in contents:
                errors.append(AssertionError(f"partial or mixed file: {len(got)} bytes"))
                return

    threads = [threading.Thread(target=writer, args=(c,)) for c in contents]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    r.join(timeout=120)
    assert not errors, errors
    assert target.read_bytes() in contents
    assert _leftovers(tmp_path, "value") == []


def test_failed_write_keeps_old_content_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")
    # A real write failure: the file size limit makes write(2) fail with EFBIG half-way.
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from common.files import atomic_write\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    atomic_write(Path(sys.argv[1]), b'n' * 65536)\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
        "    sys.exit(3)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=60,
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert proc.returncode == 3, proc.stderr
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path, "f") == []


def test_exception_in_stream_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target) as fd:
        os.write(fd, b"new partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path, "f") == []


def test_missing_directory_raises_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "nope" / "f", b"x")
    assert list(tmp_path.iterdir()) == []
