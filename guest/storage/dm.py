"""The device-mapper control interface (``/dev/mapper/control`` ioctls), in Python.

Layout from ``include/uapi/linux/dm-ioctl.h``: every command takes a ``struct dm_ioctl``
(312 bytes) followed by a command-specific payload; ``data_size`` is the whole buffer and
``data_start`` the payload offset. A table is a list of ``struct dm_target_spec`` (40 bytes)
each followed by its NUL-terminated parameter string, ``next`` being the 8-aligned distance to
the following spec. This is what ``dmsetup create --table`` does, without libdevmapper or udev.
"""

from __future__ import annotations

import errno as errno_mod
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import DeviceMapperError

__all__ = ["CONTROL", "DeviceMapper", "MappedDevice", "Target"]

CONTROL = Path("/dev/mapper/control")
_DM_NAME_LEN = 128
_DM_UUID_LEN = 129
_VERSION = (4, 0, 0)
# version[3], data_size, data_start, target_count, open_count, flags, event_nr, padding, dev,
# name, uuid, data[7]
_DM_IOCTL = struct.Struct("=3IIIIiIIIQ128s129s7s")
_TARGET_SPEC = struct.Struct("=QQiI16s")
_NAME_LIST = struct.Struct("=QI")
assert _DM_IOCTL.size == 312 and _TARGET_SPEC.size == 40

# ioctl numbers: _IOWR(0xfd, nr, struct dm_ioctl)
_IOWR = (3 << 30) | (_DM_IOCTL.size << 16) | (0xFD << 8)
DM_VERSION, DM_REMOVE_ALL, DM_LIST_DEVICES, DM_DEV_CREATE, DM_DEV_REMOVE = range(5)
DM_DEV_SUSPEND, DM_DEV_STATUS, DM_TABLE_LOAD, DM_TABLE_STATUS = 6, 7, 9, 12

READONLY_FLAG = 1 << 0
SUSPEND_FLAG = 1 << 1
STATUS_TABLE_FLAG = 1 << 4
BUFFER_FULL_FLAG = 1 << 8


@dataclass(frozen=True, slots=True)
class Target:
    start: int  # sectors
    length: int  # sectors
    type: str
    params: str


@dataclass(frozen=True, slots=True)
class MappedDevice:
    name: str
    major: int
    minor: int

    @property
    def path(self) -> Path:
        """The node devtmpfs creates for the device (there is no udev for /dev/mapper/<name>)."""
        return Path(f"/dev/dm-{self.minor}")

    def sysfs_name(self) -> str | None:
        """The name the kernel reports for this device number (None if it does not exist)."""
        try:
            return Path(f"/sys/dev/block/{self.major}:{self.minor}/dm/name").read_text().strip()
        except OSError:
            return None


def _decode_dev(dev: int) -> tuple[int, int]:
    # new_encode_dev in the kernel: minor low 8 bits | major << 8 | (minor >> 8) << 20
    return (dev >> 8) & 0xFFF, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode()


