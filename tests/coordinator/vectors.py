"""Loader for ../shared/testdata/contrast vectors (one accessor, like cryptography's vectors)."""

from __future__ import annotations

import json
from typing import Any

from tests.support import shared_path

CONTRAST = shared_path("contrast")


def load(name: str) -> Any:
    return json.loads((CONTRAST / name).read_text())
