"""Intel PCS collateral for TDX: TCB info, QE identity, CRLs, and TCB-status evaluation.

Formats as Intel's PCS serves them: `{"tcbInfo": {...}, "signature": "<hex r||s>"}` and
`{"enclaveIdentity": {...}, "signature": ...}`. The ECDSA-P256/SHA-256 signature covers the exact
bytes of the inner JSON value as received, so we locate that value's byte span in the document
instead of re-serialising it. Parsing is strict about types and sizes of the fields we use and
ignores informational fields Intel adds (category, type, advisoryIDs).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CollateralError, ParseError

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
MAX_COLLATERAL_SIZE = 1 << 20


def _no_dup(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ParseError(f"duplicate JSON key {k!r}", field=k)
        out[k] = v
    return out


def split_signed_document(data: bytes, body_key: str) -> tuple[bytes, dict[str, Any], bytes]:
    """Return (raw bytes of the `body_key` value, that value parsed, signature bytes)."""
    if len(data) > MAX_COLLATERAL_SIZE:
        raise ParseError("collateral document too large", field=body_key)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("collateral is not UTF-8", field=body_key) from None
    decoder = json.JSONDecoder(object_pairs_hook=_no_dup)
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "{":
        raise ParseError("collateral is not a JSON object", field=body_key)
    pos += 1
    spans: dict[str, tuple[int, int, Any]] = {}
    try:
        while True:
            pos = _skip_ws(text, pos)
            if text[pos] == "}" and not spans:
                pos += 1
                break
            key, pos = decoder.raw_decode(text, pos)
            if not isinstance(key, str):
                raise ParseError("collateral object key is not a string", field=body_key)
            pos = _skip_ws(text, pos)
            if text[pos] != ":":
                raise ParseError("malformed collateral JSON", field=body_key)
            start = _skip_ws(text, pos + 1)
            value, end = decoder.raw_decode(text, start)
            if key in spans:
                raise ParseError(f"duplicate JSON key {key!r}", field=key)
            spans[key] = (start, end, value)
            pos = _skip_ws(text, end)
            if text[pos] == ",":
                pos += 1
                continue
            if text[pos] == "}":
                pos += 1
                break
            raise ParseError("malformed collateral JSON", field=body_key)
    except (ValueError, IndexError, RecursionError) as exc:
        raise ParseError(f"malformed collateral JSON: {exc}", field=body_key) from None
    if text[_skip_ws(text, pos) :].strip():
        raise ParseError("trailing data after collateral JSON", field=body_key)
    if set(spans) != {body_key, "signature"}:
        raise ParseError(
            f"collateral must hold exactly {body_key!r} and 'signature', got {sorted(spans)}", field=body_key
        )
    start, end, body = spans[body_key]
    sig_hex = spans["signature"][2]
    if not isinstance(body, dict):
        raise ParseError(f"{body_key} is not an object", field=body_key)
    sig = _hex(sig_hex, 64, "signature")
    return text[start:end].encode("utf-8"), body, sig


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _hex(value: Any, size: int, name: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size:
        raise ParseError(f"{name} must be {size} bytes of hex", field=name)
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ParseError(f"{name} is not hex", field=name) from None


def _int(obj: dict[str, Any], key: str, name: str) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ParseError(f"{name}.{key} must be a non-negative integer", field=key)
    return v


def _str(obj: dict[str, Any], key: str, name: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise ParseError(f"{name}.{key} must be a string", field=key)
    return v


def _time(obj: dict[str, Any], key: str, name: str) -> _dt.datetime:
    s = _str(obj, key, name)
    try:
        t = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ParseError(f"{name}.{key} is not an RFC 3339 time", field=key) from None
    if t.tzinfo is None:
        raise ParseError(f"{name}.{key} has no time zone", field=key)
    return t


def _list(obj: dict[str, Any], key: str, name: str) -> list[Any]:
    v = obj.get(key)
    if not isinstance(v, list):
        raise ParseError(f"{name}.{key} must be a list", field=key)
    return v


def _dict(v: Any, name: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ParseError(f"{name} must be an object", field=name)
    return v


def _status(obj: dict[str, Any], name: str) -> str:
    s = _str(obj, "tcbStatus", name)
    if s not in TCB_STATUSES:
        raise ParseError(f"{name}.tcbStatus {s!r} is unknown", field="tcbStatus")
    return s


@dataclass(frozen=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...]
    tcb_date: _dt.datetime
    tcb_status: str


@dataclass(frozen=True)
class ModuleTcbLevel:
    isv_svn: int
    tcb_date: _dt.datetime
    tcb_status: str


@dataclass(frozen=True)
class ModuleIdentity:
    id: str
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes
    tcb_levels: tuple[ModuleTcbLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    id: str
    version: int
    issue_date: _dt.datetime
    next_update: _dt.datetime
    fmspc: bytes
    pce_id: bytes
    tcb_evaluation_data_number: int
    module_mr_signer: bytes
    module_attributes: bytes
    module_attributes_mask: bytes
    module_identities: tuple[ModuleIdentity, ...]
    tcb_levels: tuple[TcbLevel, ...]
    signed_body: bytes
    signature: bytes


def _svns(items: list[Any], name: str) -> tuple[int, ...]:
    if len(items) != 16:
        raise ParseError(f"{name} must list 16 components, got {len(items)}", field=name)
    return tuple(_int(_dict(c, name), "svn", name) for c in items)


def _module_levels(items: list[Any], name: str) -> tuple[ModuleTcbLevel, ...]:
    out = []
    for lvl in items:
        lv = _dict(lvl, name)
        out.append(
            ModuleTcbLevel(
                isv_svn=_int(_dict(lv.get("tcb"), name), "isvsvn", name),
                tcb_date=_time(lv, "tcbDate", name),
                tcb_status=_status(lv, name),
            )
        )
    return tuple(out)


def parse_tcb_info(data: bytes) -> TcbInfo:
    """Parse a PCS TCB info response (parsed once per distinct input; results are frozen)."""
    return _parse_tcb_info(bytes(data))


@functools.lru_cache(maxsize=64)
def _parse_tcb_info(data: bytes) -> TcbInfo:
    raw, t, sig = split_signed_document(data, "tcbInfo")
    name = "tcbInfo"
    if _str(t, "id", name) != "TDX":
        raise ParseError(f"tcbInfo.id is {t.get('id')!r}, expected 'TDX'", field="id")
    if _int(t, "version", name) != 3:
        raise ParseError(f"tcbInfo.version is {t.get('version')}, expected 3", field="version")
    module = _dict(t.get("tdxModule"), "tdxModule")
    identities = []
    for m in t.get("tdxModuleIdentities", []) or []:
        mi = _dict(m, "tdxModuleIdentities")
        identities.append(
            ModuleIdentity(
                id=_str(mi, "id", "tdxModuleIdentities"),
                mr_signer=_hex(mi.get("mrsigner"), 48, "mrsigner"),
                attributes=_hex(mi.get("attributes"), 8, "attributes"),
                attributes_mask=_hex(mi.get("attributesMask"), 8, "attributesMask"),
                tcb_levels=_module_levels(
                    _list(mi, "tcbLevels", "tdxModuleIdentities"), "tdxModuleIdentities"
                ),
            )
        )
    levels = []
    for lvl in _list(t, "tcbLevels", name):
        lv = _dict(lvl, "tcbLevels")
        tcb = _dict(lv.get("tcb"), "tcbLevels.tcb")
        levels.append(
            TcbLevel(
                sgx_components=_svns(_list(tcb, "sgxtcbcomponents", "tcb"), "sgxtcbcomponents"),
                pce_svn=_int(tcb, "pcesvn", "tcb"),
                tdx_components=_svns(_list(tcb, "tdxtcbcomponents", "tcb"), "tdxtcbcomponents"),
                tcb_date=_time(lv, "tcbDate", "tcbLevels"),
                tcb_status=_status(lv, "tcbLevels"),
            )
        )
    if not levels:
        raise ParseError("tcbInfo.tcbLevels is empty", field="tcbLevels")
    return TcbInfo(
        id="TDX",
        version=3,
        issue_date=_time(t, "issueDate", name),
        next_update=_time(t, "nextUpdate", name),
        fmspc=_hex(t.get("fmspc"), 6, "fmspc"),
        pce_id=_hex(t.get("pceId"), 2, "pceId"),
        tcb_evaluation_data_number=_int(t, "tcbEvaluationDataNumber", name),
        module_mr_signer=_hex(module.get("mrsigner"), 48, "tdxModule.mrsigner"),
        module_attributes=_hex(module.get("attributes"), 8, "tdxModule.attributes"),
        module_attributes_mask=_hex(module.get("attributesMask"), 8, "tdxModule.attributesMask"),
        module_identities=tuple(identities),
        tcb_levels=tuple(levels),
        signed_body=raw,
        signature=sig,
    )


@dataclass(frozen=True)
class QeIdentity:
    id: str
    version: int
    issue_date: _dt.datetime
    next_update: _dt.datetime
    tcb_evaluation_data_number: int
    misc_select: int
    misc_select_mask: int
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    tcb_levels: tuple[ModuleTcbLevel, ...]
    signed_body: bytes
    signature: bytes


def parse_qe_identity(data: bytes) -> QeIdentity:
    """Parse a PCS QE identity response (parsed once per distinct input)."""
    return _parse_qe_identity(bytes(data))


@functools.lru_cache(maxsize=64)
def _parse_qe_identity(data: bytes) -> QeIdentity:
    raw, e, sig = split_signed_document(data, "enclaveIdentity")
    name = "enclaveIdentity"
    if _str(e, "id", name) != "TD_QE":
        raise ParseError(f"enclaveIdentity.id is {e.get('id')!r}, expected 'TD_QE'", field="id")
    if _int(e, "version", name) != 2:
        raise ParseError(f"enclaveIdentity.version is {e.get('version')}, expected 2", field="version")
    levels = _module_levels(_list(e, "tcbLevels", name), name)
    if not levels:
        raise ParseError("enclaveIdentity.tcbLevels is empty", field="tcbLevels")
    return QeIdentity(
        id="TD_QE",
        version=2,
        issue_date=_time(e, "issueDate", name),
        next_update=_time(e, "nextUpdate", name),
        tcb_evaluation_data_number=_int(e, "tcbEvaluationDataNumber", name),
        misc_select=int.from_bytes(_hex(e.get("miscselect"), 4, "miscselect"), "big"),
        misc_select_mask=int.from_bytes(_hex(e.get("miscselectMask"), 4, "miscselectMask"), "big"),
        attributes=_hex(e.get("attributes"), 16, "attributes"),
        attributes_mask=_hex(e.get("attributesMask"), 16, "attributesMask"),
        mr_signer=_hex(e.get("mrsigner"), 32, "mrsigner"),
        isv_prod_id=_int(e, "isvprodid", name),
        tcb_levels=levels,
        signed_body=raw,
        signature=sig,
    )


@dataclass(frozen=True)
class TdxCollateral:
    """Raw collateral as fetched from Intel PCS (documents plus their issuer chains)."""

    tcb_info: bytes
    tcb_info_issuer_chain: bytes
    qe_identity: bytes
    qe_identity_issuer_chain: bytes
    pck_crl: bytes | None = None
    pck_crl_issuer_chain: bytes | None = None
    root_crl: bytes | None = None

    @classmethod
    def from_directory(
        cls, directory: str | Path, fmspc: bytes | None = None, ca: str | None = None
    ) -> TdxCollateral:
        """Load `tcb_info[_fmspc_<hex>].json`, `qe_identity.json`, `*_issuer_chain.pem`,
        optional `pck_crl*.der` and `root_crl.der` from one directory (files named as PCS documents
        are saved; see docs/attestation.md). With `fmspc`, only the TCB info for that FMSPC (or a plain
        `tcb_info.json`) is taken; with `ca` ("platform"/"processor"), only `pck_crl_<ca>.der`."""
        d = Path(directory)
        tcb_files = sorted(d.glob("tcb_info*.json"))
        if fmspc is not None:
            names = ("tcb_info.json", f"tcb_info_fmspc_{fmspc.hex()}.json")
            tcb_files = [f for f in tcb_files if f.name in names]
            if not tcb_files:
                raise CollateralError(
                    f"no TCB info for FMSPC {fmspc.hex()} in {d} (expected {names[1]})", step="collateral"
                )
        if len(tcb_files) != 1:
            raise CollateralError(
                f"expected one tcb_info*.json in {d}, found {len(tcb_files)}", step="collateral"
            )

        def read(name: str, required: bool = True) -> bytes | None:
            p = d / name
            if not p.exists():
                if required:
                    raise CollateralError(f"collateral file {p} is missing", step="collateral")
                return None
            return p.read_bytes()

        pck_crls = sorted(d.glob("pck_crl*.der" if ca is None else f"pck_crl_{ca}.der"))
        tcb_chain = read("tcb_info_issuer_chain.pem")
        qe = read("qe_identity.json")
        qe_chain = read("qe_identity_issuer_chain.pem")
        assert tcb_chain is not None and qe is not None and qe_chain is not None
        return cls(
            tcb_info=tcb_files[0].read_bytes(),
            tcb_info_issuer_chain=tcb_chain,
            qe_identity=qe,
            qe_identity_issuer_chain=qe_chain,
            pck_crl=pck_crls[0].read_bytes() if pck_crls else None,
            pck_crl_issuer_chain=read("pck_crl_issuer_chain.pem", False),
            root_crl=read("root_crl.der", False),
        )


@dataclass(frozen=True)
class TcbEvaluation:
    status: str
    tcb_date: _dt.datetime
    module_identity: str | None = None
    module_status: str | None = None


def evaluate_tcb(
    tee_tcb_svn: bytes, pck_components: tuple[int, ...], pck_pce_svn: int, tcb_info: TcbInfo
) -> TcbEvaluation:
    """Find the first matching TCB level (levels are in descending order) and, for TDX 1.5
    modules (TEE_TCB_SVN[1] > 0), the module identity's level. Raises if nothing matches."""
    start = 2 if tee_tcb_svn[1] > 0 else 0
    for level in tcb_info.tcb_levels:
        if any(p < want for p, want in zip(pck_components, level.sgx_components, strict=True)):
            continue
        if pck_pce_svn < level.pce_svn:
            continue
        if any(tee_tcb_svn[i] < level.tdx_components[i] for i in range(start, 16)):
            continue
        if tee_tcb_svn[1] == 0:
            return TcbEvaluation(status=level.tcb_status, tcb_date=level.tcb_date)
        mod_id = f"TDX_{tee_tcb_svn[1]:02X}"
        for mi in tcb_info.module_identities:
            if mi.id.upper() != mod_id:
                continue
            for ml in mi.tcb_levels:
                if ml.isv_svn <= tee_tcb_svn[0]:
                    return TcbEvaluation(
                        status=ml.tcb_status,
                        tcb_date=ml.tcb_date,
                        module_identity=mi.id,
                        module_status=ml.tcb_status,
                    )
            raise CollateralError(
                f"no matching TDX module TCB level in {mi.id} for SVN {tee_tcb_svn[0]}", step="tcb_level"
            )
        raise CollateralError(f"TDX module identity {mod_id} not found in TCB info", step="tcb_level")
    raise CollateralError("no matching TCB level found", step="tcb_level")


def evaluate_qe_tcb(isv_svn: int, qe_identity: QeIdentity) -> ModuleTcbLevel:
    for level in qe_identity.tcb_levels:
        if level.isv_svn <= isv_svn:
            return level
    raise CollateralError("no matching QE TCB level found", step="qe_tcb_level")
