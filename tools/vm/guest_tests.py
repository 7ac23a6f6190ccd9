"""Host-side pytest integration: tests marked ``@pytest.mark.vm(guest=True)`` run inside the VM.

A component opts in from its conftest::

    from tools.vm.guest_tests import pod_image, route_guest_items  # noqa: F401

    def pytest_collection_modifyitems(config, items):
        route_guest_items(config, items, Path(__file__).parent)

On the host each such test becomes a :class:`GuestItem`. The first one to run boots a single VM
for every guest item of the session (image from the cache, test share built now, ``cg.test=1``),
and each item then reports the outcome its test had inside the guest. Inside the guest
(``CG_IN_GUEST=1``) nothing is rerouted and the tests run normally. Without QEMU the items are
skipped with the reason. Host tests that boot VMs themselves use ``@pytest.mark.vm`` without
``guest=True`` and the ``pod_image`` fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .qemu import Disk, SerialPort, VirtualMachine, qemu_available
from .share import RESULTS_PORT, build_share

__all__ = [
    "GuestItem",
    "GuestResults",
    "GuestRun",
    "in_guest",
    "pod_image",
    "pod_image_dir",
    "route_guest_items",
    "run_in_guest",
]

REPO = Path(__file__).resolve().parents[2]
GUEST_RUN_TIMEOUT = float(os.environ.get("CG_VM_TIMEOUT", "900"))
_RUN_KEY = pytest.StashKey["GuestRun"]()
_IMAGE_KEY = pytest.StashKey[Path]()


def in_guest() -> bool:
    return os.environ.get("CG_IN_GUEST") == "1"


def _is_guest_test(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("vm")
    return marker is not None and bool(marker.kwargs.get("guest"))


def pod_image_dir(config: pytest.Config) -> Path:
    """Build (or take from the cache) the pod-VM image once per session; its directory."""
    if _IMAGE_KEY not in config.stash:
        from image.build import BuildOptions, build_image, default_cache_dir

        out = Path(tempfile.mkdtemp(prefix="cg-image-"))
        config.add_cleanup(lambda: shutil.rmtree(out, ignore_errors=True))
        build_image(BuildOptions(out=out, repo=REPO, cache_dir=default_cache_dir(), quiet=True))
        config.stash[_IMAGE_KEY] = out
    return config.stash[_IMAGE_KEY]


@pytest.fixture(scope="session")
def pod_image(request: pytest.FixtureRequest) -> Iterator[Path]:
    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    yield pod_image_dir(request.config)


class GuestRun:
    """One VM boot running every guest item of the session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: dict[str, dict[str, Any]] | None = None
        self.error: str | None = None
        self.console = ""

    def run(self, nodeids: list[str]) -> None:
        out = run_in_guest(pod_image_dir(self.config), nodeids)
        self.results, self.error, self.console = out.results or None, out.error, out.console


@dataclass
class GuestResults:
    results: dict[str, dict[str, Any]]  # nodeid → {"outcome", "longrepr", "duration"}
    error: str
    console: str


def run_in_guest(image: Path, nodeids: list[str], *, extra_cmdline: str = "",
                 disk_override: Path | None = None, on_console: Any = None,
                 disks: list[Disk] | None = None) -> GuestResults:
    """Boot ``image`` with a test share running ``nodeids`` and collect the per-test results.

    ``on_console(vm)`` is called once the VM started (tests that act on the running guest);
    ``disks`` come after the share (the share is /dev/vdb, the first of them /dev/vdc).
    """
    work = Path(tempfile.mkdtemp(prefix="cg-guest-run-"))
    share = build_share(REPO, work / "share.img", nodeids)
    vm = VirtualMachine(image, extra_cmdline=f"cg.test=1 cg.agent=echo {extra_cmdline}".strip(), workdir=work,
                        disks=[Disk(share, serial="cg-test-share"), *(disks or [])],
                        disk_override=disk_override,
                        ports=[SerialPort(RESULTS_PORT, kind="file")])
    error = ""
    try:
        vm.start()
        if on_console is not None:
            on_console(vm)
        vm.wait_exit(GUEST_RUN_TIMEOUT)
    except Exception as e:  # a hung or crashed VM fails every guest item, with the console
        error = f"{type(e).__name__}: {e}"
    finally:
        vm.stop()
    raw = vm.port_path(RESULTS_PORT).read_bytes() if vm.port_path(RESULTS_PORT).exists() else b""
    try:
        results: dict[str, dict[str, Any]] = json.loads(raw)["tests"]
    except (ValueError, KeyError):
        error += f" no results from the guest ({len(raw)} bytes)"
        results = {}
    shutil.rmtree(work, ignore_errors=True)
    return GuestResults(results, error, vm.text())


class GuestItem(pytest.Item):
    def __init__(self, *, original: pytest.Item, **kw: Any) -> None:
        super().__init__(**kw)
        self.original_nodeid = original.nodeid
        self.own_markers.extend(original.own_markers)  # module/class marks come from the parents

    def runtest(self) -> None:
        reason = qemu_available()
        if reason:
            pytest.skip(reason)
        run = self.config.stash.get(_RUN_KEY, None)
        if run is None:
            run = GuestRun(self.config)
            self.config.stash[_RUN_KEY] = run
            items = [i for i in self.session.items if isinstance(i, GuestItem)]
            run.run([i.original_nodeid for i in items])
        result = (run.results or {}).get(self.original_nodeid)
        if result is None:
            tail = run.console[-4000:]
            pytest.fail(f"no result from the guest for {self.original_nodeid}: {run.error}\n"
                        f"console tail:\n{tail}", pytrace=False)
        if result["outcome"] == "skipped":
            pytest.skip(f"in guest: {result['longrepr']}")
        if result["outcome"] != "passed":
            pytest.fail(f"in guest ({result['outcome']}):\n{result['longrepr']}", pytrace=False)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"[guest] {self.name}"


def route_guest_items(config: pytest.Config, items: list[pytest.Item], base: Path) -> None:
    """Replace guest-marked items under ``base`` with :class:`GuestItem` (on the host only)."""
    if in_guest():
        return
    for i, item in enumerate(items):
        if _is_guest_test(item) and item.path.is_relative_to(base):
            assert item.parent is not None
            items[i] = GuestItem.from_parent(item.parent, name=item.name, original=item)
