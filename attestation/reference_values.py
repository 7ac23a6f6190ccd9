"""The manifest's `ReferenceValues` (Contrast's JSON), parsed strictly.

`{"snp": [SNPReferenceValues...], "tdx": [TDXReferenceValues...]}`; keys are Go's default
PascalCase field names. Unknown keys, wrong hex sizes, out-of-range numbers and guest policies
Contrast forbids are rejected with the JSON path of the offending value. Missing `MinimumTCB`
components are "expected missing" values Contrast refuses, and so do we.

TDX entries accept the newest layout (MrTd, MrSeam, Rtmrs, Xfam, AllowedPIIDs, ...) and the
older v1.x fields (`Rtrms` spelling, MinimumQeSvn, MinimumPceSvn, MinimumTeeTcbSvn, TdAttributes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ReferenceValuesError
from .snp.abi import GuestPolicy
from .snp.product import Product, TcbParts

_T = TypeVar("_T")
_MISSING = "expected missing: must be filled in"
SNP_PRODUCTS = tuple(p.value for p in Product)


def _hex(value: Any, size: int, path: str, *, allow_empty: bool = False, to_fill: bool = False) -> bytes:
    if not isinstance(value, str):
        raise ReferenceValuesError(
            f"expected a hex string of {size} bytes, got {type(value).__name__}", path=path
        )
    if value == "" and allow_empty:
        return b""
    if value == "":
        raise ReferenceValuesError(_MISSING, path=path, expected_missing=to_fill)
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ReferenceValuesError(f"invalid hex string {value[:20]!r}", path=path) from None
    if len(raw) != size or len(value) != 2 * size:
        raise ReferenceValuesError(
            f"must be {size} bytes ({2 * size} hex chars), got {len(value)} chars", path=path
        )
    return raw


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReferenceValuesError(f"expected an integer, got {type(value).__name__}", path=path)
    if not lo <= value <= hi:
        raise ReferenceValuesError(f"{value} is out of range {lo}..{hi}", path=path)
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ReferenceValuesError(f"expected true or false, got {type(value).__name__}", path=path)
    return value


def _obj(
    value: Any,
    path: str,
    allowed: set[str],
    required: set[str] | frozenset[str] = frozenset(),
    to_fill: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReferenceValuesError(f"expected an object, got {type(value).__name__}", path=path)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ReferenceValuesError(f"unknown field(s) {', '.join(unknown)}", path=path)
    missing = sorted(required - set(value))
    if missing:
        raise ReferenceValuesError(
            f"missing required field(s) {', '.join(missing)}: {_MISSING}",
            path=path,
            expected_missing=set(missing) <= to_fill,
        )
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ReferenceValuesError(f"expected a list, got {type(value).__name__}", path=path)
    return value


_POLICY_FIELDS = {
    "ABIMinor": "abi_minor",
    "ABIMajor": "abi_major",
    "SMT": "smt",
    "MigrateMA": "migrate_ma",
    "Debug": "debug",
    "SingleSocket": "single_socket",
    "CXLAllowed": "cxl_allow",
    "MemAES256XTS": "mem_aes_256_xts",
    "RAPLDis": "rapl_dis",
    "CipherTextHidingDRAM": "ciphertext_hiding_dram",
    "PageSwapDisable": "page_swap_disable",
}
_PLATFORM_FIELDS = {
    "SMTEnabled": "smt_enabled",
    "TSMEEnabled": "tsme_enabled",
    "ECCEnabled": "ecc_enabled",
    "RAPLDisabled": "rapl_disabled",
    "CiphertextHidingDRAMEnabled": "ciphertext_hiding_dram_enabled",
    "AliasCheckComplete": "alias_check_complete",
    "TIOEnabled": "tio_enabled",
}
_TCB_FIELDS = {
    "BootloaderVersion": "bl",
    "TEEVersion": "tee",
    "SNPVersion": "snp",
    "MicrocodeVersion": "ucode",
}
# Allowed ABI minor values, as in Contrast: 0 on bare metal, 31 on AKS.
_ALLOWED_ABI_MINOR = (0, 31)


@dataclass(frozen=True)
class PlatformInfoRequirement:
    """go-sev-guest semantics: SMT/TSME/TIO in the report are rejected unless allowed here; the
    others are required when set here."""

    smt_enabled: bool = False
    tsme_enabled: bool = False
    ecc_enabled: bool = False
    rapl_disabled: bool = False
    ciphertext_hiding_dram_enabled: bool = False
    alias_check_complete: bool = False
    tio_enabled: bool = False


@dataclass(frozen=True)
class SnpReferenceValues:
    product: Product
    trusted_measurement: bytes
    minimum_tcb: TcbParts
    guest_policy: GuestPolicy
    platform_info: PlatformInfoRequirement | None
    minimum_mitigation_vector: int
    allowed_chip_ids: tuple[bytes, ...]
    platform: str = ""

    @classmethod
    def from_obj(cls, obj: Any, path: str = "snp") -> SnpReferenceValues:
        """Parse one entry; every problem of the entry is reported (grouped), not only the first."""
        allowed = {
            "Platform",
            "ProductName",
            "TrustedMeasurement",
            "MinimumTCB",
            "GuestPolicy",
            "PlatformInfo",
            "MinimumMitigationVector",
            "AllowedChipIDs",
            "APEIP",
        }
        o = _obj(obj, path, allowed)
        problems = _Problems()
        for key in ("ProductName", "TrustedMeasurement", "MinimumTCB", "GuestPolicy"):
            if key not in o:
                problems.add(
                    ReferenceValuesError(_MISSING, path=f"{path}.{key}", expected_missing=key == "MinimumTCB")
                )
        if "APEIP" in o and o["APEIP"] not in (None, ""):
            problems.add(
                ReferenceValuesError(
                    "vCPU-independent measurements (APEIP) are not supported", path=f"{path}.APEIP"
                )
            )
        product = problems.check(
            lambda: _product(o["ProductName"], f"{path}.ProductName"), "ProductName" in o
        )
        measurement = problems.check(
            lambda: _hex(o["TrustedMeasurement"], 48, f"{path}.TrustedMeasurement"), "TrustedMeasurement" in o
        )
        minimum_tcb = problems.check(
            lambda: _minimum_tcb(o["MinimumTCB"], f"{path}.MinimumTCB"), "MinimumTCB" in o
        )
        policy = problems.check(
            lambda: _guest_policy(o["GuestPolicy"], f"{path}.GuestPolicy"), "GuestPolicy" in o
        )
        platform_info = problems.check(lambda: _platform_info(o.get("PlatformInfo"), f"{path}.PlatformInfo"))
        mit = problems.check(
            lambda: _int(o.get("MinimumMitigationVector", 0), f"{path}.MinimumMitigationVector", 0, 2**64 - 1)
        )
        chips = problems.check(
            lambda: tuple(
                _hex(c, 64, f"{path}.AllowedChipIDs[{i}]")
                for i, c in enumerate(_list(o.get("AllowedChipIDs"), f"{path}.AllowedChipIDs"))
            )
        )
        platform = o.get("Platform", "")
        if not isinstance(platform, str):
            problems.add(ReferenceValuesError("expected a string", path=f"{path}.Platform"))
        problems.raise_any()
        assert product is not None and measurement is not None and minimum_tcb is not None
        assert policy is not None and mit is not None and chips is not None
        return cls(
            product=product,
            trusted_measurement=measurement,
            minimum_tcb=minimum_tcb,
            guest_policy=policy,
            platform_info=platform_info,
            minimum_mitigation_vector=mit,
            allowed_chip_ids=chips,
            platform=platform,
        )


class _Problems:
    """Collects the errors of independent fields so one entry reports all of them."""

    def __init__(self) -> None:
        self.errors: list[ReferenceValuesError] = []

    def add(self, error: ReferenceValuesError) -> None:
        self.errors.append(error)

    def check(self, parse: Callable[[], _T], present: bool = True) -> _T | None:
        if not present:
            return None
        try:
            return parse()
        except ReferenceValuesError as exc:
            self.errors.append(exc)
            return None

    def raise_any(self) -> None:
        if self.errors:
            raise ReferenceValuesError.grouped(self.errors)


def _product(name: Any, path: str) -> Product:
    if name not in SNP_PRODUCTS:
        raise ReferenceValuesError(f"unknown product {name!r}, expected {'|'.join(SNP_PRODUCTS)}", path=path)
    return Product(name)


def _minimum_tcb(value: Any, path: str) -> TcbParts:
    """All four components are required; absent ones are "expected missing" (to be filled in)."""
    tcb_obj = _obj(value, path, set(_TCB_FIELDS))
    problems = _Problems()
    tcb: dict[str, int | None] = {}
    for key, attr in _TCB_FIELDS.items():
        tcb[attr] = None
        if key not in tcb_obj:
            problems.add(ReferenceValuesError(_MISSING, path=f"{path}.{key}", expected_missing=True))
            continue
        try:
            tcb[attr] = _int(tcb_obj[key], f"{path}.{key}", 0, 255)
        except ReferenceValuesError as exc:
            problems.add(exc)
    problems.raise_any()
    bl, tee, snp, ucode = tcb["bl"], tcb["tee"], tcb["snp"], tcb["ucode"]
    assert bl is not None and tee is not None and snp is not None and ucode is not None
    return TcbParts(bl=bl, tee=tee, snp=snp, ucode=ucode)


def _guest_policy(value: Any, path: str) -> GuestPolicy:
    gp = _obj(value, path, set(_POLICY_FIELDS))
    policy_kwargs: dict[str, Any] = {}
    for key, attr in _POLICY_FIELDS.items():
        p = f"{path}.{key}"
        if key in ("ABIMinor", "ABIMajor"):
            policy_kwargs[attr] = _int(gp.get(key, 0), p, 0, 255)
        else:
            policy_kwargs[attr] = _bool(gp.get(key, False), p)
    policy = GuestPolicy(**policy_kwargs)
    _check_policy_allowed(policy, path)
    return policy


def _platform_info(value: Any, path: str) -> PlatformInfoRequirement | None:
    if value is None:
        return None
    pi = _obj(value, path, set(_PLATFORM_FIELDS))
    return PlatformInfoRequirement(
        **{attr: _bool(pi.get(k, False), f"{path}.{k}") for k, attr in _PLATFORM_FIELDS.items()}
    )


def _check_policy_allowed(policy: GuestPolicy, path: str) -> None:
    if policy.abi_major != 0:
        raise ReferenceValuesError(f"ABIMajor must be 0, got {policy.abi_major}", path=f"{path}.ABIMajor")
    if policy.abi_minor not in _ALLOWED_ABI_MINOR:
        raise ReferenceValuesError(
            f"ABIMinor must be 0 or 31, got {policy.abi_minor}", path=f"{path}.ABIMinor"
        )
    if not policy.smt:
        raise ReferenceValuesError("SMT must be true", path=f"{path}.SMT")
    for key, attr in _POLICY_FIELDS.items():
        if key in ("ABIMinor", "ABIMajor", "SMT"):
            continue
        if getattr(policy, attr):
            raise ReferenceValuesError(f"{key} must be false", path=f"{path}.{key}")


@dataclass(frozen=True)
class TdxReferenceValues:
    mr_td: bytes
    mr_seam: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    xfam: bytes
    td_attributes: bytes | None = None
    min_tcb_evaluation_data_number: int = 0
    allowed_piids: tuple[bytes, ...] = ()
    memory_integrity: bool = False
    smt_disabled: bool = False
    static_platform: bool = False
    minimum_qe_svn: int | None = None
    minimum_pce_svn: int | None = None
    minimum_tee_tcb_svn: bytes | None = None
    platform: str = ""

    @classmethod
    def from_obj(cls, obj: Any, path: str = "tdx") -> TdxReferenceValues:
        allowed = {
            "Platform",
            "MinTCBEvaluationDataNumber",
            "MrTd",
            "MrSeam",
            "Rtmrs",
            "Rtrms",
            "Xfam",
            "AllowedPIIDs",
            "MemoryIntegrity",
            "SMTDisabled",
            "StaticPlatform",
            "MinimumQeSvn",
            "MinimumPceSvn",
            "MinimumTeeTcbSvn",
            "TdAttributes",
        }
        o = _obj(obj, path, allowed, {"MrTd", "MrSeam", "Xfam"})
        legacy = ("MinimumQeSvn", "MinimumPceSvn", "MinimumTeeTcbSvn", "TdAttributes")
        if "Rtrms" in o or any(k in o for k in legacy):
            # The v1.x layout: every one of its fields is required ("expected missing" otherwise).
            missing = [k for k in legacy if k not in o]
            if missing:
                raise ReferenceValuesError(f"missing required field(s) {', '.join(missing)}", path=path)
        if ("Rtmrs" in o) == ("Rtrms" in o):
            raise ReferenceValuesError("exactly one of Rtmrs (or the older Rtrms) is required", path=path)
        rkey = "Rtmrs" if "Rtmrs" in o else "Rtrms"
        rtmr_list = _list(o[rkey], f"{path}.{rkey}")
        if len(rtmr_list) != 4:
            raise ReferenceValuesError(f"must list 4 RTMRs, got {len(rtmr_list)}", path=f"{path}.{rkey}")
        rtmrs = tuple(_hex(v, 48, f"{path}.{rkey}[{i}]") for i, v in enumerate(rtmr_list))
        platform = o.get("Platform", "")
        if not isinstance(platform, str):
            raise ReferenceValuesError("expected a string", path=f"{path}.Platform")
        return cls(
            mr_td=_hex(o["MrTd"], 48, f"{path}.MrTd"),
            mr_seam=_hex(o["MrSeam"], 48, f"{path}.MrSeam", to_fill=True),
            rtmrs=(rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]),
            xfam=_hex(o["Xfam"], 8, f"{path}.Xfam"),
            td_attributes=_hex(o["TdAttributes"], 8, f"{path}.TdAttributes") if "TdAttributes" in o else None,
            min_tcb_evaluation_data_number=_int(
                o.get("MinTCBEvaluationDataNumber", 0), f"{path}.MinTCBEvaluationDataNumber", 0, 2**32 - 1
            ),
            allowed_piids=tuple(
                _hex(v, 16, f"{path}.AllowedPIIDs[{i}]")
                for i, v in enumerate(_list(o.get("AllowedPIIDs"), f"{path}.AllowedPIIDs"))
            ),
            memory_integrity=_bool(o.get("MemoryIntegrity", False), f"{path}.MemoryIntegrity"),
            smt_disabled=_bool(o.get("SMTDisabled", False), f"{path}.SMTDisabled"),
            static_platform=_bool(o.get("StaticPlatform", False), f"{path}.StaticPlatform"),
            minimum_qe_svn=_int(o["MinimumQeSvn"], f"{path}.MinimumQeSvn", 0, 0xFFFF)
            if "MinimumQeSvn" in o
            else None,
            minimum_pce_svn=(
                _int(o["MinimumPceSvn"], f"{path}.MinimumPceSvn", 0, 0xFFFF) if "MinimumPceSvn" in o else None
            ),
            minimum_tee_tcb_svn=(
                _hex(o["MinimumTeeTcbSvn"], 16, f"{path}.MinimumTeeTcbSvn")
                if "MinimumTeeTcbSvn" in o
                else None
            ),
            platform=platform,
        )


@dataclass(frozen=True)
class ReferenceValues:
    snp: tuple[SnpReferenceValues, ...] = ()
    tdx: tuple[TdxReferenceValues, ...] = ()

    @classmethod
    def from_obj(cls, obj: Any, *, require_entries: bool = True) -> ReferenceValues:
        o = _obj(obj, "ReferenceValues", {"snp", "tdx"})
        snp = tuple(
            SnpReferenceValues.from_obj(e, f"snp[{i}]") for i, e in enumerate(_list(o.get("snp"), "snp"))
        )
        tdx = tuple(
            TdxReferenceValues.from_obj(e, f"tdx[{i}]") for i, e in enumerate(_list(o.get("tdx"), "tdx"))
        )
        if require_entries and not snp and not tdx:
            raise ReferenceValuesError(
                "at least one snp or tdx reference value is required", path="ReferenceValues"
            )
        return cls(snp=snp, tdx=tdx)

    @classmethod
    def from_json(cls, data: str | bytes, *, require_entries: bool = True) -> ReferenceValues:
        """Parse the ReferenceValues JSON object (or a whole manifest with a ReferenceValues key)."""
        try:
            obj = json.loads(data, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as exc:
            raise ReferenceValuesError(f"invalid JSON: {exc}") from None
        if isinstance(obj, dict) and "ReferenceValues" in obj:
            obj = obj["ReferenceValues"]
        return cls.from_obj(obj, require_entries=require_entries)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ReferenceValuesError(f"duplicate key {k!r}")
        out[k] = v
    return out