class DeviceMapper:
    """A handle on /dev/mapper/control; each method is one ioctl (or the create sequence)."""

    def __init__(self, control: Path = CONTROL) -> None:
        self.control = control

    def _ioctl(self, cmd: int, name: str = "", *, flags: int = 0, payload: bytes = b"", uuid: str = "",
               target_count: int = 0, out_size: int = 16384) -> tuple[tuple[object, ...], bytes]:
        if len(name.encode()) >= _DM_NAME_LEN or len(uuid.encode()) >= _DM_UUID_LEN:
            raise DeviceMapperError(_OPS.get(cmd, str(cmd)), name, errno_mod.EINVAL, "name or uuid too long")
        size = max(_DM_IOCTL.size + len(payload), out_size)
        while True:
            header = _DM_IOCTL.pack(*_VERSION, size, _DM_IOCTL.size, target_count, 0, flags, 0, 0, 0,
                                    name.encode(), uuid.encode(), b"")
            buf = bytearray(header + payload + b"\0" * (size - _DM_IOCTL.size - len(payload)))
            try:
                fd = os.open(self.control, os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                raise DeviceMapperError("open", str(self.control), e.errno or 0, e.strerror or "") from e
            try:
                fcntl.ioctl(fd, _IOWR | cmd, buf, True)
            except OSError as e:
                raise DeviceMapperError(_OPS.get(cmd, str(cmd)), name, e.errno or 0, e.strerror or "") from e
            finally:
                os.close(fd)
            fields = _DM_IOCTL.unpack_from(buf)
            if fields[7] & BUFFER_FULL_FLAG and size < (1 << 24):
                size *= 4
                continue
            data_start, data_size = fields[4], fields[3]
            return fields, bytes(buf[data_start:data_size])

    def version(self) -> tuple[int, int, int]:
        fields, _ = self._ioctl(DM_VERSION)
        return int(fields[0]), int(fields[1]), int(fields[2])  # type: ignore[call-overload]

    def list_devices(self) -> dict[str, tuple[int, int]]:
        """Every mapped device: name → (major, minor)."""
        _, data = self._ioctl(DM_LIST_DEVICES)
        out: dict[str, tuple[int, int]] = {}
        off = 0
        while len(data) - off >= _NAME_LIST.size:
            dev, nxt = _NAME_LIST.unpack_from(data, off)
            if dev == 0:
                break  # the kernel's "no devices" marker
            name = _cstr(data[off + _NAME_LIST.size:])
            out[name] = _decode_dev(dev)
            if nxt == 0:
                break
            off += nxt
        return out

    def create(self, name: str, targets: list[Target], *, readonly: bool = True,
               uuid: str = "") -> MappedDevice:
        """Create ``name``, load ``targets`` and resume it; on any failure the device is removed."""
        self._ioctl(DM_DEV_CREATE, name, uuid=uuid)
        try:
            payload = bytearray()
            for t in targets:
                params = t.params.encode() + b"\0"
                params += b"\0" * (-(_TARGET_SPEC.size + len(params)) % 8)
                payload += _TARGET_SPEC.pack(t.start, t.length, 0, _TARGET_SPEC.size + len(params),
                                             t.type.encode()) + params
            self._ioctl(DM_TABLE_LOAD, name, flags=READONLY_FLAG if readonly else 0, payload=bytes(payload),
                        target_count=len(targets))
            fields, _ = self._ioctl(DM_DEV_SUSPEND, name)  # without SUSPEND_FLAG: resume
        except BaseException:
            self.remove(name)
            raise
        major, minor = _decode_dev(int(fields[10]))  # type: ignore[call-overload]
        return MappedDevice(name, major, minor)

    def remove(self, name: str) -> None:
        self._ioctl(DM_DEV_REMOVE, name)

    def table(self, name: str) -> list[Target]:
        """The live table of ``name`` (DM_TABLE_STATUS with the table flag)."""
        fields, data = self._ioctl(DM_TABLE_STATUS, name, flags=STATUS_TABLE_FLAG)
        count = int(fields[5])  # type: ignore[call-overload]
        targets: list[Target] = []
        off = 0
        for _ in range(count):
            start, length, _status, nxt, ttype = _TARGET_SPEC.unpack_from(data, off)
            params = _cstr(data[off + _TARGET_SPEC.size:])
            targets.append(Target(start, length, _cstr(ttype), params))
            off = nxt  # in results ``next`` counts from the start of the data, not from this spec
        return targets


_OPS = {DM_VERSION: "version", DM_LIST_DEVICES: "list", DM_DEV_CREATE: "create", DM_DEV_REMOVE: "remove",
        DM_DEV_SUSPEND: "resume", DM_DEV_STATUS: "status", DM_TABLE_LOAD: "load", DM_TABLE_STATUS: "table"}
