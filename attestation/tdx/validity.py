"""When a TDX quote and a collateral set can be verified together: the intersection of every dated piece.

Verification checks each certificate and document at one instant (`now`, the CLI's `--at`). The
quote's PCK chain, the TCB info and QE identity (issueDate..nextUpdate), their signing certificate and
the CRLs (thisUpdate..nextUpdate) must all be valid then; this module says when that is, or which two
pieces make it impossible, so a failed verification can name the `--at` that works. Parsing only.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from cryptography import x509

from ..errors import AttestationError
from ..snp.certs import load_certificates
from ..snp.verify import load_crl
from .collateral import TdxCollateral, parse_qe_identity, parse_tcb_info
from .pck import PckChain


@dataclass(frozen=True)
class Dated:
    what: str
    not_before: _dt.datetime
    not_after: _dt.datetime


@dataclass(frozen=True)
class Window:
    """`start`..`end` is when everything is valid; empty when start > end (then `latest_start` and
    `earliest_end` name the two pieces that do not overlap)."""

    latest_start: Dated
    earliest_end: Dated

    @property
    def start(self) -> _dt.datetime:
        return self.latest_start.not_before

    @property
    def end(self) -> _dt.datetime:
        return self.earliest_end.not_after

    @property
    def empty(self) -> bool:
        return self.start > self.end

    def describe(self) -> str:
        if self.empty:
            return (
                f"no instant verifies this quote with this collateral: the {self.latest_start.what} is valid "
                f"only from {_z(self.start)}, the {self.earliest_end.what} only until {_z(self.end)}"
            )
        return (
            f"the quote and this collateral are valid together from {_z(self.start)} "
            f"({self.latest_start.what}) to {_z(self.end)} ({self.earliest_end.what}): pass --at within it"
        )


def _z(t: _dt.datetime) -> str:
    return t.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")


def _cert(cert: x509.Certificate, what: str) -> Dated:
    return Dated(what, cert.not_valid_before_utc, cert.not_valid_after_utc)


def _crl(data: bytes | None, what: str) -> list[Dated]:
    if data is None:
        return []
    crl = load_crl(data, what)
    if crl.next_update_utc is None:
        return []
    return [Dated(what, crl.last_update_utc, crl.next_update_utc)]


def dated_pieces(chain: PckChain, collateral: TdxCollateral | None) -> list[Dated]:
    """Every dated piece that verification checks at one instant (malformed pieces are left out:
    verification reports those itself)."""
    out = [
        _cert(chain.leaf, "PCK leaf certificate"),
        _cert(chain.intermediate, "PCK intermediate certificate"),
        _cert(chain.root, "Intel root certificate"),
    ]
    if collateral is None:
        return out
    try:
        tcb = parse_tcb_info(collateral.tcb_info)
        out.append(Dated("tcbInfo", tcb.issue_date, tcb.next_update))
        qe = parse_qe_identity(collateral.qe_identity)
        out.append(Dated("QE identity", qe.issue_date, qe.next_update))
        signers = load_certificates(collateral.tcb_info_issuer_chain)
        if signers:
            out.append(_cert(signers[0], "tcbInfo signing certificate"))
        out += _crl(collateral.pck_crl, "PCK CRL") + _crl(collateral.root_crl, "root CRL")
    except AttestationError:
        pass
    return out


def common_window(pieces: list[Dated]) -> Window:
    return Window(
        latest_start=max(pieces, key=lambda d: d.not_before),
        earliest_end=min(pieces, key=lambda d: d.not_after),
    )
