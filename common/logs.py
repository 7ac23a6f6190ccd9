"""Structured ``key=value`` log lines, the same keys in every component.

    time=2026-12-01T21:50:40.123Z level=INFO logger=coordinator.server event=started port=1313

``time`` is RFC 3339 in UTC (one token, so the line stays machine-splittable); messages themselves are
``event=... key=value`` by convention.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

__all__ = ["LogFormatter", "setup_logging"]


class LogFormatter(logging.Formatter):
    def __init__(self, *, with_time: bool = True) -> None:
        fmt = "level=%(levelname)s logger=%(name)s %(message)s"
        super().__init__(("time=%(asctime)s " if with_time else "") + fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def setup_logging(
    level: int | str = logging.INFO, *, stream: TextIO | None = None, with_time: bool = True
) -> None:
    """Configure the root logger once for a command-line entry point (replaces earlier handlers)."""
    if isinstance(level, str):
        level = level.upper()
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(LogFormatter(with_time=with_time))
    logging.basicConfig(level=level, handlers=[handler], force=True)
