"""TDX claims against reference values, as Contrast checks them. No signatures here (see `verify`).

Per entry: Intel QE vendor ID; MRSEAM, MRTD, RTMR0-3, XFAM exact; TDATTRIBUTES exactly
SEPT_VE_DISABLE (or the entry's TdAttributes in the older layout); report data and MRCONFIGID
when the caller gives them; older minimum SVNs; and, when a `TdxVerification` is given, the PCK
options (PIID allow-list, SGX type, SMT, static platform) and the minimum TCB evaluation data
number of the collateral used.
"""

from __future__ import annotations

from ..errors import Mismatch, ValidationError
from ..reference_values import TdxReferenceValues
from .pck import SGX_TYPE_SCALABLE_WITH_INTEGRITY
from .quote import INTEL_QE_VENDOR_ID, TdxQuote
from .verify import TdxVerification

TD_ATTRIBUTES_SEPT_VE_DISABLE = (1 << 28).to_bytes(8, "little")


def tdx_mismatches(
    subject: TdxQuote | TdxVerification,
    rv: TdxReferenceValues,
    *,
    report_data: bytes | None = None,
    mr_config_id: bytes | None = None,
) -> list[Mismatch]:
    ver = subject if isinstance(subject, TdxVerification) else None
    q = subject.quote if isinstance(subject, TdxVerification) else subject
    b = q.body
    out: list[Mismatch] = []

    def exact(name: str, want: bytes, got: bytes) -> None:
        if want != got:
            out.append(Mismatch(name, want.hex(), got.hex()))

    exact("qe_vendor_id", INTEL_QE_VENDOR_ID, q.header.qe_vendor_id)
    exact("mr_seam", rv.mr_seam, b.mr_seam)
    exact("mr_td", rv.mr_td, b.mr_td)
    for i, (want, got) in enumerate(zip(rv.rtmrs, b.rtmrs, strict=True)):
        exact(f"rtmr{i}", want, got)
    exact("xfam", rv.xfam, b.xfam)
    exact(
        "td_attributes",
        rv.td_attributes if rv.td_attributes is not None else TD_ATTRIBUTES_SEPT_VE_DISABLE,
        b.td_attributes,
    )
    if report_data is not None:
        exact("report_data", report_data, b.report_data)
    if mr_config_id is not None:
        exact("mr_config_id", mr_config_id.ljust(48, b"\0"), b.mr_config_id)
    if rv.minimum_qe_svn is not None and q.header.qe_svn < rv.minimum_qe_svn:
        out.append(Mismatch("qe_svn", f">= {rv.minimum_qe_svn}", str(q.header.qe_svn)))
    if rv.minimum_pce_svn is not None and q.header.pce_svn < rv.minimum_pce_svn:
        out.append(Mismatch("pce_svn", f">= {rv.minimum_pce_svn}", str(q.header.pce_svn)))
    if rv.minimum_tee_tcb_svn is not None and any(
        g < w for g, w in zip(b.tee_tcb_svn, rv.minimum_tee_tcb_svn, strict=True)
    ):
        out.append(
            Mismatch("tee_tcb_svn", f">= {rv.minimum_tee_tcb_svn.hex()} (per byte)", b.tee_tcb_svn.hex())
        )
    needs_pck = rv.allowed_piids or rv.memory_integrity or rv.smt_disabled or rv.static_platform
    if needs_pck and ver is None:
        out.append(Mismatch("pck", "a verified quote (PCK extensions)", "quote only"))
    if ver is not None:
        pck = ver.pck
        if rv.allowed_piids and pck.platform_instance_id not in rv.allowed_piids:
            out.append(
                Mismatch(
                    "piid",
                    "one of " + ", ".join(p.hex() for p in rv.allowed_piids),
                    (pck.platform_instance_id or b"").hex() or "absent",
                )
            )
        if rv.memory_integrity and pck.sgx_type != SGX_TYPE_SCALABLE_WITH_INTEGRITY:
            out.append(Mismatch("sgx_type", "2 (scalable with integrity)", str(pck.sgx_type)))
        if rv.smt_disabled and pck.smt_enabled is not False:
            out.append(Mismatch("smt_enabled", "false", str(pck.smt_enabled).lower()))
        if rv.static_platform and pck.dynamic_platform is not False:
            out.append(Mismatch("dynamic_platform", "false", str(pck.dynamic_platform).lower()))
    if rv.min_tcb_evaluation_data_number:
        got_n = (
            ver.tcb_info.tcb_evaluation_data_number if ver is not None and ver.tcb_info is not None else None
        )
        if got_n is None or got_n < rv.min_tcb_evaluation_data_number:
            out.append(
                Mismatch(
                    "tcb_evaluation_data_number",
                    f">= {rv.min_tcb_evaluation_data_number}",
                    "not evaluated (no collateral)" if got_n is None else str(got_n),
                )
            )
    return out


def check_tdx_entries(
    subject: TdxQuote | TdxVerification,
    entries: tuple[TdxReferenceValues, ...] | list[TdxReferenceValues],
    *,
    report_data: bytes | None = None,
    mr_config_id: bytes | None = None,
) -> TdxReferenceValues:
    if not entries:
        raise ValidationError([Mismatch("reference_values.tdx", "at least one entry", "none")])
    per_entry: list[list[Mismatch]] = []
    for rv in entries:
        ms = tdx_mismatches(subject, rv, report_data=report_data, mr_config_id=mr_config_id)
        if not ms:
            return rv
        per_entry.append(ms)
    raise ValidationError(min(per_entry, key=len), per_entry=per_entry)
