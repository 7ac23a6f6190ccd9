"""Suite-wide: a test that runs a command-line entry point in-process (``main([...])``) configures the
root logger with a handler on that test's captured stderr, which pytest closes afterwards; every
later log line would then fail to write (a traceback printed per line, slow enough to time out
concurrency tests). The root logger's handlers and level are put back after every test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
