"""AMD product lines and the TCB_VERSION layout that depends on them.

TCB_VERSION is 8 bytes whose meaning depends on the CPU generation (SEV-SNP ABI):

    byte   Milan/Genoa   Turin
    0      BOOT_LOADER   FMC
    1      TEE           BOOT_LOADER
    2      reserved      TEE
    3      reserved      SNP
    4..5   reserved      reserved
    6      SNP           reserved
    7      MICROCODE     MICROCODE

so TCBs are compared component by component, never as integers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import ParseError


class Product(enum.Enum):
    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"

    @classmethod
    def from_name(cls, name: str) -> Product:
        """'Milan', 'Milan-B0', 'Genoa-B1', 'Turin' ... -> product line."""
        line = name.split("-", 1)[0]
        for p in cls:
            if p.value == line:
                return p
        raise ParseError(f"unknown product {name!r}", field="product", found=name.encode())


def product_from_cpuid(family: int, model: int) -> Product | None:
    """Product line from the report's CPUID bytes (v3+); None if not a known SNP part.

    Ranges as virtee/sev uses them: Genoa covers Bergamo/Siena models too.
    """
    if family == 0x19:
        if model <= 0x0F:
            return Product.MILAN
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return Product.GENOA
    if family == 0x1A and model <= 0x11:
        return Product.TURIN
    return None


@dataclass(frozen=True, order=False)
class TcbParts:
    """Named SPL components of one TCB_VERSION. `fmc` exists on Turin only."""

    bl: int
    tee: int
    snp: int
    ucode: int
    fmc: int | None = None

    def components(self) -> dict[str, int]:
        d = {"bl": self.bl, "tee": self.tee, "snp": self.snp, "ucode": self.ucode}
        if self.fmc is not None:
            d["fmc"] = self.fmc
        return d

    def at_least(self, minimum: TcbParts) -> list[str]:
        """Names of components below `minimum` (empty list = every component is >=)."""
        low = [name for name, v in self.components().items() if v < minimum.components().get(name, 0)]
        return low

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.components().items())


def decompose_tcb(raw: bytes, product: Product) -> TcbParts:
    if len(raw) != 8:
        raise ParseError(f"TCB_VERSION must be 8 bytes, got {len(raw)}", field="tcb", found=len(raw))
    if product is Product.TURIN:
        return TcbParts(fmc=raw[0], bl=raw[1], tee=raw[2], snp=raw[3], ucode=raw[7])
    return TcbParts(bl=raw[0], tee=raw[1], snp=raw[6], ucode=raw[7])


def compose_tcb(parts: TcbParts, product: Product) -> bytes:
    out = bytearray(8)
    if product is Product.TURIN:
        out[0], out[1], out[2], out[3] = parts.fmc or 0, parts.bl, parts.tee, parts.snp
    else:
        out[0], out[1], out[6] = parts.bl, parts.tee, parts.snp
    out[7] = parts.ucode
    return bytes(out)
