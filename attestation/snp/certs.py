"""AMD certificates: loading, role detection, VCEK/VLEK extensions, the extended-report cert table.

Roles are recognised by subject CN, which AMD's KDS fixes per role:
ARK `ARK-<P>`, ASK `SEV-<P>`, ASVK `SEV-VLEK-<P>`, VCEK `SEV-VCEK`, VLEK `SEV-VLEK`.
All of this is parsing only: whether a certificate is trusted is decided in `verify`.
"""

from __future__ import annotations

import enum
import functools
import struct
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from .. import _der
from ..errors import CertificateError, ParseError
from .product import Product, TcbParts

AMD_OID_ARC = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = AMD_OID_ARC + ".1"
OID_PRODUCT_NAME = AMD_OID_ARC + ".2"
OID_BL_SPL = AMD_OID_ARC + ".3.1"
OID_TEE_SPL = AMD_OID_ARC + ".3.2"
OID_SNP_SPL = AMD_OID_ARC + ".3.3"
OID_SPL4 = AMD_OID_ARC + ".3.4"
OID_SPL5 = AMD_OID_ARC + ".3.5"
OID_SPL6 = AMD_OID_ARC + ".3.6"
OID_SPL7 = AMD_OID_ARC + ".3.7"
OID_UCODE_SPL = AMD_OID_ARC + ".3.8"
OID_FMC_SPL = AMD_OID_ARC + ".3.9"
OID_HWID = AMD_OID_ARC + ".4"
OID_CSP_ID = AMD_OID_ARC + ".5"

GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
GUID_VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")  # also carries the ASVK
GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
GUID_CRL = uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea")

CERT_TABLE_ENTRY_SIZE = 24
MAX_CERT_TABLE_ENTRIES = 64


class Role(enum.Enum):
    ARK = "ARK"
    ASK = "ASK"
    ASVK = "ASVK"
    VCEK = "VCEK"
    VLEK = "VLEK"


# Everything `cryptography` may raise on malformed certificate bytes (found by fuzzing).
_X509_ERRORS = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UnsupportedAlgorithm,
)


def _eager(cert: x509.Certificate) -> x509.Certificate:
    """`cryptography` decodes names, extensions and keys lazily, so a malformed field would
    surface as a ValueError deep inside verification. Touch everything we use once, here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            _ = (
                cert.subject,
                cert.issuer,
                cert.version,
                cert.serial_number,
                cert.not_valid_before_utc,
                cert.not_valid_after_utc,
                cert.signature_algorithm_oid,
                cert.public_key(),
                cert.tbs_certificate_bytes,
            )
            for ext in cert.extensions:
                _ = ext.value
    except _X509_ERRORS as exc:
        raise ParseError(f"malformed certificate: {type(exc).__name__}: {exc}", field="certificate") from None
    return cert


def serial_of(cert: x509.Certificate) -> int:
    """The serial number; AMD's VCEKs use 0, which `cryptography` warns about on every access."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return cert.serial_number


def load_certificate(data: bytes) -> x509.Certificate:
    """Load one DER or PEM certificate (parsed once per distinct input; results are immutable)."""
    return _load_certificate(bytes(data))


