"""Guest evidence providers: the /dev/sev-guest ABI byte by byte, the ioctl protocol against a fake
device with kernel semantics, configfs-tsm against a directory tree that behaves like configfs."""

from __future__ import annotations

import ctypes
import errno
import struct
from pathlib import Path

import pytest
from attfakes import FakeConfigfs, FakeSevGuest
from attvectors import read
from cryptography.hazmat.primitives.serialization import Encoding

from attestation import (
    ConfigfsTsmProvider,
    NoProviderError,
    ProviderError,
    SevGuestProvider,
    detect_platform,
    detect_provider,
    local_host_data,
    verify_snp_attestation,
)
from attestation.errors import DeviceLockedError, FirmwareError, GenerationRaceError
from attestation.providers import sevguest as sg
from attestation.providers.configfs_tsm import probe_provider
from attestation.snp import certs
from attestation.testing import SimulatedAmdRoot, SimulatedSnpProvider


@pytest.fixture(scope="module")
def sim() -> SimulatedSnpProvider:
    return SimulatedSnpProvider(root=SimulatedAmdRoot.generate())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


# --- ABI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("struct_type", "size", "offsets"),
    [
        (
            sg.SnpGuestRequestIoctl,
            32,
            {"msg_version": 0, "req_data": 8, "resp_data": 16, "fw_error": 24, "vmm_error": 28},
        ),
        (sg.SnpReportReq, 96, {"user_data": 0, "vmpl": 64, "rsvd": 68}),
        (sg.SnpExtReportReq, 112, {"data": 0, "certs_address": 96, "certs_len": 104}),
        (sg.SnpReportResp, 4000, {"data": 0}),
    ],
)
def test_uapi_struct_sizes_and_offsets(
    struct_type: type[ctypes.Structure], size: int, offsets: dict[str, int]
) -> None:
    assert ctypes.sizeof(struct_type) == size
    for name, off in offsets.items():
        assert getattr(struct_type, name).offset == off


def test_ioctl_numbers() -> None:
    assert (sg.SNP_GET_REPORT, sg.SNP_GET_DERIVED_KEY, sg.SNP_GET_EXT_REPORT) == (
        0xC0205300,
        0xC0205301,
        0xC0205302,
    )


def test_request_bytes_match_the_uapi_layout(sim: SimulatedSnpProvider) -> None:
    dev = FakeSevGuest(sim)
    clock = Clock()
    SevGuestProvider(dev, vmpl=2, extended=False, clock=clock, sleep=clock.sleep).get_report(b"\xab" * 64)
    req, raw = dev.requests[0]
    assert req == sg.SNP_GET_REPORT
    assert raw == struct.pack("<64sI28x", b"\xab" * 64, 2)
    SevGuestProvider(dev, vmpl=1, clock=clock, sleep=clock.sleep).get_report(b"\x01")
    req, raw = dev.requests[1]
    assert req == sg.SNP_GET_EXT_REPORT
    addr, length = struct.unpack_from("<QI", raw, 96)
    assert raw[:96] == struct.pack("<64sI28x", b"\x01".ljust(64, b"\0"), 1)
    assert addr != 0 and length == sg.SEV_FW_BLOB_MAX_SIZE and raw[108:] == bytes(4)


# --- ioctl protocol ------------------------------------------------------------------------------


def test_extended_report_with_cert_table_verifies(sim: SimulatedSnpProvider) -> None:
    dev = FakeSevGuest(sim, sim.cert_table())
    ev = SevGuestProvider(dev).get_evidence(b"nonce")
    assert ev.platform == "snp" and ev.cert_table == sim.cert_table()
    res = verify_snp_attestation(ev.report, cert_table=ev.cert_table, trusted_roots=sim.trusted_roots())
    assert res.report.report_data.startswith(b"nonce")


