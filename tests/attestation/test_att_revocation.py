"""Revocation is enforced: CRLs and TDX collateral come from the verifier's own source, never the evidence.

Attacks from the attester's position (leave the CRL out, send an older one, hide a revoked PCK or an
OutOfDate TCB), a stale cache, and the fetcher against a loopback HTTP server that serves the real
vectors' collateral at Intel PCS / AMD KDS paths.
"""

from __future__ import annotations

import datetime as dt
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from attvectors import VECTORS, read, snp_entry, vector
from cryptography import x509

from attestation import TdxCollateral
from attestation.atls.errors import AtlsError
from attestation.atls.platforms import SnpValidator, encode_snp
from attestation.atls.tdx import TdxValidator, encode_tdx
from attestation.errors import RevokedError
from attestation.evidence import Evidence
from attestation.fetch import CollateralFetcher, base_url
from attestation.reference_values import ReferenceValues
from attestation.revocation import CollateralDirectory, NoRevocationSource, RevocationUnavailableError
from attestation.snp.certs import SnpCerts, serial_of
from attestation.snp.product import Product
from attestation.snp.verify import verify_snp_attestation
from attestation.tdx.verify import verify_tdx_quote
from attestation.testing import (
    SimulatedAmdRoot,
    SimulatedCrlSource,
    SimulatedSnpProvider,
    SimulatedTdxProvider,
    simulated_crl,
)

COL2023 = VECTORS / "tdx" / "collateral" / "gtg-2023"
T2023 = dt.datetime(2023, 7, 1, 1, tzinfo=dt.UTC)


# -- SNP ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root() -> SimulatedAmdRoot:
    return SimulatedAmdRoot.generate(Product.MILAN)


@pytest.fixture(scope="module")
def sim(root: SimulatedAmdRoot) -> SimulatedSnpProvider:
    return SimulatedSnpProvider(root=root)


def _snp_rv(sim: SimulatedSnpProvider) -> ReferenceValues:
    return ReferenceValues.from_obj({"snp": [snp_entry(sim.measurement.hex())]})


def test_snp_evidence_without_crl_is_refused(root: SimulatedAmdRoot, sim: SimulatedSnpProvider) -> None:
    """Attack: leave the CRL out of the evidence. Before, the validator skipped the CRL check and
    accepted; now it needs its own CRL and refuses without one, saying so."""
    ev = sim.get_evidence(b"\1" * 64)
    assert ev.crl is None
    v = SnpValidator(_snp_rv(sim).snp, trusted_roots=root.roots())
    with pytest.raises(AtlsError, match="no CRL source is configured for the Milan VCEK chain"):
        v.validate(encode_snp(ev), b"\1" * 64)
    ok = SnpValidator(_snp_rv(sim).snp, trusted_roots=root.roots(), revocation=SimulatedCrlSource(root))
    assert ok.validate(encode_snp(ev), b"\1" * 64).platform == "snp"


def test_snp_evidence_crl_is_not_trusted(root: SimulatedAmdRoot, sim: SimulatedSnpProvider) -> None:
    """Attack: the ASK was revoked, and the attester sends an older (genuinely ARK-signed, unexpired)
    CRL from before the revocation. The verifier's own CRL lists the ASK: refused."""
    ev = sim.get_evidence(b"\2" * 64)
    old_crl = simulated_crl(root, ())
    forged = encode_snp(Evidence(ev.platform, ev.report, ev.cert_table, ev.certs, crl=old_crl))
    revoked = SimulatedCrlSource(root, revoked=(root.ask.serial_number,))
    v = SnpValidator(_snp_rv(sim).snp, trusted_roots=root.roots(), revocation=revoked)
    with pytest.raises(AtlsError, match="ASK was revoked"):
        v.validate(forged, b"\2" * 64)


