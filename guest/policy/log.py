"""kata-agent's policy log: one JSON line per evaluated input, for replay (``python -m guest explain``).

Each evaluation appends ``{"kind": "<Endpoint>", "request": <input>}``; an object result adds a second
line with the same kind and the result under ``request``. Like kata-agent we skip the noisy or huge
inputs (StatsContainer, ReadStream, SetPolicy). The file holds request data, env values included, so it
is only written when asked for (kata: debug level only) and created with mode 0600.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["NOT_LOGGED", "PolicyLog"]

NOT_LOGGED = frozenset({"StatsContainerRequest", "ReadStreamRequest", "SetPolicyRequest"})


class PolicyLog:
    """Append-only JSONL writer; truncates the file when opened, as kata-agent does at start."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, endpoint: str, value: Any) -> None:
        if endpoint in NOT_LOGGED:
            return
        line = json.dumps({"kind": endpoint, "request": value}, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