def test_certificate_buffer_grows_to_what_the_host_asks(sim: SimulatedSnpProvider) -> None:
    big = certs.serialize_cert_table(
        [
            certs.CertTableEntry(certs.GUID_VCEK, sim.vcek.public_bytes(Encoding.DER)),
            certs.CertTableEntry(certs.GUID_CRL, b"\x30" * 20000),
        ]
    )
    dev = FakeSevGuest(sim, big)
    clock = Clock()
    ev = SevGuestProvider(dev, clock=clock, sleep=clock.sleep).get_evidence(b"")
    assert len(dev.requests) == 2
    assert struct.unpack_from("<I", dev.requests[1][1], 104)[0] == 24576
    assert ev.cert_table == big
    assert clock.sleeps == [pytest.approx(2.0)]  # the second command waited for the throttle


def test_enotty_locks_the_device_for_good(sim: SimulatedSnpProvider) -> None:
    dev = FakeSevGuest(sim, errors=[(errno.ENOTTY, 0, 0)])
    p = SevGuestProvider(dev)
    with pytest.raises(DeviceLockedError):
        p.get_evidence(b"")
    with pytest.raises(DeviceLockedError):
        p.get_evidence(b"")
    assert dev.requests == []  # never touched again


def test_firmware_errors(sim: SimulatedSnpProvider) -> None:
    with pytest.raises(FirmwareError) as info:
        SevGuestProvider(FakeSevGuest(sim, errors=[(errno.EIO, 0x16, 0)])).get_evidence(b"")
    assert info.value.fw_error == 0x16
    with pytest.raises(FirmwareError, match="status 0x27"):
        SevGuestProvider(FakeSevGuest(sim, fw_status=0x27)).get_evidence(b"")


def test_transient_errors_are_retried_with_the_throttle(sim: SimulatedSnpProvider) -> None:
    clock = Clock()
    dev = FakeSevGuest(sim, errors=[(errno.ETIMEDOUT, 0, 0), (errno.EIO, 0, sg.VMM_ERR_BUSY)])
    SevGuestProvider(dev, clock=clock, sleep=clock.sleep).get_evidence(b"")
    assert len(dev.requests) == 1 and all(s >= 2.0 - 1e-9 for s in clock.sleeps) and len(clock.sleeps) >= 2
    clock = Clock()
    dev = FakeSevGuest(sim, errors=[(errno.EAGAIN, 0, 0)] * 5)
    with pytest.raises(ProviderError, match="busy after 3 attempts"):
        SevGuestProvider(dev, clock=clock, sleep=clock.sleep).get_evidence(b"")
    assert len(dev.errors) == 2


def test_report_data_longer_than_64_bytes_is_refused(sim: SimulatedSnpProvider) -> None:
    with pytest.raises(ValueError, match="at most 64"):
        SevGuestProvider(FakeSevGuest(sim)).get_evidence(b"x" * 65)


# --- configfs-tsm --------------------------------------------------------------------------------


def test_configfs_snp_flow(tmp_path: Path, sim: SimulatedSnpProvider) -> None:
    fs = FakeConfigfs("sev_guest", sim.make_report, sim.cert_table())
    p = ConfigfsTsmProvider("snp", root=tmp_path, privlevel=0, ops=fs)
    ev = p.get_evidence(b"configfs")
    assert ev.provider == "configfs-tsm/sev_guest" and ev.cert_table == sim.cert_table()
    verify_snp_attestation(ev.report, cert_table=ev.cert_table, trusted_roots=sim.trusted_roots())
    ev2 = p.get_evidence(b"again")
    assert len(fs.created) == 2 and fs.created[0] != fs.created[1]
    assert list(tmp_path.iterdir()) == []  # every request directory removed
    assert ev2.report != ev.report


def test_configfs_tdx_flow(tmp_path: Path) -> None:
    quote = read("tdx/gtg-v5-tdx15/quote.dat")
    fs = FakeConfigfs("tdx_guest", lambda _: quote)
    ev = ConfigfsTsmProvider("tdx", root=tmp_path, ops=fs).get_evidence(b"")
    assert ev.platform == "tdx" and ev.report == quote and ev.cert_table == b""


def test_configfs_generation_race_detected_and_cleaned_up(tmp_path: Path, sim: SimulatedSnpProvider) -> None:
    fs = FakeConfigfs("sev_guest", sim.make_report, racer=True)
    with pytest.raises(GenerationRaceError):
        ConfigfsTsmProvider("snp", root=tmp_path, ops=fs).get_evidence(b"")
    assert list(tmp_path.iterdir()) == []


