"""Our own built pod-VM image (``python -m image build``): its SNP digests against the oracle, its
kernel's Authenticode hash against osslsigncode, its reference values through the verifier.

The image comes from $CG_IMAGE_DESCRIPTION, else the build cache (where the image tests leave it),
else a build into the cache (the builder reuses an identical cached image). Debian ships no OVMF
with SNP_KERNEL_HASHES, so the firmware is Debian's OVMF.fd pages with the AmdSevX64 suffix (GUID
table + SEV metadata) from sev-snp-measure's fixtures: real page contents, real metadata layout.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from image.measure import BootHashes, parse_firmware, snp_launch_digest
from image.measure.reference_values import load_image_description
from image.measure.tdx_boot import authenticode_digest, qemu_patched_kernel
from image.measure.vmsa import VCPU_SIGNATURES
from tests.measure.oracles import osslsigncode_digest
from tests.measure.vectors import DEBIAN_OVMF, MEASURE

ROOT = Path(__file__).resolve().parents[2]


def _find_or_build(tmp: Path) -> Path:
    explicit = os.environ.get("CG_IMAGE_DESCRIPTION")
    if explicit and Path(explicit).is_file():
        return Path(explicit)
    cache = os.environ.get("CG_IMAGE_CACHE", "/var/cache/confidential-guest/images")
    found = sorted(glob.glob(f"{cache}/*/image.json"), key=os.path.getmtime)
    if found:
        return Path(found[-1])
    proc = subprocess.run(
        [sys.executable, "-m", "image", "build", "--out", str(tmp), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0 or not (tmp / "image.json").is_file():
        pytest.skip(f"no built image and `python -m image build` failed here: {proc.stderr.strip()[-300:]}")
    return tmp / "image.json"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _find_or_build(tmp_path_factory.mktemp("built"))


@pytest.fixture(scope="module")
def amdsev_firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DEBIAN_OVMF.exists():
        pytest.skip("Debian package ovmf not installed (.ci/apt/measure.txt installs it)")
    suffix = (MEASURE / "snp/ssm-fixtures/ovmf_AmdSev_suffix.bin").read_bytes()
    body = DEBIAN_OVMF.read_bytes()
    path = tmp_path_factory.mktemp("fw") / "OVMF-amdsev.fd"
    path.write_bytes(body[: len(body) - len(suffix)] + suffix)
    return path


@pytest.mark.parametrize(("vcpus", "vcpu_type"), [(1, "EPYC-Milan"), (2, "EPYC-Genoa"), (8, "EPYC-Milan")])
def test_snp_digest_matches_oracle(built: Path, amdsev_firmware: Path, vcpus: int, vcpu_type: str) -> None:
    guest = pytest.importorskip("sevsnpmeasure.guest", reason="oracle sev-snp-measure==0.0.13 not installed")
    from sevsnpmeasure.sev_mode import SevMode

    desc = load_image_description(built)
    assert desc.root_hash in desc.cmdline
    sig = VCPU_SIGNATURES[vcpu_type]
    want = guest.calc_launch_digest(
        SevMode.SEV_SNP,
        vcpus,
        sig,
        str(amdsev_firmware),
        str(desc.kernel),
        str(desc.initrd),
        desc.cmdline,
        0x1,
    )
    fw = parse_firmware(amdsev_firmware.read_bytes())
    assert snp_launch_digest(fw, vcpus, sig, 0x1, desc.boot_hashes()) == want
    # The root hash is inside the measurement: another root hash gives another digest.
    other = BootHashes.of(
        desc.kernel.read_bytes(),
        desc.initrd.read_bytes() if desc.initrd else None,
        desc.cmdline.replace(desc.root_hash, "0" * len(desc.root_hash)),
    )
    assert snp_launch_digest(fw, vcpus, sig, 0x1, other) != want


def test_reference_values_for_built_image_accepted(
    built: Path, amdsev_firmware: Path, tmp_path: Path
) -> None:
    from attestation import reference_values as rv
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "image",
            "reference-values",
            "--image-description",
            str(built),
            "--ovmf",
            str(amdsev_firmware),
            "--platform",
            "metal-qemu-snp",
            "--vcpus",
            "1..8",
            "--product",
            "Milan",
            "--product",
            "Genoa",
            "--minimum-tcb",
            "3,0,8,115",
            "--output",
            str(tmp_path / "rv.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    parsed = rv.ReferenceValues.from_json((tmp_path / "rv.json").read_text())
    assert len(parsed.snp) == 16 and len({e.trusted_measurement for e in parsed.snp}) == 16


def test_kernel_authenticode_against_osslsigncode(built: Path, tmp_path: Path) -> None:
    """The real kernel (bzImage with EFI stub): our SHA-384 Authenticode hash equals osslsigncode's."""
    kernel = load_image_description(built).kernel
    digest, signed = osslsigncode_digest(kernel, tmp_path)
    assert authenticode_digest(signed).hex() == digest
    raw = kernel.read_bytes()
    if len(raw) % 8 == 0:  # no alignment padding added by the signer: same hash as the unsigned file
        assert authenticode_digest(raw) == authenticode_digest(signed)
    patched = qemu_patched_kernel(raw, 1234)
    assert len(patched) == len(raw) and authenticode_digest(patched) != authenticode_digest(raw)


def test_tdx_reference_values_for_built_image(built: Path, tmp_path: Path) -> None:
    from attestation import reference_values as rv
    if not DEBIAN_OVMF.exists():
        pytest.skip("Debian package ovmf not installed")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "image",
            "reference-values",
            "--image-description",
            str(built),
            "--ovmf",
            str(DEBIAN_OVMF),
            "--platform",
            "metal-qemu-tdx",
            "--event-log",
            str(MEASURE / "tdx/dstack/tdx-lite-getquote.json"),
            "--mrseam",
            "cd" * 48,
            "--qemu-patches-kernel",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    entry = rv.ReferenceValues.from_json(proc.stdout).tdx[0]
    assert entry.rtmrs[3] == bytes(48)
    assert json.loads(proc.stdout)["tdx"][0]["Xfam"] == "e702060000000000"
