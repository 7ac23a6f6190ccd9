"""AMD Key Distribution Service URLs (kdsintf.amd.com). Pure string building, no I/O.

The guest usually gets its chain from the host's cert table; these URLs are for a verifier that
fetches missing pieces itself (with a cache: KDS throttles identical requests to one per 10 s).
"""

from __future__ import annotations

from .abi import SnpReport
from .product import Product, decompose_tcb

KDS_BASE = "https://kdsintf.amd.com"


def cert_chain_url(product: Product, *, vlek: bool = False) -> str:
    """PEM ASK (or ASVK) followed by the ARK."""
    return f"{KDS_BASE}/{'vlek' if vlek else 'vcek'}/v1/{product.value}/cert_chain"


def crl_url(product: Product, *, vlek: bool = False) -> str:
    """DER CRL signed by the ARK."""
    return f"{KDS_BASE}/{'vlek' if vlek else 'vcek'}/v1/{product.value}/crl"


def vcek_url(report: SnpReport, product: Product) -> str:
    """The VCEK for this report's CHIP_ID and REPORTED_TCB (lowercase hex, decimal SPLs, as
    go-sev-guest builds it). Turin uses the first 8 bytes of CHIP_ID and adds fmcSPL."""
    if not any(report.chip_id):
        raise ValueError("CHIP_ID is masked (all zero): the VCEK cannot be fetched, a cert table is needed")
    tcb = decompose_tcb(report.reported_tcb, product)
    if product is Product.TURIN:
        hwid = report.chip_id[:8].hex()
        query = f"fmcSPL={tcb.fmc}&blSPL={tcb.bl}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.ucode}"
    else:
        hwid = report.chip_id.hex()
        query = f"blSPL={tcb.bl}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.ucode}"
    return f"{KDS_BASE}/vcek/v1/{product.value}/{hwid}?{query}"
