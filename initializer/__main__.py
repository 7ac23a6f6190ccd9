"""python -m initializer [--out-dir DIR]  (reads COORDINATOR_HOST like Contrast's initializer)

python -m initializer cryptsetup -d DEVICE -m MOUNT_POINT  (Contrast's subcommand: open the
encrypted volume keyed from the workload secret, mount it, write /done, hold it until SIGTERM)
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from common.cli import ArgumentParser
from common.logs import setup_logging
from initializer.run import InitializerError, Settings, StoppedError, run
from initializer.securepv import SECRET_FILE, SecurePvError, read_workload_secret, serve_secure_pv

log = logging.getLogger("initializer")


def _stop_on_signals() -> threading.Event:
    """An event SIGTERM or SIGINT sets: the long-running steps return when it is set."""
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def cryptsetup_main(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m initializer cryptsetup", description=(
        "Open the encrypted persistent volume on DEVICE (LUKS2, aes-xts + hmac-sha256, keyed from "
        "the workload secret; formatted only if it has no LUKS header), mount it at MOUNT_POINT, "
        "write the done file and keep it mounted until SIGTERM."
    ))
    p.add_argument("-d", "--device-path", required=True)
    p.add_argument("-m", "--mount-point", required=True, type=Path)
    p.add_argument("--secret-file", type=Path, default=SECRET_FILE)
    p.add_argument("--done-file", type=Path, default=Path("/done"))
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    stop = _stop_on_signals()
    try:
        serve_secure_pv(args.device_path, args.mount_point, read_workload_secret(args.secret_file),
                        args.done_file, stop)
    except SecurePvError as exc:
        log.error("event=failed step=%r error=%r", exc.step, str(exc))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cryptsetup"]:
        return cryptsetup_main(argv[1:])
    p = ArgumentParser(prog="python -m initializer", description=(
        "Init container: attests to the Coordinator (COORDINATOR_HOST), writes the mesh "
        "certificates and the workload secret."
    ))
    p.add_argument("--out-dir", type=Path, default=Path("/contrast"))
    p.add_argument("--done-file", type=Path, default=Path("/done"))
    p.add_argument("--simulate-tee", action="store_true",
                   help="allow the simulated SNP provider (root from ATTESTATION_SIMULATED_ROOT)")
    p.add_argument("--simulate-initdata", type=Path, help="initdata to derive simulated HOST_DATA")
    p.add_argument("--simulate-host-data-from-cmdline", action="store_true",
                   help="simulated HOST_DATA from the kernel command line's cg.test.hostdata (a TEE-less pod "
                        "VM of the contrast-cc shim's simulated mode) instead of --simulate-initdata")
    p.add_argument("--simulate-measurement", default="00" * 48)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    stop = _stop_on_signals()
    settings = Settings(
        out_dir=args.out_dir, done_file=args.done_file, simulate_tee=args.simulate_tee,
        simulate_initdata=args.simulate_initdata,
        simulate_host_data_from_cmdline=args.simulate_host_data_from_cmdline,
        simulate_measurement=bytes.fromhex(args.simulate_measurement),
    )
    try:
        run(settings, stop)
    except StoppedError:
        log.error("event=stopped reason=signal")
        return 1
    except InitializerError as exc:
        log.error("event=failed step=%r error=%r", exc.step, str(exc))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
