"""SEV-SNP claims against reference values. No signatures or certificates here (see `verify`).

Semantics follow go-sev-guest's `validate` as Contrast configures it: exact
measurement, VMPL 0, guest policy and platform info within what the entry allows, minimum TCB
for current/committed/reported/launch TCB (per component, in the product's layout), provisional
firmware permitted, Contrast's derived ID-block digest, mitigation-vector minimums and the
chip-ID allow-list. Every mismatch is collected, named by field, with expected and found values.
"""

from __future__ import annotations

from ..errors import Mismatch, ValidationError
from ..reference_values import SnpReferenceValues
from . import idblock
from .abi import GuestPolicy, SnpReport, parse_platform_info, parse_policy
from .product import Product, decompose_tcb, product_from_cpuid


def _flag(b: bool) -> str:
    return "true" if b else "false"


def _policy_mismatches(got: GuestPolicy, want: GuestPolicy) -> list[Mismatch]:
    out: list[Mismatch] = []
    if (got.abi_major, got.abi_minor) < (want.abi_major, want.abi_minor):
        out.append(
            Mismatch(
                "policy.abi", f">= {want.abi_major}.{want.abi_minor}", f"{got.abi_major}.{got.abi_minor}"
            )
        )
    # Permissions the report may only have if the reference allows them.
    for name in ("migrate_ma", "debug", "smt", "cxl_allow"):
        if getattr(got, name) and not getattr(want, name):
            out.append(Mismatch(f"policy.{name}", "false", "true"))
    # Restrictions the report must have if the reference requires them.
    for name in (
        "single_socket",
        "mem_aes_256_xts",
        "rapl_dis",
        "ciphertext_hiding_dram",
        "page_swap_disable",
    ):
        if getattr(want, name) and not getattr(got, name):
            out.append(Mismatch(f"policy.{name}", "true", "false"))
    return out


def snp_mismatches(
    report: SnpReport,
    rv: SnpReferenceValues,
    *,
    product: Product | None = None,
    report_data: bytes | None = None,
    host_data: bytes | None = None,
) -> list[Mismatch]:
    """Every way `report` differs from one reference-value entry (empty list = it matches)."""
    out: list[Mismatch] = []
    if product is None and report.cpuid_fam_id is not None and report.cpuid_mod_id is not None:
        product = product_from_cpuid(report.cpuid_fam_id, report.cpuid_mod_id)
    if product is not None and product is not rv.product:
        out.append(Mismatch("product", rv.product.value, product.value))
    layout = product or rv.product
    if report.measurement != rv.trusted_measurement:
        out.append(Mismatch("measurement", rv.trusted_measurement.hex(), report.measurement.hex()))
    if report_data is not None and report.report_data != report_data:
        out.append(Mismatch("report_data", report_data.hex(), report.report_data.hex()))
    if host_data is not None and report.host_data != host_data:
        out.append(Mismatch("host_data", host_data.hex(), report.host_data.hex()))
    if report.vmpl != 0:
        out.append(Mismatch("vmpl", "0", str(report.vmpl)))
    out += _policy_mismatches(parse_policy(report.policy), rv.guest_policy)
    if rv.platform_info is not None:
        pi = parse_platform_info(report.platform_info)
        want = rv.platform_info
        for name in ("smt_enabled", "tsme_enabled", "tio_enabled"):
            if getattr(pi, name) and not getattr(want, name):
                out.append(Mismatch(f"platform_info.{name}", "false", "true"))
        for name in (
            "ecc_enabled",
            "rapl_disabled",
            "ciphertext_hiding_dram_enabled",
            "alias_check_complete",
        ):
            if getattr(want, name) and not getattr(pi, name):
                out.append(Mismatch(f"platform_info.{name}", "true", "false"))
    for name in ("current_tcb", "committed_tcb", "reported_tcb", "launch_tcb"):
        parts = decompose_tcb(getattr(report, name), layout)
        low = parts.at_least(rv.minimum_tcb)
        if low:
            out.append(Mismatch(name, f">= {rv.minimum_tcb}", f"{parts} (low: {', '.join(low)})"))
    current = decompose_tcb(report.current_tcb, layout)
    committed = decompose_tcb(report.committed_tcb, layout)
    if current.at_least(committed):
        out.append(Mismatch("committed_tcb", f"<= current {current}", str(committed)))
    # Contrast's ID block binds measurement and policy into ID_KEY_DIGEST.
    want_digest = idblock.id_key_digest(rv.trusted_measurement, rv.guest_policy.to_int())
    if report.id_key_digest != want_digest:
        out.append(Mismatch("id_key_digest", want_digest.hex(), report.id_key_digest.hex()))
    if rv.minimum_mitigation_vector:
        want_mit = rv.minimum_mitigation_vector
        for name in ("launch_mit_vector", "current_mit_vector"):
            got = getattr(report, name)
            if got is None or got & want_mit != want_mit:
                out.append(
                    Mismatch(
                        name,
                        f"all bits of 0x{want_mit:x}",
                        "absent (report version < 5)" if got is None else f"0x{got:x}",
                    )
                )
    if rv.allowed_chip_ids and report.chip_id not in rv.allowed_chip_ids:
        out.append(
            Mismatch(
                "chip_id", "one of " + ", ".join(c.hex() for c in rv.allowed_chip_ids), report.chip_id.hex()
            )
        )
    return out


def check_snp_entries(
    report: SnpReport,
    entries: tuple[SnpReferenceValues, ...] | list[SnpReferenceValues],
    *,
    product: Product | None = None,
    report_data: bytes | None = None,
    host_data: bytes | None = None,
) -> SnpReferenceValues:
    """Return the first entry the report matches; raise `ValidationError` explaining every entry."""
    if not entries:
        raise ValidationError([Mismatch("reference_values.snp", "at least one entry", "none")])
    per_entry: list[list[Mismatch]] = []
    for rv in entries:
        ms = snp_mismatches(report, rv, product=product, report_data=report_data, host_data=host_data)
        if not ms:
            return rv
        per_entry.append(ms)
    best = min(per_entry, key=len)
    raise ValidationError(best, per_entry=per_entry)
