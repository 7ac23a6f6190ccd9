"""The Coordinator's certificate authority: root CA, intermediate / mesh CA, and mesh leaf certs.

Layout (Contrast internal/ca): the root key derives from the seed (stable across restarts); the mesh
CA key is random and rotates on every manifest update and every user recovery. The intermediate
(issued by the root) and the self-signed mesh CA share the mesh key and subject, so a leaf issued
by the mesh key chains both to ``mesh-ca.pem`` and, via the intermediate, to the root.
Cert bytes (serials, validity) are rebuilt whenever the authority is built; keys stay the same.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import urllib.parse
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT_CN = "system:coordinator:root"
INTERMEDIATE_CN = "system:coordinator:intermediate"
CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
BACKDATE = datetime.timedelta(hours=1)
WORKLOAD_SECRET_ID_OID = x509.ObjectIdentifier("1.3.9901.3.1")

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _serial() -> int:
    return secrets.randbits(127) | 1


def split_sans(sans: Sequence[str]) -> list[x509.GeneralName]:
    """IP literals become IP SANs, URLs with a scheme URI SANs, everything else DNS SANs."""
    out: list[x509.GeneralName] = []
    for san in sans:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(san)))
            continue
        except ValueError:
            pass
        parsed = urllib.parse.urlparse(san)
        if parsed.scheme and (parsed.netloc or parsed.path) and "://" in san:
            out.append(x509.UniformResourceIdentifier(san))
        else:
            out.append(x509.DNSName(san))
    return out


def workload_secret_id_extension(workload_secret_id: str) -> x509.Extension[x509.ExtensionType]:
    raw = workload_secret_id.encode("utf-8")
    # DER OCTET STRING of the UTF-8 bytes.
    if len(raw) < 0x80:
        der = bytes([0x04, len(raw)]) + raw
    else:
        length = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
        der = bytes([0x04, 0x80 | len(length)]) + length + raw
    value = x509.UnrecognizedExtension(WORKLOAD_SECRET_ID_OID, der)
    return x509.Extension(WORKLOAD_SECRET_ID_OID, False, value)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)



def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: PublicKey, now: datetime.datetime,
    validity: datetime.timedelta, *, ca: bool,
) -> x509.CertificateBuilder:
    """What every certificate of the Coordinator has: names, key, a fresh serial, validity from a
    backdated start, basic constraints and key usage."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=ca), critical=True)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """Signatures only; a CA also signs certificates."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=cert_sign, crl_sign=False, encipher_only=False,
        decipher_only=False,
    )

class Authority:
    """Root, intermediate and mesh CA certificates for a (root key, mesh key) pair."""

    def __init__(self, root_key: ec.EllipticCurvePrivateKey, mesh_key: ec.EllipticCurvePrivateKey) -> None:
        self._root_key = root_key
        self._mesh_key = mesh_key
        now = datetime.datetime.now(datetime.UTC)
        root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
        mesh_ski = x509.SubjectKeyIdentifier.from_public_key(mesh_key.public_key())
        root_name, mesh_name = _name(ROOT_CN), _name(INTERMEDIATE_CN)
        root_pub, mesh_pub = root_key.public_key(), mesh_key.public_key()
        self.root = self._ca(root_name, root_name, root_pub, root_key, root_ski, now, None)
        self.intermediate = self._ca(mesh_name, root_name, mesh_pub, root_key, mesh_ski, now, root_ski)
        self.mesh_ca = self._ca(mesh_name, mesh_name, mesh_pub, mesh_key, mesh_ski, now, None)
        self.root_pem = pem(self.root)
        self.intermediate_pem = pem(self.intermediate)
        self.mesh_ca_pem = pem(self.mesh_ca)

    @property
    def mesh_key(self) -> ec.EllipticCurvePrivateKey:
        return self._mesh_key

    @staticmethod
    def _ca(
        subject: x509.Name,
        issuer: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        signer: ec.EllipticCurvePrivateKey,
        ski: x509.SubjectKeyIdentifier,
        now: datetime.datetime,
        issuer_ski: x509.SubjectKeyIdentifier | None,
    ) -> x509.Certificate:
        builder = (
            _builder(subject, issuer, public_key, now, CA_VALIDITY, ca=True)
            .add_extension(ski, critical=False)
        )
        if issuer_ski is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
            )
        return builder.sign(signer, hashes.SHA384())

    def issue_mesh_cert(
        self,
        public_key: PublicKey,
        sans: Sequence[str],
        claims: Sequence[x509.Extension[x509.ExtensionType]] = (),
        workload_secret_id: str = "",
    ) -> x509.Certificate:
        """A leaf for the workload's own TLS key, signed by the mesh CA key."""
        now = datetime.datetime.now(datetime.UTC)
        general = split_sans(sans)
        dns = [g.value for g in general if isinstance(g, x509.DNSName)]
        subject = _name(dns[0]) if dns else x509.Name([])
        builder = (
            _builder(subject, _name(INTERMEDIATE_CN), public_key, now, LEAF_VALIDITY, ca=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._mesh_key.public_key()),
                critical=False,
            )
        )
        if general:
            # An empty subject needs a critical SAN (RFC 5280 4.2.1.6).
            builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=not dns)
        for claim in claims:
            builder = builder.add_extension(claim.value, critical=False)
        if workload_secret_id:
            ext = workload_secret_id_extension(workload_secret_id)
            builder = builder.add_extension(ext.value, critical=False)
        return builder.sign(self._mesh_key, hashes.SHA384())
