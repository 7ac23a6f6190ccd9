"""Tests marked ``@pytest.mark.vm(guest=True)`` here run inside the pod VM (tools/vm/guest_tests.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.vm.guest_tests import pod_image, route_guest_items  # noqa: F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    route_guest_items(config, items, Path(__file__).parent)
