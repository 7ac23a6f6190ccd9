"""`python -m attestation`: JSON output, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from attvectors import VECTORS, snp_entry, vector

from attestation.cli import main

REPO = Path(__file__).resolve().parents[2]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any] | None, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip() else None), err


def test_verify_snp_prints_claims_and_checks(capsys: pytest.CaptureFixture[str]) -> None:
    v = vector("snp/gsg-milan-v2-vcek")
    rc, out, _ = run(
        [
            "verify",
            "snp",
            "--no-revocation-check",
            str(VECTORS / v["files"]["report"]["file"]),
            "--cert",
            str(VECTORS / v["files"]["vcek"]["file"]),
            "--cert",
            str(VECTORS / v["files"]["cert_chain"]["file"]),
            "--report-data",
            "0102030405",
            "--at",
            "2024-01-01T00:00:00Z",
        ],
        capsys,
    )
    assert rc == 0 and out is not None
    assert out["product"] == "Milan"
    assert {k: out["claims"][k] for k in v["facts"] if k != "mbz_ok"} == {
        k: w for k, w in v["facts"].items() if k != "mbz_ok"
    }
    assert {"chain", "report_signature", "report_data"} <= set(out["checks"])


def test_verify_snp_with_cert_table(capsys: pytest.CaptureFixture[str]) -> None:
    v = vector("snp/trustee-milan-v3-vlek")
    rc, out, _ = run(
        [
            "verify",
            "snp",
            "--no-revocation-check",
            str(VECTORS / v["files"]["report"]["file"]),
            "--cert-table",
            str(VECTORS / v["files"]["cert_table"]["file"]),
            "--at",
            "2025-06-01T00:00:00Z",
        ],
        capsys,
    )
    assert rc == 0 and out is not None and out["claims"]["signing_key"] == "VLEK"


def test_verify_snp_failures(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    v = vector("snp/gsg-milan-v2-vcek")
    vcek = str(VECTORS / v["files"]["vcek"]["file"])
    rc, out, err = run(
        [
            "verify",
            "snp",
            "--no-revocation-check",
            str(VECTORS / "negative/snp-sig-r-bitflip/report.bin"),
            "--cert",
            vcek,
            "--at",
            "2024-01-01T00:00:00Z",
        ],
        capsys,
    )
    assert rc == 1 and out is None and "SignatureError" in err
    rc, out, err = run(
        [
            "verify",
            "snp",
            "--no-revocation-check",
            str(VECTORS / v["files"]["report"]["file"]),
            "--cert",
            vcek,
            "--report-data",
            "ff",
            "--at",
            "2024-01-01T00:00:00Z",
        ],
        capsys,
    )
    assert rc == 1 and out is not None and "report_data is" in err
    rv = tmp_path / "rv.json"
    rv.write_text(json.dumps({"snp": [snp_entry(v["facts"]["measurement"])]}))
    rc, out, err = run(
        [
            "verify",
            "snp",
            "--no-revocation-check",
            str(VECTORS / v["files"]["report"]["file"]),
            "--cert",
            vcek,
            "--reference-values",
            str(rv),
            "--at",
            "2024-01-01T00:00:00Z",
        ],
        capsys,
    )
    # The go-sev-guest report was launched with DEBUG and without an ID block.
    assert rc == 1 and "policy.debug" in err and "id_key_digest" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["verify"],
        ["verify", "sev"],
        ["verify", "snp"],
        ["verify", "snp", "x", "--at", "yesterday"],
        ["verify", "snp", "x", "--report-data", "zz"],
        ["verify", "snp", "/nonexistent/report"],
        ["verify", "tdx", "x", "--bogus"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(argv, capsys)
    assert rc == 2 and out is None and err


def test_verify_tdx(capsys: pytest.CaptureFixture[str]) -> None:
    v = vector("tdx/trustee-spr-v4")
    q = str(VECTORS / v["files"]["quote"]["file"])
    rc, out, _ = run(["verify", "tdx", q, "--no-revocation-check", "--at", "2023-07-01T01:00:00Z"], capsys)
    assert rc == 0 and out is not None and out["tcb_status"] == "not evaluated"
    assert out["revocation"] == "not checked"
    assert out["claims"]["td_quote_body"] == v["facts"]["td_quote_body"]
    rc, out, _ = run(
        [
            "verify",
            "tdx",
            q,
            "--collateral",
            str(VECTORS / "tdx/collateral/gtg-2023"),
            "--at",
            "2023-07-01T01:00:00Z",
        ],
        capsys,
    )
    assert rc == 0 and out is not None and out["tcb_status"] == "UpToDate" and "pck_crl" in out["checks"]
    rc, _, err = run(
        [
            "verify",
            "tdx",
            str(VECTORS / "tdx/gtg-spr-e4-v4/quote.dat"),
            "--collateral",
            str(VECTORS / "tdx/collateral/gtg-2023"),
            "--at",
            "2023-07-01T01:00:00Z",
        ],
        capsys,
    )
    assert rc == 1 and "no matching TCB level" in err


def test_report_writes_cert_table(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    out = tmp_path / "table.bin"
    assert main(["report", "--simulated", "--cert-table-out", str(out)]) == 0
    report = capsysbinary.readouterr().out
    from attestation import parse_report
    from attestation.snp.certs import SnpCerts

    assert len(parse_report(report).raw) == 1184
    assert SnpCerts.from_cert_table(out.read_bytes()).vcek is not None


def test_module_entry_point_and_report() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "attestation", "report", "--simulated", "--report-data", "aa"],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and len(proc.stdout) == 1184 and proc.stdout[0x50] == 0xAA
    proc = subprocess.run(
        [sys.executable, "-m", "attestation", "report"],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1 and b"no TEE found" in proc.stderr
    # It names the command (nothing was verified) and its own flag, not a Python API parameter.
    err = proc.stderr.decode()
    assert err.startswith("attestation report: ") and "--simulated" in err
    assert "verification failed" not in err and "allow_simulated" not in err
    shown = subprocess.run([sys.executable, "-m", "attestation", "--help"], capture_output=True, text=True,
                           cwd=REPO, timeout=60, check=False)
    assert shown.returncode == 0 and "`" not in shown.stdout
    bad = subprocess.run([sys.executable, "-m", "attestation", "report", "--bogus"], capture_output=True,
                         text=True, cwd=REPO, timeout=60, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("python -m attestation report: unrecognized")


def test_cli_never_trusts_a_simulated_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from attestation.testing import SimulatedSnpProvider

    ev = SimulatedSnpProvider().get_evidence(b"")
    (tmp_path / "r.bin").write_bytes(ev.report)
    (tmp_path / "t.bin").write_bytes(ev.cert_table)
    rc, out, err = run(
        ["verify", "snp", str(tmp_path / "r.bin"), "--cert-table", str(tmp_path / "t.bin")], capsys
    )
    assert rc == 1 and out is None and "not a trusted Milan ARK" in err


def test_verify_snp_refuses_without_revocation_data(capsys: pytest.CaptureFixture[str]) -> None:
    """The real vectors bring no CRL. Before, `verify snp` accepted them with revocation unchecked and
    said nothing; now it refuses unless given a CRL source or told explicitly not to check."""
    v = vector("snp/gsg-milan-v2-vcek")
    argv = ["verify", "snp", str(VECTORS / v["files"]["report"]["file"]),
            "--cert", str(VECTORS / v["files"]["vcek"]["file"]), "--at", "2024-01-01T00:00:00Z"]
    rc, out, err = run(argv, capsys)
    assert rc == 1 and out is None and "no CRL source is configured for the Milan VCEK chain" in err
    rc, out, err = run([*argv, "--no-revocation-check"], capsys)
    assert rc == 0 and out is not None and out["revocation"] == "not checked" and "crl" not in out["checks"]
    assert "revocation was not checked" in err
    rc, _, err = run([*argv, "--no-revocation-check", "--collateral", str(VECTORS)], capsys)
    assert rc == 2 and "one of" in err


def test_verify_tdx_names_the_instant_that_works(capsys: pytest.CaptureFixture[str]) -> None:
    """New user: `verify tdx` with the shared collateral failed at every `--at` they tried (the TCB
    signing certificate has expired by now; the v5 quote's PCK is newer than the 2023 collateral),
    with no hint which instant or which pair works. The error now names the window, or why none."""
    col = str(VECTORS / "tdx/collateral/gtg-2023")
    trustee = str(VECTORS / "tdx/trustee-spr-v4/quote.dat")
    rc, _, err = run(["verify", "tdx", trustee, "--collateral", col, "--at", "2026-02-03T01:00:00Z"], capsys)
    assert rc == 1 and "tcbInfo signing certificate has expired" in err
    assert (
        "valid together from 2023-06-18T08:42:58Z (tcbInfo) to 2023-07-08T07:24:59Z (QE identity): "
        "pass --at within it"
    ) in err
    rc, out, _ = run(["verify", "tdx", trustee, "--collateral", col, "--at", "2023-07-08T07:00:00Z"], capsys)
    assert rc == 0 and out is not None and out["tcb_status"] == "UpToDate" and out["revocation"] == "checked"
    v5 = str(VECTORS / "tdx/gtg-v5-tdx15/quote.dat")
    rc, _, err = run(["verify", "tdx", v5, "--collateral", col, "--at", "2023-07-01T01:00:00Z"], capsys)
    assert rc == 1 and "PCK leaf certificate is not yet valid" in err
    assert "no collateral applies to this quote" in err and "90c06f000000" in err


def test_verify_tdx_fetches_from_a_configured_pcs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_att_revocation import _Server, serve_pcs

    server = _Server()
    try:
        serve_pcs(server)
        rc, out, _ = run(["verify", "tdx", str(VECTORS / "tdx/trustee-spr-v4/quote.dat"),
                          "--fetch-cache", str(tmp_path), "--pcs-url", server.url,
                          "--at", "2023-07-01T01:00:00Z"], capsys)
    finally:
        server.stop()
    assert rc == 0 and out is not None and out["tcb_status"] == "UpToDate"
    assert {"pck_crl", "root_crl"} <= set(out["checks"]) and len(server.requests) == 4
