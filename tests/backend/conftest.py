"""Backend tests: host-side unit tests and the pod VM driven like Kata's runtime (tests/backend/pod.py)."""

from __future__ import annotations

from tools.vm.guest_tests import pod_image  # noqa: F401
