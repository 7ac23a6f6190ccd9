"""The narrative: one line per step and per result, numbered like the README's walk-through."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Narrator:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.started = time.monotonic()
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        self._write(f"[{self.step_no}] {title}")

    def ok(self, text: str) -> None:
        self._write(f"    ok   {text}")

    def skip(self, text: str) -> None:
        self._write(f"    skip {text}")

    def fail(self, text: str) -> None:
        self._write(f"    FAIL {text}")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.started