def test_crl_listing_the_vcek_or_ask_refuses(root: SimulatedAmdRoot, sim: SimulatedSnpProvider) -> None:
    ev = sim.get_evidence(b"")
    vcek = SnpCerts.from_blobs(ev.certs).vcek
    assert vcek is not None
    for serial, who in ((serial_of(vcek), "VCEK"), (root.ask.serial_number, "ASK")):
        with pytest.raises(RevokedError, match=f"{who} was revoked"):
            verify_snp_attestation(
                ev.report,
                ev.certs,
                trusted_roots=root.roots(),
                revocation=SimulatedCrlSource(root, revoked=(serial,)),
                require_revocation=True,
            )


def test_real_snp_vector_without_crl_is_refused() -> None:
    """The real vectors bring no CRL: with revocation required they are refused with the reason."""
    v = vector("snp/gsg-milan-v2-vcek")
    args = (read(v["files"]["report"]["file"]), [read(v["files"]["vcek"]["file"])])
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert "crl" not in verify_snp_attestation(*args, now=now).checks
    with pytest.raises(RevocationUnavailableError, match="no CRL for the Milan VCEK chain"):
        verify_snp_attestation(*args, now=now, require_revocation=True)
    with pytest.raises(RevocationUnavailableError, match="no CRL source is configured"):
        verify_snp_attestation(*args, now=now, revocation=NoRevocationSource(), require_revocation=True)


