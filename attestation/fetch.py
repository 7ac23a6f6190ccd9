"""A `RevocationSource` that fetches AMD KDS CRLs and Intel PCS collateral through an on-disk cache.

Only the two configured base URLs are ever contacted: every request URL is a base plus a fixed path
whose only variable parts are validated (product enum, 12 hex digit FMSPC, CA type). Redirects are
refused, environment proxies are ignored, bodies are capped at 1 MiB. Nothing fetched is trusted:
the verifier checks every signature and date on each use; the fetcher only decides availability.

Freshness: a cached document is used while ``now - fetched_at <= max_age``; past that it is fetched
again, and if that fails the verifier is refused with the reason (the stale copy is not used). A
refetched document older (by its own issue date) than the cached one is refused too, so a network
attacker cannot roll the cache back to a CRL from before a revocation. The cache directory must be on
storage the verifier trusts (the Coordinator keeps it inside the TEE, not on a host disk).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any

from cryptography import x509

from common.files import atomic_write

from .errors import AttestationError
from .revocation import PCK_CA_TYPES, RevocationUnavailableError, fmspc_hex
from .snp.product import Product
from .snp.verify import load_crl
from .tdx.collateral import TdxCollateral, parse_qe_identity, parse_tcb_info

log = logging.getLogger("attestation.fetch")

KDS_URL = "https://kdsintf.amd.com"
PCS_URL = "https://api.trustedservices.intel.com"
MAX_DOCUMENT = 1 << 20
DEFAULT_MAX_AGE = _dt.timedelta(hours=24)


class _FetchFailedError(Exception):
    pass


class _RefuseRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would leave the configured base URL: treat it as a failure."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Message, newurl: str
    ) -> urllib.request.Request | None:
        raise _FetchFailedError(f"HTTP {code} redirect to {newurl!r} refused")


def base_url(value: str) -> str:
    """A validated base URL: http(s), a host, no credentials, query or fragment; no trailing slash."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"collateral base URL {value!r} must be http(s)://host[:port][/path]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"collateral base URL {value!r} must not carry credentials, a query or a fragment")
    return value.rstrip("/")


@dataclass(frozen=True)
class CachedDocument:
    url: str
    fetched_at: _dt.datetime
    body: bytes
    issuer_chain: bytes | None

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "url": self.url,
            "fetched_at": self.fetched_at.isoformat(),
            "body": base64.b64encode(self.body).decode(),
            "issuer_chain": (
                None if self.issuer_chain is None else self.issuer_chain.decode("ascii", "replace")
            ),
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CachedDocument:
        doc = json.loads(data)
        fetched = _dt.datetime.fromisoformat(doc["fetched_at"])
        if fetched.tzinfo is None:
            raise ValueError("fetched_at has no time zone")
        chain = doc.get("issuer_chain")
        return cls(
            url=str(doc["url"]),
            fetched_at=fetched,
            body=base64.b64decode(doc["body"], validate=True),
            issuer_chain=None if chain is None else str(chain).encode(),
        )


def _issue_date(name: str, body: bytes) -> _dt.datetime | None:
    """The document's own issue date (for the rollback check); None if it does not parse."""
    try:
        if name.startswith("intel-tdx-tcb-"):
            return parse_tcb_info(body).issue_date
        if name == "intel-tdx-qe-identity":
            return parse_qe_identity(body).issue_date
        return load_crl(_crl_body(body)).last_update_utc
    except AttestationError:
        return None


def _crl_body(body: bytes) -> bytes:
    """PCS serves the root CA CRL as DER or as its hex text; the verifier takes DER or PEM."""
    text = body.strip()
    if text and all(c in b"0123456789abcdefABCDEF" for c in text):
        try:
            return binascii.unhexlify(text)
        except binascii.Error:
            return body
    return body


