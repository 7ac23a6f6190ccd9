"""Tests marked ``@pytest.mark.vm(guest=True)`` here run inside the pod VM (tools/vm/guest_tests.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tools.vm.guest_tests import pod_image, route_guest_items  # noqa: E402, F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    route_guest_items(config, items, Path(__file__).parent)
