"""The encrypted persistent volume (Contrast's ``secure-pv`` annotation) the initializer keeps open.

``contrast generate`` gives the initializer the pod's block volumeDevice at ``/dev/csi0``
(``CRYPTSETUP_DEVICE``) and an emptyDir at ``/state`` with bidirectional mount propagation. The
initializer opens the device as LUKS2 with authenticated encryption (guest/storage/crypt.py),
keyed from the workload secret it received from the Coordinator (HKDF, so the same workload opens
it on any node after any restart, and only it), formats it only if it has no LUKS header, mounts
it at ``/state``, writes ``/done`` and stays running until SIGTERM (as a native sidecar), because
the mount lives as long as the process that keeps it; on SIGTERM it unmounts and closes.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from common.files import atomic_write
from guest.storage import (
    CryptVolume,
    StorageError,
    block_device_at,
    key_from_workload_secret,
    mapper_name,
    open_volume,
)

__all__ = ["SecurePvError", "open_secure_pv", "read_workload_secret", "serve_secure_pv"]

log = logging.getLogger("initializer")

DEFAULT_DEVICE = "/dev/csi0"
DEFAULT_MOUNT = Path("/state")
SECRET_FILE = Path("/contrast/secrets/workload-secret-seed")


class SecurePvError(Exception):
    def __init__(self, step: str, cause: BaseException | str) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step


def read_workload_secret(path: Path = SECRET_FILE) -> bytes:
    """The workload secret as the initializer wrote it: lower-case hex, no newline."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise SecurePvError("reading the workload secret", f"{path}: {e}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise SecurePvError("reading the workload secret", f"{path} is not hex") from None
    if len(secret) < 32 or text != secret.hex():
        raise SecurePvError("reading the workload secret",
                            f"{path}: expected at least 32 bytes as lower-case hex without newline")
    return secret


def open_secure_pv(device_path: str, mount_point: Path, secret: bytes) -> CryptVolume:
    try:
        device = block_device_at(Path(device_path))
        key = key_from_workload_secret(secret, "secure-pv")
        return open_volume(device, mapper_name(device_path, str(mount_point)), key, mount_point=mount_point)
    except StorageError as e:
        raise SecurePvError("opening the encrypted volume", e) from e


def serve_secure_pv(device_path: str, mount_point: Path, secret: bytes, done_file: Path | None,
                    stop: threading.Event) -> CryptVolume:
    """Open and mount, write ``done_file``, hold the mount until ``stop``, then unmount and close."""
    vol = open_secure_pv(device_path, mount_point, secret)
    log.info("event=secure_pv_mounted device=%s mount_point=%s formatted=%s", device_path, mount_point,
             vol.formatted)
    try:
        if done_file is not None:
            done_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(done_file, b"", mode=0o644)
        stop.wait()
    finally:
        try:
            vol.close()
        except StorageError as e:
            raise SecurePvError("closing the encrypted volume", e) from e
        log.info("event=secure_pv_closed mount_point=%s", mount_point)
    return vol
