"""Handlers behind ``measure tdx-*`` and ``reference-values`` (imported when one runs)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from image.measure.commands import read_input, write_output
from image.measure.errors import UnsupportedInputError
from image.measure.eventlog import Event, parse_ccel, parse_json_events, replay
from image.measure.firmware import parse_firmware
from image.measure.platforms import PLATFORM_NAMES
from image.measure.tdvf import PageOrder, mrtd
from image.measure.tdx_boot import InitrdArg, TdxBootInputs, predict_rtmrs

__all__ = ["run_reference_values", "run_tdx_mrtd", "run_tdx_replay", "run_tdx_rtmr"]

log = logging.getLogger("image.measure")


def run_tdx_mrtd(args: argparse.Namespace) -> int:
    fw_bytes = read_input(args.ovmf)
    assert fw_bytes is not None
    write_output(mrtd(parse_firmware(fw_bytes), PageOrder(args.page_order)).hex() + "\n", None)
    return 0


def _load_events(path: str) -> list[Event]:
    data = read_input(path)
    assert data is not None
    if data.lstrip()[:1] in (b"[", b"{"):
        doc = json.loads(data)
        if isinstance(doc, dict) and "event_log" in doc:
            inner = doc["event_log"]
            return parse_json_events(inner if isinstance(inner, str) else json.dumps(inner))
        return parse_json_events(data)
    return parse_ccel(data)[0]


def run_tdx_replay(args: argparse.Namespace) -> int:
    rtmrs = replay(_load_events(args.event_log))
    write_output(json.dumps({f"rtmr{i}": r.hex() for i, r in enumerate(rtmrs)}, indent=2) + "\n", None)
    return 0


def _rtmr0(args: argparse.Namespace) -> bytes:
    if args.rtmr0 is not None:
        return bytes.fromhex(args.rtmr0)
    if args.event_log is not None:
        return replay(_load_events(args.event_log))[0]
    raise UnsupportedInputError(
        "RTMR0 depends on the QEMU version, memory size, ACPI tables and firmware variables, not on the "
        "image: pass --rtmr0 HEX or --event-log (a CCEL or JSON log captured on the target host)")


def _tdx_inputs(kernel: bytes, initrd: bytes | None, cmdline: str, args: argparse.Namespace) -> TdxBootInputs:
    return TdxBootInputs(kernel, initrd, cmdline, qemu_patches_kernel=args.qemu_patches_kernel,
                         initrd_arg=InitrdArg(args.initrd_arg))


def run_tdx_rtmr(args: argparse.Namespace) -> int:
    kernel = read_input(args.kernel)
    assert kernel is not None
    inputs = _tdx_inputs(kernel, read_input(args.initrd), args.append or "", args)
    rtmrs = predict_rtmrs(inputs, _rtmr0(args))
    write_output(json.dumps({f"rtmr{i}": r.hex() for i, r in enumerate(rtmrs)}, indent=2) + "\n", None)
    return 0


def run_reference_values(args: argparse.Namespace) -> int:
    from image.measure.reference_values import (
        MinimumTcb,
        id_blocks,
        load_image_description,
        snp_digests,
        snp_reference_values,
        tdx_reference_values,
    )

    desc = load_image_description(Path(args.image_description))
    fw_bytes = read_input(args.ovmf)
    assert fw_bytes is not None
    fw = parse_firmware(fw_bytes)
    doc: dict[str, Any]
    side_outputs: list[tuple[str, str]] = []
    if args.platform == "metal-qemu-snp":
        if args.minimum_tcb is None:
            # Contrast leaves MinimumTCB "expected missing"; our verifier (like Contrast's) refuses
            # missing values, so emit the weakest explicit floor and say so.
            log.warning("event=minimum_tcb_default value=0,0,0,0 hint='pass --minimum-tcb to require "
                        "a firmware TCB floor'")
            tcb = MinimumTcb(0, 0, 0, 0)
        else:
            parts = [int(x, 0) for x in args.minimum_tcb.split(",")]
            if len(parts) != 4:
                raise UnsupportedInputError("--minimum-tcb needs bootloader,tee,snp,microcode")
            tcb = MinimumTcb(*parts)
        products = args.product or ["Milan", "Genoa"]
        counts = args.vcpus or list(range(1, 9))
        digests = snp_digests(fw, desc.boot_hashes(), [1] if args.vcpu_iteration else counts, products)
        entries = snp_reference_values(fw, digests, minimum_tcb=tcb, vcpu_iteration=args.vcpu_iteration,
                                       platform=PLATFORM_NAMES[args.platform] if args.with_platform else None)
        doc = {"snp": entries}
        if args.id_blocks is not None:
            side_outputs.append((json.dumps(id_blocks(digests), indent=2) + "\n", args.id_blocks))
    else:
        if args.mrseam is None:
            raise UnsupportedInputError(
                "--mrseam is required for metal-qemu-tdx: MRSEAM identifies the TDX module build the "
                "host runs, which only the platform operator knows")
        if len(bytes.fromhex(args.mrseam)) != 48:
            raise UnsupportedInputError("--mrseam must be 48 bytes (96 hex characters)")
        kernel = read_input(str(desc.kernel))
        assert kernel is not None
        initrd = read_input(str(desc.initrd)) if desc.initrd else None
        inputs = _tdx_inputs(kernel, initrd, desc.cmdline, args)
        entries = tdx_reference_values(
            fw, inputs, _rtmr0(args), PageOrder(args.page_order), mrseam=args.mrseam,
            platform=PLATFORM_NAMES[args.platform] if args.with_platform else None)
        doc = {"tdx": entries}
    # Everything is computed before anything is written.
    write_output(json.dumps(doc, indent=2) + "\n", args.output)
    for text, path in side_outputs:
        write_output(text, path)
    log.info("event=reference_values platform=%s entries=%d root_hash=%s output=%s", args.platform,
             len(entries), desc.root_hash, args.output or "-")
    return 0


