"""Command line: ``python -m image measure ...`` and ``python -m image reference-values ...``.

``add_parser(subparsers)`` registers both commands on the ``python -m image`` dispatcher and is
cheap to import: the handlers live in :mod:`image.measure.commands` and are imported when a command
runs. ``main(argv)`` runs the same commands standalone, the module name standing for the ``measure``
word as ``python -m image.verity`` does for ``verity``: ``python -m image.measure snp ...``,
``python -m image.measure tdx-mrtd ...``, ``python -m image.measure reference-values ...``. A
:class:`MeasureError` becomes one ``error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from common.cli import ArgumentParser
from image.measure.errors import MeasureError
from image.measure.platforms import PLATFORM_NAMES, PRODUCTS

__all__ = ["add_parser", "main"]

SNP_MODES = ("snp", "snp:ovmf-hash", "seves", "sev", "snp:svsm")
# Mirrors of the enum values (VmmType, PageOrder, InitrdArg), kept here so --help needs no imports;
# tests/measure/test_cli.py checks they agree.
VMM_TYPES = ("QEMU", "ec2", "gce")
PAGE_ORDERS = ("two-pass", "single-pass")
INITRD_ARGS = ("prepend", "append", "none")


def _handler(name: str, module: str = "commands") -> Callable[[argparse.Namespace], int]:
    """A handler that imports its commands module on first use and reports MeasureError as exit 1."""
    def run(args: argparse.Namespace) -> int:
        commands = importlib.import_module(f"image.measure.{module}")
        try:
            result: int = getattr(commands, name)(args)
            return result
        except MeasureError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:  # malformed hex given on the command line
            print(f"error: invalid argument: {exc}", file=sys.stderr)
            return 2
    return run


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _vcpu_counts(text: str) -> list[int]:
    """``N`` or ``A..B``."""
    try:
        if ".." in text:
            lo, hi = text.split("..", 1)
            counts = list(range(int(lo), int(hi) + 1))
        else:
            counts = [int(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or A..B, got {text!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > 512:
        raise argparse.ArgumentTypeError(f"vCPU counts must be within 1..512, got {text!r}")
    return counts


def _add_vcpu_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--vcpu-type", help="QEMU CPU model, e.g. EPYC-Milan, or a signature like 0xa00f11")
    g.add_argument("--vcpu-sig", type=_int, help="CPUID(1).EAX signature")
    g.add_argument("--vcpu-family", type=int)
    p.add_argument("--vcpu-model", type=int)
    p.add_argument("--vcpu-stepping", type=int)


def _add_tdx_boot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qemu-patches-kernel", action="store_true",
                   help="QEMU < 10 rewrites the bzImage setup header before OVMF measures it")
    p.add_argument("--initrd-arg", choices=INITRD_ARGS, default="prepend",
                   help="how OVMF adds initrd=initrd to the command line (default: prepend, edk2 >= 2023)")
    p.add_argument("--rtmr0", help="RTMR0 of the target host configuration (hex)")
    p.add_argument("--event-log", help="CCEL or JSON event log captured on the target host (RTMR0 source)")


def _add_measure(sub: Any) -> None:
    p = sub.add_parser("measure", help="launch measurements (SNP digest, ID block, TDX MRTD/RTMRs)")
    _add_modes(p.add_subparsers(dest="mode", required=True, metavar="MODE"))


def _add_modes(modes: Any) -> None:
    for mode in SNP_MODES:
        m = modes.add_parser(mode, help=f"{mode} launch digest")
        m.add_argument("--ovmf", required=True, help="firmware image passed with -bios")
        m.add_argument("--vcpus", type=int)
        _add_vcpu_options(m)
        m.add_argument("--vmm-type", choices=VMM_TYPES, default="QEMU")
        m.add_argument("--kernel")
        m.add_argument("--initrd")
        m.add_argument("--append")
        m.add_argument("--guest-features", type=_int, default=0x1, help="SEV_FEATURES (default 0x1)")
        m.add_argument("--snp-ovmf-hash", help="precomputed snp:ovmf-hash digest (skips hashing the pages)")
        m.add_argument("--output-format", choices=("hex", "base64"), default="hex")
        m.add_argument("--dump-vmsa", metavar="DIR", help="write vmsa<N>.bin into DIR")
        m.add_argument("--svsm", help="Coconut-SVSM image (snp:svsm)")
        m.add_argument("--vars-size", type=_int, help="OVMF_VARS size in bytes (snp:svsm)")
        m.set_defaults(func=_handler("run_snp_mode"))
    i = modes.add_parser("id-block", help="Contrast ID block + ID auth for a digest and guest policy")
    i.add_argument("--digest", required=True, help="launch digest (96 hex)")
    i.add_argument("--policy", type=_int, help="guest policy u64 (default 0x30000)")
    i.add_argument("--output")
    i.set_defaults(func=_handler("run_id_block"))
    t = modes.add_parser("tdx-mrtd", help="MRTD from the TDVF metadata")
    t.add_argument("--ovmf", required=True)
    t.add_argument("--page-order", choices=PAGE_ORDERS, default="two-pass",
                   help="two-pass: QEMU 8.x/Contrast; single-pass: QEMU >= 9")
    t.set_defaults(func=_handler("run_tdx_mrtd", "commands_tdx"))
    r = modes.add_parser("tdx-replay", help="RTMR0-3 replayed from a CCEL or JSON event log")
    r.add_argument("--event-log", required=True)
    r.set_defaults(func=_handler("run_tdx_replay", "commands_tdx"))
    k = modes.add_parser("tdx-rtmr", help="RTMR predictions for direct kernel boot")
    k.add_argument("--kernel", required=True)
    k.add_argument("--initrd")
    k.add_argument("--append", default="")
    _add_tdx_boot_options(k)
    k.set_defaults(func=_handler("run_tdx_rtmr", "commands_tdx"))


def _add_reference_values(sub: Any) -> None:
    p = sub.add_parser("reference-values", help="manifest ReferenceValues JSON for a built image")
    p.add_argument("--image-description", required=True, help="BUILD.json written by the image build")
    p.add_argument("--ovmf", required=True)
    p.add_argument("--platform", required=True, choices=sorted(PLATFORM_NAMES))
    p.add_argument("--vcpus", type=_vcpu_counts, help="N or A..B (default 1..8)")
    p.add_argument("--product", action="append", choices=sorted(PRODUCTS),
                   help="repeatable (default Milan and Genoa)")
    p.add_argument("--vcpu-iteration", action="store_true",
                   help="emit the 1-vCPU seed with APEIP instead of one entry per vCPU count")
    p.add_argument("--minimum-tcb", help="bootloader,tee,snp,microcode (SNP; default 0,0,0,0 with a warning)")
    p.add_argument("--id-blocks", metavar="FILE", help="also write per-product/vCPU ID blocks (SNP)")
    p.add_argument("--with-platform", action=argparse.BooleanOptionalAction, default=True,
                   help="add the Platform marker field to each entry (default on)")
    p.add_argument("--page-order", choices=PAGE_ORDERS, default="two-pass")
    p.add_argument("--mrseam", help="TDX module measurement (hex); required for metal-qemu-tdx")
    _add_tdx_boot_options(p)
    p.add_argument("--output", help="write here atomically instead of stdout")
    p.set_defaults(func=_handler("run_reference_values", "commands_tdx"))


def add_parser(subparsers: Any) -> None:
    """Register ``measure`` and ``reference-values`` on the image dispatcher's subparsers."""
    _add_measure(subparsers)
    _add_reference_values(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m image.measure",
        description="Launch measurements (SNP digest, ID block, TDX MRTD/RTMRs) and reference values; "
                    "the same commands as 'python -m image measure MODE' and 'python -m image "
                    "reference-values'.")
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    _add_modes(modes)
    _add_reference_values(modes)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
