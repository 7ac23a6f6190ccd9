"""The command line: in-process ``main(argv)``, ``python -m image`` and ``python -m image.measure``."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from image.measure import cli
from image.measure.platforms import PRODUCTS
from image.measure.tdvf import PageOrder
from image.measure.tdx_boot import InitrdArg
from image.measure.vmsa import VCPU_SIGNATURES, VmmType
from tests.measure.vectors import MEASURE, index

ROOT = Path(__file__).resolve().parents[2]
SYN = {c["id"]: c for c in index()["snp"]["synthetic_cases"]}


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _args(case: dict[str, Any]) -> list[str]:
    args = [case["mode"], "--ovmf", str(MEASURE / case["ovmf"])]
    if case.get("vcpus"):
        args += ["--vcpus", str(case["vcpus"])]
    if case.get("vcpu_type"):
        args += ["--vcpu-type", case["vcpu_type"]]
    if case.get("vmm_type") and case["vmm_type"] != "QEMU":
        args += ["--vmm-type", case["vmm_type"]]
    for name in ("kernel", "initrd"):
        if case.get(name):
            args += [f"--{name}", "/dev/null" if case[name] == "@empty" else str(MEASURE / case[name])]
    if case.get("append") is not None:
        args += ["--append", case["append"]]
    if case.get("guest_features"):
        args += ["--guest-features", case["guest_features"].split()[0]]
    if case.get("ovmf_hash"):
        args += ["--snp-ovmf-hash", case["ovmf_hash"]]
    if case.get("output_format"):
        args += ["--output-format", case["output_format"]]
    return args


@pytest.mark.parametrize("case_id", sorted(SYN))
def test_measure_synthetic_cases_via_cli(capsys: pytest.CaptureFixture[str], case_id: str) -> None:
    case = SYN[case_id]
    code, out, err = run(capsys, *_args(case))
    if case.get("expected_error"):
        assert code == 1
        assert err.strip() == "error: " + case["expected_error"].removeprefix("Error: ")
    else:
        assert code == 0, err
        assert out.strip() == case["expected"]


def test_entry_points_agree() -> None:
    """``python -m image measure snp`` (the dispatcher) and ``python -m image.measure snp`` (the short
    form docs/measure.md shows: the module name stands for the ``measure`` word, as with image.verity)
    print the same."""
    case = SYN["syn/a-snp-2-milan-0x1-kia"]
    outs = []
    for prefix in (["-m", "image", "measure"], ["-m", "image.measure"]):
        proc = subprocess.run(
            [sys.executable, *prefix, *_args(case)], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout.strip())
    assert outs == [case["expected"]] * 2


def test_vcpu_sig_and_family_forms(capsys: pytest.CaptureFixture[str]) -> None:
    case = SYN["syn/a-snp-2-milan-0x1-kia"]
    base = [a for a in _args(case)]
    i = base.index("--vcpu-type")
    for form in (
        ["--vcpu-sig", "0xa00f11"],
        ["--vcpu-family", "25", "--vcpu-model", "1", "--vcpu-stepping", "1"],
        ["--vcpu-type", "0xa00f11"],
    ):
        code, out, err = run(capsys, *base[:i], *form, *base[i + 2 :])
        assert (code, out.strip()) == (0, case["expected"]), err


def test_dump_vmsa(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    case = next(c for c in index()["snp"]["vmsa_pages"] if c["id"] == "vmsa/snp_qemu_milan_f0x21")
    code, out, err = run(
        capsys,
        "snp",
        "--ovmf",
        MEASURE / case["ovmf"],
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-Milan",
        "--guest-features",
        "0x21",
        "--dump-vmsa",
        tmp_path,
    )
    assert code == 0, err
    assert out.strip() == case["oracle_digest"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vmsa0.bin", "vmsa1.bin"]
    for i, f in enumerate(case["files"]):
        assert hashlib.sha256((tmp_path / f"vmsa{i}.bin").read_bytes()).hexdigest() == f["sha256"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["snp", "--ovmf", MEASURE / "synthetic/fw_syn_a.bin", "--vcpus", "1"], "missing --vcpu-type"),
        (["snp", "--ovmf", MEASURE / "synthetic/fw_syn_a.bin", "--vcpu-type", "EPYC"], "--vcpus is required"),
        (
            [
                "snp",
                "--ovmf",
                MEASURE / "synthetic/fw_syn_a.bin",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC",
                "--append",
                "x",
            ],
            "require --kernel",
        ),
        (["snp", "--ovmf", "/nonexistent/OVMF.fd", "--vcpus", "1", "--vcpu-type", "EPYC"], "cannot read"),
        (
            [
                "snp",
                "--ovmf",
                MEASURE / "tdx/gotdx-ccel/ccel_table.dat",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC",
            ],
            "firmware size",
        ),
        (
            ["sev", "--ovmf", MEASURE / "synthetic/fw_syn_a.bin", "--snp-ovmf-hash", "00" * 48],
            "only works with",
        ),
        (["tdx-mrtd", "--ovmf", MEASURE / "synthetic/fw_syn_a.bin"], "TDX metadata"),
        (["tdx-replay", "--event-log", MEASURE / "tdx/gotdx-ccel/ccel_table.dat"], "event log"),
    ],
)
def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[Any], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_bad_hex_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "id-block", "--digest", "zz")
    assert code == 2 and "invalid argument" in err


def test_id_block_command(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.measure.vectors import idblock_cases

    case = idblock_cases()[2]
    code, out, err = run(capsys, "id-block", "--digest", case["launch_digest_hex"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["IDBlock"] == case["id_block_base64"]
    assert hashlib.sha256(base64.b64decode(doc["IDAuth"])).hexdigest() == case["id_auth_0x1000_sha256_hex"]
    assert doc["IDKeyDigest"] == case["id_key_digest_sha384_hex"]


def test_tdx_replay_command(capsys: pytest.CaptureFixture[str]) -> None:
    case = index()["tdx"]["rtmr_and_ccel"]
    for c in case:
        path = c.get("event_log") if c["kind"] == "rtmr_replay_ccel" else c.get("file")
        if path is None or c["kind"] == "ccel_parse":
            continue
        code, out, err = run(capsys, "tdx-replay", "--event-log", MEASURE / path)
        assert code == 0, err
        assert json.loads(out) == c["expected"]


def test_choice_mirrors_match_enums() -> None:
    assert tuple(v.value for v in VmmType) == cli.VMM_TYPES
    assert tuple(o.value for o in PageOrder) == cli.PAGE_ORDERS
    assert tuple(a.value for a in InitrdArg) == cli.INITRD_ARGS
    assert all(model in VCPU_SIGNATURES for model in PRODUCTS.values())


def test_importing_cli_is_cheap() -> None:
    code = (
        "import sys, image.measure.cli; "
        "print('cryptography' in sys.modules, 'image.measure.commands' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "False"]


def test_tdx_mrtd_command(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.measure.vectors import DEBIAN_OVMF, DEBIAN_OVMF_SHA256

    if not DEBIAN_OVMF.exists() or hashlib.sha256(DEBIAN_OVMF.read_bytes()).hexdigest() != DEBIAN_OVMF_SHA256:
        pytest.skip("Debian ovmf 2022.11-6+deb12u2 not installed (.ci/apt/measure.txt)")
    case = next(c for c in index()["tdx"]["mrtd"] if c["id"] == "tdx/mrtd/debian-ovmf-2022.11-self")
    for order, key in (("two-pass", "mrtd_two_pass"), ("single-pass", "mrtd_single_pass")):
        code, out, err = run(capsys, "tdx-mrtd", "--ovmf", DEBIAN_OVMF, "--page-order", order)
        assert (code, out.strip()) == (0, case["self_computed"][key]), err


def test_tdx_rtmr_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from image.measure.eventlog import parse_json_events, replay
    from image.measure.tdx_boot import authenticode_digest, rtmr1, rtmr2
    from tests.measure.test_tdx import _tiny_pe

    kernel, initrd = tmp_path / "k.efi", tmp_path / "initrd"
    kernel.write_bytes(_tiny_pe(b"k"))
    initrd.write_bytes(b"initrd-bytes")
    log = MEASURE / "tdx/dstack/tdx-lite-getquote.json"
    code, out, err = run(
        capsys,
        "tdx-rtmr",
        "--kernel",
        kernel,
        "--initrd",
        initrd,
        "--append",
        "console=hvc0",
        "--event-log",
        log,
    )
    assert code == 0, err
    got = json.loads(out)
    rtmr0 = replay(parse_json_events(json.loads(log.read_text())["event_log"]))[0]
    assert got == {
        "rtmr0": rtmr0.hex(),
        "rtmr1": rtmr1(authenticode_digest(kernel.read_bytes())).hex(),
        "rtmr2": rtmr2("console=hvc0", b"initrd-bytes").hex(),
        "rtmr3": "00" * 48,
    }
    code, _, err = run(capsys, "tdx-rtmr", "--kernel", kernel)
    assert code == 1 and "RTMR0 depends on" in err
    code, _, err = run(capsys, "tdx-rtmr", "--kernel", initrd, "--rtmr0", "00" * 48)
    assert code == 1 and "not a PE image" in err


@pytest.mark.parametrize("module", ["image", "image.build", "image.measure", "image.verity"])
def test_help_is_plain_text(module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "`" not in proc.stdout  # no RST markup from docstrings


def test_unknown_option_after_a_mode_shows_that_modes_usage() -> None:
    cases = [
        (["image", "measure", "tdx-mrtd", "--ovmf", "x", "--bogus"], "python -m image measure tdx-mrtd"),
        (["image.measure", "tdx-mrtd", "--ovmf", "x", "--bogus"], "python -m image.measure tdx-mrtd"),
    ]
    for argv, usage in cases:
        proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 2
        assert proc.stderr.startswith(f"usage: {usage} ") and "unrecognized arguments: --bogus" in proc.stderr
