"""python -m coordinator [--state-dir DIR] [--simulate-tee] [--listen-host HOST]"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import signal
from pathlib import Path

from attestation import (
    KDS_URL,
    PCS_URL,
    CollateralDirectory,
    CollateralFetcher,
    RevocationSource,
    detect_provider,
)
from attestation.atls import Issuer, SnpIssuer, issuer_for
from attestation.testing import SimulatedCrlSource
from common.cli import ArgumentParser
from common.logs import setup_logging
from coordinator import simulation
from coordinator.errors import CoordinatorError
from coordinator.server import Config, Coordinator, Ports

log = logging.getLogger("coordinator")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m coordinator", description=(
        "The Coordinator (Contrast-compatible): attests pods, issues mesh certificates, keeps the "
        "manifest history."
    ))
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/coordinator"), help="history store")
    p.add_argument("--simulate-tee", action="store_true",
                   help="use the simulated SNP provider (no TEE); trusts simulated evidence only for "
                        "reference values with Platform 'Simulated-SNP'. The simulated AMD root is kept in "
                        "STATE_DIR/simulated-amd (or $ATTESTATION_SIMULATED_ROOT): give that directory to "
                        "'contrast set/verify/recover --simulated-root'")
    p.add_argument("--simulate-initdata", type=Path,
                   help="with --simulate-tee, required: the Coordinator's initdata (the file given to "
                        "'contrast generate --coordinator-initdata'); its digest is the simulated HOST_DATA "
                        "the CLI pins")
    p.add_argument("--simulate-host-data-from-cmdline", action="store_true",
                   help="with --simulate-tee, instead of --simulate-initdata: HOST_DATA is the kernel "
                        "command line's cg.test.hostdata (a TEE-less pod VM of the contrast-cc shim's "
                        "simulated mode)")
    p.add_argument("--simulate-measurement", default="00" * 48, help="simulated launch measurement (hex)")
    p.add_argument("--listen-host", default="0.0.0.0", help="address for all listeners")  # noqa: S104
    p.add_argument("--user-port", type=int, default=1313)
    p.add_argument("--mesh-port", type=int, default=7777)
    p.add_argument("--http-port", type=int, default=1314)
    p.add_argument("--probe-port", type=int, default=9102)
    p.add_argument("--transit-port", type=int, default=8200)
    p.add_argument("--peer", action="append", default=[],
                   help="HOST:PORT of a peer Coordinator's MeshAPI sharing this state dir (repeatable)")
    p.add_argument("--initdata", type=Path,
                   help="this Coordinator's own initdata document (it must hash to the launch HOST_DATA); "
                        "its owners.json entry names who may set the first manifest and recover "
                        "(default with --simulate-tee: the --simulate-initdata document)")
    p.add_argument("--collateral-dir", type=Path,
                   help="offline revocation data (AMD CRLs, Intel TDX collateral) in the layout of "
                        "docs/coordinator.md; nothing is fetched")
    p.add_argument("--collateral-cache", type=Path, default=Path("/run/coordinator/collateral"),
                   help="cache of fetched CRLs and TDX collateral (keep it inside the TEE)")
    p.add_argument("--kds-url", default=KDS_URL, help="AMD KDS base URL (or a mirror)")
    p.add_argument("--pcs-url", default=PCS_URL, help="Intel PCS base URL (or a mirror)")
    p.add_argument("--collateral-max-age", type=float, default=24.0, metavar="HOURS",
                   help="refetch revocation data older than this; refuse evidence if that fails")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.simulate_tee and args.simulate_initdata is None and not args.simulate_host_data_from_cmdline:
        # Without it HOST_DATA would be zeros, which no manifest's coordinator policy hash matches.
        p.error("--simulate-tee needs --simulate-initdata FILE: the Coordinator's initdata, the same file "
                "given to 'contrast generate --coordinator-initdata'")
    return args


def revocation_source(args: argparse.Namespace) -> RevocationSource:
    """Offline directory if given, else the caching KDS/PCS fetcher."""
    if args.collateral_dir is not None:
        return CollateralDirectory(args.collateral_dir)
    return CollateralFetcher(
        args.collateral_cache, kds_url=args.kds_url, pcs_url=args.pcs_url,
        max_age=datetime.timedelta(hours=args.collateral_max_age),
    )


def build_config(args: argparse.Namespace) -> Config:
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    issuer: Issuer
    simulated_roots = None
    initdata: bytes | None = args.initdata.read_bytes() if args.initdata else None
    revocation = revocation_source(args)
    if args.simulate_tee:
        simulated = args.simulate_initdata.read_bytes() if args.simulate_initdata else None
        initdata = initdata if initdata is not None else simulated
        measurement = bytes.fromhex(args.simulate_measurement)
        root_dir = simulation.root_dir(state_dir / "simulated-amd")
        host_data = simulation.host_data_from_cmdline() if args.simulate_host_data_from_cmdline else None
        prov = simulation.provider(root_dir, simulated, measurement, host_data)
        simulated_roots = prov.trusted_roots()
        revocation = SimulatedCrlSource(prov.root, fallback=revocation)
        issuer = SnpIssuer(prov)
        log.warning("event=simulated_tee simulated_root=%s hint=%r", root_dir,
                    "pass --simulated-root to contrast set/verify/recover")
    else:
        issuer = issuer_for(detect_provider(allow_simulated=False))
    ports = Ports(args.user_port, args.mesh_port, args.http_port, args.probe_port, args.transit_port)
    return Config(state_dir=state_dir, issuer=issuer, listen_host=args.listen_host, ports=ports,
                  simulated_roots=simulated_roots, revocation=revocation, peers=tuple(args.peer),
                  initdata=initdata)


async def serve(config: Config) -> None:
    coordinator = Coordinator(config)
    await coordinator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready userapi={coordinator.ports.user} meshapi={coordinator.ports.mesh} "
          f"http={coordinator.ports.http} probes={coordinator.ports.probes} "
          f"transit={coordinator.ports.transit}", flush=True)
    await stop.wait()
    log.info("event=shutdown")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(coordinator.stop(), 20)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = build_config(args)
    except Exception as exc:
        hint = " (no TEE here? try --simulate-tee --simulate-initdata FILE)" if "no TEE" in str(exc) else ""
        log.error("event=startup_failed error=%r", f"{exc}{hint}")
        return 1
    try:
        asyncio.run(serve(config))
    except CoordinatorError as exc:  # e.g. an initdata document that is not this Coordinator's own
        log.error("event=startup_failed error=%r", str(exc))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
