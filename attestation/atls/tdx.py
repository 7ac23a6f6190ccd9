"""TDX behind the aTLS Issuer/Validator protocols (extension 1.3.9901.2.2).

Evidence (Contrast): a protobuf `tdx.QuoteV4` (go-tdx-guest field table). `quote_to_proto` splits a
raw v4 quote by its fixed layout; `proto_to_quote` rebuilds the exact bytes, which the attestation
core then parses strictly and verifies (quote signature, QE report, PCK chain to Intel's root), so no
field is trusted that the quote's signature does not cover. Host data for TDX is MRCONFIGID[0:32].
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Sequence

from cryptography import x509
from google.protobuf.message import DecodeError

from attestation.api import check_tdx
from attestation.atls.attest import Verdict
from attestation.atls.platforms import MAX_EVIDENCE, TDX_OID, EvidenceFormatError, EvidenceRejectedError
from attestation.atls.proto import tdx_pb2
from attestation.errors import AttestationError
from attestation.evidence import EvidenceProvider
from attestation.reference_values import TdxReferenceValues
from attestation.revocation import NoRevocationSource, RevocationSource
from attestation.tdx.quote import BODY_V4_SIZE, HEADER_SIZE, QE_REPORT_SIZE, parse_quote
from attestation.tdx.verify import verify_tdx_quote

_BODY_FIELDS = (
    ("tee_tcb_svn", 16), ("mr_seam", 48), ("mr_signer_seam", 48), ("seam_attributes", 8),
    ("td_attributes", 8), ("xfam", 8), ("mr_td", 48), ("mr_config_id", 48), ("mr_owner", 48),
    ("mr_owner_config", 48),
)
_QE_FIELDS = (
    ("cpu_svn", 16), ("misc_select", 4), ("reserved1", 28), ("attributes", 16), ("mr_enclave", 32),
    ("reserved2", 32), ("mr_signer", 32), ("reserved3", 96), ("isv_prod_id", 2), ("isv_svn", 2),
    ("reserved4", 60), ("report_data", 64),
)


_QE_INTS = ("misc_select", "isv_prod_id", "isv_svn")


def quote_to_proto(raw: bytes) -> tdx_pb2.QuoteV4:
    """A raw TDX v4 quote -> `QuoteV4` (strictly parsed first)."""
    q = parse_quote(raw)
    if q.version != 4:
        raise EvidenceFormatError(f"TDX quote version {q.version}; only v4 travels in aTLS evidence")
    msg = tdx_pb2.QuoteV4()
    h = msg.header
    h.version, h.attestation_key_type, h.tee_type = struct.unpack_from("<HHI", raw, 0)
    h.qe_svn, h.pce_svn = raw[8:10], raw[10:12]
    h.qe_vendor_id, h.user_data = raw[12:28], raw[28:48]
    body = raw[HEADER_SIZE : HEADER_SIZE + BODY_V4_SIZE]
    pos = 0
    for name, size in _BODY_FIELDS:
        setattr(msg.td_quote_body, name, body[pos : pos + size])
        pos += size
    msg.td_quote_body.rtmrs.extend(body[pos + 48 * i : pos + 48 * (i + 1)] for i in range(4))
    msg.td_quote_body.report_data = body[pos + 192 : pos + 256]
    pos = HEADER_SIZE + BODY_V4_SIZE
    (msg.signed_data_size,) = struct.unpack_from("<I", raw, pos)
    sd = raw[pos + 4 : pos + 4 + msg.signed_data_size]
    msg.extra_bytes = raw[pos + 4 + msg.signed_data_size :]
    msg.signed_data.signature, msg.signed_data.ecdsa_attestation_key = sd[0:64], sd[64:128]
    cd = msg.signed_data.certification_data
    cd.certificate_data_type, cd.size = struct.unpack_from("<HI", sd, 128)
    inner = sd[134 : 134 + cd.size]
    qrc = cd.qe_report_certification_data
    report, p = inner[:QE_REPORT_SIZE], 0
    for name, size in _QE_FIELDS:
        chunk = report[p : p + size]
        value: bytes | int = int.from_bytes(chunk, "little") if name in _QE_INTS else chunk
        setattr(qrc.qe_report, name, value)
        p += size
    qrc.qe_report_signature = inner[QE_REPORT_SIZE : QE_REPORT_SIZE + 64]
    p = QE_REPORT_SIZE + 64
    (auth_size,) = struct.unpack_from("<H", inner, p)
    qrc.qe_auth_data.parsed_data_size = auth_size
    qrc.qe_auth_data.data = inner[p + 2 : p + 2 + auth_size]
    p += 2 + auth_size
    pck = qrc.pck_certificate_chain_data
    pck.certificate_data_type, pck.size = struct.unpack_from("<HI", inner, p)
    pck.pck_cert_chain = inner[p + 6 : p + 6 + pck.size]
    return msg


def _sized(value: bytes, size: int, name: str) -> bytes:
    if len(value) != size:
        raise EvidenceFormatError(f"TDX quote field {name} has {len(value)} bytes, expected {size}")
    return value


def proto_to_quote(msg: tdx_pb2.QuoteV4) -> bytes:
    """The raw quote the message describes (byte-exact inverse of `quote_to_proto`)."""
    try:
        h = msg.header
        out = bytearray(struct.pack("<HHI", h.version, h.attestation_key_type, h.tee_type))
        out += _sized(h.qe_svn, 2, "qe_svn") + _sized(h.pce_svn, 2, "pce_svn")
        out += _sized(h.qe_vendor_id, 16, "qe_vendor_id") + _sized(h.user_data, 20, "user_data")
        b = msg.td_quote_body
        for name, size in _BODY_FIELDS:
            out += _sized(getattr(b, name), size, name)
        if len(b.rtmrs) != 4:
            raise EvidenceFormatError(f"TDX quote has {len(b.rtmrs)} RTMRs, expected 4")
        for i, rtmr in enumerate(b.rtmrs):
            out += _sized(rtmr, 48, f"rtmrs[{i}]")
        out += _sized(b.report_data, 64, "report_data")
        sd = msg.signed_data
        qrc = sd.certification_data.qe_report_certification_data
        report = bytearray()
        for name, size in _QE_FIELDS:
            value = getattr(qrc.qe_report, name)
            report += value.to_bytes(size, "little") if isinstance(value, int) else _sized(value, size, name)
        auth = qrc.qe_auth_data.data
        pck = qrc.pck_certificate_chain_data
        inner = (
            bytes(report) + _sized(qrc.qe_report_signature, 64, "qe_report_signature")
            + struct.pack("<H", len(auth)) + auth
            + struct.pack("<HI", pck.certificate_data_type, len(pck.pck_cert_chain)) + pck.pck_cert_chain
        )
        signed = (
            _sized(sd.signature, 64, "signature") + _sized(sd.ecdsa_attestation_key, 64, "attestation_key")
            + struct.pack("<HI", sd.certification_data.certificate_data_type, len(inner)) + inner
        )
        out += struct.pack("<I", len(signed)) + signed + msg.extra_bytes
    except (struct.error, OverflowError) as exc:
        raise EvidenceFormatError(f"TDX quote fields out of range: {exc}") from exc
    return bytes(out)


def encode_tdx(quote: bytes) -> bytes:
    return quote_to_proto(quote).SerializeToString(deterministic=True)


def decode_tdx(data: bytes) -> bytes:
    if len(data) > MAX_EVIDENCE:
        raise EvidenceFormatError(f"TDX evidence has {len(data)} bytes, limit {MAX_EVIDENCE}")
    msg = tdx_pb2.QuoteV4()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise EvidenceFormatError(f"TDX evidence is not a tdx.QuoteV4 message: {exc}") from exc
    return proto_to_quote(msg)


class TdxIssuer:
    def __init__(self, provider: EvidenceProvider) -> None:
        if provider.platform != "tdx":
            raise ValueError(f"TdxIssuer needs a TDX provider, got {provider.platform}")
        self._provider = provider

    @property
    def oid(self) -> x509.ObjectIdentifier:
        return TDX_OID

    def issue(self, report_data: bytes) -> bytes:
        return encode_tdx(self._provider.get_evidence(report_data).report)


class TdxValidator:
    """Checks TDX evidence against reference values; `mr_config_id` pins MRCONFIGID (48 bytes).

    Collateral (TCB info, QE identity, PCK and root CRLs) comes from `revocation`; without it, or
    with a TCB status other than `accepted_tcb_statuses`, the evidence is refused.
    """

    def __init__(
        self,
        reference_values: Sequence[TdxReferenceValues],
        *,
        revocation: RevocationSource | None = None,
        mr_config_id: bytes | None = None,
        now: datetime.datetime | None = None,
        trusted_root: x509.Certificate | None = None,
        accepted_tcb_statuses: tuple[str, ...] = ("UpToDate",),
    ) -> None:
        self._rvs = tuple(reference_values)
        self._revocation = revocation or NoRevocationSource()
        self._mr_config_id = mr_config_id
        self._now = now
        self._root = trusted_root
        self._accepted = accepted_tcb_statuses

    @property
    def oid(self) -> x509.ObjectIdentifier:
        return TDX_OID

    def validate(self, evidence: bytes, report_data: bytes) -> Verdict:
        raw = decode_tdx(evidence)
        try:
            verification = verify_tdx_quote(
                raw, now=self._now, trusted_root=self._root, revocation=self._revocation,
                require_revocation=True, accepted_tcb_statuses=self._accepted,
            )
        except AttestationError as exc:
            raise EvidenceRejectedError("verifying quote", exc) from exc
        try:
            check_tdx(verification, self._rvs, report_data=report_data, mr_config_id=self._mr_config_id)
        except AttestationError as exc:
            raise EvidenceRejectedError("validating quote", exc) from exc
        mr_config_id = verification.quote.body.mr_config_id
        return Verdict(platform="tdx", host_data=mr_config_id[:32])
