"""Intel TDX quote v4 / v5: bytes -> structure, strictly. No I/O, no policy.

Layout per the Intel TDX DCAP Quoting Library API, appendix A:

    header (48) | body (v4: 584 TDX 1.0) or | u32 signed_data_size | signature data | extra bytes
                |  (v5: u16 type, u32 size, body of 584 or 648)

Signature data: ECDSA-P256 quote signature r||s (64, big-endian), attestation key X||Y (64),
u16 certification type (must be 6: QE report certification data), u32 size (must be the rest of
the signature data), QE report (384), QE report signature (64), u16 auth size, auth data,
u16 inner type (must be 5: PCK chain), u32 inner size, PEM chain.

Bytes after `signed_data_size` are kept as `extra` (DCAP buffers are often zero-padded). The
signed message is the raw input prefix, never a re-serialisation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import ParseError

HEADER_SIZE = 48
BODY_V4_SIZE = 584  # TDX 1.0 TD quote body
BODY_V15_SIZE = 648  # TDX 1.5 body: adds TEE_TCB_SVN_2 and MRSERVICETD
QE_REPORT_SIZE = 384
SIGNATURE_SIZE = 64
ATTESTATION_KEY_SIZE = 64
MIN_QUOTE_V4_SIZE = 0x3FC
MIN_QUOTE_V5_SIZE = 1026
ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
CERT_TYPE_QE_REPORT = 6
CERT_TYPE_PCK_CHAIN = 5
BODY_TYPE_TDX10 = 2
BODY_TYPE_TDX15 = 3
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
MAX_QUOTE_SIZE = 1 << 20


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class TdQuoteBody:
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn_2: bytes | None = None
    mr_service_td: bytes | None = None


@dataclass(frozen=True)
class QeReport:
    """SGX REPORTBODY of the quoting enclave."""

    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes
    raw: bytes


@dataclass(frozen=True)
class TdxQuote:
    header: QuoteHeader
    body_type: int
    body: TdQuoteBody
    signature: bytes
    attestation_key: bytes
    qe_report: QeReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    signed_data_size: int
    extra: bytes
    raw: bytes
    signed_size: int

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[: self.signed_size]


def _err(msg: str, field: str, offset: int | None = None, found: int | bytes | None = None) -> ParseError:
    return ParseError(msg, field=field, offset=offset, found=found)


def parse_header(data: bytes) -> QuoteHeader:
    version, ak_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", data, 0)
    return QuoteHeader(
        version=version,
        attestation_key_type=ak_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=data[0x0C:0x1C],
        user_data=data[0x1C:0x30],
    )


def parse_body(b: bytes) -> TdQuoteBody:
    """A TDX 1.0 (584-byte) or 1.5 (648-byte) TD quote body."""
    if len(b) not in (BODY_V4_SIZE, BODY_V15_SIZE):
        raise _err(f"TD quote body is {len(b)} bytes, expected 584 or 648", "body", found=len(b))
    return TdQuoteBody(
        tee_tcb_svn=b[0x00:0x10],
        mr_seam=b[0x10:0x40],
        mr_signer_seam=b[0x40:0x70],
        seam_attributes=b[0x70:0x78],
        td_attributes=b[0x78:0x80],
        xfam=b[0x80:0x88],
        mr_td=b[0x88:0xB8],
        mr_config_id=b[0xB8:0xE8],
        mr_owner=b[0xE8:0x118],
        mr_owner_config=b[0x118:0x148],
        rtmrs=(b[0x148:0x178], b[0x178:0x1A8], b[0x1A8:0x1D8], b[0x1D8:0x208]),
        report_data=b[0x208:0x248],
        tee_tcb_svn_2=b[0x248:0x258] if len(b) == BODY_V15_SIZE else None,
        mr_service_td=b[0x258:0x288] if len(b) == BODY_V15_SIZE else None,
    )


def parse_qe_report(r: bytes) -> QeReport:
    if len(r) != QE_REPORT_SIZE:
        raise _err(f"QE report is {len(r)} bytes, expected 384", "qe_report", found=len(r))
    (misc,) = struct.unpack_from("<I", r, 16)
    prod, svn = struct.unpack_from("<HH", r, 256)
    return QeReport(
        cpu_svn=r[0:16],
        misc_select=misc,
        attributes=r[48:64],
        mr_enclave=r[64:96],
        mr_signer=r[128:160],
        isv_prod_id=prod,
        isv_svn=svn,
        report_data=r[320:384],
        raw=r,
    )


def _body_layout(data: bytes, header: QuoteHeader) -> tuple[int, int, int]:
    """(body type, body offset, body size) by version: v4 has a fixed TDX 1.0 body, v5 a typed one."""
    if header.version == 4:
        if len(data) < MIN_QUOTE_V4_SIZE:
            raise _err(
                f"quote is {len(data)} bytes, shorter than the minimum v4 quote size 0x3FC (1020)",
                "quote",
                found=len(data),
            )
        return BODY_TYPE_TDX10, HEADER_SIZE, BODY_V4_SIZE
    if header.version == 5:
        if len(data) < MIN_QUOTE_V5_SIZE:
            raise _err(
                f"quote is {len(data)} bytes, shorter than the minimum v5 quote size 1026",
                "quote",
                found=len(data),
            )
        body_type, body_size = struct.unpack_from("<HI", data, HEADER_SIZE)
        want = {BODY_TYPE_TDX10: BODY_V4_SIZE, BODY_TYPE_TDX15: BODY_V15_SIZE}.get(body_type)
        if want is None:
            raise _err(
                f"unsupported TD quote body type {body_type} (2 = TDX 1.0, 3 = TDX 1.5)",
                "body_type",
                HEADER_SIZE,
                body_type,
            )
        if body_size != want:
            raise _err(
                f"body size {body_size} does not match body type {body_type} (expected {want})",
                "body_size",
                HEADER_SIZE + 2,
                body_size,
            )
        return body_type, HEADER_SIZE + 6, body_size
    raise _err(f"quote format not supported: version {header.version} (4 or 5)", "version", 0, header.version)


def _check_key_and_tee(header: QuoteHeader) -> None:
    if header.attestation_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise _err(
            f"attestation key type {header.attestation_key_type} is not supported (2 = ECDSA P-256)",
            "attestation_key_type",
            2,
            header.attestation_key_type,
        )
    if header.tee_type != TEE_TYPE_TDX:
        raise _err(f"TEE type 0x{header.tee_type:x} is not TDX (0x81)", "tee_type", 4, header.tee_type)


def _signature_data(data: bytes, body_end: int) -> tuple[int, int, bytes]:
    """(signed data size, its end offset, the signature data) following the body."""
    pos = body_end
    if pos + 4 > len(data):
        raise _err("quote truncated before signature data size", "signed_data_size", pos)
    (sig_size,) = struct.unpack_from("<I", data, pos)
    pos += 4
    sig_end = pos + sig_size
    if sig_end > len(data):
        raise _err(
            f"signature data size 0x{sig_size:x} runs past the end of the quote ({len(data)} bytes)",
            "signed_data_size",
            body_end,
            sig_size,
        )
    return sig_size, sig_end, data[pos:sig_end]


def _qe_certification_data(sig: bytes, pos: int) -> bytes:
    """The QE report certification data inside the signature data (`pos` = its quote offset)."""
    fixed = SIGNATURE_SIZE + ATTESTATION_KEY_SIZE + 6
    if len(sig) < fixed:
        raise _err("signature data too short", "signature_data", pos, len(sig))
    cert_type, cert_size = struct.unpack_from("<HI", sig, 128)
    if cert_type != CERT_TYPE_QE_REPORT:
        raise _err(
            f"certification data type {cert_type}, expected 6 (QE report)",
            "cert_data_type",
            pos + 128,
            cert_type,
        )
    if cert_size != len(sig) - fixed:
        raise _err(
            f"size of certificate data is 0x{cert_size:x}. Expected size 0x{len(sig) - fixed:x}",
            "cert_data_size",
            pos + 130,
            cert_size,
        )
    return sig[fixed:]


def _qe_parts(qe: bytes, base: int) -> tuple[QeReport, bytes, bytes, bytes]:
    """(QE report, its signature, QE auth data, PCK chain PEM); `base` = quote offset of `qe`."""
    if len(qe) < QE_REPORT_SIZE + SIGNATURE_SIZE + 2:
        raise _err("QE report certification data too short", "qe_report", base, len(qe))
    qe_report = parse_qe_report(qe[:QE_REPORT_SIZE])
    qe_sig = qe[QE_REPORT_SIZE : QE_REPORT_SIZE + 64]
    q = QE_REPORT_SIZE + 64
    (auth_size,) = struct.unpack_from("<H", qe, q)
    q += 2
    if q + auth_size + 6 > len(qe):
        raise _err(
            f"QE auth data size {auth_size} runs past the certification data",
            "qe_auth_data_size",
            base + q - 2,
            auth_size,
        )
    auth = qe[q : q + auth_size]
    q += auth_size
    inner_type, inner_size = struct.unpack_from("<HI", qe, q)
    q += 6
    if inner_type != CERT_TYPE_PCK_CHAIN:
        raise _err(
            f"inner certification data type {inner_type}, expected 5 (PCK chain)",
            "pck_cert_type",
            base + q - 6,
            inner_type,
        )
    if q + inner_size != len(qe):
        raise _err(
            f"PCK chain size {inner_size} does not fill the certification data ({len(qe) - q} left)",
            "pck_chain_size",
            base + q - 4,
            inner_size,
        )
    return qe_report, qe_sig, auth, qe[q : q + inner_size]


def parse_quote(data: bytes) -> TdxQuote:
    """Parse a TDX quote v4 or v5 strictly. Raises `ParseError`.

    Steps: size bounds, header, body layout by version, key and TEE type, body, signature data,
    QE certification data, QE report / auth data / PCK chain.
    """
    data = bytes(data)
    if len(data) > MAX_QUOTE_SIZE:
        raise _err(f"quote is {len(data)} bytes, larger than {MAX_QUOTE_SIZE}", "quote", found=len(data))
    if len(data) < HEADER_SIZE:
        raise _err(f"quote is {len(data)} bytes, shorter than its 48-byte header", "quote", found=len(data))
    header = parse_header(data)
    body_type, body_start, body_size = _body_layout(data, header)
    _check_key_and_tee(header)
    body_end = body_start + body_size
    body = parse_body(data[body_start:body_end])
    sig_size, sig_end, sig = _signature_data(data, body_end)
    sig_pos = body_end + 4
    qe = _qe_certification_data(sig, sig_pos)
    qe_report, qe_sig, auth, chain = _qe_parts(qe, sig_pos + SIGNATURE_SIZE + ATTESTATION_KEY_SIZE + 6)
    return TdxQuote(
        header=header,
        body_type=body_type,
        body=body,
        signature=sig[0:64],
        attestation_key=sig[64:128],
        qe_report=qe_report,
        qe_report_signature=qe_sig,
        qe_auth_data=auth,
        pck_chain_pem=chain,
        signed_data_size=sig_size,
        extra=data[sig_end:],
        raw=data,
        signed_size=body_end,
    )


def header_to_bytes(h: QuoteHeader) -> bytes:
    return struct.pack("<HHIHH", h.version, h.attestation_key_type, h.tee_type, h.qe_svn, h.pce_svn) + (
        h.qe_vendor_id + h.user_data
    )


def body_to_bytes(b: TdQuoteBody) -> bytes:
    out = (
        b.tee_tcb_svn
        + b.mr_seam
        + b.mr_signer_seam
        + b.seam_attributes
        + b.td_attributes
        + b.xfam
        + b.mr_td
        + b.mr_config_id
        + b.mr_owner
        + b.mr_owner_config
        + b"".join(b.rtmrs)
        + b.report_data
    )
    if b.tee_tcb_svn_2 is not None and b.mr_service_td is not None:
        out += b.tee_tcb_svn_2 + b.mr_service_td
    return out


def quote_to_bytes(q: TdxQuote) -> bytes:
    """Serialise the fields of `q` (the inverse of `parse_quote`, including extra bytes)."""
    body = body_to_bytes(q.body)
    head = header_to_bytes(q.header)
    if q.header.version == 5:
        head += struct.pack("<HI", q.body_type, len(body))
    inner = struct.pack("<HI", CERT_TYPE_PCK_CHAIN, len(q.pck_chain_pem)) + q.pck_chain_pem
    qe = (
        q.qe_report.raw
        + q.qe_report_signature
        + struct.pack("<H", len(q.qe_auth_data))
        + q.qe_auth_data
        + inner
    )
    sig = q.signature + q.attestation_key + struct.pack("<HI", CERT_TYPE_QE_REPORT, len(qe)) + qe
    return head + body + struct.pack("<I", len(sig)) + sig + q.extra
