"""SNP evidence over aTLS with the attestation core's simulator: encode/decode, accept, reject."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from attestation.atls import AtlsError, ClientConfig, NoMatchingValidatorsError, ServerConfig, aio, wire
from attestation.atls.platforms import (
    SNP_OID,
    EvidenceFormatError,
    SnpIssuer,
    SnpValidator,
    decode_snp,
    eax_to_fms,
    encode_snp,
    fms_to_eax,
)
from attestation.reference_values import ReferenceValues
from attestation.snp.product import Product
from attestation.testing import SimulatedAmdRoot, SimulatedCrlSource, SimulatedSnpProvider

MEASUREMENT = bytes(range(48))
HOST_DATA = b"\xab" * 32


def reference_values(measurement: bytes = MEASUREMENT) -> ReferenceValues:
    doc = {"snp": [{
        "ProductName": "Milan", "TrustedMeasurement": measurement.hex(),
        "MinimumTCB": {"BootloaderVersion": 0, "TEEVersion": 0, "SNPVersion": 0, "MicrocodeVersion": 0},
        "GuestPolicy": {"ABIMinor": 0, "ABIMajor": 0, "SMT": True},
    }]}
    return ReferenceValues.from_json(json.dumps(doc))



def trusting(root: SimulatedAmdRoot) -> dict[str, Any]:
    """Trust a simulated root, with revocation data from its own ARK (validators require a CRL)."""
    return {"trusted_roots": root.roots(), "revocation": SimulatedCrlSource(root)}

@pytest.fixture(scope="module")
def root() -> SimulatedAmdRoot:
    return SimulatedAmdRoot.generate(Product.MILAN)


@pytest.fixture(scope="module")
def provider(root: SimulatedAmdRoot) -> SimulatedSnpProvider:
    return SimulatedSnpProvider(root=root, measurement=MEASUREMENT, host_data=HOST_DATA)


def test_fms_roundtrip() -> None:
    for fms in ((0x19, 0x01, 0x01), (0x19, 0x11, 0x01), (0x1A, 0x02, 0x01), (0x6, 0x3F, 0x2)):
        assert eax_to_fms(fms_to_eax(*fms)) == fms


def test_encode_decode_roundtrip(provider: SimulatedSnpProvider) -> None:
    ev = provider.get_evidence(b"\x01" * 64)
    raw, certs, crl = decode_snp(encode_snp(ev))
    assert raw == ev.report
    assert len(certs) == 3 and crl is None


def test_validator_accepts_and_copies_claims(provider: SimulatedSnpProvider, root: SimulatedAmdRoot) -> None:
    rd = wire.report_data(b"spki", b"\0" * 32)
    v = SnpValidator(reference_values().snp, **trusting(root))
    verdict = v.validate(SnpIssuer(provider).issue(rd), rd)
    assert verdict.host_data == HOST_DATA
    claims = {c.oid.dotted_string: c.value for c in verdict.claims}
    assert claims[f"{SNP_OID.dotted_string}.22"].value == b"\x04\x30" + MEASUREMENT  # type: ignore[attr-defined]
    assert len(claims) == 46


def test_validator_rejects(provider: SimulatedSnpProvider, root: SimulatedAmdRoot) -> None:
    rd = wire.report_data(b"spki", b"\0" * 32)
    evidence = SnpIssuer(provider).issue(rd)
    with pytest.raises(AtlsError, match="measurement"):
        SnpValidator(reference_values(b"\x01" * 48).snp, **trusting(root)).validate(evidence, rd)
    with pytest.raises(AtlsError, match="report_data"):  # replayed: bound to another key/nonce
        SnpValidator(reference_values().snp, **trusting(root)).validate(evidence, b"\2" * 64)
    with pytest.raises(AtlsError, match="verifying report"):  # simulated root not trusted: foreign chain
        SnpValidator(reference_values().snp).validate(evidence, rd)
    other = SimulatedAmdRoot.generate(Product.MILAN)
    with pytest.raises(AtlsError, match="verifying report"):
        SnpValidator(reference_values().snp, **trusting(other)).validate(evidence, rd)
    pinned = SnpValidator(reference_values().snp, **trusting(root), host_data=b"\0" * 32)
    with pytest.raises(AtlsError, match=r"(?i)host_data"):
        pinned.validate(evidence, rd)
    with pytest.raises(EvidenceFormatError):
        SnpValidator(reference_values().snp, **trusting(root)).validate(b"\xff\xff garbage", rd)


def test_tampered_field_breaks_signature(provider: SimulatedSnpProvider, root: SimulatedAmdRoot) -> None:
    from attestation.atls.proto import sevsnp_pb2

    rd = wire.report_data(b"spki", b"\0" * 32)
    att = sevsnp_pb2.Attestation.FromString(SnpIssuer(provider).issue(rd))
    att.report.host_data = b"\xcd" * 32
    with pytest.raises(AtlsError, match="verifying report"):
        SnpValidator(reference_values().snp, **trusting(root)).validate(att.SerializeToString(), rd)


async def test_snp_mutual_handshake(provider: SimulatedSnpProvider, root: SimulatedAmdRoot) -> None:
    import asyncio

    validators = [SnpValidator(reference_values().snp, **trusting(root))]
    peers: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            stream = await aio.accept(reader, writer, ServerConfig(SnpIssuer(provider), validators), 10)
            peers.append(stream.peer)
            await stream.close()
        except AtlsError as exc:
            peers.append(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stream = await aio.connect("127.0.0.1", port, ClientConfig(SnpIssuer(provider), validators), 10)
        await stream.read()
        await stream.close()
        assert stream.peer is not None and stream.peer.verdict is not None
        assert stream.peer.verdict.host_data == HOST_DATA
        # A pod launched with another measurement is refused by the server.
        bad = dataclasses.replace(provider, measurement=b"\x07" * 48)
        with pytest.raises((AtlsError, ConnectionError, AssertionError)):
            stream = await aio.connect("127.0.0.1", port, ClientConfig(SnpIssuer(bad), validators), 10)
            try:
                assert await stream.read() == b"x"
            finally:
                await stream.close()
        await asyncio.sleep(0.05)
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(peers[-1], NoMatchingValidatorsError)
    assert "MEASUREMENT" in str(peers[-1]) or "measurement" in str(peers[-1])


def test_expired_chain_and_expired_atls_cert(provider: SimulatedSnpProvider, root: SimulatedAmdRoot) -> None:
    import datetime

    from cryptography.hazmat.primitives.asymmetric import ec

    from attestation.atls import PeerCertificateError, check_peer
    from attestation.atls.certificate import build, key_spki_der

    rd = wire.report_data(b"spki", b"\0" * 32)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365 * 8)  # VCEK lives 7 years
    with pytest.raises(AtlsError, match="verifying report"):
        SnpValidator(reference_values().snp, **trusting(root), now=later).validate(
            SnpIssuer(provider).issue(rd), rd)
    key = ec.generate_private_key(ec.SECP256R1())
    nonce = b"\5" * 32
    cert = build(key, [(SNP_OID, SnpIssuer(provider).issue(wire.report_data(key_spki_der(key), nonce)))])
    validators = [SnpValidator(reference_values().snp, **trusting(root))]
    assert check_peer(cert, nonce, validators).host_data == HOST_DATA  # type: ignore[arg-type]
    in_three_hours = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=3)
    with pytest.raises(PeerCertificateError, match=r"valid .* now is"):
        check_peer(cert, nonce, validators, now=in_three_hours)  # type: ignore[arg-type]
