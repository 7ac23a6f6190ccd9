"""Fakes with kernel semantics for the guest interfaces: /dev/sev-guest and configfs-tsm.

They read and write the caller's memory/files exactly as the kernel does (request structs through
the pointers in snp_guest_request_ioctl, certs_len written back, EIO + vmm_error for a short
certificate buffer; configfs attribute files created on mkdir, generation bumped on writes,
outblob generated on read), so the providers are exercised through their real code paths.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path

from attestation.providers import sevguest as sg
from attestation.providers.configfs_tsm import OsConfigfsOps
from attestation.testing import SimulatedSnpProvider


class FakeSevGuest:
    def __init__(
        self,
        sim: SimulatedSnpProvider,
        cert_table: bytes = b"",
        *,
        fw_status: int = 0,
        errors: list[tuple[int, int, int]] | None = None,
    ) -> None:
        self.sim = sim
        self.cert_table = cert_table
        self.fw_status = fw_status
        self.errors = list(errors or [])  # (errno, fw_error, vmm_error) to raise on successive calls
        self.requests: list[tuple[int, bytes]] = []

    def ioctl(self, request: int, arg: sg.SnpGuestRequestIoctl) -> None:
        if arg.msg_version != 1:
            raise OSError(errno.EINVAL, "msg_version")
        if self.errors:
            err, fw, vmm = self.errors.pop(0)
            arg.fw_error, arg.vmm_error = fw, vmm
            raise OSError(err, os.strerror(err))
        if request == sg.SNP_GET_REPORT:
            size = ctypes.sizeof(sg.SnpReportReq)
        elif request == sg.SNP_GET_EXT_REPORT:
            size = ctypes.sizeof(sg.SnpExtReportReq)
        else:
            raise OSError(errno.ENOTTY, "unknown ioctl")
        raw = ctypes.string_at(arg.req_data, size)
        self.requests.append((request, raw))
        user_data, vmpl = raw[:64], struct.unpack_from("<I", raw, 64)[0]
        if any(raw[68:96]) or vmpl > 3:
            raise OSError(errno.EINVAL, "reserved")
        if request == sg.SNP_GET_EXT_REPORT:
            certs_address, certs_len = struct.unpack_from("<QI", raw, 96)
            needed = -(-len(self.cert_table) // 4096) * 4096
            if certs_len and certs_address:
                if certs_len % 4096 or certs_len > 0x100000:
                    raise OSError(errno.EINVAL, "certs_len")
                if needed > certs_len:
                    # The kernel tells user space how much it needs and fails with EIO.
                    ctypes.memmove(
                        arg.req_data + sg.SnpExtReportReq.certs_len.offset, struct.pack("<I", needed), 4
                    )
                    arg.fw_error, arg.vmm_error = 0, sg.VMM_ERR_INVALID_LEN
                    raise OSError(errno.EIO, "certs buffer too small")
                ctypes.memmove(certs_address, self.cert_table, len(self.cert_table))
        report = self.sim.make_report(user_data)
        resp = struct.pack("<II24x", self.fw_status, len(report)) + report
        ctypes.memmove(arg.resp_data, resp, len(resp))


class FakeConfigfs(OsConfigfsOps):
    """configfs-tsm behaviour on a plain directory tree."""

    def __init__(
        self,
        provider: str,
        make: Callable[[bytes], bytes],
        aux: bytes = b"",
        *,
        privlevel_floor: int = 0,
        racer: bool = False,
    ) -> None:
        self.provider = provider
        self.make = make
        self.aux = aux
        self.floor = privlevel_floor
        self.racer = racer
        self.created: list[Path] = []

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)
        self.created.append(path)
        attrs = {"provider": f"{self.provider}\n", "generation": "0\n", "inblob": "", "outblob": ""}
        if self.provider == "sev_guest":
            attrs.update({"privlevel": "", "privlevel_floor": f"{self.floor}\n", "auxblob": ""})
        for name, content in attrs.items():
            (path / name).write_text(content)

    def rmdir(self, path: Path) -> None:
        for f in path.iterdir():
            f.unlink()
        os.rmdir(path)

    def _bump(self, entry: Path) -> None:
        gen = int((entry / "generation").read_text())
        (entry / "generation").write_text(f"{gen + 1}\n")

    def write(self, path: Path, data: bytes) -> None:
        if path.name == "inblob":
            if len(data) > 64:
                raise OSError(errno.EINVAL, "inblob", str(path))
        elif path.name == "privlevel":
            level = int(data.decode())
            if not self.floor <= level <= 3:
                raise OSError(errno.EINVAL, "privlevel", str(path))
        else:
            raise OSError(errno.EACCES, "read-only attribute", str(path))
        path.write_bytes(data)
        self._bump(path.parent)

    def read(self, path: Path) -> bytes:
        if path.name == "outblob":
            inblob = (path.parent / "inblob").read_bytes()
            if len(inblob) != 64:
                raise OSError(errno.EINVAL, "inblob must be 64 bytes", str(path))
            if self.racer:
                self._bump(path.parent)
            out = self.make(inblob)
            path.write_bytes(out)
            if (path.parent / "auxblob").exists():
                (path.parent / "auxblob").write_bytes(self.aux)
            return out
        if path.name in ("inblob", "privlevel"):
            raise OSError(errno.EACCES, "write-only attribute", str(path))
        return path.read_bytes()
