"""Runs inside the guest (from the test share): pytest over a selection, results as JSON.

The JSON goes to the ``cg.results`` virtio-serial port (a file on the host): one object with
``exit`` and ``tests`` = {nodeid: {"outcome", "longrepr", "duration"}}.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

RESULTS_PORT = "cg.results"


class Recorder:
    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.setdefault(report.nodeid, {"outcome": "passed", "longrepr": "", "duration": 0.0})
        entry["duration"] += report.duration
        if report.skipped:
            if entry["outcome"] == "passed":
                entry["outcome"] = "skipped"
                lr = report.longrepr
                entry["longrepr"] = lr[2] if isinstance(lr, tuple) else str(lr)
        elif report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["longrepr"] += f"[{report.when}] {report.longreprtext}\n"


def _port(name: str) -> Path | None:
    base = Path("/sys/class/virtio-ports")
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        if (entry / "name").read_text().strip() == name:
            return Path("/dev") / entry.name
    return None


def _absolute(base: Path, arg: str) -> str:
    """Node ids are relative to the repo root; the guest's cwd is a scratch directory."""
    return arg if arg.startswith("-") or arg.startswith("/") else f"{base}/{arg}"


def main() -> int:
    selection = json.loads(Path(sys.argv[1]).read_text())
    share_main = Path(__file__).resolve().parents[2]
    rec = Recorder()
    args = ["-p", "no:cacheprovider", f"--rootdir={share_main}", "-c", str(share_main / "pyproject.toml"),
            "-q", "-rN", *(_absolute(share_main, a) for a in selection["args"])]
    rc = int(pytest.main(args, plugins=[rec]))
    payload = json.dumps({"exit": rc, "tests": rec.tests}).encode()
    port = _port(RESULTS_PORT)
    if port is not None:
        fd = os.open(port, os.O_WRONLY)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    else:
        print("guest_runner: no results port; JSON follows", flush=True)
        print(payload.decode(), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