class CollateralFetcher:
    """Fetch-through cache for KDS (`kds_url`) and PCS (`pcs_url`); see the module docstring."""

    def __init__(
        self,
        cache_dir: str | Path,
        *,
        kds_url: str = KDS_URL,
        pcs_url: str = PCS_URL,
        max_age: _dt.timedelta = DEFAULT_MAX_AGE,
        timeout: float = 15.0,
    ) -> None:
        if max_age <= _dt.timedelta(0):
            raise ValueError("max_age must be positive")
        self.cache_dir = Path(cache_dir)
        self.kds_url = base_url(kds_url)
        self.pcs_url = base_url(pcs_url)
        self.max_age = max_age
        self.timeout = timeout
        self._memory: dict[str, CachedDocument] = {}
        self._known: dict[str, tuple[str, str | None]] = {}  # document -> (URL, issuer-chain header)
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _RefuseRedirect())

    # -- RevocationSource ------------------------------------------------------------------------------
    def snp_crl(self, product: Product, *, vlek: bool, ark: x509.Certificate, now: _dt.datetime) -> bytes:
        kind = "vlek" if vlek else "vcek"
        return self._document(
            f"amd-{kind}-{product.value}-crl", self.kds_url, f"/{kind}/v1/{product.value}/crl", None, now
        ).body

    def tdx_collateral(self, fmspc: bytes, ca: str, *, now: _dt.datetime) -> TdxCollateral:
        name = fmspc_hex(fmspc)
        if ca not in PCK_CA_TYPES:
            raise RevocationUnavailableError(f"unknown PCK CA type {ca!r}")
        pcs = self.pcs_url
        tcb = self._document(
            f"intel-tdx-tcb-{name}", pcs, f"/tdx/certification/v4/tcb?fmspc={name}",
            "TCB-Info-Issuer-Chain", now,
        )
        qe = self._document(
            "intel-tdx-qe-identity", pcs, "/tdx/certification/v4/qe/identity",
            "SGX-Enclave-Identity-Issuer-Chain", now,
        )
        pck = self._document(
            f"intel-pck-crl-{ca}", pcs, f"/sgx/certification/v4/pckcrl?ca={ca}&encoding=der",
            "SGX-PCK-CRL-Issuer-Chain", now,
        )
        root = self._document("intel-root-ca-crl", pcs, "/sgx/certification/v4/rootcacrl", None, now)
        assert tcb.issuer_chain is not None and qe.issuer_chain is not None
        return TdxCollateral(
            tcb_info=tcb.body,
            tcb_info_issuer_chain=tcb.issuer_chain,
            qe_identity=qe.body,
            qe_identity_issuer_chain=qe.issuer_chain,
            pck_crl=pck.body,
            pck_crl_issuer_chain=pck.issuer_chain,
            root_crl=_crl_body(root.body),
        )

    # -- cache ---------------------------------------------------------------------------------------
    def _fresh(self, entry: CachedDocument, now: _dt.datetime) -> bool:
        age = now - entry.fetched_at
        return _dt.timedelta(0) <= age <= self.max_age

    def _document(
        self, name: str, base: str, path: str, chain_header: str | None, now: _dt.datetime
    ) -> CachedDocument:
        url = base + path
        with self._lock:
            self._known[name] = (url, chain_header)
            cached = self._cached(name, url)
        if cached is not None and self._fresh(cached, now):
            return cached
        return self._fetch(name, url, chain_header, cached, now)

    def _cached(self, name: str, url: str) -> CachedDocument | None:
        """The in-memory copy, else the on-disk one (called with the lock held)."""
        cached = self._memory.get(name)
        if cached is None or cached.url != url:
            cached = self._read_cache(name, url)
            if cached is not None:
                self._memory[name] = cached
        return cached

    def _fetch(
        self, name: str, url: str, chain_header: str | None, cached: CachedDocument | None, now: _dt.datetime
    ) -> CachedDocument:
        # The network wait happens outside the lock: handshakes needing other documents go on.
        try:
            body, chain = self._get(url, chain_header)
        except _FetchFailedError as exc:
            if cached is not None:
                raise RevocationUnavailableError(
                    f"{name}: the cached copy fetched at {cached.fetched_at.isoformat()} is outside the "
                    f"freshness bound of {self.max_age} at {now.isoformat()}, and refetching {url} "
                    f"failed: {exc}"
                ) from None
            raise RevocationUnavailableError(f"{name}: fetching {url} failed: {exc}") from None
        with self._lock:
            current = self._memory.get(name) or cached
            if current is not None and current.url == url:
                old, new = _issue_date(name, current.body), _issue_date(name, body)
                if old is not None and new is not None and new < old:
                    raise RevocationUnavailableError(
                        f"{name}: {url} served a document issued {new.isoformat()}, older than the cached "
                        f"one ({old.isoformat()}): refused as a rollback"
                    )
            entry = CachedDocument(url=url, fetched_at=now, body=body, issuer_chain=chain)
            self._memory[name] = entry
            self._write_cache(name, entry)
        return entry

    def refresh(self, now: _dt.datetime) -> list[str]:
        """Refetch every document served so far that is older than half the freshness bound, so that
        handshakes find fresh copies instead of waiting for KDS/PCS (the Coordinator calls this from a
        background task). Returns the failures, which are also logged; the cached copies stay usable
        until the bound itself."""
        with self._lock:
            due = [
                (name, url, header, self._memory.get(name))
                for name, (url, header) in self._known.items()
                if (m := self._memory.get(name)) is None or now - m.fetched_at > self.max_age / 2
            ]
        failures = []
        for name, url, header, cached in due:
            try:
                self._fetch(name, url, header, cached, now)
            except RevocationUnavailableError as exc:
                log.warning("event=collateral_refresh_failed document=%s error=%r", name, str(exc))
                failures.append(str(exc))
        return failures

    def _read_cache(self, name: str, url: str) -> CachedDocument | None:
        path = self.cache_dir / f"{name}.json"
        try:
            entry = CachedDocument.from_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            log.warning("event=collateral_cache_unreadable path=%s error=%r", path, str(exc))
            return None
        return entry if entry.url == url else None

    def _write_cache(self, name: str, entry: CachedDocument) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(self.cache_dir / f"{name}.json", entry.to_json(), mode=0o600)
        except OSError as exc:  # the fetched copy is still used; only the next process refetches
            log.warning("event=collateral_cache_write_failed dir=%s error=%r", self.cache_dir, str(exc))

    # -- HTTP ----------------------------------------------------------------------------------------
    def _get(self, url: str, chain_header: str | None) -> tuple[bytes, bytes | None]:
        # The URL is a validated http(s) base plus a fixed path (base_url), never another scheme.
        request = urllib.request.Request(  # noqa: S310
            url, headers={"Accept": "*/*", "User-Agent": "attestation-fetch"}
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = response.status
                body = response.read(MAX_DOCUMENT + 1)
                chain_value = response.headers.get(chain_header) if chain_header else None
        except urllib.error.HTTPError as exc:
            raise _FetchFailedError(f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise _FetchFailedError(str(reason)) from None
        if status != 200:
            raise _FetchFailedError(f"HTTP {status}")
        if len(body) > MAX_DOCUMENT:
            raise _FetchFailedError(f"response larger than {MAX_DOCUMENT} bytes")
        if chain_header is None:
            return body, None
        if not chain_value:
            raise _FetchFailedError(f"response has no {chain_header} header")
        return body, urllib.parse.unquote(chain_value).encode()
