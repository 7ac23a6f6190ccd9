"""Names shared by the CLI and the reference-value builder (no heavy imports)."""

from __future__ import annotations

from typing import Final

__all__ = ["PLATFORM_NAMES", "PRODUCTS"]

# AMD product name -> QEMU CPU model the runtime emulates (Contrast patches Kata to use the host model).
PRODUCTS: Final[dict[str, str]] = {"Milan": "EPYC-Milan", "Genoa": "EPYC-Genoa", "Turin": "EPYC-Turin"}
# Runtime platform (as in the handler name contrast-cc-<platform>-…) -> Platform marker in reference values.
PLATFORM_NAMES: Final[dict[str, str]] = {
    "metal-qemu-snp": "Metal-QEMU-SNP",
    "metal-qemu-tdx": "Metal-QEMU-TDX",
}
