"""A simulated TDX platform: real-format v4 quotes, PCK chains and PCS collateral under a locally
generated "simulated Intel SGX Root CA".

Like the simulated SNP platform it is trusted only when a verifier is given its root explicitly
(`verify_tdx_quote(..., trusted_root=sim.root.root)`); the bundled Intel root is pinned. It makes
the TDX paths testable without hardware, including collateral cases no real vector covers:
revoked PCKs, non-UpToDate TCB levels, expired CRLs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from .. import _der
from ..evidence import Evidence, Platform, pad_report_data
from ..tdx.collateral import TdxCollateral
from ..tdx.pck import SGX_EXTENSIONS_OID, SGX_TYPE_SCALABLE
from ..tdx.quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    CERT_TYPE_PCK_CHAIN,
    CERT_TYPE_QE_REPORT,
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_TDX,
)
from .simulated_crl import build_crl

QE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
QE_ATTRIBUTES = bytes.fromhex("1500000000000000e700000000000000")
SEPT_VE_DISABLE = (1 << 28).to_bytes(8, "little")


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Simulated Intel (not a TEE)"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
    pathlen: int | None,
    start: _dt.datetime,
    days: int,
    extra: list[x509.ExtensionType] | None = None,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen if ca else None), critical=True)
    )
    for ext in extra or []:
        b = b.add_extension(ext, critical=False)
    return b.sign(signer, hashes.SHA256())


def _raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _seq(*items: bytes) -> bytes:
    return _der.encode_tlv(_der.TAG_SEQUENCE, b"".join(items))


def _entry(oid: str, value: bytes) -> bytes:
    return _seq(_der.encode_oid(oid), value)


def sgx_extension(
    *,
    ppid: bytes,
    components: tuple[int, ...],
    pce_svn: int,
    cpu_svn: bytes,
    pce_id: bytes,
    fmspc: bytes,
    sgx_type: int,
    piid: bytes | None,
    config: tuple[bool, bool, bool] | None,
) -> bytes:
    """DER of the PCK SGX extension (OID 1.2.840.113741.1.13.1)."""
    base = SGX_EXTENSIONS_OID
    tcb = [_entry(f"{base}.2.{i + 1}", _der.encode_integer(c)) for i, c in enumerate(components)]
    tcb.append(_entry(f"{base}.2.17", _der.encode_integer(pce_svn)))
    tcb.append(_entry(f"{base}.2.18", _der.encode_tlv(_der.TAG_OCTET_STRING, cpu_svn)))
    items = [
        _entry(f"{base}.1", _der.encode_tlv(_der.TAG_OCTET_STRING, ppid)),
        _entry(f"{base}.2", _seq(*tcb)),
        _entry(f"{base}.3", _der.encode_tlv(_der.TAG_OCTET_STRING, pce_id)),
        _entry(f"{base}.4", _der.encode_tlv(_der.TAG_OCTET_STRING, fmspc)),
        _entry(f"{base}.5", _der.encode_tlv(_der.TAG_ENUMERATED, bytes([sgx_type]))),
    ]
    if piid is not None:
        items.append(_entry(f"{base}.6", _der.encode_tlv(_der.TAG_OCTET_STRING, piid)))
    if config is not None:
        flags = [
            _entry(f"{base}.7.{i + 1}", _der.encode_tlv(_der.TAG_BOOLEAN, b"\xff" if v else b"\0"))
            for i, v in enumerate(config)
        ]
        items.append(_entry(f"{base}.7", _seq(*flags)))
    return _seq(*items)


@dataclass
class SimulatedIntelRoot:
    """Root CA, PCK Platform CA and TCB Signing keys and certificates."""

    root_key: ec.EllipticCurvePrivateKey
    platform_key: ec.EllipticCurvePrivateKey
    signing_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    platform_ca: x509.Certificate
    tcb_signing: x509.Certificate

    @classmethod
    def generate(cls) -> SimulatedIntelRoot:
        start = _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=1)
        keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
        root_name = _name("Intel SGX Root CA")
        root = _cert("Intel SGX Root CA", keys[0], root_name, keys[0], True, 1, start, 3650)
        platform = _cert("Intel SGX PCK Platform CA", keys[1], root_name, keys[0], True, 0, start, 3650)
        signing = _cert("Intel SGX TCB Signing", keys[2], root_name, keys[0], False, None, start, 3650)
        return cls(keys[0], keys[1], keys[2], root, platform, signing)

    def chain_pem(self, *certs: x509.Certificate) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def crl(
        self,
        issuer: str,
        revoked: list[int],
        *,
        valid_for: _dt.timedelta = _dt.timedelta(days=30),
        now: _dt.datetime | None = None,
    ) -> bytes:
        """A DER CRL from the root ("root") or the platform CA ("platform")."""
        now = now or _dt.datetime.now(_dt.UTC)
        cert, key = (self.root, self.root_key) if issuer == "root" else (self.platform_ca, self.platform_key)
        start = now - _dt.timedelta(hours=1)
        return build_crl(
            cert.subject, key, revoked, this_update=start, next_update=start + valid_for,
            revoked_at=now - _dt.timedelta(hours=2), algorithm=hashes.SHA256(),
        )

    def signed_document(self, key: str, body: dict[str, Any]) -> bytes:
        raw = json.dumps(body, separators=(",", ":")).encode()
        sig = _raw_sig(self.signing_key, raw)
        return b'{"' + key.encode() + b'":' + raw + b',"signature":"' + sig.hex().encode() + b'"}'


def _svn_list(values: tuple[int, ...]) -> list[dict[str, int]]:
    return [{"svn": v} for v in values]


@dataclass
class SimulatedTdxProvider:
    """Makes signed TDX v4 quotes with chosen TD claims. Not a TEE: for tests and dev clusters."""

    root: SimulatedIntelRoot = field(default_factory=SimulatedIntelRoot.generate)
    mr_td: bytes = bytes(48)
    mr_seam: bytes = bytes(48)
    rtmrs: tuple[bytes, bytes, bytes, bytes] = (bytes(48), bytes(48), bytes(48), bytes(48))
    mr_config_id: bytes = bytes(48)
    td_attributes: bytes = SEPT_VE_DISABLE
    xfam: bytes = bytes.fromhex("e702060000000000")
    tee_tcb_svn: bytes = bytes.fromhex("03000500000000000000000000000000")
    fmspc: bytes = bytes.fromhex("50806f000000")
    pce_id: bytes = bytes(2)
    pce_svn: int = 11
    sgx_components: tuple[int, ...] = (5, 5, 13, 2, 3, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0)
    sgx_type: int = SGX_TYPE_SCALABLE
    piid: bytes | None = field(default_factory=lambda: secrets.token_bytes(16))
    config: tuple[bool, bool, bool] | None = (True, False, True)  # dynamic platform, cached keys, SMT
    qe_isv_svn: int = 4

    def __post_init__(self) -> None:
        self._pck_key = ec.generate_private_key(ec.SECP256R1())
        self._ak = ec.generate_private_key(ec.SECP256R1())
        start = _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=1)
        ext = sgx_extension(
            ppid=secrets.token_bytes(16),
            components=self.sgx_components,
            pce_svn=self.pce_svn,
            cpu_svn=bytes(self.sgx_components),
            pce_id=self.pce_id,
            fmspc=self.fmspc,
            sgx_type=self.sgx_type,
            piid=self.piid,
            config=self.config,
        )
        self.pck = _cert(
            "Intel SGX PCK Certificate",
            self._pck_key,
            self.root.platform_ca.subject,
            self.root.platform_key,
            False,
            None,
            start,
            7 * 365,
            [x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSIONS_OID), ext)],
        )

    @property
    def platform(self) -> Platform:
        return "tdx"

    def make_quote(self, report_data: bytes) -> bytes:
        header = (
            struct.pack("<HHIHH", 4, ATT_KEY_TYPE_ECDSA_P256, TEE_TYPE_TDX, 0, 0)
            + INTEL_QE_VENDOR_ID
            + bytes(20)
        )
        body = (
            self.tee_tcb_svn
            + self.mr_seam
            + bytes(48)
            + bytes(8)
            + self.td_attributes
            + self.xfam
            + self.mr_td
            + self.mr_config_id
            + bytes(48)
            + bytes(48)
            + b"".join(self.rtmrs)
            + pad_report_data(report_data)
        )
        ak_raw = self._ak.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )[1:]
        auth = bytes(range(32))
        qe = bytearray(384)
        qe[48:64] = QE_ATTRIBUTES
        qe[128:160] = QE_MRSIGNER
        struct.pack_into("<HH", qe, 256, 2, self.qe_isv_svn)
        qe[320:352] = hashlib.sha256(ak_raw + auth).digest()
        chain = self.root.chain_pem(self.pck, self.root.platform_ca, self.root.root)
        cert_data = (
            bytes(qe)
            + _raw_sig(self._pck_key, bytes(qe))
            + struct.pack("<H", len(auth))
            + auth
            + struct.pack("<HI", CERT_TYPE_PCK_CHAIN, len(chain))
            + chain
        )
        sig_data = (
            _raw_sig(self._ak, header + body)
            + ak_raw
            + struct.pack("<HI", CERT_TYPE_QE_REPORT, len(cert_data))
            + cert_data
        )
        return header + body + struct.pack("<I", len(sig_data)) + sig_data

    def get_evidence(self, report_data: bytes) -> Evidence:
        return Evidence(platform="tdx", report=self.make_quote(report_data), provider="simulated-tdx")

    def collateral(
        self,
        *,
        statuses: tuple[str, ...] = ("UpToDate",),
        qe_status: str = "UpToDate",
        revoked_pck: bool = False,
        crl_valid_for: _dt.timedelta = _dt.timedelta(days=30),
        evaluation_number: int = 17,
        now: _dt.datetime | None = None,
    ) -> TdxCollateral:
        """Collateral for this platform. Each entry of `statuses` becomes one TCB level, highest
        first: level i requires SVNs raised by (len(statuses) - 1 - i), so only the last level
        (the lowest) matches when more than one is given."""
        now = now or _dt.datetime.now(_dt.UTC)
        iso = "%Y-%m-%dT%H:%M:%SZ"
        levels = []
        for i, status in enumerate(statuses):
            bump = len(statuses) - 1 - i
            levels.append(
                {
                    "tcb": {
                        "sgxtcbcomponents": _svn_list(tuple(c + bump for c in self.sgx_components)),
                        "pcesvn": self.pce_svn,
                        "tdxtcbcomponents": _svn_list(tuple(self.tee_tcb_svn)),
                    },
                    "tcbDate": "2024-01-01T00:00:00Z",
                    "tcbStatus": status,
                }
            )
        tcb_info = {
            "id": "TDX",
            "version": 3,
            "issueDate": (now - _dt.timedelta(days=1)).strftime(iso),
            "nextUpdate": (now + _dt.timedelta(days=29)).strftime(iso),
            "fmspc": self.fmspc.hex(),
            "pceId": self.pce_id.hex(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": evaluation_number,
            "tdxModule": {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8},
            "tcbLevels": levels,
        }
        qe_identity = {
            "id": "TD_QE",
            "version": 2,
            "issueDate": (now - _dt.timedelta(days=1)).strftime(iso),
            "nextUpdate": (now + _dt.timedelta(days=29)).strftime(iso),
            "tcbEvaluationDataNumber": evaluation_number,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": QE_MRSIGNER.hex().upper(),
            "isvprodid": 2,
            "tcbLevels": [
                {
                    "tcb": {"isvsvn": self.qe_isv_svn},
                    "tcbDate": "2024-01-01T00:00:00Z",
                    "tcbStatus": qe_status,
                }
            ],
        }
        chain = self.root.chain_pem(self.root.tcb_signing, self.root.root)
        return TdxCollateral(
            tcb_info=self.root.signed_document("tcbInfo", tcb_info),
            tcb_info_issuer_chain=chain,
            qe_identity=self.root.signed_document("enclaveIdentity", qe_identity),
            qe_identity_issuer_chain=chain,
            pck_crl=self.root.crl(
                "platform", [self.pck.serial_number] if revoked_pck else [], valid_for=crl_valid_for, now=now
            ),
            pck_crl_issuer_chain=self.root.chain_pem(self.root.platform_ca, self.root.root),
            root_crl=self.root.crl("root", [], now=now),
        )
