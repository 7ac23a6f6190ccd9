"""SNP evidence from the Linux /dev/sev-guest ioctls (SNP_GET_REPORT, SNP_GET_EXT_REPORT).

The structs mirror include/uapi/linux/sev-guest.h byte for byte:

    snp_guest_request_ioctl (32): u8 msg_version, pad[7], u64 req_data, u64 resp_data,
                                  u64 exitinfo2 = {u32 fw_error, u32 vmm_error}
    snp_report_req (96):          u8 user_data[64], u32 vmpl, u8 rsvd[28]
    snp_ext_report_req (112):     snp_report_req, u64 certs_address, u32 certs_len (+4 pad)
    snp_report_resp (4000):       MSG_REPORT_RSP: u32 status, u32 report_size, rsvd[24], report

A zero ioctl return does not mean success: the firmware status inside the response is checked
too. The driver wipes its VMPCK on unexpected errors, after which every request fails with
ENOTTY until reboot; we never retry that. Requests are spaced at least 2 s apart (throttling seen
on Linux 6.1), transient errors are retried a few times with tenacity, and a too-small
certificate buffer is grown to the size the host asks for (EIO with vmm_error INVALID_LEN).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from ..errors import DeviceLockedError, FirmwareError, ProviderError
from ..evidence import Evidence, Platform, pad_report_data
from ..snp.abi import REPORT_SIZE

DEVICE_PATH = "/dev/sev-guest"
MSG_VERSION = 1
SNP_REPORT_RESP_SIZE = 4000
MSG_REPORT_RSP_HEADER = 0x20
PAGE_SIZE = 4096
SEV_FW_BLOB_MAX_SIZE = 0x4000  # mainline psp-sev.h: 16 KiB of certificates
MAX_CERTS_LEN = 1 << 20
VMM_ERR_INVALID_LEN = 1
VMM_ERR_BUSY = 2
FW_ERR_NONE = 0xFFFFFFFF  # some kernels report -1 when no firmware error happened
THROTTLE_SECONDS = 2.0
_log = logging.getLogger(__name__)


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("S") << 8) | nr


class SnpGuestRequestIoctl(ctypes.Structure):
    _fields_ = [
        ("msg_version", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 7),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("fw_error", ctypes.c_uint32),
        ("vmm_error", ctypes.c_uint32),
    ]


class SnpReportReq(ctypes.Structure):
    _fields_ = [
        ("user_data", ctypes.c_uint8 * 64),
        ("vmpl", ctypes.c_uint32),
        ("rsvd", ctypes.c_uint8 * 28),
    ]


class SnpExtReportReq(ctypes.Structure):
    _fields_ = [
        ("data", SnpReportReq),
        ("certs_address", ctypes.c_uint64),
        ("certs_len", ctypes.c_uint32),
    ]


class SnpReportResp(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint8 * SNP_REPORT_RESP_SIZE)]


SNP_GET_REPORT = _iowr(0x0, ctypes.sizeof(SnpGuestRequestIoctl))
SNP_GET_DERIVED_KEY = _iowr(0x1, ctypes.sizeof(SnpGuestRequestIoctl))
SNP_GET_EXT_REPORT = _iowr(0x2, ctypes.sizeof(SnpGuestRequestIoctl))


class SevGuestDevice(Protocol):
    """The ioctl surface of /dev/sev-guest (a fake implements it in tests)."""

    def ioctl(self, request: int, arg: SnpGuestRequestIoctl) -> None:
        """Issue the ioctl; raise OSError with the errno on failure (arg is updated in place)."""


class LinuxSevGuestDevice:
    def __init__(self, path: str = DEVICE_PATH) -> None:
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise ProviderError(f"cannot open {path}: {exc.strerror}") from None

    def ioctl(self, request: int, arg: SnpGuestRequestIoctl) -> None:
        fcntl.ioctl(self._fd, request, arg, True)

    def close(self) -> None:
        os.close(self._fd)


class _TransientError(Exception):
    """The host was busy or timed out; worth another try after the throttle interval."""


def _parse_response(resp: SnpReportResp) -> bytes:
    raw = bytes(resp.data)
    status = int.from_bytes(raw[0:4], "little")
    size = int.from_bytes(raw[4:8], "little")
    if status != 0:
        raise FirmwareError(
            f"SNP firmware returned status 0x{status:x} for the report request", fw_error=status
        )
    if size != REPORT_SIZE:
        raise ProviderError(f"firmware report size is {size}, expected {REPORT_SIZE}")
    return raw[MSG_REPORT_RSP_HEADER : MSG_REPORT_RSP_HEADER + size]


class SevGuestProvider:
    """SNP reports (with the host's certificate table when available) via /dev/sev-guest."""

    def __init__(
        self,
        device: SevGuestDevice | None = None,
        *,
        vmpl: int = 0,
        extended: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 3,
    ) -> None:
        if not 0 <= vmpl <= 3:
            raise ValueError("vmpl must be 0..3")
        self._device = device
        self._vmpl = vmpl
        self._extended = extended
        self._clock = clock
        self._sleep = sleep
        self._attempts = attempts
        self._last: float | None = None
        self._locked = False
        self._mutex = threading.Lock()

    @property
    def platform(self) -> Platform:
        return "snp"

    def _dev(self) -> SevGuestDevice:
        if self._device is None:
            self._device = LinuxSevGuestDevice()
        return self._device

    def _throttle(self) -> None:
        if self._last is not None:
            wait = THROTTLE_SECONDS - (self._clock() - self._last)
            if wait > 0:
                self._sleep(wait)
        self._last = self._clock()

    def _issue(self, request: int, req: ctypes.Structure, resp: SnpReportResp) -> SnpGuestRequestIoctl:
        if self._locked:
            raise DeviceLockedError("the sev-guest driver disabled its VMPCK earlier; reboot required")
        arg = SnpGuestRequestIoctl(
            msg_version=MSG_VERSION,
            req_data=ctypes.addressof(req),
            resp_data=ctypes.addressof(resp),
            fw_error=0,
            vmm_error=0,
        )
        self._throttle()
        try:
            self._dev().ioctl(request, arg)
        except OSError as exc:
            return self._classify(exc, arg)
        return arg

    def _classify(self, exc: OSError, arg: SnpGuestRequestIoctl) -> SnpGuestRequestIoctl:
        if exc.errno == errno.ENOTTY:
            self._locked = True
            _log.error("event=sev_guest_locked errno=ENOTTY action=no_retry")
            raise DeviceLockedError("sev-guest returned ENOTTY: the VMPCK is wiped, no retries") from None
        if exc.errno == errno.EIO:
            if arg.vmm_error == VMM_ERR_INVALID_LEN:
                return arg  # caller grows the certificate buffer
            if arg.vmm_error == VMM_ERR_BUSY:
                raise _TransientError("host busy") from None
            fw = arg.fw_error
            if fw not in (0, FW_ERR_NONE):
                raise FirmwareError(
                    f"SNP firmware error 0x{fw:x} (vmm error {arg.vmm_error})",
                    fw_error=fw,
                    vmm_error=arg.vmm_error,
                ) from None
            raise ProviderError(f"sev-guest request failed with EIO (vmm error {arg.vmm_error})") from None
        if exc.errno in (errno.ETIMEDOUT, errno.EAGAIN, errno.EBUSY, errno.EINTR):
            _log.warning("event=sev_guest_transient errno=%s", errno.errorcode.get(exc.errno or 0, exc.errno))
            raise _TransientError(os.strerror(exc.errno or 0)) from None
        raise ProviderError(f"sev-guest request failed: {exc.strerror or exc}") from None

    def _retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(_TransientError),
            stop=stop_after_attempt(self._attempts),
            wait=wait_fixed(THROTTLE_SECONDS),
            sleep=self._sleep,
            reraise=True,
        )

    def get_report(self, report_data: bytes) -> tuple[bytes, bytes]:
        """(report, cert table) for `report_data`; the table is empty if the host has none."""
        data = pad_report_data(report_data)
        with self._mutex:
            try:
                for attempt in self._retrying():
                    with attempt:
                        return self._get_report_once(data)
            except _TransientError as exc:
                raise ProviderError(f"sev-guest stayed busy after {self._attempts} attempts: {exc}") from None
        raise AssertionError("unreachable")

    def _get_report_once(self, data: bytes) -> tuple[bytes, bytes]:
        base = SnpReportReq(vmpl=self._vmpl)
        ctypes.memmove(base.user_data, data, 64)
        resp = SnpReportResp()
        if not self._extended:
            self._issue(SNP_GET_REPORT, base, resp)
            return _parse_response(resp), b""
        certs_len = SEV_FW_BLOB_MAX_SIZE
        for _ in range(2):
            certs = ctypes.create_string_buffer(certs_len)
            req = SnpExtReportReq(data=base, certs_address=ctypes.addressof(certs), certs_len=certs_len)
            arg = self._issue(SNP_GET_EXT_REPORT, req, resp)
            if arg.vmm_error == VMM_ERR_INVALID_LEN:
                wanted = req.certs_len
                if wanted <= certs_len or wanted > MAX_CERTS_LEN or wanted % PAGE_SIZE:
                    raise ProviderError(f"host asked for an invalid certificate buffer of {wanted} bytes")
                _log.info("event=sev_guest_certs_resize from=%d to=%d", certs_len, wanted)
                certs_len = wanted
                continue
            return _parse_response(resp), _trim_table(certs.raw)
        raise ProviderError("host asked to grow the certificate buffer twice")

    def get_evidence(self, report_data: bytes) -> Evidence:
        report, table = self.get_report(report_data)
        return Evidence(platform="snp", report=report, cert_table=table, provider="sev-guest")


def _trim_table(buf: bytes) -> bytes:
    """Cut the page-sized buffer after the last certificate (an all-zero buffer means no table)."""
    if not any(buf[:24]):
        return b""
    end = 0
    pos = 0
    while pos + 24 <= len(buf) and any(buf[pos : pos + 24]):
        off = int.from_bytes(buf[pos + 16 : pos + 20], "little")
        length = int.from_bytes(buf[pos + 20 : pos + 24], "little")
        end = max(end, off + length)
        pos += 24
    return buf[: max(end, pos + 24)]