def test_collateral_directory_snp(tmp_path: Path, root: SimulatedAmdRoot, sim: SimulatedSnpProvider) -> None:
    ev = sim.get_evidence(b"")
    source = CollateralDirectory(tmp_path)
    with pytest.raises(RevocationUnavailableError, match=r"snp/Milan/vcek\.crl"):
        verify_snp_attestation(
            ev.report, ev.certs, trusted_roots=root.roots(), revocation=source, require_revocation=True
        )
    (tmp_path / "snp" / "Milan").mkdir(parents=True)
    (tmp_path / "snp" / "Milan" / "vcek.crl").write_bytes(simulated_crl(root, (root.ask.serial_number,)))
    with pytest.raises(RevokedError):
        verify_snp_attestation(
            ev.report, ev.certs, trusted_roots=root.roots(), revocation=source, require_revocation=True
        )
    # A CRL past its nextUpdate is refused, not trusted.
    stale = simulated_crl(root, (), now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    (tmp_path / "snp" / "Milan" / "vcek.crl").write_bytes(stale)
    with pytest.raises(Exception, match="CRL expired"):
        verify_snp_attestation(
            ev.report, ev.certs, trusted_roots=root.roots(), revocation=source, require_revocation=True
        )


# -- TDX ----------------------------------------------------------------------------------------------
@dataclass
class _Fixed:
    collateral: TdxCollateral

    def snp_crl(self, product: Product, *, vlek: bool, ark: x509.Certificate, now: dt.datetime) -> bytes:
        raise RevocationUnavailableError("no SNP here")

    def tdx_collateral(self, fmspc: bytes, ca: str, *, now: dt.datetime) -> TdxCollateral:
        return self.collateral


@pytest.fixture(scope="module")
def tdx() -> SimulatedTdxProvider:
    return SimulatedTdxProvider(mr_td=b"\x11" * 48)


def _tdx_rv(t: SimulatedTdxProvider) -> ReferenceValues:
    return ReferenceValues.from_obj(
        {
            "tdx": [
                {
                    "MrTd": t.mr_td.hex(),
                    "MrSeam": t.mr_seam.hex(),
                    "Xfam": t.xfam.hex(),
                    "Rtmrs": [r.hex() for r in t.rtmrs],
                }
            ]
        }
    )


def test_tdx_revoked_pck_and_out_of_date_tcb_are_refused(tdx: SimulatedTdxProvider) -> None:
    """Attack: a revoked PCK, or a platform whose TCB is OutOfDate per the collateral. Before, the
    Coordinator's validator had no collateral and accepted both."""
    rd = b"\3" * 64
    evidence = encode_tdx(tdx.make_quote(rd))

    def validator(col: TdxCollateral | None) -> TdxValidator:
        return TdxValidator(
            _tdx_rv(tdx).tdx, trusted_root=tdx.root.root, revocation=None if col is None else _Fixed(col)
        )

    with pytest.raises(AtlsError, match="no TDX collateral source"):
        validator(None).validate(evidence, rd)
    with pytest.raises(AtlsError, match="revoked by the PCK CRL"):
        validator(tdx.collateral(revoked_pck=True)).validate(evidence, rd)
    with pytest.raises(AtlsError, match="TCB status is OutOfDate"):
        validator(tdx.collateral(statuses=("UpToDate", "OutOfDate"))).validate(evidence, rd)
    full = tdx.collateral()
    no_crl = TdxCollateral(
        full.tcb_info,
        full.tcb_info_issuer_chain,
        full.qe_identity,
        full.qe_identity_issuer_chain,
        pck_crl=None,
        root_crl=full.root_crl,
    )
    with pytest.raises(AtlsError, match="TDX collateral has no PCK CRL"):
        validator(no_crl).validate(evidence, rd)
    assert validator(full).validate(evidence, rd).platform == "tdx"


def test_tdx_collateral_directory_real_vector() -> None:
    quote = read(vector("tdx/trustee-spr-v4")["files"]["quote"]["file"])
    res = verify_tdx_quote(quote, revocation=CollateralDirectory(COL2023), require_revocation=True, now=T2023)
    assert res.tcb_status == "UpToDate" and {"pck_crl", "root_crl"} <= set(res.checks)
    with pytest.raises(RevocationUnavailableError, match="no TDX collateral"):
        verify_tdx_quote(quote, require_revocation=True, now=T2023)


# -- the fetcher against a loopback server ------------------------------------------------------------
@dataclass
class _Route:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


class _Server:
    """http.server on 127.0.0.1 serving fixed routes, recording every request path."""

    def __init__(self) -> None:
        self.routes: dict[str, _Route] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                self.send_response(route.status)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.stop()


def _chain_header(name: str) -> str:
    return urllib.parse.quote((COL2023 / name).read_bytes().decode())


def serve_pcs(s: _Server) -> None:
    """The real 2023 collateral at Intel PCS v4 paths, issuer chains in PCS's URL-encoded headers."""
    s.routes["/tdx/certification/v4/tcb?fmspc=50806f000000"] = _Route(
        (COL2023 / "tcb_info_fmspc_50806f000000.json").read_bytes(),
        {"TCB-Info-Issuer-Chain": _chain_header("tcb_info_issuer_chain.pem")},
    )
    s.routes["/tdx/certification/v4/qe/identity"] = _Route(
        (COL2023 / "qe_identity.json").read_bytes(),
        {"SGX-Enclave-Identity-Issuer-Chain": _chain_header("qe_identity_issuer_chain.pem")},
    )
    s.routes["/sgx/certification/v4/pckcrl?ca=platform&encoding=der"] = _Route(
        (COL2023 / "pck_crl_platform.der").read_bytes(),
        {"SGX-PCK-CRL-Issuer-Chain": _chain_header("pck_crl_issuer_chain.pem")},
    )
    s.routes["/sgx/certification/v4/rootcacrl"] = _Route(
        (COL2023 / "root_crl.der").read_bytes().hex().encode()
    )


TRUSTEE = "tdx/trustee-spr-v4"


def test_fetcher_serves_real_collateral_and_caches(tmp_path: Path, server: _Server) -> None:
    serve_pcs(server)
    quote = read(vector(TRUSTEE)["files"]["quote"]["file"])
    fetcher = CollateralFetcher(
        tmp_path / "cache", pcs_url=server.url, kds_url=server.url, max_age=dt.timedelta(hours=1)
    )
    res = verify_tdx_quote(quote, revocation=fetcher, require_revocation=True, now=T2023)
    assert res.tcb_status == "UpToDate" and {"pck_crl", "root_crl"} <= set(res.checks)
    assert sorted(server.requests) == sorted(server.routes)  # exactly the four PCS documents
    server.stop()
    # Within the bound the cache answers, also for a new process (the on-disk copy).
    later = T2023 + dt.timedelta(minutes=59)
    verify_tdx_quote(quote, revocation=fetcher, require_revocation=True, now=later)
    fresh_process = CollateralFetcher(tmp_path / "cache", pcs_url=server.url, max_age=dt.timedelta(hours=1))
    verify_tdx_quote(quote, revocation=fresh_process, require_revocation=True, now=later)
    # Past the bound, with PCS unreachable: refused, with the reason.
    stale = T2023 + dt.timedelta(hours=1, seconds=1)
    with pytest.raises(RevocationUnavailableError, match=r"outside the freshness bound of 1:00:00.*failed"):
        verify_tdx_quote(quote, revocation=fetcher, require_revocation=True, now=stale)


def test_fetcher_stale_cache_is_refused_with_reason(
    tmp_path: Path, server: _Server, root: SimulatedAmdRoot, sim: SimulatedSnpProvider
) -> None:
    now = dt.datetime.now(dt.UTC)
    server.routes["/vcek/v1/Milan/crl"] = _Route(simulated_crl(root, (), now=now))
    fetcher = CollateralFetcher(
        tmp_path, kds_url=server.url, pcs_url=server.url, max_age=dt.timedelta(minutes=10)
    )
    ev = sim.get_evidence(b"")
    kwargs = {"trusted_roots": root.roots(), "revocation": fetcher, "require_revocation": True}
    assert "crl" in verify_snp_attestation(ev.report, ev.certs, now=now, **kwargs).checks  # type: ignore[arg-type]
    server.routes.clear()  # KDS now answers 404
    with pytest.raises(
        RevocationUnavailableError,
        match=r"amd-vcek-Milan-crl: the cached copy fetched at .* "
        r"outside the freshness bound of 0:10:00 .* failed: HTTP 404",
    ):
        verify_snp_attestation(ev.report, ev.certs, now=now + dt.timedelta(minutes=11), **kwargs)  # type: ignore[arg-type]
    # A revocation published later is picked up at the next refresh.
    server.routes["/vcek/v1/Milan/crl"] = _Route(simulated_crl(root, (root.ask.serial_number,), now=now))
    with pytest.raises(RevokedError):
        verify_snp_attestation(ev.report, ev.certs, now=now + dt.timedelta(minutes=11), **kwargs)  # type: ignore[arg-type]


def test_fetcher_refuses_rollback(tmp_path: Path, server: _Server, root: SimulatedAmdRoot) -> None:
    """Attack from the network: after the cache holds a CRL, serve an older one (from before a
    revocation). Refused as a rollback."""
    now = dt.datetime.now(dt.UTC)
    server.routes["/vcek/v1/Milan/crl"] = _Route(simulated_crl(root, (root.ask.serial_number,), now=now))
    fetcher = CollateralFetcher(tmp_path, kds_url=server.url, max_age=dt.timedelta(minutes=1))
    fetcher.snp_crl(Product.MILAN, vlek=False, ark=root.ark, now=now)
    server.routes["/vcek/v1/Milan/crl"] = _Route(
        simulated_crl(root, (), now=now - dt.timedelta(hours=2), valid_for=dt.timedelta(days=2))
    )
    with pytest.raises(RevocationUnavailableError, match="refused as a rollback"):
        fetcher.snp_crl(Product.MILAN, vlek=False, ark=root.ark, now=now + dt.timedelta(minutes=2))


def test_fetcher_contacts_only_its_base_url(
    tmp_path: Path, server: _Server, root: SimulatedAmdRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redirect (to another host) is refused and not followed; proxy variables are ignored."""
    elsewhere = _Server()
    try:
        elsewhere.routes["/vcek/v1/Milan/crl"] = _Route(simulated_crl(root, ()))
        server.routes["/vcek/v1/Milan/crl"] = _Route(
            b"", {"Location": elsewhere.url + "/vcek/v1/Milan/crl"}, 302
        )
        monkeypatch.setenv("http_proxy", elsewhere.url)
        monkeypatch.setenv("HTTP_PROXY", elsewhere.url)
        monkeypatch.setenv("no_proxy", "")
        fetcher = CollateralFetcher(tmp_path, kds_url=server.url)
        with pytest.raises(RevocationUnavailableError, match=r"redirect to .* refused"):
            fetcher.snp_crl(Product.MILAN, vlek=False, ark=root.ark, now=dt.datetime.now(dt.UTC))
        assert server.requests == ["/vcek/v1/Milan/crl"] and elsewhere.requests == []
    finally:
        elsewhere.stop()
    for bad in ("file:///etc", "ftp://h/x", "http://user:pw@h", "https://h/x?y=1", "http://"):
        with pytest.raises(ValueError, match="base URL"):
            base_url(bad)
    with pytest.raises(RevocationUnavailableError, match="not 6 bytes"):
        CollateralFetcher(tmp_path, pcs_url=server.url).tdx_collateral(b"../x", "platform", now=T2023)


def test_fetcher_failure_without_cache_names_the_url(tmp_path: Path, root: SimulatedAmdRoot) -> None:
    s = _Server()
    url = s.url
    s.stop()  # nothing listens there any more
    fetcher = CollateralFetcher(tmp_path, kds_url=url, timeout=5)
    with pytest.raises(RevocationUnavailableError, match=f"fetching {url}/vcek/v1/Milan/crl failed"):
        fetcher.snp_crl(Product.MILAN, vlek=False, ark=root.ark, now=dt.datetime.now(dt.UTC))


def test_refresh_keeps_documents_fresh_in_the_background(tmp_path: Path, server: _Server) -> None:
    """`refresh` (the Coordinator's background task) refetches documents past half the bound, so a
    handshake after the original copy's bound still finds a fresh one without touching the network."""
    serve_pcs(server)
    quote = read(vector(TRUSTEE)["files"]["quote"]["file"])
    fetcher = CollateralFetcher(tmp_path, pcs_url=server.url, max_age=dt.timedelta(hours=1))
    verify_tdx_quote(quote, revocation=fetcher, require_revocation=True, now=T2023)
    assert fetcher.refresh(T2023 + dt.timedelta(minutes=20)) == [] and len(server.requests) == 4  # not due
    assert fetcher.refresh(T2023 + dt.timedelta(minutes=40)) == [] and len(server.requests) == 8
    server.stop()
    later = T2023 + dt.timedelta(minutes=90)  # past the first copy's bound, within the refreshed one
    verify_tdx_quote(quote, revocation=fetcher, require_revocation=True, now=later)
    failures = fetcher.refresh(T2023 + dt.timedelta(minutes=95))
    assert len(failures) == 4 and all("failed" in f for f in failures)


def test_simulated_crl_is_signed_once_an_hour(root: SimulatedAmdRoot) -> None:
    source = SimulatedCrlSource(root)
    now = dt.datetime.now(dt.UTC)

    def crl(minutes: int) -> bytes:
        when = now + dt.timedelta(minutes=minutes)
        return source.snp_crl(Product.MILAN, vlek=False, ark=root.ark, now=when)

    first = crl(0)
    assert crl(59) == first and crl(61) != first
    with pytest.raises(RevocationUnavailableError):
        source.snp_crl(Product.MILAN, vlek=False, ark=SimulatedAmdRoot.generate().ark, now=now)