@functools.lru_cache(maxsize=512)
def _load_certificate(data: bytes) -> x509.Certificate:
    """Load one DER or PEM certificate, every field we use decoded up front.

    KDS issues VCEKs with serial number 0, which `cryptography` reports with a deprecation
    warning; that is expected for AMD's certificates and silenced here only.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            if data.lstrip().startswith(b"-----BEGIN"):
                cert = x509.load_pem_x509_certificate(data)
            else:
                cert = x509.load_der_x509_certificate(data)
    except _X509_ERRORS as exc:
        raise ParseError(f"malformed certificate: {exc}", field="certificate") from None
    return _eager(cert)


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """A PEM bundle (one or more certificates) or a single DER certificate."""
    return list(_load_certificates(bytes(data)))


@functools.lru_cache(maxsize=256)
def _load_certificates(data: bytes) -> tuple[x509.Certificate, ...]:
    """A PEM bundle (one or more certificates) or a single DER certificate."""
    if b"-----BEGIN" in data:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certs = x509.load_pem_x509_certificates(data)
        except _X509_ERRORS as exc:
            raise ParseError(f"malformed PEM bundle: {exc}", field="certificate") from None
        return tuple(_eager(c) for c in certs)
    return (load_certificate(data),)


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        return ""
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def role_of(cert: x509.Certificate) -> tuple[Role, Product | None]:
    """Role and product line of an AMD certificate, from its subject CN."""
    cn = common_name(cert.subject)
    if cn == "SEV-VCEK":
        return Role.VCEK, None
    if cn == "SEV-VLEK":
        return Role.VLEK, None
    if cn.startswith("ARK-"):
        return Role.ARK, Product.from_name(cn[4:])
    if cn.startswith("SEV-VLEK-"):
        return Role.ASVK, Product.from_name(cn[9:])
    if cn.startswith("SEV-"):
        return Role.ASK, Product.from_name(cn[4:])
    raise CertificateError(f"certificate with CN {cn!r} is not an AMD SEV certificate", step="chain")


@dataclass
class SnpCerts:
    """The certificates presented with a report, sorted by role. Any of them may be missing."""

    vcek: x509.Certificate | None = None
    vlek: x509.Certificate | None = None
    ask: x509.Certificate | None = None
    asvk: x509.Certificate | None = None
    ark: x509.Certificate | None = None
    extra: dict[uuid.UUID, bytes] = field(default_factory=dict)

    @classmethod
    def from_certificates(cls, certs: Iterable[x509.Certificate]) -> SnpCerts:
        out = cls()
        for cert in certs:
            role, _ = role_of(cert)
            attr = role.value.lower()
            existing = getattr(out, attr)
            if existing is not None and existing != cert:
                raise CertificateError(f"two different {role.value} certificates given", step="chain")
            setattr(out, attr, cert)
        return out

    @classmethod
    def from_blobs(cls, blobs: Iterable[bytes]) -> SnpCerts:
        certs: list[x509.Certificate] = []
        for blob in blobs:
            certs.extend(load_certificates(blob))
        return cls.from_certificates(certs)

    @classmethod
    def from_cert_table(cls, table: bytes) -> SnpCerts:
        """Certificates from a GHCB cert table / configfs auxblob (entries by GUID)."""
        certs: list[x509.Certificate] = []
        extra: dict[uuid.UUID, bytes] = {}
        for entry in parse_cert_table(table):
            if entry.guid in (GUID_VCEK, GUID_VLEK, GUID_ASK, GUID_ARK):
                certs.append(load_certificate(entry.data))
            else:
                extra[entry.guid] = entry.data
        out = cls.from_certificates(certs)
        out.extra = extra
        return out

    def merge(self, other: SnpCerts) -> SnpCerts:
        merged = SnpCerts(extra={**self.extra, **other.extra})
        for attr in ("vcek", "vlek", "ask", "asvk", "ark"):
            a, b = getattr(self, attr), getattr(other, attr)
            if a is not None and b is not None and a != b:
                raise CertificateError(f"two different {attr.upper()} certificates given", step="chain")
            setattr(merged, attr, a if a is not None else b)
        return merged


@dataclass(frozen=True)
class VekExtensions:
    """AMD extensions of a VCEK or VLEK (OIDs 1.3.6.1.4.1.3704.1.*)."""

    struct_version: int | None
    product_name: str
    bl_spl: int
    tee_spl: int
    snp_spl: int
    ucode_spl: int
    fmc_spl: int | None
    hwid: bytes | None
    csp_id: str | None
    reserved_spls: tuple[int, ...]

    @property
    def product(self) -> Product:
        return Product.from_name(self.product_name)

    def tcb(self) -> TcbParts:
        return TcbParts(
            bl=self.bl_spl, tee=self.tee_spl, snp=self.snp_spl, ucode=self.ucode_spl, fmc=self.fmc_spl
        )


def _ext_values(cert: x509.Certificate) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for ext in cert.extensions:
        if isinstance(ext.value, x509.UnrecognizedExtension):
            out[ext.oid.dotted_string] = ext.value.value
    return out


@functools.lru_cache(maxsize=512)
def parse_vek_extensions(cert: x509.Certificate) -> VekExtensions:
    """Parse the AMD extensions strictly; tolerate absent reserved SPLs (Turin omits spl4)."""
    try:
        values = _ext_values(cert)
    except ValueError as exc:
        raise ParseError(f"VCEK extensions unreadable: {exc}", field="vcek") from None

    def integer(oid: str, name: str, required: bool = True) -> int | None:
        if oid not in values:
            if required:
                raise ParseError(f"VCEK/VLEK extension {name} ({oid}) is missing", field=name)
            return None
        return _der.parse_integer(values[oid], field=name)

    if OID_PRODUCT_NAME not in values:
        raise ParseError("VCEK/VLEK extension productName is missing", field="productName")
    product_name = _der.read_single(values[OID_PRODUCT_NAME], _der.TAG_IA5STRING, field="productName")
    try:
        product_str = product_name.decode("ascii")
    except UnicodeDecodeError:
        raise ParseError("productName is not ASCII", field="productName") from None
    hwid: bytes | None = None
    if OID_HWID in values:
        raw = values[OID_HWID]
        # KDS stores the raw id with no ASN.1 tag; accept an OCTET STRING wrapper as well.
        if len(raw) in (66, 10) and raw[0] == _der.TAG_OCTET_STRING and raw[1] == len(raw) - 2:
            raw = raw[2:]
        if len(raw) not in (64, 8):
            raise ParseError(f"hwID must be 64 or 8 bytes, got {len(raw)}", field="hwID", found=len(raw))
        hwid = raw
    csp_id: str | None = None
    if OID_CSP_ID in values:
        csp_id = _der.read_single(values[OID_CSP_ID], _der.TAG_IA5STRING, field="cspID").decode(
            "ascii", "replace"
        )
    reserved = tuple(
        v
        for v in (
            integer(o, n, False)
            for o, n in ((OID_SPL4, "spl4"), (OID_SPL5, "spl5"), (OID_SPL6, "spl6"), (OID_SPL7, "spl7"))
        )
        if v is not None
    )
    bl = integer(OID_BL_SPL, "blSPL")
    tee = integer(OID_TEE_SPL, "teeSPL")
    snp = integer(OID_SNP_SPL, "snpSPL")
    ucode = integer(OID_UCODE_SPL, "ucodeSPL")
    assert bl is not None and tee is not None and snp is not None and ucode is not None
    for name, v in (("blSPL", bl), ("teeSPL", tee), ("snpSPL", snp), ("ucodeSPL", ucode)):
        if v > 255:
            raise ParseError(f"{name} {v} does not fit in a byte", field=name, found=v)
    return VekExtensions(
        struct_version=integer(OID_STRUCT_VERSION, "structVersion", False),
        product_name=product_str,
        bl_spl=bl,
        tee_spl=tee,
        snp_spl=snp,
        ucode_spl=ucode,
        fmc_spl=integer(OID_FMC_SPL, "fmcSPL", False),
        hwid=hwid,
        csp_id=csp_id,
        reserved_spls=reserved,
    )


# --- extended-report certificate table -------------------------------------------------------


@dataclass(frozen=True)
class CertTableEntry:
    guid: uuid.UUID
    data: bytes


def parse_cert_table(blob: bytes) -> list[CertTableEntry]:
    """Parse a GHCB cert table: 24-byte entries {GUID (RFC 4122 bytes), u32 offset, u32 length}
    ending with an all-zero entry; offsets count from the table start and must point past the
    header. An empty blob means "no certificates"."""
    blob = bytes(blob)
    if not blob:
        return []
    entries: list[tuple[uuid.UUID, int, int]] = []
    pos = 0
    while True:
        if pos + CERT_TABLE_ENTRY_SIZE > len(blob):
            raise ParseError("cert table has no terminating all-zero entry", field="cert_table", offset=pos)
        raw = blob[pos : pos + CERT_TABLE_ENTRY_SIZE]
        if not any(raw):
            break
        guid = uuid.UUID(bytes=raw[:16])
        offset, length = struct.unpack_from("<II", raw, 16)
        entries.append((guid, offset, length))
        pos += CERT_TABLE_ENTRY_SIZE
        if len(entries) > MAX_CERT_TABLE_ENTRIES:
            raise ParseError("cert table has too many entries", field="cert_table", offset=pos)
    header_end = pos + CERT_TABLE_ENTRY_SIZE
    seen: set[uuid.UUID] = set()
    out: list[CertTableEntry] = []
    for guid, offset, length in entries:
        if guid in seen:
            raise ParseError(f"cert table lists GUID {guid} twice", field="cert_table")
        seen.add(guid)
        if offset < header_end:
            raise ParseError(
                f"cert table entry {guid} offset 0x{offset:x} points into the header "
                f"(ends at 0x{header_end:x})",
                field="cert_table",
                offset=offset,
            )
        if offset + length > len(blob):
            raise ParseError(
                f"cert table entry {guid} [0x{offset:x}+0x{length:x}] runs past the end (0x{len(blob):x})",
                field="cert_table",
                offset=offset,
            )
        out.append(CertTableEntry(guid=guid, data=blob[offset : offset + length]))
    return out


def serialize_cert_table(entries: Iterable[CertTableEntry]) -> bytes:
    items = list(entries)
    header_size = (len(items) + 1) * CERT_TABLE_ENTRY_SIZE
    header = bytearray()
    body = bytearray()
    for e in items:
        header += e.guid.bytes + struct.pack("<II", header_size + len(body), len(e.data))
        body += e.data
    header += bytes(CERT_TABLE_ENTRY_SIZE)
    return bytes(header + body)
