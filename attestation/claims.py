"""Parsed claims as JSON-ready dicts: snake_case names of the spec fields, bytes as
lowercase hex, flag words as "0x..." strings, TCBs decomposed per product with their raw bytes.
Used by the CLI and by anything that logs or displays evidence."""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .snp.abi import SnpReport
from .snp.certs import common_name, serial_of
from .snp.product import Product, decompose_tcb
from .tdx.pck import PckChain, PckExtensions
from .tdx.quote import INTEL_QE_VENDOR_ID, TdxQuote


def _tcb(raw: bytes, product: Product) -> dict[str, Any]:
    d: dict[str, Any] = dict(decompose_tcb(raw, product).components())
    d["raw"] = raw.hex()
    return d


def snp_claims(r: SnpReport, product: Product) -> dict[str, Any]:
    signer = r.signer
    out: dict[str, Any] = {
        "version": r.version,
        "guest_svn": r.guest_svn,
        "policy": f"0x{r.policy:016x}",
        "family_id": r.family_id.hex(),
        "image_id": r.image_id.hex(),
        "vmpl": r.vmpl,
        "signature_algo": r.signature_algo,
        "platform_info": f"0x{r.platform_info:x}",
        "signer_info": f"0x{r.signer_info:x}",
        "author_key_en": int(signer.author_key_en),
        "mask_chip_key": int(signer.mask_chip_key),
        "signing_key": signer.signing_key.name,
        "report_data": r.report_data.hex(),
        "measurement": r.measurement.hex(),
        "host_data": r.host_data.hex(),
        "id_key_digest": r.id_key_digest.hex(),
        "author_key_digest": r.author_key_digest.hex(),
        "report_id": r.report_id.hex(),
        "report_id_ma": r.report_id_ma.hex(),
    }
    if r.cpuid_fam_id is not None:
        out["cpuid_fam_id"] = f"0x{r.cpuid_fam_id:02x}"
        out["cpuid_mod_id"] = f"0x{r.cpuid_mod_id or 0:02x}"
        out["cpuid_step"] = f"0x{r.cpuid_step or 0:02x}"
    out.update(
        {
            "chip_id": r.chip_id.hex(),
            "current_tcb": _tcb(r.current_tcb, product),
            "reported_tcb": _tcb(r.reported_tcb, product),
            "committed_tcb": _tcb(r.committed_tcb, product),
            "launch_tcb": _tcb(r.launch_tcb, product),
            "current_build": r.current_build,
            "current_minor": r.current_minor,
            "current_major": r.current_major,
            "committed_build": r.committed_build,
            "committed_minor": r.committed_minor,
            "committed_major": r.committed_major,
        }
    )
    if r.launch_mit_vector is not None:
        out["launch_mit_vector"] = f"0x{r.launch_mit_vector:x}"
        out["current_mit_vector"] = f"0x{r.current_mit_vector or 0:x}"
    out["sig_r"] = f"{r.signature_r:096x}"
    out["sig_s"] = f"{r.signature_s:096x}"
    out["sha384_signed_0_0x2a0"] = hashlib.sha384(r.signed_bytes).hexdigest()
    return out


def _cert(c: x509.Certificate) -> dict[str, Any]:
    return {
        "subject_cn": common_name(c.subject),
        "issuer_cn": common_name(c.issuer),
        "serial": hex(serial_of(c)),
        "not_before": c.not_valid_before_utc.isoformat(),
        "not_after": c.not_valid_after_utc.isoformat(),
        "sha256_der": hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest(),
    }


def tdx_claims(
    q: TdxQuote, pck: PckExtensions | None = None, chain: PckChain | None = None
) -> dict[str, Any]:
    h = q.header
    b = q.body
    # signature (64) + attestation key (64) + certification type/size (6) precede the cert data
    cert_data_size = q.signed_data_size - 134
    out: dict[str, Any] = {
        "version": h.version,
        "att_key_type": h.attestation_key_type,
        "tee_type": f"0x{h.tee_type:x}",
        "hdr_bytes_8_11": q.raw[8:12].hex(),
        "qe_vendor_id": h.qe_vendor_id.hex(),
        "user_data": h.user_data.hex(),
        "signed_len": q.signed_size,
        "signed_data_size": q.signed_data_size,
        "cert_data_type": 6,
        "cert_data_size": cert_data_size,
        "inner_cert_type": 5,
        "pck_chain_len": len(q.pck_chain_pem),
        "pck_chain_trailing_nul": q.pck_chain_pem.endswith(b"\0"),
        "extra_bytes_len": len(q.extra),
        "extra_bytes_all_zero": not any(q.extra),
        "qe_auth_data": q.qe_auth_data.hex(),
    }
    if h.version == 5:
        out["body_type"] = q.body_type
        out["body_size"] = 648 if b.tee_tcb_svn_2 is not None else 584
    body: dict[str, Any] = {
        "tee_tcb_svn": b.tee_tcb_svn.hex(),
        "mrseam": b.mr_seam.hex(),
        "mrsignerseam": b.mr_signer_seam.hex(),
        "seam_attributes": b.seam_attributes.hex(),
        "td_attributes": b.td_attributes.hex(),
        "xfam": b.xfam.hex(),
        "mrtd": b.mr_td.hex(),
        "mrconfigid": b.mr_config_id.hex(),
        "mrowner": b.mr_owner.hex(),
        "mrownerconfig": b.mr_owner_config.hex(),
        **{f"rtmr{i}": v.hex() for i, v in enumerate(b.rtmrs)},
        "report_data": b.report_data.hex(),
    }
    if b.tee_tcb_svn_2 is not None and b.mr_service_td is not None:
        body["tee_tcb_svn2"] = b.tee_tcb_svn_2.hex()
        body["mrservicetd"] = b.mr_service_td.hex()
    out["td_quote_body"] = body
    qr = q.qe_report
    out["qe_report"] = {
        "cpusvn": qr.cpu_svn.hex(),
        "miscselect": qr.misc_select.to_bytes(4, "little").hex(),
        "attributes": qr.attributes.hex(),
        "mrenclave": qr.mr_enclave.hex(),
        "mrsigner": qr.mr_signer.hex(),
        "isvprodid": qr.isv_prod_id,
        "isvsvn": qr.isv_svn,
    }
    if pck is not None:
        out["pck_extensions"] = {
            "ppid": pck.ppid.hex(),
            "pcesvn": pck.pce_svn,
            "cpusvn": pck.cpu_svn.hex(),
            "sgx_tcb_comp_svn": list(pck.tcb_components),
            "pceid": pck.pce_id.hex(),
            "fmspc": pck.fmspc.hex(),
            "sgx_type": pck.sgx_type,
        }
        if pck.platform_instance_id is not None:
            out["pck_extensions"]["piid"] = pck.platform_instance_id.hex()
    if chain is not None:
        out["pck_chain"] = [_cert(c) for c in (chain.leaf, chain.intermediate, chain.root)]
    out["qe_vendor"] = "Intel" if h.qe_vendor_id == INTEL_QE_VENDOR_ID else "unknown"
    return out
