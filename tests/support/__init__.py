"""Test utilities shared by every area: shared-data paths, free loopback ports, the atheris launcher,
polling with a deadline.

Import as ``from tests.support import ...`` (pyproject's pytest ``pythonpath`` puts the repository root
on ``sys.path``).
"""

from tests.support.fuzz import run_fuzzer, start_fuzzer
from tests.support.net import free_port, in_netns, scratch_netns
from tests.support.paths import REPO, SHARED, TESTDATA, load_json, shared_path
from tests.support.wait import until, wait_until

__all__ = [
    "REPO",
    "SHARED",
    "TESTDATA",
    "free_port",
    "in_netns",
    "load_json",
    "run_fuzzer",
    "scratch_netns",
    "shared_path",
    "start_fuzzer",
    "until",
    "wait_until",
]
