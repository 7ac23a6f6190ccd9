"""Trust anchors: the AMD ARKs (with their ASK/ASVK) and the Intel SGX Root CA shipped as package data.

Every bundled root is pinned by the SHA-256 of its DER; a file
that does not match is refused at load time, so a tampered install cannot widen trust. Extra
roots (the simulated AMD root of tests and dev clusters) are only ever trusted when a caller
builds an `AmdRoots` with them explicitly.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import CertificateError
from .snp.certs import Role, load_certificate, role_of
from .snp.product import Product

PINNED_AMD_ARKS: dict[Product, str] = {
    Product.MILAN: "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    Product.GENOA: "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    Product.TURIN: "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}
PINNED_AMD_INTERMEDIATES: dict[tuple[Product, Role], str] = {
    (Product.MILAN, Role.ASK): "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    (Product.MILAN, Role.ASVK): "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    (Product.GENOA, Role.ASK): "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    (Product.GENOA, Role.ASVK): "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    (Product.TURIN, Role.ASK): "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
    (Product.TURIN, Role.ASVK): "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
}
PINNED_INTEL_ROOT = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class AmdRootSet:
    """One product line's ARK plus, optionally, its known-good ASK and ASVK."""

    product: Product
    ark: x509.Certificate
    ask: x509.Certificate | None = None
    asvk: x509.Certificate | None = None


@dataclass(frozen=True)
class AmdRoots:
    """The AMD roots a verifier trusts, by product line."""

    sets: tuple[AmdRootSet, ...]

    def for_product(self, product: Product) -> list[AmdRootSet]:
        return [s for s in self.sets if s.product is product]

    @classmethod
    def from_certificates(cls, certs: list[x509.Certificate]) -> AmdRoots:
        """Build roots from ARK (+ ASK/ASVK) certificates, e.g. a simulated chain."""
        arks: dict[Product, x509.Certificate] = {}
        inter: dict[tuple[Product, Role], x509.Certificate] = {}
        for cert in certs:
            role, product = role_of(cert)
            if product is None:
                raise CertificateError("a VCEK/VLEK cannot be a trust anchor", step="roots")
            if role is Role.ARK:
                arks[product] = cert
            else:
                inter[(product, role)] = cert
        return cls(
            tuple(
                AmdRootSet(p, ark, inter.get((p, Role.ASK)), inter.get((p, Role.ASVK)))
                for p, ark in arks.items()
            )
        )

    def __add__(self, other: AmdRoots) -> AmdRoots:
        return AmdRoots(self.sets + other.sets)


def _read_root(name: str) -> x509.Certificate:
    data = resources.files("attestation.roots").joinpath(name).read_bytes()
    return load_certificate(data)


@functools.cache
def bundled_amd_roots() -> AmdRoots:
    sets = []
    for product in Product:
        stem = product.value.lower()
        ark = _read_root(f"amd_{stem}_ark.pem")
        if fingerprint(ark) != PINNED_AMD_ARKS[product]:
            raise CertificateError(
                f"bundled {product.value} ARK does not match its pinned fingerprint", step="roots"
            )
        inter = {}
        for role in (Role.ASK, Role.ASVK):
            cert = _read_root(f"amd_{stem}_{role.value.lower()}.pem")
            if fingerprint(cert) != PINNED_AMD_INTERMEDIATES[(product, role)]:
                raise CertificateError(
                    f"bundled {product.value} {role.value} does not match its pin", step="roots"
                )
            inter[role] = cert
        sets.append(AmdRootSet(product, ark, inter[Role.ASK], inter[Role.ASVK]))
    return AmdRoots(tuple(sets))


@functools.cache
def bundled_intel_root() -> x509.Certificate:
    root = _read_root("intel_sgx_root_ca.pem")
    if fingerprint(root) != PINNED_INTEL_ROOT:
        raise CertificateError(
            "bundled Intel SGX Root CA does not match its pinned fingerprint", step="roots"
        )
    return root
