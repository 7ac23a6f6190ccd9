"""reference-values: output equals the library, is accepted by attestation's verifier as is, and
round-trips: a simulated report/quote with the predicted values passes, any one-bit change fails."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from image.measure import BootHashes, parse_firmware, snp_launch_digest
from image.measure.idblock import GuestPolicy, IdBlock, contrast_id_key, id_key_digest
from image.measure.vmsa import VCPU_SIGNATURES
from tests.measure.test_tdx import _tiny_pe
from tests.measure.vectors import DEBIAN_OVMF, MEASURE

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = MEASURE / "synthetic/fw_syn_a.bin"
ROOT_HASH = "4b1d" * 16
CMDLINE = f'console=hvc0 root=/dev/dm-0 dm-mod.create="root,,,ro,0 8 verity 1 {ROOT_HASH} -" quiet'


def _image(tmp: Path, kernel: bytes | None = None) -> Path:
    (tmp / "vmlinuz").write_bytes(
        kernel if kernel is not None else (MEASURE / "synthetic/kernel_k1.bin").read_bytes()
    )
    (tmp / "initrd.img").write_bytes((MEASURE / "synthetic/initrd_i1.bin").read_bytes())
    desc = {
        "kernel": "vmlinuz",
        "initrd": "initrd.img",
        "disk": "rootfs.img",
        "cmdline": CMDLINE,
        "root_hash": ROOT_HASH,
        "salt": "00" * 32,
        "rootfs": "erofs",
        "verity": {},
        "initdata": None,
        "build_seconds": 1,
        "inputs_digest": "00" * 32,
    }
    (tmp / "image.json").write_text(json.dumps(desc))
    return tmp / "image.json"


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "image", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def snp_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("img")
    desc = _image(tmp)
    out = tmp / "rv.json"
    proc = _cli(
        "reference-values",
        "--image-description",
        desc,
        "--ovmf",
        FIRMWARE,
        "--platform",
        "metal-qemu-snp",
        "--vcpus",
        "1..4",
        "--product",
        "Milan",
        "--product",
        "Genoa",
        "--minimum-tcb",
        "3,0,8,115",
        "--id-blocks",
        tmp / "idblocks.json",
        "--output",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), tmp


def test_snp_entries_equal_library(snp_output: tuple[dict[str, Any], Path]) -> None:
    doc, tmp = snp_output
    fw = parse_firmware(FIRMWARE.read_bytes())
    boot = BootHashes.of((tmp / "vmlinuz").read_bytes(), (tmp / "initrd.img").read_bytes(), CMDLINE)
    got = [(e["ProductName"], e["TrustedMeasurement"]) for e in doc["snp"]]
    want = [
        (p, snp_launch_digest(fw, n, VCPU_SIGNATURES[f"EPYC-{p}"], 0x1, boot).hex())
        for p in ("Milan", "Genoa")
        for n in range(1, 5)
    ]
    assert got == want
    for e in doc["snp"]:
        assert e["GuestPolicy"] == {
            "ABIMinor": 0,
            "ABIMajor": 0,
            "SMT": True,
            "MigrateMA": False,
            "Debug": False,
            "SingleSocket": False,
        }
        assert e["PlatformInfo"] == {"SMTEnabled": True}
        assert e["MinimumTCB"] == {
            "BootloaderVersion": 3,
            "TEEVersion": 0,
            "SNPVersion": 8,
            "MicrocodeVersion": 115,
        }
        assert e["Platform"] == "Metal-QEMU-SNP"


def test_id_blocks_file(snp_output: tuple[dict[str, Any], Path]) -> None:
    doc, tmp = snp_output
    blocks = json.loads((tmp / "idblocks.json").read_text())
    import base64

    first = doc["snp"][0]
    block = IdBlock(bytes.fromhex(first["TrustedMeasurement"]), GuestPolicy().to_u64())
    assert base64.b64decode(blocks["Milan"]["1"]["IDBlock"]) == block.to_bytes()
    assert sorted(blocks) == ["Genoa", "Milan"] and sorted(blocks["Genoa"]) == ["1", "2", "3", "4"]


def test_rootfs_must_be_measured(tmp_path: Path) -> None:
    desc = _image(tmp_path)
    doc = json.loads(desc.read_text())
    doc["cmdline"] = "console=hvc0"
    desc.write_text(json.dumps(doc))
    proc = _cli(
        "reference-values",
        "--image-description",
        desc,
        "--ovmf",
        FIRMWARE,
        "--platform",
        "metal-qemu-snp",
        "--output",
        tmp_path / "out.json",
    )
    assert proc.returncode == 1 and "root hash" in proc.stderr
    assert not (tmp_path / "out.json").exists()


# --- the attestation verifier (attestation/reference_values.py) accepts the output as is ---

from attestation import reference_values as rv_mod  # noqa: E402


def test_verifier_accepts_snp_output(snp_output: tuple[dict[str, Any], Path]) -> None:
    doc, _ = snp_output
    parsed = rv_mod.ReferenceValues.from_json(json.dumps(doc))
    assert len(parsed.snp) == 8
    assert parsed.snp[0].trusted_measurement.hex() == doc["snp"][0]["TrustedMeasurement"]


def test_default_minimum_tcb_still_accepted(tmp_path: Path) -> None:
    desc = _image(tmp_path)
    proc = _cli(
        "reference-values",
        "--image-description",
        desc,
        "--ovmf",
        FIRMWARE,
        "--platform",
        "metal-qemu-snp",
        "--vcpus",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "minimum_tcb_default" in proc.stderr
    assert len(rv_mod.ReferenceValues.from_json(proc.stdout).snp) == 2


def test_our_id_key_digest_equals_verifier_derivation() -> None:
    from attestation.snp import idblock as idb
    for seed in range(3):
        digest = hashlib.sha384(bytes([seed])).digest()
        ours = id_key_digest(contrast_id_key(IdBlock(digest, 0x30000)))
        assert ours == idb.id_key_digest(digest, 0x30000)


def _flips(n_bytes: int, count: int) -> list[int]:
    rng = random.Random(7)
    bits = {0, 7, n_bytes * 8 - 1} | {rng.randrange(n_bytes * 8) for _ in range(count)}
    return sorted(bits)


def test_snp_roundtrip_simulated_report(snp_output: tuple[dict[str, Any], Path]) -> None:
    from attestation import api
    from attestation import testing as sim
    from attestation.errors import ValidationError
    from attestation.snp import abi
    from attestation.snp.product import Product, TcbParts

    doc, _ = snp_output
    milan = {"snp": [e for e in doc["snp"] if e["ProductName"] == "Milan"]}
    rvs = rv_mod.ReferenceValues.from_json(json.dumps(milan))
    measurement = bytes.fromhex(milan["snp"][2]["TrustedMeasurement"])  # the 3-vCPU launch
    provider = sim.SimulatedSnpProvider(
        root=sim.SimulatedAmdRoot.generate(Product.MILAN),
        measurement=measurement,
        tcb=TcbParts(bl=4, tee=0, snp=22, ucode=213, fmc=None),
    )
    report = abi.parse_report(provider.make_report(bytes(64)))
    assert api.check_snp(report, rvs).trusted_measurement == measurement
    for bit in _flips(48, 20):
        changed = bytearray(measurement)
        changed[bit // 8] ^= 1 << (bit % 8)
        # Even a launch with a matching ID block for the changed digest must fail.
        forged = dataclasses.replace(
            report,
            measurement=bytes(changed),
            id_key_digest=id_key_digest(contrast_id_key(IdBlock(bytes(changed), 0x30000))),
        )
        with pytest.raises(ValidationError):
            api.check_snp(forged, rvs)


@pytest.fixture(scope="module")
def tdx_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    if not DEBIAN_OVMF.exists():
        pytest.skip(
            "Debian package ovmf not installed (.ci/apt/measure.txt installs it); it is our TDVF sample"
        )
    tmp = tmp_path_factory.mktemp("tdx")
    desc = _image(tmp, kernel=_tiny_pe(b"kernel"))
    out = tmp / "rv.json"
    proc = _cli(
        "reference-values",
        "--image-description",
        desc,
        "--ovmf",
        DEBIAN_OVMF,
        "--platform",
        "metal-qemu-tdx",
        "--event-log",
        MEASURE / "tdx/dstack/tdx-lite-getquote.json",
        "--mrseam",
        "ab" * 48,
        "--output",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), tmp


def test_tdx_needs_platform_inputs(tmp_path: Path) -> None:
    if not DEBIAN_OVMF.exists():
        pytest.skip("Debian package ovmf not installed")
    desc = _image(tmp_path, kernel=_tiny_pe())
    proc = _cli(
        "reference-values",
        "--image-description",
        desc,
        "--ovmf",
        DEBIAN_OVMF,
        "--platform",
        "metal-qemu-tdx",
        "--mrseam",
        "ab" * 48,
    )
    assert proc.returncode == 1 and "RTMR0 depends on" in proc.stderr
    proc = _cli(
        "reference-values",
        "--image-description",
        desc,
        "--ovmf",
        DEBIAN_OVMF,
        "--platform",
        "metal-qemu-tdx",
        "--rtmr0",
        "00" * 48,
    )
    assert proc.returncode == 1 and "--mrseam is required" in proc.stderr


def test_tdx_roundtrip_against_real_quote_layout(tdx_output: tuple[dict[str, Any], Path]) -> None:
    from attestation import api
    from attestation.errors import ValidationError
    from attestation.tdx.quote import parse_quote

    doc, _ = tdx_output
    rvs = rv_mod.ReferenceValues.from_json(json.dumps(doc))
    entry = rvs.tdx[0]
    raw = json.loads((MEASURE / "tdx/dstack/tdx-lite-getquote.json").read_text())["quote"]
    quote = parse_quote(bytes.fromhex(raw))
    # RTMR0 came from this quote's event log; the quote body is otherwise rewritten to our prediction.
    assert entry.rtmrs[0] == quote.body.rtmrs[0]
    body = dataclasses.replace(
        quote.body, mr_td=entry.mr_td, rtmrs=entry.rtmrs, mr_seam=entry.mr_seam, xfam=entry.xfam
    )
    simulated = dataclasses.replace(quote, body=body)
    api.check_tdx(simulated, rvs)
    for field in ("mr_td", "rtmrs"):
        for bit in _flips(48, 6):
            if field == "mr_td":
                changed = bytearray(entry.mr_td)
                changed[bit // 8] ^= 1 << (bit % 8)
                bad = dataclasses.replace(body, mr_td=bytes(changed))
            else:
                r = [bytearray(x) for x in entry.rtmrs]
                r[bit % 3 + 1][bit // 8] ^= 1 << (bit % 8)
                bad = dataclasses.replace(body, rtmrs=tuple(bytes(x) for x in r))
            with pytest.raises(ValidationError):
                api.check_tdx(dataclasses.replace(quote, body=bad), rvs)


def test_guest_policy_bits_agree_with_verifier() -> None:
    from attestation.snp import abi
    names = [
        "SMT",
        "MigrateMA",
        "Debug",
        "SingleSocket",
        "CXLAllowed",
        "MemAES256XTS",
        "RAPLDis",
        "CipherTextHidingDRAM",
        "PageSwapDisable",
    ]
    rng = random.Random(3)
    for _ in range(64):
        flags = {n: rng.random() < 0.5 for n in names}
        ours = GuestPolicy(ABIMinor=rng.randrange(256), ABIMajor=rng.randrange(256), **flags)
        theirs = abi.parse_policy(ours.to_u64())
        assert (theirs.abi_minor, theirs.abi_major, theirs.smt, theirs.debug) == (
            ours.ABIMinor,
            ours.ABIMajor,
            ours.SMT,
            ours.Debug,
        )
        assert theirs.to_int() == ours.to_u64()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("kernel"), "kernel"),
        (lambda d: d.update(kernel="missing.bin"), "kernel"),
        (lambda d: d.update(root_hash="zz"), "root_hash"),
        (lambda d: d.update(cmdline=5), "cmdline"),
    ],
)
def test_image_description_errors(tmp_path: Path, mutate: Any, field: str) -> None:
    from image.measure import ImageDescriptionError
    from image.measure.reference_values import load_image_description

    desc = _image(tmp_path)
    doc = json.loads(desc.read_text())
    mutate(doc)
    desc.write_text(json.dumps(doc))
    with pytest.raises(ImageDescriptionError) as info:
        load_image_description(desc)
    assert info.value.field == field
    desc.write_text("[" * 100000)
    with pytest.raises(ImageDescriptionError):
        load_image_description(desc)
