"""Debian's containerd drives our shim: a containerd of the test's own (temporary root, state and
socket, own network namespace) runs ``ctr run --runtime io.containerd.contrast-cc.v2``.

What these show: containerd's start/Create/Delete/Shutdown sequence and the shim's bootstrap
flags work against the real containerd; a pod without initdata is refused (fail closed); in a
booted pod VM the agent's policy denial of CreateContainer reaches ctr with kata's text; and after
each run nothing is left: no shim or QEMU process, no file in the shim's run directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation import initdata as initdata_format
from runtime.protocols import shim_pb2
from tools.vm.containerd import (
    REPO,
    RUNTIME,
    Containerd,
    busybox_image_archive,
    containerd_missing,
    host_erofs_config,
    pinned_policy,
    running_containerd,
    shim_processes,
)

pytestmark = pytest.mark.root

IMAGE = "docker.io/library/cc-shim-test:1"


@pytest.fixture(scope="module")
def containerd() -> Iterator[tuple[Containerd, str]]:
    reason = containerd_missing()
    if reason:
        pytest.skip(reason)
    with running_containerd() as ctd:
        archive = ctd.base / "image.tar"
        digest = busybox_image_archive(archive)
        imported = ctd.ctr("image", "import", str(archive))
        assert imported.returncode == 0, imported.stderr
        yield ctd, digest


def _rundir(ctd: Containerd) -> Path:
    return Path(ctd.env["CONTRAST_CC_RUN_DIR"])


def _assert_clean(ctd: Containerd, name: str) -> None:
    deadline = time.monotonic() + 30
    while shim_processes(_rundir(ctd)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert shim_processes(_rundir(ctd)) == [], "a shim or QEMU process was left behind"
    left = [p for p in _rundir(ctd).rglob("*")] if _rundir(ctd).exists() else []
    assert left == [], f"files left in the shim run directory: {left}"
    listed = ctd.ctr("containers", "ls", "-q")
    assert name not in listed.stdout.split()


def _run(
    ctd: Containerd, name: str, config: Path, *annotations: str, timeout: float = 400
) -> subprocess.CompletedProcess[str]:
    args = ["run", "--rm", "--runtime", RUNTIME, "--runtime-config-path", str(config)]
    for a in annotations:
        args += ["--annotation", a]
    return ctd.ctr(*args, IMAGE, name, "sh", "-c", "echo hi; exit 7", timeout=timeout)


def test_a_pod_without_initdata_is_refused_and_nothing_is_left(containerd: tuple[Containerd, str]) -> None:
    ctd, digest = containerd
    config = ctd.base / "no-default.toml"
    config.write_text('[image]\ndir = "/nonexistent"\nmode = "guest-pull"\n')
    out = _run(ctd, "noinit", config, f"io.kubernetes.cri.image-name=docker.io/library/cc-shim-test@{digest}")
    assert out.returncode != 0
    assert "has no io.katacontainers.config.hypervisor.cc_init_data annotation" in out.stderr
    assert "names no [initdata] default: refused" in out.stderr
    _assert_clean(ctd, "noinit")


def test_without_a_configuration_the_shim_refuses(containerd: tuple[Containerd, str]) -> None:
    ctd, _ = containerd
    out = ctd.ctr("run", "--rm", "--runtime", RUNTIME, IMAGE, "noconfig", "true", timeout=120)
    assert out.returncode != 0
    assert "no runtime configuration" in out.stderr
    _assert_clean(ctd, "noconfig")


def test_start_refuses_an_id_that_would_leave_the_run_directory(tmp_path: Path) -> None:
    bundle = tmp_path / "x"
    bundle.mkdir()
    out = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "runtime",
            "-namespace",
            "default",
            "-address",
            "/x",
            "-id",
            "../x",
            "start",
        ],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "CONTRAST_CC_RUN_DIR": str(tmp_path / "run")},
        check=False,
    )
    assert out.returncode == 1
    assert "invalid id '../x'" in out.stderr
    assert not (tmp_path / "run").exists()


def test_delete_subcommand_answers_a_delete_response(tmp_path: Path) -> None:
    bundle = tmp_path / "t9"
    bundle.mkdir()
    out = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "runtime",
            "-namespace",
            "default",
            "-address",
            "/x",
            "-publish-binary",
            "/bin/false",
            "-id",
            "t9",
            "-bundle",
            str(bundle),
            "delete",
        ],
        cwd=bundle,
        capture_output=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(REPO), "CONTRAST_CC_RUN_DIR": str(tmp_path / "run")},
    )
    assert out.returncode == 0, out.stderr
    reply = shim_pb2.DeleteResponse.FromString(out.stdout)
    assert reply.exit_status == 137 and reply.exited_at.seconds > 0


DENY_WORKLOADS = """package agent_policy
default CreateContainerRequest := false
default CreateSandboxRequest := true
default StartContainerRequest := true
default SignalProcessRequest := true
default RemoveContainerRequest := true
default DestroySandboxRequest := true
default WaitProcessRequest := true
"""


@pytest.mark.vm
def test_policy_denial_in_the_pod_vm_reaches_containerd(
    containerd: tuple[Containerd, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The VM boots (TCG), the agent answers Health.Check and CreateSandbox, and the measured
    policy from the pod's initdata annotation denies CreateContainer: ctr shows kata's text."""
    from tools.vm.guest_tests import pod_image_dir
    from tools.vm.qemu import qemu_available

    if qemu_available():
        pytest.skip(qemu_available() or "")
    ctd, digest = containerd
    image = pod_image_dir(request.config)
    config = tmp_path / "rt.toml"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "image",
            "runtime-config",
            "--image",
            str(image),
            "--out",
            str(config),
            "--image-mode",
            "guest-pull",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    toml = initdata_format.encode(
        initdata_format.Initdata("0.1.0", "sha256", {"policy.rego": DENY_WORKLOADS})
    )
    out = _run(
        ctd,
        "denied",
        config,
        f"io.kubernetes.cri.image-name=docker.io/library/cc-shim-test@{digest}",
        f"{initdata_format.ANNOTATION}={initdata_format.encode_annotation(toml)}",
    )
    assert out.returncode != 0
    assert "CreateContainerRequest is blocked by policy" in out.stderr, out.stderr + ctd.log()[-3000:]
    assert "event=vm_start" in ctd.log()
    _assert_clean(ctd, "denied")


