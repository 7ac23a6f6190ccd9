"""Properties: every aTLS parser either succeeds or raises our own typed error, never anything else."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.atls import AtlsError, NonceError, wire
from attestation.atls.platforms import SNP_OID, SnpValidator, decode_snp, eax_to_fms, fms_to_eax
from attestation.atls.proto import sevsnp_pb2
from attestation.reference_values import ReferenceValues

RV = ReferenceValues.from_obj({"snp": [{
    "ProductName": "Milan", "TrustedMeasurement": "00" * 48,
    "MinimumTCB": {"BootloaderVersion": 0, "TEEVersion": 0, "SNPVersion": 0, "MicrocodeVersion": 0},
    "GuestPolicy": {"SMT": True},
}]}).snp


@given(st.lists(st.binary(max_size=120), max_size=6))
def test_alpn_parse_total(protocols: list[bytes]) -> None:
    try:
        nonce = wire.nonce_from_alpn(protocols)
    except NonceError:
        return
    assert nonce is None or len(nonce) == 32


@given(st.binary(min_size=32, max_size=32))
def test_alpn_and_ca_name_roundtrip(nonce: bytes) -> None:
    assert wire.nonce_from_alpn(wire.alpn_protocols(nonce)) == nonce
    assert wire.nonce_from_ca_names([wire.nonce_ca_name(nonce)]) == nonce


@given(st.binary(max_size=80))
def test_sni_parse_total(name: bytes) -> None:
    nonce = wire.nonce_from_sni(name)
    assert nonce is None or len(nonce) == 32


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_decode_snp_total(data: bytes) -> None:
    try:
        raw, _certs, _crl = decode_snp(data)
    except AtlsError:
        return
    assert len(raw) == 1184


@settings(max_examples=150)
@given(
    st.builds(
        sevsnp_pb2.Report,
        version=st.integers(0, 2**32 - 1), policy=st.integers(0, 2**64 - 1),
        current_tcb=st.integers(0, 2**64 - 1), cpuid1eax_fms=st.integers(0, 2**32 - 1),
        current_build=st.integers(0, 2**32 - 1), vmpl=st.integers(0, 2**32 - 1),
        measurement=st.binary(max_size=60), chip_id=st.binary(max_size=70),
        signature=st.sampled_from([b"", bytes(512), os.urandom(512)]),
    )
)
def test_structured_garbage_is_rejected_cleanly(report: sevsnp_pb2.Report) -> None:
    data = sevsnp_pb2.Attestation(report=report).SerializeToString()
    validator = SnpValidator(RV)
    try:
        validator.validate(data, bytes(64))
    except AtlsError:
        return
    raise AssertionError("unsigned garbage must never validate")


@given(st.integers(0, 0xFF + 0xF), st.integers(0, 0xFF), st.integers(0, 0xF))
def test_fms_roundtrip(family: int, model: int, stepping: int) -> None:
    assert eax_to_fms(fms_to_eax(family, model, stepping)) == (family, model, stepping)


def test_oid() -> None:
    assert SNP_OID.dotted_string == "1.3.9901.2.1"
