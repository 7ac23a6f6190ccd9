"""``containerd-shim-contrast-cc-v2``: the shim v2 binary containerd runs.

containerd runs it with the bundle as working directory and these flags:
``-namespace NS -address CONTAINERD_SOCKET -publish-binary CONTAINERD -id ID [-bundle DIR] [-debug]``
followed by a subcommand:

- ``start``: print the ttrpc address of the shim that serves this task. A container of a CRI pod
  (annotation ``io.kubernetes.cri.sandbox-id``) is served by its sandbox's shim; otherwise a new
  shim daemon is spawned (``serve``), listening on a unix socket under ``$CONTRAST_CC_RUN_DIR``
  (default ``/run/contrast-cc``) named by a hash of (containerd address, namespace, sandbox id).
- ``delete``: containerd lost the shim; kill what it left (the pod VM), remove its state and print
  a DeleteResponse.
- ``serve`` (internal): the daemon; the task service over ttrpc until Shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from google.protobuf import timestamp_pb2

from guest.ttrpc import Address, Server

from . import validate
from .errors import InvalidInputError, ShimError
from .events import Publisher
from .protocols import shim_pb2
from .service import CONTAINER_TYPE, SANDBOX_ID, TaskService

__all__ = ["main", "run_dir", "shim_dir"]

log = logging.getLogger("runtime.shim")

RUN_DIR_ENV = "CONTRAST_CC_RUN_DIR"
DEFAULT_RUN_DIR = Path("/run/contrast-cc")
START_TIMEOUT = 20.0


def run_dir() -> Path:
    value = os.environ.get(RUN_DIR_ENV, "")
    if value and (not value.startswith("/") or os.path.normpath(value) != value):
        raise InvalidInputError(RUN_DIR_ENV, value, "an absolute normalised path")
    return Path(value) if value else DEFAULT_RUN_DIR


def shim_dir(address: str, namespace: str, group: str) -> Path:
    """The daemon's own directory; a hash, so no host-supplied string becomes a path component."""
    key = hashlib.sha256(f"{address}\0{namespace}\0{group}".encode()).hexdigest()[:24]
    return run_dir() / key


def _parser() -> argparse.ArgumentParser:
    # Go's flag package: single-dash long flags; argparse accepts them as declared.
    p = argparse.ArgumentParser(prog="containerd-shim-contrast-cc-v2", allow_abbrev=False)
    p.add_argument("-namespace", default="")
    p.add_argument("-address", default="")
    p.add_argument("-publish-binary", dest="publish_binary", default="containerd")
    p.add_argument("-id", default="")
    p.add_argument("-bundle", default="")
    p.add_argument("-socket", default="")
    p.add_argument("-debug", action="store_true")
    p.add_argument("-v", dest="version", action="store_true")
    p.add_argument("action", nargs="?", default="", choices=["", "start", "delete", "serve"])
    return p


def _group(bundle: Path, task_id: str) -> str:
    try:
        doc = json.loads(validate.read_spec(bundle))
    except (ValueError, ShimError):
        return task_id
    ann = validate.check_annotations(doc.get("annotations") if isinstance(doc, dict) else None)
    if ann.get(CONTAINER_TYPE) == "container" and SANDBOX_ID in ann:
        return validate.check_id(ann[SANDBOX_ID], f"annotation {SANDBOX_ID}")
    return task_id


