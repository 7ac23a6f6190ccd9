"""Where a verifier gets revocation data: AMD CRLs for SNP, Intel PCS collateral for TDX.

The attester (the host, its cert table, the evidence) never supplies them: a CRL or a TCB info that
travels with the evidence can be left out or replaced by an older, still-signed one. A verifier
asks a `RevocationSource` it was configured with and refuses when the source has nothing fresh
enough (`RevocationUnavailableError`, naming what was missing and why).

Sources: `CollateralDirectory` (files an operator put there, for offline clusters), the caching
fetcher in `attestation.fetch` (AMD KDS / Intel PCS), `NoRevocationSource` (refuses everything,
the default) and, for the simulator, `attestation.testing.SimulatedCrlSource`.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Protocol

from cryptography import x509

from .errors import CollateralError, VerificationError
from .snp.product import Product
from .tdx.collateral import TdxCollateral

PCK_CA_TYPES = ("platform", "processor")
_FMSPC = re.compile(r"\A[0-9a-f]{12}\Z")


class RevocationUnavailableError(VerificationError):
    """The verifier has no revocation data fresh enough for this evidence; `reason` says what."""

    def __init__(self, message: str) -> None:
        super().__init__(message, step="revocation")


class RevocationSource(Protocol):
    """What a verifier asks for. Implementations return raw signed documents; every signature, date
    and serial is checked by the verifier on each use, so a source only decides availability."""

    def snp_crl(self, product: Product, *, vlek: bool, ark: x509.Certificate, now: _dt.datetime) -> bytes:
        """The ARK-signed CRL (DER or PEM) for the VCEK (or VLEK) chain of `product`."""
        ...

    def tdx_collateral(self, fmspc: bytes, ca: str, *, now: _dt.datetime) -> TdxCollateral:
        """TCB info for `fmspc`, QE identity, the PCK CRL of `ca` ("platform"/"processor"), root CRL."""
        ...


def fmspc_hex(fmspc: bytes) -> str:
    """The FMSPC as PCS spells it (12 lowercase hex digits); anything else is refused."""
    text = bytes(fmspc).hex()
    if not _FMSPC.match(text):
        raise RevocationUnavailableError(f"FMSPC {text!r} is not 6 bytes")
    return text


def pck_ca_type(intermediate_cn: str) -> str:
    """"Intel SGX PCK Platform CA" -> "platform", "... Processor CA" -> "processor"."""
    for ca in PCK_CA_TYPES:
        if intermediate_cn == f"Intel SGX PCK {ca.capitalize()} CA":
            return ca
    raise RevocationUnavailableError(f"PCK intermediate {intermediate_cn!r} names no known PCK CA")


class NoRevocationSource:
    """Refuses: the default when nothing was configured, so a missing setting cannot mean "accept"."""

    def snp_crl(self, product: Product, *, vlek: bool, ark: x509.Certificate, now: _dt.datetime) -> bytes:
        raise RevocationUnavailableError(
            f"no CRL source is configured for the {product.value} {'VLEK' if vlek else 'VCEK'} chain "
            "(a CRL in the evidence is not trusted); configure a collateral directory or fetcher"
        )

    def tdx_collateral(self, fmspc: bytes, ca: str, *, now: _dt.datetime) -> TdxCollateral:
        raise RevocationUnavailableError(
            f"no TDX collateral source is configured (FMSPC {fmspc.hex()}); configure a collateral "
            "directory or fetcher"
        )


class CollateralDirectory:
    """Collateral an operator placed on the verifier's disk (offline clusters)::

        <dir>/snp/<Milan|Genoa|Turin>/vcek.crl     KDS .../vcek/v1/<product>/crl (DER or PEM)
        <dir>/snp/<product>/vlek.crl               KDS .../vlek/v1/<product>/crl
        <dir>/tdx/tcb_info_fmspc_<fmspc>.json      PCS .../tdx/certification/v4/tcb?fmspc=<fmspc>
        <dir>/tdx/tcb_info_issuer_chain.pem        its TCB-Info-Issuer-Chain header
        <dir>/tdx/qe_identity.json                 PCS .../tdx/certification/v4/qe/identity
        <dir>/tdx/qe_identity_issuer_chain.pem     its SGX-Enclave-Identity-Issuer-Chain header
        <dir>/tdx/pck_crl_<platform|processor>.der PCS .../sgx/certification/v4/pckcrl?ca=<ca>
        <dir>/tdx/pck_crl_issuer_chain.pem         its SGX-PCK-CRL-Issuer-Chain header
        <dir>/tdx/root_crl.der                     the Intel SGX Root CA CRL

    (without a ``tdx/`` subdirectory the TDX files are looked up in ``<dir>`` itself.)

    Freshness is the documents' own: the verifier refuses a CRL past its nextUpdate and a TCB info
    or QE identity past its nextUpdate, so stale files are refused, not trusted.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def snp_crl(self, product: Product, *, vlek: bool, ark: x509.Certificate, now: _dt.datetime) -> bytes:
        path = self.directory / "snp" / product.value / ("vlek.crl" if vlek else "vcek.crl")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise RevocationUnavailableError(
                f"no CRL for the {product.value} chain: {path}: {exc.strerror}"
            ) from None

    def tdx_collateral(self, fmspc: bytes, ca: str, *, now: _dt.datetime) -> TdxCollateral:
        # A directory holding only TDX collateral (as PCS files) may be given directly.
        d = self.directory / "tdx" if (self.directory / "tdx").is_dir() else self.directory
        fmspc_hex(fmspc)
        if ca not in PCK_CA_TYPES:
            raise RevocationUnavailableError(f"unknown PCK CA type {ca!r}")
        try:
            collateral = TdxCollateral.from_directory(d, fmspc=fmspc, ca=ca)
        except (CollateralError, OSError) as exc:
            raise RevocationUnavailableError(
                f"TDX collateral for FMSPC {fmspc.hex()} unusable: {exc}"
            ) from None
        require_crls(collateral)
        return collateral


def require_crls(collateral: TdxCollateral) -> None:
    """Collateral without both CRLs cannot show that the PCK chain is unrevoked."""
    pieces = (("PCK CRL", collateral.pck_crl), ("root CRL", collateral.root_crl))
    missing = [name for name, value in pieces if value is None]
    if missing:
        raise RevocationUnavailableError(f"TDX collateral has no {' and no '.join(missing)}")
