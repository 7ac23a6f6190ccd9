"""Loader for ../shared/testdata/contrast vectors (one accessor, like cryptography's vectors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONTRAST = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "contrast"


def load(name: str) -> Any:
    return json.loads((CONTRAST / name).read_text())