@pytest.fixture(scope="module")
def pod_vm(
    containerd: tuple[Containerd, str],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> tuple[Containerd, Path, str]:
    """A host-EROFS runtime configuration for the session's image and the initdata annotation whose
    measured policy pins the test image's layer."""
    from tools.vm.guest_tests import pod_image_dir
    from tools.vm.qemu import qemu_available

    if qemu_available():
        pytest.skip(qemu_available() or "")
    ctd, digest = containerd
    work = tmp_path_factory.mktemp("hosterofs")
    config = host_erofs_config(pod_image_dir(request.config), work)
    cache = work / "layers"
    toml = initdata_format.encode(
        initdata_format.Initdata("0.1.0", "sha256", {"policy.rego": pinned_policy(ctd, digest, cache)})
    )
    return ctd, config, f"{initdata_format.ANNOTATION}={initdata_format.encode_annotation(toml)}"


@pytest.mark.vm
def test_ctr_run_prints_from_the_pod_vm_and_returns_the_exit_code(
    pod_vm: tuple[Containerd, Path, str],
) -> None:
    """`ctr run` of an imported image: the layer becomes a verity-pinned erofs disk, the container
    runs in the TCG pod VM under crun, its stdout reaches ctr through the FIFO and its exit code 7
    comes back as the task's exit status."""
    ctd, config, initdata_annotation = pod_vm
    events = subprocess.Popen(
        ["ctr", "--address", str(ctd.socket), "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ctd.env,
    )
    try:
        t0 = time.monotonic()
        out = _run(ctd, "hello", config, initdata_annotation)
        elapsed = time.monotonic() - t0
        time.sleep(1)
    finally:
        events.terminate()
        seen, _ = events.communicate(timeout=30)
    topics = [
        w for line in seen.splitlines() if '"hello"' in line for w in line.split() if w.startswith("/tasks/")
    ]
    # what the shim publishes, in the order the shim v2 protocol requires
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"], seen
    assert '"exit_status":7' in seen
    assert (out.returncode, out.stdout) == (7, "hi\n"), out.stderr + ctd.log()[-3000:]
    assert "event=process_exited cid=hello exec=hello status=7" in ctd.log()
    print(f"ctr run (boot + create + run + teardown) took {elapsed:.1f}s")
    _assert_clean(ctd, "hello")


@pytest.mark.vm
def test_exec_ps_kill_and_a_killed_qemu(pod_vm: tuple[Containerd, Path, str]) -> None:
    """A detached task: `ctr task exec` runs in the same container and returns its code and output,
    `ctr task metrics` shows the container's cgroup in the VM, `ctr task ps` lists the pod VM's
    process; then QEMU is killed from outside: containerd sees the
    task stopped, and deleting it leaves nothing behind."""
    ctd, config, initdata_annotation = pod_vm
    started = ctd.ctr(
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        str(config),
        "--annotation",
        initdata_annotation,
        IMAGE,
        "long",
        "sh",
        "-c",
        "sleep 600",
        timeout=400,
    )
    assert started.returncode == 0, started.stderr + ctd.log()[-3000:]
    try:
        ex = ctd.ctr(
            "task", "exec", "--exec-id", "e1", "long", "sh", "-c", "echo from-exec; exit 3", timeout=120
        )
        assert (ex.returncode, ex.stdout) == (3, "from-exec\n"), ex.stderr + ctd.log()[-2000:]
        piped = subprocess.run(
            [
                "ctr",
                "--address",
                str(ctd.socket),
                "task",
                "exec",
                "--exec-id",
                "e2",
                "long",
                "sh",
                "-c",
                "cat; echo done",
            ],
            input="through stdin\n",
            capture_output=True,
            text=True,
            timeout=120,
            env=ctd.env,
            check=False,
        )
        assert (piped.returncode, piped.stdout) == (0, "through stdin\ndone\n"), (
            piped.stderr + ctd.log()[-2000:]
        )
        metrics = ctd.ctr("task", "metrics", "long")
        assert metrics.returncode == 0, metrics.stderr
        rows = dict(line.split(None, 1) for line in metrics.stdout.splitlines()[1:] if line.strip())
        assert int(rows["pids.current"]) >= 1, metrics.stdout  # sh and sleep in the container's cgroup
        assert int(rows["memory.usage"]) > 0, metrics.stdout
        ps = ctd.ctr("task", "ps", "long")
        assert ps.returncode == 0, ps.stderr
        (qemu_pid_file,) = _rundir(ctd).glob("*/vm/qemu.pid")
        qemu_pid = int(qemu_pid_file.read_text())
        assert str(qemu_pid) in ps.stdout
        os.kill(qemu_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while "STOPPED" not in ctd.ctr("task", "ls").stdout:
            assert time.monotonic() < deadline, ctd.ctr("task", "ls").stdout + ctd.log()[-2000:]
            time.sleep(0.5)
        assert "event=vm_died" in ctd.log()
    finally:
        ctd.ctr("task", "kill", "-s", "SIGKILL", "long")
        ctd.ctr("task", "delete", "long")
        ctd.ctr("container", "delete", "long")
    _assert_clean(ctd, "long")


@pytest.mark.vm
def test_ctr_task_kill_reaches_the_container(pod_vm: tuple[Containerd, Path, str]) -> None:
    """`ctr task kill -s SIGKILL` becomes SignalProcess in the VM; the task exits 137 (128 + 9)."""
    ctd, config, initdata_annotation = pod_vm
    started = ctd.ctr(
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        str(config),
        "--annotation",
        initdata_annotation,
        IMAGE,
        "killme",
        "sh",
        "-c",
        "sleep 600",
        timeout=400,
    )
    assert started.returncode == 0, started.stderr + ctd.log()[-3000:]
    try:
        killed = ctd.ctr("task", "kill", "-s", "SIGKILL", "killme")
        assert killed.returncode == 0, killed.stderr
        deadline = time.monotonic() + 60
        while "event=process_exited cid=killme exec=killme status=137" not in ctd.log():
            assert time.monotonic() < deadline, ctd.log()[-2000:]
            time.sleep(0.5)
        assert "STOPPED" in ctd.ctr("task", "ls").stdout
    finally:
        ctd.ctr("task", "delete", "killme")
        ctd.ctr("container", "delete", "killme")
    _assert_clean(ctd, "killme")


async def test_shim_daemon_refuses_hostile_create_requests(tmp_path: Path) -> None:
    """The daemon as containerd's clients could drive it (ttrpc on its socket, no containerd): a bundle
    outside the task's directory, a host file as stdout, a foreign runtime-options type, an undecodable
    request and checkpoints are refused with INVALID_ARGUMENT, nothing is written; Shutdown ends the
    daemon and removes its directory."""
    import asyncio
    import os as _os

    from google.protobuf import any_pb2

    from guest.ttrpc import Client, Code, TtrpcError, parse_address
    from runtime.protocols import shim_pb2 as pb

    run = tmp_path / "run"
    directory = run / "d1"
    directory.mkdir(parents=True)
    sock = directory / "shim.sock"
    env = {**_os.environ, "PYTHONPATH": str(REPO), "CONTRAST_CC_RUN_DIR": str(run)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",
        "-m",
        "runtime",
        "-namespace",
        "default",
        "-address",
        "",
        "-id",
        "t1",
        "-socket",
        str(sock),
        "serve",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(200):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        client = await Client().connect(parse_address(f"unix://{sock}"))
        bundle = tmp_path / "t1"
        bundle.mkdir()
        (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "process": {"args": ["true"]}}')
        precious = tmp_path / "precious"
        precious.write_text("keep")
        fifo = tmp_path / "out.fifo"
        _os.mkfifo(fifo)
        hostile = [
            pb.CreateTaskRequest(id="t1", bundle=f"{tmp_path}/x/../t1"),
            pb.CreateTaskRequest(id="../t1", bundle=str(bundle)),
            pb.CreateTaskRequest(id="t1", bundle=str(bundle), stdout=str(precious)),
            pb.CreateTaskRequest(id="t1", bundle=str(bundle), stdout=str(fifo), checkpoint="/etc"),
            pb.CreateTaskRequest(
                id="t1",
                bundle=str(bundle),
                stdout=str(fifo),
                options=any_pb2.Any(type_url="containerd.runc.v1.Options", value=b""),
            ),
        ]
        for req in hostile:
            with pytest.raises(TtrpcError) as info:
                await client.call("containerd.task.v2.Task", "Create", req.SerializeToString(), timeout=30)
            assert info.value.code == Code.INVALID_ARGUMENT, (req, info.value.status)
        with pytest.raises(TtrpcError) as info:
            await client.call("containerd.task.v2.Task", "Create", b"\xff\xff\xff", timeout=30)
        assert info.value.code == Code.INVALID_ARGUMENT
        assert precious.read_text() == "keep"
        assert sorted(p.name for p in directory.iterdir()) == ["shim.sock"]
        await client.call(
            "containerd.task.v2.Task", "Shutdown", pb.ShutdownRequest(id="t1").SerializeToString(), timeout=30
        )
        await client.close()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert not directory.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.vm
def test_a_pod_of_two_containers_shares_one_pod_vm(pod_vm: tuple[Containerd, Path, str]) -> None:
    """CRI's annotations through ctr: a sandbox task (the guest's pause container) and two workload
    containers naming it by io.kubernetes.cri.sandbox-id are served by one shim and one pod VM;
    killing and deleting the sandbox ends the VM and leaves nothing."""
    ctd, config, initdata_annotation = pod_vm
    common = ["--runtime", RUNTIME, "--runtime-config-path", str(config), "--annotation", initdata_annotation]
    sandbox = ctd.ctr(
        "run",
        "-d",
        *common,
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        IMAGE,
        "pod1",
        "/pause",
        timeout=400,
    )
    assert sandbox.returncode == 0, sandbox.stderr + ctd.log()[-3000:]
    member = [
        "--annotation",
        "io.kubernetes.cri.container-type=container",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=pod1",
    ]
    try:
        one = ctd.ctr(
            "run", "--rm", *common, *member, IMAGE, "c1", "sh", "-c", "echo one; exit 3", timeout=200
        )
        two = ctd.ctr(
            "run", "--rm", *common, *member, IMAGE, "c2", "sh", "-c", "echo two; exit 4", timeout=200
        )
        assert (one.returncode, one.stdout) == (3, "one\n"), one.stderr + ctd.log()[-3000:]
        assert (two.returncode, two.stdout) == (4, "two\n"), two.stderr + ctd.log()[-3000:]
        assert len(list(_rundir(ctd).glob("*/vm/qemu.pid"))) == 1  # one pod VM for the pod
        assert ctd.log().count("event=vm_start") == ctd.log().count("event=sandbox_destroyed") + 1
        orphan = ctd.ctr(
            "run",
            "--rm",
            *common,
            "--annotation",
            "io.kubernetes.cri.container-type=container",
            "--annotation",
            "io.kubernetes.cri.sandbox-id=nopod",
            IMAGE,
            "c3",
            "true",
            timeout=200,
        )
        assert orphan.returncode != 0 and "sandbox nopod has no running shim" in orphan.stderr
    finally:
        ctd.ctr("task", "kill", "-s", "SIGKILL", "pod1")
        deadline = time.monotonic() + 60
        while "STOPPED" not in ctd.ctr("task", "ls").stdout and time.monotonic() < deadline:
            time.sleep(0.5)
        ctd.ctr("task", "delete", "pod1")
        ctd.ctr("container", "delete", "pod1")
    _assert_clean(ctd, "pod1")


@pytest.mark.vm
def test_ctr_run_with_a_terminal(pod_vm: tuple[Containerd, Path, str]) -> None:
    """`ctr run -t` (under `script`, which gives ctr a pty): the container gets a terminal in the VM, its
    output comes back through the one stdout stream and the exit code is returned."""
    import shlex
    import shutil

    if shutil.which("script") is None:
        pytest.skip("script (util-linux) not installed")
    ctd, config, initdata_annotation = pod_vm
    cmd = [
        "ctr",
        "--address",
        str(ctd.socket),
        "run",
        "--rm",
        "-t",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        str(config),
        "--annotation",
        initdata_annotation,
        IMAGE,
        "tty1",
        "sh",
        "-c",
        "test -t 0 && echo is-a-tty; exit 5",
    ]
    out = subprocess.run(
        ["script", "-qec", shlex.join(cmd), "/dev/null"],
        capture_output=True,
        text=True,
        timeout=400,
        env=ctd.env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 5, out.stdout + out.stderr + ctd.log()[-3000:]
    assert "is-a-tty" in out.stdout
    _assert_clean(ctd, "tty1")


@pytest.mark.vm
def test_bind_mounts_are_copied_into_the_pod_vm(pod_vm: tuple[Containerd, Path, str], tmp_path: Path) -> None:
    """No shared filesystem: a bind-mounted host directory (file, subdirectory, symbolic link, a file of
    2.5 MiB sent in 1 MiB chunks) and a single file arrive in the container through CopyFile."""
    ctd, config, initdata_annotation = pod_vm
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a").write_text("alpha\n")
    (data / "sub" / "b").write_text("beta\n")
    (data / "link").symlink_to("sub/b")
    big = bytes(range(256)) * (10 * 1024)  # 2.5 MiB
    (data / "big").write_bytes(big)
    single = tmp_path / "greeting"
    single.write_text("hello from the host\n")
    script = "cat /data/a /data/sub/b /data/link /etc/greeting; md5sum /data/big; exit 0"
    out = ctd.ctr(
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        str(config),
        "--annotation",
        initdata_annotation,
        "--mount",
        f"type=bind,src={data},dst=/data,options=rbind:ro",
        "--mount",
        f"type=bind,src={single},dst=/etc/greeting,options=rbind:ro",
        IMAGE,
        "binds",
        "sh",
        "-c",
        script,
        timeout=400,
    )
    import hashlib

    assert out.returncode == 0, out.stderr + ctd.log()[-3000:]
    assert out.stdout.splitlines() == [
        "alpha",
        "beta",
        "beta",
        "hello from the host",
        f"{hashlib.md5(big).hexdigest()}  /data/big",
    ]
    _assert_clean(ctd, "binds")
