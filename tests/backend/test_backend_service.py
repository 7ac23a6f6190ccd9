"""The builtin backend served in-process behind the policy interceptor, over a real ttrpc socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from guest.backend import AgentBackend, InProcessAgent
from guest.backend.layout import Layout
from guest.interceptor import PolicyInterceptor
from guest.policy.engine import AgentPolicy
from guest.protocols import agent_pb2, health_pb2
from guest.ttrpc import Client, Code, Server, TtrpcError, parse_address

AGENT = "grpc.AgentService"
POLICY = """package agent_policy

default GuestDetailsRequest := true
default CreateContainerRequest := false
default CopyFileRequest := true
default WaitProcessRequest := true
default StartContainerRequest := true
"""


@contextlib.asynccontextmanager
async def served(tmp: Path) -> AsyncIterator[tuple[Client, AgentBackend]]:
    policy = AgentPolicy()
    policy.set_policy(POLICY)
    backend = AgentBackend(layout=Layout(tmp / "root"), subreaper=False)
    await backend.start()
    server = Server(InProcessAgent(PolicyInterceptor(policy), backend).handlers())
    address = parse_address(f"unix://{tmp}/agent.sock")
    await server.start(address)
    client = await Client().connect(address)
    try:
        yield client, backend
    finally:
        await client.close()
        await server.close()
        await backend.close()


async def call(client: Client, method: str, msg: object, reply: type) -> object:
    payload = await client.call(AGENT, method, msg.SerializeToString(), timeout=30)  # type: ignore[attr-defined]
    return reply.FromString(payload)


async def test_allowed_requests_reach_the_backend(tmp_path: Path) -> None:
    async with served(tmp_path) as (client, backend):
        details = await call(client, "GetGuestDetails", agent_pb2.GuestDetailsRequest(mem_block_size=True),
                             agent_pb2.GuestDetailsResponse)
        assert isinstance(details, agent_pb2.GuestDetailsResponse)
        assert "image_guest_pull" in details.agent_details.storage_handlers
        assert details.agent_details.supports_seccomp is False
        health = health_pb2.HealthCheckResponse.FromString(
            await client.call("grpc.Health", "Check", health_pb2.CheckRequest().SerializeToString()))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        path = "/run/kata-containers/shared/containers/sid-0123456789abcdef-resolv.conf"
        await call(client, "CopyFile", agent_pb2.CopyFileRequest(path=path, file_mode=0o100644, file_size=3,
                                                                 data=b"a\nb", dir_mode=0o750),
                   agent_pb2.CopyFileRequest)
        assert (backend.layout.shared / "sid-0123456789abcdef-resolv.conf").read_bytes() == b"a\nb"


async def test_denied_request_never_reaches_the_backend(tmp_path: Path) -> None:
    async with served(tmp_path) as (client, backend):
        req = agent_pb2.CreateContainerRequest(container_id="c1", exec_id="c1")
        with pytest.raises(TtrpcError) as info:
            await client.call(AGENT, "CreateContainer", req.SerializeToString())
        assert info.value.code == Code.PERMISSION_DENIED
        assert "CreateContainerRequest is blocked by policy" in info.value.status.message
        assert backend.containers.containers == {}
        assert not backend.layout.bundle("c1").exists()


async def test_backend_errors_carry_kata_codes(tmp_path: Path) -> None:
    async with served(tmp_path) as (client, _backend):
        wait = agent_pb2.WaitProcessRequest(container_id="nope", exec_id="nope")
        with pytest.raises(TtrpcError) as info:
            await client.call(AGENT, "WaitProcess", wait.SerializeToString())
        assert info.value.code == Code.INVALID_ARGUMENT
        assert info.value.status.message == "Invalid container id nope"
        bad = agent_pb2.CopyFileRequest(path="/etc/shadow", file_mode=0o100644, data=b"x", file_size=1)
        with pytest.raises(TtrpcError) as info:
            await client.call(AGENT, "CopyFile", bad.SerializeToString())
        assert info.value.code == Code.INVALID_ARGUMENT
        assert "/run/kata-containers/shared/containers/" in info.value.status.message
        start = agent_pb2.StartContainerRequest(container_id="c1")
        with pytest.raises(TtrpcError) as info:
            await client.call(AGENT, "StartContainer", start.SerializeToString())
        assert info.value.code == Code.INVALID_ARGUMENT
        # still serving after the bad requests
        await call(client, "GetGuestDetails", agent_pb2.GuestDetailsRequest(), agent_pb2.GuestDetailsResponse)


def test_pinned_erofs_layers_come_from_policy_data() -> None:
    from guest.cli import pinned_erofs_layers

    policy = AgentPolicy()
    policy.set_policy('package agent_policy\n\npolicy_data := {"containers": [{"erofs_layers": '
                      '[{"roothash": "ab", "hashoffset": 4096}]}, {"other": 1}, "junk"]}\n')
    assert pinned_erofs_layers(policy) == [{"roothash": "ab", "hashoffset": "4096"}]
    policy.set_policy("package agent_policy\n\ndefault CreateContainerRequest := true\n")
    assert pinned_erofs_layers(policy) == []  # no policy_data: nothing pinned, every layer refused


async def test_guest_pull_fails_closed_until_the_puller_is_present(tmp_path: Path) -> None:
    import importlib.util

    from guest.backend.errors import StorageFailedError
    from guest.backend.storages import Storages

    if importlib.util.find_spec("guest.backend.guestpull") is not None:
        pytest.skip("the in-guest puller is present; its own tests cover the pull")
    storages = Storages(Layout(tmp_path), pinned_layers=list)
    pull = agent_pb2.Storage(driver="image_guest_pull", source="docker.io/library/busybox@sha256:" + "0" * 64,
                             mount_point="/run/kata-containers/c1/rootfs")
    with pytest.raises(StorageFailedError, match="not available"):
        await storages.mount_container("c1", [pull], sandbox_container=False)
    assert not (tmp_path / "run/kata-containers/c1/rootfs").exists()


async def test_deferred_backend_listens_first_and_requests_wait_for_it(tmp_path: Path) -> None:
    """The agent answers Health while the backend still loads; a backend request waits for it."""
    import asyncio
    import threading

    from guest.backend import DeferredBackend

    release = threading.Event()

    def held() -> None:
        release.wait(30)

    policy = AgentPolicy()
    policy.set_policy(POLICY)
    deferred = DeferredBackend(lambda: AgentBackend(layout=Layout(tmp_path / "root"), subreaper=False),
                               prepare=held)
    server = Server(InProcessAgent(PolicyInterceptor(policy), deferred).handlers())
    address = parse_address(f"unix://{tmp_path}/agent.sock")
    await server.start(address)
    loading = deferred.load()
    client = await Client().connect(address)
    try:
        check = health_pb2.CheckRequest().SerializeToString()
        health = health_pb2.HealthCheckResponse.FromString(
            await client.call("grpc.Health", "Check", check, timeout=10))
        assert health.status == health_pb2.HealthCheckResponse.SERVING and not loading.done()
        details = asyncio.ensure_future(call(client, "GetGuestDetails", agent_pb2.GuestDetailsRequest(),
                                             agent_pb2.GuestDetailsResponse))
        await asyncio.sleep(0.3)
        assert not details.done()  # waits for the backend, is not answered without it
        release.set()
        reply = await asyncio.wait_for(details, 30)
        assert isinstance(reply, agent_pb2.GuestDetailsResponse) and reply.agent_details.storage_handlers
    finally:
        release.set()
        await client.close()
        await server.close()
        (await loading).reaper.stop()


async def test_deferred_backend_that_fails_to_load_fails_requests_closed(tmp_path: Path) -> None:
    from guest.backend import DeferredBackend

    def broken() -> None:
        raise OSError(2, "finit_module: No such file or directory", "kernel/fs/overlayfs/overlay.ko")

    policy = AgentPolicy()
    policy.set_policy(POLICY)
    deferred = DeferredBackend(lambda: AgentBackend(layout=Layout(tmp_path / "root"), subreaper=False),
                               prepare=broken)
    server = Server(InProcessAgent(PolicyInterceptor(policy), deferred).handlers())
    address = parse_address(f"unix://{tmp_path}/agent.sock")
    await server.start(address)
    client = await Client().connect(address)
    try:
        path = "/run/kata-containers/shared/containers/sid-0123456789abcdef-resolv.conf"
        with pytest.raises(TtrpcError) as info:
            await client.call(AGENT, "CopyFile", agent_pb2.CopyFileRequest(
                path=path, file_mode=0o100644, file_size=1, data=b"x", dir_mode=0o750).SerializeToString(),
                timeout=10)
        assert info.value.code == Code.INTERNAL
        assert "agent backend failed to start" in info.value.status.message
        assert "overlay.ko" in info.value.status.message
        assert not (tmp_path / "root").exists()  # nothing was built, nothing written
    finally:
        await client.close()
        await server.close()


def test_deferred_kernel_module_list_cannot_name_a_file_outside_it(tmp_path: Path) -> None:
    from guest.backend.kmod import KernelModuleError, load_deferred_modules

    (tmp_path / "mods").mkdir()
    (tmp_path / "evil.ko").write_bytes(b"\x7fELF")
    listing = tmp_path / "mods" / "deferred.load"
    for bad in ("../evil.ko", "/etc/passwd", "kernel/x.txt"):
        listing.write_text(bad + "\n")
        with pytest.raises(KernelModuleError, match="outside"):
            load_deferred_modules(listing)
    assert load_deferred_modules(tmp_path / "absent.load") == []


@pytest.mark.root
async def test_a_memory_emptydir_is_one_tmpfs_for_the_pod(tmp_path: Path) -> None:
    """Kata sends a memory-medium emptyDir as an ephemeral storage with every container mounting it:
    the first mounts a tmpfs, the others share it; it outlives a removed container (an init container's
    files are there for the next one) and ends with the sandbox. Hostile names and sources are refused
    with nothing mounted."""
    import os

    from guest.backend.errors import InvalidRequestError
    from guest.backend.storages import Storages

    if os.geteuid() != 0:
        pytest.skip("needs root (mount)")
    storages = Storages(Layout(tmp_path), pinned_layers=list)
    volume = agent_pb2.Storage(driver="ephemeral", source="tmpfs", fstype="tmpfs",
                               mount_point="/run/kata-containers/sandbox/ephemeral/contrast-secrets")
    first, _ = await storages.mount_container("c1", [volume], sandbox_container=False)
    second, _ = await storages.mount_container("c2", [volume], sandbox_container=False)
    path = tmp_path / "run/kata-containers/sandbox/ephemeral/contrast-secrets"
    assert _mounts().count(f" {path} tmpfs ") == 1
    _write(path / "seed", "written by c1")
    first[0].release()  # c1 (an init container) removed
    assert _read(path / "seed") == "written by c1"
    third, _ = await storages.mount_container("c3", [volume], sandbox_container=False)
    assert _read(path / "seed") == "written by c1"  # a container created after c1's removal sees it
    second[0].release()
    third[0].release()
    assert _mounts().count(f" {path} tmpfs ") == 1
    storages.release_pod_volumes()  # the sandbox ends
    assert f" {path} " not in _mounts()
    for bad in (agent_pb2.Storage(driver="ephemeral", source="tmpfs", fstype="tmpfs",
                                  mount_point="/run/kata-containers/sandbox/ephemeral/../shm"),
                agent_pb2.Storage(driver="ephemeral", source="tmpfs", fstype="tmpfs",
                                  mount_point="/run/kata-containers/sandbox/ephemeral/a/b"),
                agent_pb2.Storage(driver="ephemeral", source="/dev/vda", fstype="tmpfs",
                                  mount_point="/run/kata-containers/sandbox/ephemeral/v"),
                agent_pb2.Storage(driver="ephemeral", source="tmpfs", fstype="ext4",
                                  mount_point="/run/kata-containers/sandbox/ephemeral/v")):
        with pytest.raises(InvalidRequestError, match="storage"):
            await storages.mount_container("c4", [bad], sandbox_container=False)
    assert f"{tmp_path}/run/kata-containers/sandbox/ephemeral" not in _mounts()


def _mounts() -> str:
    return Path("/proc/self/mounts").read_text()


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _read(path: Path) -> str:
    return path.read_text()
