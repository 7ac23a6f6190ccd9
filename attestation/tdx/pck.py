"""PCK certificate chain inside a TDX quote, and the PCK's SGX extensions (OID 1.2.840.113741.1.13.1).

The chain must be exactly three PEM CERTIFICATE blocks (PCK leaf, Platform or Processor CA, root);
after the third only nothing or a single NUL byte is allowed (the PEM chain in some real quotes
ends in one NUL byte).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from cryptography import x509

from .. import _der
from ..errors import ParseError
from ..snp.certs import load_certificate

SGX_EXTENSIONS_OID = "1.2.840.113741.1.13.1"
_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?"
)

SGX_TYPE_STANDARD = 0
SGX_TYPE_SCALABLE = 1
SGX_TYPE_SCALABLE_WITH_INTEGRITY = 2


@dataclass(frozen=True)
class PckChain:
    leaf: x509.Certificate
    intermediate: x509.Certificate
    root: x509.Certificate


def parse_pck_chain(pem: bytes) -> PckChain:
    return _parse_pck_chain(bytes(pem))


@functools.lru_cache(maxsize=256)
def _parse_pck_chain(pem: bytes) -> PckChain:
    pos = 0
    blocks: list[bytes] = []
    while len(blocks) < 3:
        m = _PEM_BLOCK.match(pem, pos)
        if m is None:
            raise ParseError(
                f"PCK chain must hold exactly 3 PEM certificates, found {len(blocks)}",
                field="pck_chain",
                offset=pos,
            )
        blocks.append(m.group(0))
        pos = m.end()
    rest = pem[pos:]
    if rest not in (b"", b"\0"):
        raise ParseError(
            f"{len(rest)} unexpected bytes after the PCK chain",
            field="pck_chain",
            offset=pos,
            found=rest[:16],
        )
    leaf, inter, root = (load_certificate(b) for b in blocks)
    return PckChain(leaf=leaf, intermediate=inter, root=root)


@dataclass(frozen=True)
class PckExtensions:
    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 SGX TCB component SVNs
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None
    dynamic_platform: bool | None
    cached_keys: bool | None
    smt_enabled: bool | None


def _octets(value: tuple[int, bytes], size: int, name: str) -> bytes:
    tag, body = value
    if tag != _der.TAG_OCTET_STRING or len(body) != size:
        raise ParseError(f"PCK extension {name} must be an OCTET STRING of {size} bytes", field=name)
    return body


def _pairs(body: bytes, field: str) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for tag, item in _der.iter_sequence(body, field=field):
        if tag != _der.TAG_SEQUENCE:
            raise ParseError(f"{field}: expected SEQUENCE entries", field=field)
        inner = _der.iter_sequence(item, field=field)
        if len(inner) != 2 or inner[0][0] != _der.TAG_OID:
            raise ParseError(f"{field}: entry is not {{OID, value}}", field=field)
        oid = _der.decode_oid(inner[0][1], field=field)
        if oid in out:
            raise ParseError(f"{field}: OID {oid} listed twice", field=field)
        out[oid] = inner[1]
    return out


@functools.lru_cache(maxsize=256)
def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSIONS_OID)).value
    except x509.ExtensionNotFound:
        raise ParseError("PCK certificate has no SGX extensions", field="sgx_extensions") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise ParseError("SGX extensions have an unexpected type", field="sgx_extensions")
    top = _pairs(_der.read_single(ext.value, _der.TAG_SEQUENCE, field="sgx_extensions"), "sgx_extensions")
    base = SGX_EXTENSIONS_OID

    def need(suffix: str, name: str) -> tuple[int, bytes]:
        if base + suffix not in top:
            raise ParseError(f"PCK SGX extension {name} is missing", field=name)
        return top[base + suffix]

    tcb_tag, tcb_body = need(".2", "tcb")
    if tcb_tag != _der.TAG_SEQUENCE:
        raise ParseError("PCK TCB is not a SEQUENCE", field="tcb")
    tcb = _pairs(tcb_body, "tcb")
    comps = []
    for i in range(1, 17):
        tag, val = tcb.get(f"{base}.2.{i}", (0, b""))
        if tag != _der.TAG_INTEGER:
            raise ParseError(f"PCK TCB component {i} missing or not an INTEGER", field="tcb")
        comps.append(_der.decode_integer(val, field=f"sgx_tcb_comp{i:02d}_svn"))
    tag, val = tcb.get(f"{base}.2.17", (0, b""))
    if tag != _der.TAG_INTEGER:
        raise ParseError("PCK PCESVN missing", field="pcesvn")
    pce_svn = _der.decode_integer(val, field="pcesvn")
    cpu_svn = _octets(tcb.get(f"{base}.2.18", (0, b"")), 16, "cpusvn")
    sgx_tag, sgx_val = need(".5", "sgx_type")
    if sgx_tag != _der.TAG_ENUMERATED:
        raise ParseError("SGX type is not ENUMERATED", field="sgx_type")
    piid = _octets(top[base + ".6"], 16, "platform_instance_id") if base + ".6" in top else None
    dyn = cached = smt = None
    if base + ".7" in top:
        ctag, cbody = top[base + ".7"]
        if ctag != _der.TAG_SEQUENCE:
            raise ParseError("PCK configuration is not a SEQUENCE", field="configuration")
        conf = _pairs(cbody, "configuration")

        def flag(suffix: str) -> bool | None:
            item = conf.get(f"{base}.7.{suffix}")
            if item is None:
                return None
            if item[0] != _der.TAG_BOOLEAN or len(item[1]) != 1:
                raise ParseError("PCK configuration flag is not a BOOLEAN", field="configuration")
            return item[1] != b"\0"

        dyn, cached, smt = flag("1"), flag("2"), flag("3")
    return PckExtensions(
        ppid=_octets(need(".1", "ppid"), 16, "ppid"),
        tcb_components=tuple(comps),
        pce_svn=pce_svn,
        cpu_svn=cpu_svn,
        pce_id=_octets(need(".3", "pceid"), 2, "pceid"),
        fmspc=_octets(need(".4", "fmspc"), 6, "fmspc"),
        sgx_type=_der.decode_integer(sgx_val, field="sgx_type"),
        platform_instance_id=piid,
        dynamic_platform=dyn,
        cached_keys=cached,
        smt_enabled=smt,
    )
