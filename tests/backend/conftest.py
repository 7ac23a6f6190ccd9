"""Backend tests: host-side unit tests and the pod VM driven like Kata's runtime (tests/backend/pod.py)."""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tools.vm.guest_tests import pod_image  # noqa: E402, F401
