"""A simulated SEV-SNP platform for machines without a TEE.

It produces real-format (v3 or v5) reports signed by a VCEK that chains to a locally generated
"simulated AMD" ARK. Nothing about it is trusted by default: the bundled AMD roots are pinned by
fingerprint, so a verifier accepts these reports only when given `SimulatedAmdRoot.roots()`
explicitly (a dev/test cluster's Coordinator can load it from the directory written by `save`).

The chain mirrors AMD's profile (RSA-PSS/SHA-384 links, P-384 VCEK, the KDS extensions), so the
same verification path runs for simulated and real evidence. RSA keys are 2048-bit (AMD uses
4096) to keep key generation fast in tests.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from common.files import atomic_write

from .. import _der
from ..evidence import Evidence, Platform, pad_report_data
from ..revocation import NoRevocationSource, RevocationSource
from ..snp import abi, certs, idblock
from ..snp.product import Product, TcbParts, compose_tcb
from ..tdx.collateral import TdxCollateral
from ..trust import AmdRoots
from .simulated_crl import build_crl

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_CPUID = {
    Product.MILAN: (0x19, 0x01, 0x01),
    Product.GENOA: (0x19, 0x11, 0x01),
    Product.TURIN: (0x1A, 0x02, 0x01),
}


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Simulated AMD (not a TEE)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca_cert(
    subject: str,
    issuer: str,
    key: rsa.RSAPrivateKey,
    signer: rsa.RSAPrivateKey,
    start: _dt.datetime,
    pathlen: int | None,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _dt.timedelta(days=365 * 25))
        .add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=pathlen is None,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return b.sign(signer, hashes.SHA384(), rsa_padding=_PSS)


@dataclass
class SimulatedAmdRoot:
    """A locally generated ARK and ASK for one product line, with their private keys."""

    product: Product
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask: x509.Certificate

    @classmethod
    def generate(cls, product: Product = Product.MILAN, *, key_size: int = 2048) -> SimulatedAmdRoot:
        """A fresh ARK/ASK pair; `key_size=4096` matches AMD's real keys (slower to generate)."""
        start = _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=1)
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        ark = _ca_cert(f"ARK-{product.value}", f"ARK-{product.value}", ark_key, ark_key, start, None)
        ask = _ca_cert(f"SEV-{product.value}", f"ARK-{product.value}", ask_key, ark_key, start, 0)
        return cls(product, ark_key, ask_key, ark, ask)

    def roots(self) -> AmdRoots:
        """Trust anchors to pass as `trusted_roots=` to accept this simulator's reports."""
        return AmdRoots.from_certificates([self.ark, self.ask])

    def issue_vcek(self, key: ec.EllipticCurvePrivateKey, chip_id: bytes, tcb: TcbParts) -> x509.Certificate:
        start = _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=1)
        arc = certs.AMD_OID_ARC
        ext: list[tuple[str, bytes]] = [
            (arc + ".1", _der.encode_integer(1 if self.product is Product.TURIN else 0)),
            (arc + ".2", _der.encode_tlv(_der.TAG_IA5STRING, self.product.value.encode())),
            (arc + ".3.1", _der.encode_integer(tcb.bl)),
            (arc + ".3.2", _der.encode_integer(tcb.tee)),
            (arc + ".3.3", _der.encode_integer(tcb.snp)),
            (arc + ".3.8", _der.encode_integer(tcb.ucode)),
        ]
        hwid = chip_id
        if self.product is Product.TURIN:
            ext.append((arc + ".3.9", _der.encode_integer(tcb.fmc or 0)))
            hwid = chip_id[:8]
        ext.append((arc + ".4", hwid))
        b = (
            x509.CertificateBuilder()
            .subject_name(_name("SEV-VCEK"))
            .issuer_name(self.ask.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + _dt.timedelta(days=365 * 7))
        )
        for oid, value in ext:
            b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
        return b.sign(self.ask_key, hashes.SHA384(), rsa_padding=_PSS)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ark.pem, ask.pem (public) and ark.key, ask.key (0600) atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        files = {
            "ark.pem": (self.ark.public_bytes(serialization.Encoding.PEM), 0o644),
            "ask.pem": (self.ask.public_bytes(serialization.Encoding.PEM), 0o644),
            "ark.key": (_key_pem(self.ark_key), 0o600),
            "ask.key": (_key_pem(self.ask_key), 0o600),
        }
        for name, (data, mode) in files.items():
            atomic_write(d / name, data, mode=mode)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SimulatedAmdRoot:
        d = Path(directory)
        ark = certs.load_certificate((d / "ark.pem").read_bytes())
        ask = certs.load_certificate((d / "ask.pem").read_bytes())
        # Our own keys, written by `save`: skip OpenSSL's slow RSA consistency check (~50 ms each).
        ark_key = serialization.load_pem_private_key(
            (d / "ark.key").read_bytes(), None, unsafe_skip_rsa_key_validation=True
        )
        ask_key = serialization.load_pem_private_key(
            (d / "ask.key").read_bytes(), None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(ark_key, rsa.RSAPrivateKey) or not isinstance(ask_key, rsa.RSAPrivateKey):
            raise ValueError("simulated root keys must be RSA")
        _, product = certs.role_of(ark)
        assert product is not None
        return cls(product, ark_key, ask_key, ark, ask)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )




