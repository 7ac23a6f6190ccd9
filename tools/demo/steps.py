"""Steps of the real demo: a progress line when each starts, its outcome, a final table, the JSON report.

A step returns its detail (what it saw) or raises StepFailedError saying what happened and what was
expected. A step whose prerequisite failed is not attempted and is reported as failed, naming that
prerequisite: nothing is ever shown as done that did not run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from common.files import atomic_write

from .errors import StepFailedError

# The report's step ids, in the order the demo runs them (the list plus the set-up steps).
STEP_IDS = (
    "images", "network", "registry", "containerd", "coordinator", "generate", "set", "verify", "pods",
    "certs", "mesh", "attack-exec", "attack-changed-yaml", "attack-image-byte", "attack-unlisted-pod",
    "attack-plaintext",
)


@dataclass
class StepResult:
    id: str
    ok: bool
    seconds: float
    detail: str


class Steps:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.results: list[StepResult] = []
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def progress(self, text: str) -> None:
        self.say(f"      .. {text}")

    def ok(self, step_id: str) -> bool:
        return any(r.id == step_id and r.ok for r in self.results)

    def run(self, step_id: str, title: str, body: Callable[[], str], needs: Sequence[str] = ()) -> bool:
        missing = [n for n in needs if not self.ok(n)]
        if missing:
            detail = f"not attempted: needs step {', '.join(missing)}, which did not succeed"
            self.results.append(StepResult(step_id, False, 0.0, detail))
            self.say(f"[{step_id}] {title}\n    FAIL {detail}")
            return False
        self.say(f"[{step_id}] {title}")
        t0 = time.monotonic()
        try:
            detail, ok = body(), True
        except StepFailedError as exc:
            detail, ok = str(exc), False
        except KeyboardInterrupt:
            self.results.append(StepResult(step_id, False, time.monotonic() - t0, "interrupted"))
            raise
        except Exception as exc:  # an unexpected error fails the step with its cause, never silently
            detail, ok = f"unexpected {type(exc).__name__}: {exc}", False
        seconds = time.monotonic() - t0
        self.results.append(StepResult(step_id, ok, round(seconds, 2), detail))
        self.say(f"    {'ok  ' if ok else 'FAIL'} {detail} ({seconds:.1f} s)")
        return ok

    def table(self) -> str:
        width = max((len(r.id) for r in self.results), default=4)
        lines = [f"{'step':<{width}}  result  seconds  detail", "-" * (width + 40)]
        for r in self.results:
            first = r.detail.splitlines()[0] if r.detail else ""
            lines.append(f"{r.id:<{width}}  {'ok' if r.ok else 'FAIL':<6}  {r.seconds:7.1f}  {first[:100]}")
        lines.append(f"{'total':<{width}}  {'ok' if self.all_ok() else 'FAIL':<6}  "
                     f"{time.monotonic() - self.started:7.1f}")
        return "\n".join(lines)

    def all_ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def write_report(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        doc: dict[str, Any] = {"steps": [asdict(r) for r in self.results],
                               "seconds": round(time.monotonic() - self.started, 2), **(extra or {})}
        atomic_write(path, (json.dumps(doc, indent=1) + "\n").encode(), mode=0o644)
