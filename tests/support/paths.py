"""Where the repository and the shared reference data (``../shared`` next to the checkout) are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
TESTDATA = SHARED / "testdata"


def shared_path(*parts: str) -> Path:
    """A path below ``../shared/testdata``."""
    return TESTDATA.joinpath(*parts)


def load_json(*parts: str) -> Any:
    """A JSON document below ``../shared/testdata``."""
    return json.loads(shared_path(*parts).read_text())
