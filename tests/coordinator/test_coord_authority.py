"""CA layout: SAN rules (ca.json), chains to mesh CA and root, rotation semantics."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from coordinator.authority import INTERMEDIATE_CN, ROOT_CN, Authority, split_sans
from tests.coordinator.vectors import load

CA = load("ca.json")


@pytest.mark.parametrize("case", CA["san_cases"], ids=lambda c: c["id"])
def test_san_split(case: dict[str, Any]) -> None:
    names = split_sans(case["sans"])
    ips = [n for n in names if isinstance(n, x509.IPAddress)]
    dns = [n.value for n in names if isinstance(n, x509.DNSName)]
    assert len(ips) == case["expected_ip_sans"]
    assert dns == case["expected_dns_sans"]


def test_uri_san() -> None:
    (uri,) = split_sans(["spiffe://cluster/ns/web"])
    assert isinstance(uri, x509.UniformResourceIdentifier)


def _verify(leaf: x509.Certificate, roots: list[x509.Certificate], inter: list[x509.Certificate]) -> None:
    verifier = PolicyBuilder().store(Store(roots)).build_client_verifier()
    verifier.verify(leaf, inter)


def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def test_properties_and_chains() -> None:
    root_key, mesh_key = p384(), p384()
    ca = Authority(root_key, mesh_key)
    for cert in (ca.root, ca.intermediate, ca.mesh_ca):
        assert cert.version == x509.Version.v3
        assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ca.root.subject.rfc4514_string() == f"CN={ROOT_CN}"
    assert ca.mesh_ca.subject == ca.intermediate.subject
    assert ca.intermediate.issuer.rfc4514_string() == f"CN={ROOT_CN}"
    assert ca.intermediate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ski = x509.SubjectKeyIdentifier
    assert (ca.intermediate.extensions.get_extension_for_class(ski).value
            == ca.mesh_ca.extensions.get_extension_for_class(ski).value)
    ca.intermediate.verify_directly_issued_by(ca.root)

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.issue_mesh_cert(key.public_key(), ["web", "*", "192.0.2.1"], workload_secret_id="apps/v1/x")
    assert leaf.issuer.rfc4514_string() == f"CN={INTERMEDIATE_CN}"
    assert leaf.subject.rfc4514_string() == "CN=web"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.1")]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {x509.ExtendedKeyUsageOID.CLIENT_AUTH, x509.ExtendedKeyUsageOID.SERVER_AUTH}
    wsid = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.9901.3.1")).value
    assert isinstance(wsid, x509.UnrecognizedExtension) and wsid.value == b"\x04\x09apps/v1/x"
    _verify(leaf, [ca.mesh_ca], [])
    _verify(leaf, [ca.root], [ca.intermediate])

    # Recovery: same keys, new cert bytes; leaves verify under old and new.
    again = Authority(root_key, mesh_key)
    assert again.root_pem != ca.root_pem
    for roots, inter in (([ca.root], [ca.intermediate]), ([again.root], [again.intermediate]),
                         ([ca.mesh_ca], []), ([again.mesh_ca], [])):
        _verify(leaf, roots, inter)

    # Rotation: a new mesh key; the root still verifies the old leaf through the old intermediate only,
    # and the new mesh CA does not verify it.
    rotated = Authority(root_key, p384())
    _verify(leaf, [rotated.root], [ca.intermediate])
    with pytest.raises(VerificationError):
        _verify(leaf, [rotated.mesh_ca], [])
