"""The initializer flow (as Contrast's initializer/main.go), one step per function call.

Each failure is wrapped with the step that failed; the only retried step is the NewMeshCert call
(every 5 s until it succeeds or SIGTERM/SIGINT arrives).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_fixed

from attestation.atls import ClientConfig, Issuer, SnpIssuer, call, issuer_for, split_host_port
from coordinator.proto import NEW_MESH_CERT, meshapi_pb2
from guest.storage import StorageError, block_device_at
from initializer.defaultdeny import remove_default_deny
from initializer.files import MeshMaterial, write_done, write_mesh_files
from initializer.securepv import SecurePvError, serve_secure_pv

log = logging.getLogger("initializer")

MESH_PORT = 7777
RETRY_INTERVAL = 5.0


class InitializerError(Exception):
    def __init__(self, step: str, cause: BaseException | str) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step


class StoppedError(Exception):
    """SIGTERM/SIGINT arrived before the Coordinator answered."""


@dataclass
class Settings:
    out_dir: Path = Path("/contrast")
    done_file: Path = Path("/done")
    state_dir: Path = Path("/state")
    simulate_tee: bool = False
    simulate_initdata: Path | None = None
    simulate_host_data_from_cmdline: bool = False
    simulate_measurement: bytes = bytes(48)
    retry_interval: float = RETRY_INTERVAL
    call_timeout: float = 30.0
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


def build_issuer(settings: Settings) -> Issuer:
    if settings.simulate_tee:
        from attestation import testing  # the simulator, only when asked for

        root = settings.environ.get(testing.SIMULATED_ROOT_ENV)
        if not root:
            raise InitializerError("creating issuer", f"--simulate-tee needs {testing.SIMULATED_ROOT_ENV}")
        initdata = settings.simulate_initdata.read_bytes() if settings.simulate_initdata else None
        host_data = None
        if settings.simulate_host_data_from_cmdline:
            try:
                host_data = testing.host_data_from_cmdline()
            except (OSError, testing.CmdlineHostDataError) as exc:
                raise InitializerError("creating issuer", str(exc)) from exc
        return SnpIssuer(testing.snp_provider(Path(root), initdata, settings.simulate_measurement, host_data))
    from attestation import NoProviderError, detect_provider

    try:
        provider = detect_provider(allow_simulated=False)
    except NoProviderError as exc:
        raise InitializerError(
            "creating issuer",
            f"{exc}; without a TEE, run with --simulate-tee and ATTESTATION_SIMULATED_ROOT set to the "
            "Coordinator's simulated root",
        ) from exc
    issuer: Issuer = issuer_for(provider)
    return issuer


def request_mesh_cert(
    host: str, port: int, config: ClientConfig, settings: Settings, stop: threading.Event
) -> Any:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("event=new_mesh_cert_failed attempt=%d retry_in=%gs error=%r",
                    state.attempt_number, settings.retry_interval, str(exc))

    def stop_requested(_state: RetryCallState) -> bool:
        return stop.is_set()

    retrying = Retrying(
        wait=wait_fixed(settings.retry_interval),
        retry=retry_if_exception_type(Exception),
        stop=stop_requested,
        sleep=lambda seconds: _wait(stop, seconds),  # SIGTERM cuts the 5 s wait short
        before_sleep=before_sleep,
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            if stop.is_set():
                raise StoppedError()
            return call(host, port, config, NEW_MESH_CERT, meshapi_pb2.NewMeshCertRequest(),
                        settings.call_timeout)
    raise StoppedError()  # pragma: no cover - Retrying either returns or raises


def _wait(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


def run(settings: Settings, stop: threading.Event) -> dict[str, float]:
    """The whole flow; returns step timings in seconds. Raises InitializerError or StoppedError."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    env = settings.environ
    log.info("event=start component=initializer")
    if env.get("CONTRAST_SERVICE_MESH_DISABLED"):
        try:
            removed = remove_default_deny()
        except Exception as exc:
            raise InitializerError("removing default-deny rule", exc) from exc
        log.info("event=default_deny_removed removed=%s", removed)
    device = env.get("CRYPTSETUP_DEVICE", "")
    if device:  # a device that is not there fails now, not after the Coordinator answered
        try:
            block_device_at(Path(device))
        except StorageError as exc:
            raise InitializerError("setting up encrypted volume", exc) from exc
    address = env.get("COORDINATOR_HOST", "")
    if not address:
        raise InitializerError("reading environment", "COORDINATOR_HOST is not set")
    host, port = split_host_port(address, MESH_PORT)
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        issuer = build_issuer(settings)
    except InitializerError:
        raise
    except Exception as exc:
        raise InitializerError("creating issuer", exc) from exc
    config = ClientConfig(issuer=issuer, validators=None, key=key)
    t1 = time.perf_counter()
    response = request_mesh_cert(host, port, config, settings, stop)
    timings["new_mesh_cert"] = time.perf_counter() - t1
    material = MeshMaterial(
        mesh_ca=response.MeshCACert, cert_chain=response.CertChain, root_ca=response.RootCACert,
        workload_secret=response.WorkloadSecret,
    )
    try:
        write_mesh_files(settings.out_dir, key, material)
    except OSError as exc:
        raise InitializerError("writing mesh files", exc) from exc
    if device:
        # Contrast's secure-pv: mount at /state, then /done, then hold the mount until SIGTERM.
        if not material.workload_secret:
            raise InitializerError("setting up encrypted volume", "the Coordinator sent no workload secret")
        try:
            serve_secure_pv(device, settings.state_dir, material.workload_secret, settings.done_file, stop)
        except SecurePvError as exc:
            raise InitializerError(exc.step, exc) from exc
        timings["total"] = time.perf_counter() - t0
        return timings
    try:
        write_done(settings.done_file)
    except OSError as exc:
        raise InitializerError("writing done file", exc) from exc
    timings["total"] = time.perf_counter() - t0
    log.info("event=done out_dir=%s secret=%s total_ms=%.1f", settings.out_dir,
             bool(material.workload_secret), timings["total"] * 1000)
    return timings