def test_configfs_wrong_provider_and_bad_privlevel(tmp_path: Path, sim: SimulatedSnpProvider) -> None:
    with pytest.raises(ProviderError, match="tdx_guest"):
        ConfigfsTsmProvider(
            "snp", root=tmp_path, ops=FakeConfigfs("tdx_guest", sim.make_report)
        ).get_evidence(b"")
    fs = FakeConfigfs("sev_guest", sim.make_report, privlevel_floor=2)
    with pytest.raises(ProviderError, match="privlevel"):
        ConfigfsTsmProvider("snp", root=tmp_path, privlevel=1, ops=fs).get_evidence(b"")
    assert list(tmp_path.iterdir()) == []


def test_configfs_without_provider(tmp_path: Path) -> None:
    class NoProvider(FakeConfigfs):
        def mkdir(self, path: Path) -> None:
            raise OSError(errno.ENXIO, "no provider")

    with pytest.raises(ProviderError, match="no provider registered"):
        ConfigfsTsmProvider("snp", root=tmp_path, ops=NoProvider("sev_guest", bytes)).get_evidence(b"")


def test_probe_and_detect(tmp_path: Path, sim: SimulatedSnpProvider) -> None:
    fs = FakeConfigfs("sev_guest", sim.make_report)
    assert probe_provider(tmp_path, fs) == "snp"
    assert probe_provider(tmp_path / "absent", fs) is None
    assert list(tmp_path.iterdir()) == []
    absent = tmp_path / "none"
    with pytest.raises(NoProviderError):
        detect_provider(configfs_root=absent, sev_guest_path=str(absent))
    p = detect_provider(True, configfs_root=absent, sev_guest_path=str(absent))
    assert isinstance(p, SimulatedSnpProvider) and p.platform == "snp"


def test_detect_loads_a_saved_simulated_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = SimulatedAmdRoot.generate()
    root.save(tmp_path / "root")
    monkeypatch.setenv("ATTESTATION_SIMULATED_ROOT", str(tmp_path / "root"))
    p = detect_provider(True, configfs_root=tmp_path / "x", sev_guest_path=str(tmp_path / "x"))
    ev = p.get_evidence(b"")
    verify_snp_attestation(ev.report, ev.certs, trusted_roots=root.roots())


@pytest.mark.skipif(
    not Path("/dev/sev-guest").exists(), reason="no /dev/sev-guest on this machine (not an SNP guest)"
)
def test_real_sev_guest_device() -> None:  # pragma: no cover - hardware only
    ev = SevGuestProvider().get_evidence(b"real")
    assert len(ev.report) == 1184


def test_local_host_data(tmp_path: Path) -> None:
    sim = SimulatedSnpProvider(root=SimulatedAmdRoot.generate(), host_data=b"\x42" * 32)
    assert local_host_data(sim.get_evidence(b"")) == b"\x42" * 32
    quote = read("tdx/gtg-v5-tdx15/quote.dat")
    ev = ConfigfsTsmProvider(
        "tdx", root=tmp_path, ops=FakeConfigfs("tdx_guest", lambda _: quote)
    ).get_evidence(b"")
    assert local_host_data(ev) == bytes(48)


def test_detect_platform(tmp_path: Path) -> None:
    none = str(tmp_path / "none")
    kw = {"configfs_root": tmp_path / "none", "sev_guest_path": none, "tdx_guest_path": none}
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor tdx_guest\n")
    assert detect_platform(cpuinfo_path=str(cpuinfo), **kw) == "tdx"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu vme sev sev_es sev_snp\n")
    assert detect_platform(cpuinfo_path=str(cpuinfo), **kw) == "snp"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu vme\n")
    assert detect_platform(cpuinfo_path=str(cpuinfo), **kw) is None
    (tmp_path / "sev-guest").write_bytes(b"")
    assert (
        detect_platform(cpuinfo_path=none, **{**kw, "sev_guest_path": str(tmp_path / "sev-guest")}) == "snp"
    )