@dataclass
class SimulatedSnpProvider:
    """Makes signed SNP reports with chosen launch claims. Not a TEE: for tests and dev clusters."""

    root: SimulatedAmdRoot = field(default_factory=SimulatedAmdRoot.generate)
    measurement: bytes = bytes(48)
    host_data: bytes = bytes(32)
    policy: int = 0x30000
    vmpl: int = 0
    version: int = 3
    platform_info: int = 0x1
    tcb: TcbParts = field(default_factory=lambda: TcbParts(bl=4, tee=0, snp=22, ucode=213, fmc=None))
    chip_id: bytes = field(default_factory=lambda: secrets.token_bytes(64))
    id_block: bool = True
    """Launch "with" Contrast's derived ID block: ID_KEY_DIGEST, FAMILY_ID, IMAGE_ID, GUEST_SVN set."""

    def __post_init__(self) -> None:
        if len(self.measurement) != 48 or len(self.host_data) != 32 or len(self.chip_id) != 64:
            raise ValueError("measurement must be 48 bytes, host_data 32, chip_id 64")
        if self.root.product is Product.TURIN:
            self.chip_id = self.chip_id[:8] + bytes(56)
            if self.tcb.fmc is None:
                self.tcb = TcbParts(
                    bl=self.tcb.bl, tee=self.tcb.tee, snp=self.tcb.snp, ucode=self.tcb.ucode, fmc=1
                )
        abi.parse_policy(self.policy)
        self._vcek_key = ec.generate_private_key(ec.SECP384R1())
        self.vcek = self.root.issue_vcek(self._vcek_key, self.chip_id, self.tcb)

    @property
    def platform(self) -> Platform:
        return "snp"

    def trusted_roots(self) -> AmdRoots:
        return self.root.roots()

    def make_report(self, report_data: bytes) -> bytes:
        tcb = compose_tcb(self.tcb, self.root.product)
        fam, mod, step = _CPUID[self.root.product]
        with_id = self.id_block
        rep = abi.SnpReport(
            version=self.version,
            guest_svn=idblock.ID_BLOCK_GUEST_SVN if with_id else 0,
            policy=self.policy,
            family_id=idblock.FAMILY_ID if with_id else bytes(16),
            image_id=idblock.IMAGE_ID if with_id else bytes(16),
            vmpl=self.vmpl,
            signature_algo=abi.SIGNATURE_ALGO_ECDSA_P384_SHA384,
            current_tcb=tcb,
            platform_info=self.platform_info,
            signer_info=0,
            report_data=pad_report_data(report_data),
            measurement=self.measurement,
            host_data=self.host_data,
            id_key_digest=idblock.id_key_digest(self.measurement, self.policy) if with_id else bytes(48),
            author_key_digest=bytes(48),
            report_id=secrets.token_bytes(32),
            report_id_ma=b"\xff" * 32,
            reported_tcb=tcb,
            cpuid_fam_id=fam,
            cpuid_mod_id=mod,
            cpuid_step=step,
            chip_id=self.chip_id,
            committed_tcb=tcb,
            current_build=21,
            current_minor=55,
            current_major=1,
            committed_build=21,
            committed_minor=55,
            committed_major=1,
            launch_tcb=tcb,
            launch_mit_vector=0 if self.version >= 5 else None,
            current_mit_vector=0 if self.version >= 5 else None,
            signature_r=0,
            signature_s=0,
            raw=b"",
        )
        unsigned = abi.report_to_bytes(rep)
        der = self._vcek_key.sign(unsigned[: abi.SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        out = bytearray(unsigned)
        out[0x2A0:0x2E8] = r.to_bytes(0x48, "little")
        out[0x2E8:0x330] = s.to_bytes(0x48, "little")
        struct.pack_into("<I", out, 0x34, abi.SIGNATURE_ALGO_ECDSA_P384_SHA384)
        return bytes(out)

    def cert_table(self) -> bytes:
        der = serialization.Encoding.DER
        return certs.serialize_cert_table(
            [
                certs.CertTableEntry(certs.GUID_VCEK, self.vcek.public_bytes(der)),
                certs.CertTableEntry(certs.GUID_ASK, self.root.ask.public_bytes(der)),
                certs.CertTableEntry(certs.GUID_ARK, self.root.ark.public_bytes(der)),
            ]
        )

    def get_evidence(self, report_data: bytes) -> Evidence:
        der = serialization.Encoding.DER
        return Evidence(
            platform="snp",
            report=self.make_report(report_data),
            cert_table=self.cert_table(),
            certs=(
                self.vcek.public_bytes(der),
                self.root.ask.public_bytes(der),
                self.root.ark.public_bytes(der),
            ),
            provider="simulated",
        )


def simulated_crl(
    root: SimulatedAmdRoot,
    revoked: tuple[int, ...] = (),
    *,
    now: _dt.datetime | None = None,
    valid_for: _dt.timedelta = _dt.timedelta(days=1),
    signer: rsa.RSAPrivateKey | None = None,
) -> bytes:
    """A DER CRL for the simulated ARK (RSA-PSS/SHA-384, as KDS signs), listing `revoked`; `signer`
    replaces the ARK key (a forged CRL, for tests)."""
    when = now or _dt.datetime.now(_dt.UTC)
    start = when - _dt.timedelta(minutes=5)
    return build_crl(
        root.ark.subject, signer or root.ark_key, revoked, this_update=start, next_update=start + valid_for,
        revoked_at=when - _dt.timedelta(hours=1), algorithm=hashes.SHA384(), rsa_padding=_PSS,
    )


@dataclass
class SimulatedCrlSource:
    """The revocation source for a simulated root: a fresh CRL from its ARK for its own chain
    (listing `revoked` serials), everything else asked from `fallback` (refused by default)."""

    root: SimulatedAmdRoot
    revoked: tuple[int, ...] = ()
    fallback: RevocationSource = field(default_factory=NoRevocationSource)
    _made: tuple[_dt.datetime, bytes] | None = field(default=None, init=False, repr=False)

    def snp_crl(self, product: Product, *, vlek: bool, ark: x509.Certificate, now: _dt.datetime) -> bytes:
        if ark != self.root.ark:
            return self.fallback.snp_crl(product, vlek=vlek, ark=ark, now=now)
        # One RSA signature per hour, not per handshake; the CRL itself is valid for a day.
        made = self._made
        if made is None or not made[0] <= now <= made[0] + _dt.timedelta(hours=1):
            made = (now, simulated_crl(self.root, self.revoked, now=now))
            self._made = made
        return made[1]

    def tdx_collateral(self, fmspc: bytes, ca: str, *, now: _dt.datetime) -> TdxCollateral:
        return self.fallback.tdx_collateral(fmspc, ca, now=now)

    def refresh(self, now: _dt.datetime) -> list[str]:
        """Forwarded to the fallback source (a fetcher refreshes its cache)."""
        refresh = getattr(self.fallback, "refresh", None)
        return list(refresh(now)) if refresh is not None else []
