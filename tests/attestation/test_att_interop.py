"""OpenSSL as an independent oracle: its verdict on every chain link and raw signature agrees with ours."""

from __future__ import annotations

import calendar
import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from attvectors import VECTORS, at, read, vectors
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation import AttestationError, verify_snp_attestation, verify_tdx_quote
from attestation.snp import abi, certs
from attestation.tdx.pck import parse_pck_chain
from attestation.tdx.quote import parse_quote

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed"),
]
PEM = serialization.Encoding.PEM


def openssl(*args: str) -> bool:
    return subprocess.run(["openssl", *args], capture_output=True, timeout=30, check=False).returncode == 0


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _epoch(t: dt.datetime) -> str:
    return str(calendar.timegm(t.utctimetuple()))


SNP = vectors("snp-report")


@pytest.mark.parametrize("v", SNP, ids=[v["id"] for v in SNP])
def test_snp_chain_and_signature_agree_with_openssl(v: dict[str, Any], tmp_path: Path) -> None:
    f = v["files"]
    vek = certs.load_certificate(read((f.get("vcek") or f.get("vlek"))["file"]))
    inter, ark = certs.load_certificates(read(f["cert_chain"]["file"]))
    now = at(v["verify_at"]["recommended"])
    assert openssl(
        "verify",
        "-attime",
        _epoch(now),
        "-CAfile",
        _write(tmp_path / "ark.pem", ark.public_bytes(PEM)),
        "-untrusted",
        _write(tmp_path / "int.pem", inter.public_bytes(PEM)),
        _write(tmp_path / "vek.pem", vek.public_bytes(PEM)),
    )
    report = read(f["report"]["file"])
    rep = abi.parse_report(report)
    pub = _write(
        tmp_path / "pub.pem",
        vek.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    sig = _write(tmp_path / "sig.der", encode_dss_signature(rep.signature_r, rep.signature_s))
    data = _write(tmp_path / "data", report[:0x2A0])
    assert openssl("dgst", "-sha384", "-verify", pub, "-signature", sig, data)
    verify_snp_attestation(report, [vek, inter], now=now)
    # One flipped signed byte: both refuse.
    tampered = bytearray(report)
    tampered[0x90] ^= 1
    assert not openssl(
        "dgst",
        "-sha384",
        "-verify",
        pub,
        "-signature",
        sig,
        _write(tmp_path / "bad", bytes(tampered[:0x2A0])),
    )
    with pytest.raises(AttestationError):
        verify_snp_attestation(bytes(tampered), [vek, inter], now=now)


def test_swapped_ask_rejected_by_both(tmp_path: Path) -> None:
    vek = certs.load_certificate(read("snp/gsg-milan-v2-vcek/vcek.der"))
    ask, ark = certs.load_certificates(read("negative/snp-chain-genoa-ask/cert_chain.pem"))
    assert not openssl(
        "verify",
        "-CAfile",
        _write(tmp_path / "ark.pem", ark.public_bytes(PEM)),
        "-untrusted",
        _write(tmp_path / "ask.pem", ask.public_bytes(PEM)),
        _write(tmp_path / "v.pem", vek.public_bytes(PEM)),
    )


TDX = vectors("tdx-quote")


@pytest.mark.parametrize("v", TDX, ids=[v["id"] for v in TDX])
def test_tdx_chain_and_signatures_agree_with_openssl(v: dict[str, Any], tmp_path: Path) -> None:
    quote = read(v["files"]["quote"]["file"])
    q = parse_quote(quote)
    chain = parse_pck_chain(q.pck_chain_pem)
    now = at(v["verify_at"]["recommended"])
    assert openssl(
        "verify",
        "-attime",
        _epoch(now),
        "-CAfile",
        str(VECTORS / "roots/intel_sgx_root_ca.pem"),
        "-untrusted",
        _write(tmp_path / "int.pem", chain.intermediate.public_bytes(PEM)),
        _write(tmp_path / "leaf.pem", chain.leaf.public_bytes(PEM)),
    )

    def sig(raw: bytes) -> str:
        return _write(
            tmp_path / "sig.der",
            encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
        )

    pck_pub = _write(
        tmp_path / "pck.pem",
        chain.leaf.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    assert openssl(
        "dgst",
        "-sha256",
        "-verify",
        pck_pub,
        "-signature",
        sig(q.qe_report_signature),
        _write(tmp_path / "qe", q.qe_report.raw),
    )
    ak = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + q.attestation_key)
    ak_pub = _write(
        tmp_path / "ak.pem", ak.public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert openssl(
        "dgst",
        "-sha256",
        "-verify",
        ak_pub,
        "-signature",
        sig(q.signature),
        _write(tmp_path / "body", q.signed_bytes),
    )
    verify_tdx_quote(quote, now=now)