def _alive(sock_path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(sock_path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _log_target(bundle: Path, directory: Path) -> int:
    """containerd reads shim logs from the FIFO ``log`` in the bundle; else a file of our own."""
    log_fifo = bundle / "log"
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.lstat(log_fifo).st_mode):
            fd = os.open(log_fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
            os.set_blocking(fd, True)
            return fd
    return os.open(directory / "shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


def cmd_start(args: argparse.Namespace) -> int:
    task_id = validate.check_id(args.id)
    validate.check_namespace(args.namespace)
    bundle = validate.check_bundle(args.bundle or os.getcwd(), task_id)
    group = _group(bundle, task_id)
    directory = shim_dir(args.address, args.namespace, group)
    sock = directory / "shim.sock"
    if group != task_id:
        if not _alive(sock):
            raise ShimError(f"sandbox {group} has no running shim (its socket {sock} does not answer)")
    else:
        if _alive(sock):
            raise ShimError(f"a shim for {task_id} is already running at {sock}")
        directory.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        logfd = _log_target(bundle, directory)
        argv = [
            sys.executable,
            "-P",
            "-m",
            "runtime",
            "-namespace",
            args.namespace,
            "-address",
            args.address,
            "-publish-binary",
            args.publish_binary,
            "-id",
            task_id,
            "-bundle",
            str(bundle),
            "-socket",
            str(sock),
            *(["-debug"] if args.debug else []),
            "serve",
        ]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=logfd,
            cwd=str(bundle),
            start_new_session=True,
            close_fds=True,
        )
        os.close(logfd)
        deadline = time.monotonic() + START_TIMEOUT
        while not _alive(sock):
            if proc.poll() is not None:
                raise ShimError(f"shim daemon exited with {proc.returncode} before listening")
            if time.monotonic() > deadline:
                proc.kill()
                raise ShimError(f"shim daemon did not listen on {sock} within {START_TIMEOUT:.0f}s")
            time.sleep(0.02)
        (directory / "shim.pid").write_text(str(proc.pid))
    address = f"unix://{sock}"
    with contextlib.suppress(OSError):
        (bundle / "address").write_text(address)
    sys.stdout.write(address)
    sys.stdout.flush()
    return 0


def _our_qemu(pid: int, workdir: Path) -> bool:
    """Is ``pid`` the QEMU of ``workdir`` (its argv names the pid file there)? Never kill by name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(workdir / "qemu.pid").encode() in argv


def cmd_delete(args: argparse.Namespace) -> int:
    task_id = validate.check_id(args.id)
    validate.check_namespace(args.namespace)
    directory = shim_dir(args.address, args.namespace, task_id)
    workdir = directory / "vm"
    with contextlib.suppress(OSError, ValueError):
        pid = int((workdir / "qemu.pid").read_text().strip())
        if _our_qemu(pid, workdir):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError):
        pid = int((directory / "shim.pid").read_text().strip())
        if Path(f"/proc/{pid}/cmdline").read_bytes().find(str(directory / "shim.sock").encode()) >= 0:
            os.kill(pid, signal.SIGKILL)
    if directory.is_dir() and not directory.is_symlink():
        shutil.rmtree(directory, ignore_errors=True)
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    sys.stdout.buffer.write(
        shim_pb2.DeleteResponse(exit_status=128 + signal.SIGKILL, exited_at=ts).SerializeToString()
    )
    sys.stdout.flush()
    return 0


async def _serve(args: argparse.Namespace) -> int:
    sock = Path(args.socket)
    directory = sock.parent
    stop = asyncio.Event()
    publisher = Publisher(args.publish_binary, args.address, args.namespace)
    ctr = shutil.which("ctr") or str(Path(args.publish_binary).with_name("ctr"))
    service = TaskService(
        namespace=args.namespace,
        publisher=publisher,
        state_dir=directory,
        on_shutdown=stop.set,
        containerd=(ctr, args.address) if args.address else None,
    )
    server = Server(service.handlers(), eager=False)
    await server.start(Address("unix", path=str(sock)))
    loop = asyncio.get_running_loop()
    for signo in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signo, stop.set)
    log.info("event=shim_serving socket=%s id=%s", sock, args.id)
    await stop.wait()
    await service._teardown_sandbox()
    await publisher.drain()
    await server.close()
    await asyncio.to_thread(shutil.rmtree, directory, True)
    log.info("event=shim_exit id=%s", args.id)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    validate.check_id(args.id)
    sock = Path(args.socket)
    if sock.parent.parent != run_dir():
        raise InvalidInputError("-socket", args.socket, f"a socket in a directory under {run_dir()}")
    return asyncio.run(_serve(args))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        print("containerd-shim-contrast-cc-v2 (confidential-guest)")
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        stream=sys.stderr,
        format="time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    try:
        if args.action == "start":
            return cmd_start(args)
        if args.action == "delete":
            return cmd_delete(args)
        if args.action == "serve":
            return cmd_serve(args)
    except ShimError as e:
        print(f"containerd-shim-contrast-cc-v2: {e.message}", file=sys.stderr)
        return 1
    print("containerd-shim-contrast-cc-v2: expected a subcommand: start, delete", file=sys.stderr)
    return 2
