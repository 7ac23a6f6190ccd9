"""Command line: ``python -m image measure ...`` and ``python -m image reference-values ...``.

``add_parser(subparsers)`` registers both subcommands on the image dispatcher; ``main(argv)`` runs
them standalone (``python -m image.measure``). Every failure is a :class:`MeasureError` printed as one
``error: ...`` line with exit status 1; results go to stdout, or atomically to ``--output``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from image.measure.digest import LaunchDigest
from image.measure.errors import MeasureError, UnsupportedInputError
from image.measure.eventlog import parse_ccel, parse_json_events, replay
from image.measure.firmware import parse_firmware
from image.measure.idblock import GuestPolicy, IdBlock, contrast_id_auth, contrast_id_key, id_key_digest
from image.measure.reference_values import (
    PLATFORM_NAMES,
    PRODUCTS,
    MinimumTcb,
    id_blocks,
    load_image_description,
    snp_digests,
    snp_reference_values,
    tdx_reference_values,
)
from image.measure.sev_hashes import BootHashes
from image.measure.snp import (
    ovmf_pages_digest,
    sev_digest,
    seves_digest,
    seves_vmsa_pages,
    snp_launch_digest,
    snp_vmsa_pages,
    svsm_launch_digest,
    svsm_parse,
    svsm_vmsa_pages,
)
from image.measure.tdvf import PageOrder, mrtd
from image.measure.tdx_boot import InitrdArg, TdxBootInputs, predict_rtmrs
from image.measure.vmsa import VmmType, cpu_signature, parse_vcpu

__all__ = ["add_parser", "main"]

log = logging.getLogger("image.measure")
SNP_MODES = ("snp", "snp:ovmf-hash", "seves", "sev", "snp:svsm")


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UnsupportedInputError(f"cannot read {path}: {exc.strerror}") from None


def _int(text: str) -> int:
    return int(text, 0)


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


def write_output(text: str, output: str | None) -> None:
    """Print, or write ``output`` atomically (temp file in the same directory, fsync, rename)."""
    if output is None or output == "-":
        sys.stdout.write(text)
        return
    target = Path(output)
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- measure ---

def _vcpu_sig(args: argparse.Namespace) -> int | None:
    if args.vcpu_type is not None:
        return parse_vcpu(args.vcpu_type)
    if args.vcpu_sig is not None:
        return int(args.vcpu_sig)
    if args.vcpu_family is not None:
        if args.vcpu_model is None or args.vcpu_stepping is None:
            raise UnsupportedInputError("--vcpu-family needs --vcpu-model and --vcpu-stepping")
        return cpu_signature(args.vcpu_family, args.vcpu_model, args.vcpu_stepping)
    return None


def _boot(args: argparse.Namespace) -> BootHashes | None:
    if args.kernel is None:
        if args.initrd is not None or args.append is not None:
            raise UnsupportedInputError("--initrd and --append require --kernel")
        return None
    kernel = _read(args.kernel)
    assert kernel is not None
    return BootHashes.of(kernel, _read(args.initrd), args.append)


def _dump(pages: Sequence[bytes], directory: str | None) -> None:
    if directory is None:
        return
    for i, page in enumerate(pages):
        write_output_bytes(Path(directory) / f"vmsa{i}.bin", page)


def write_output_bytes(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _run_snp_mode(args: argparse.Namespace) -> int:
    mode: str = args.mode
    fw_bytes = _read(args.ovmf)
    assert fw_bytes is not None
    fw = parse_firmware(fw_bytes)
    vmm = VmmType(args.vmm_type)
    sig = _vcpu_sig(args)
    if args.snp_ovmf_hash and mode != "snp":
        raise UnsupportedInputError("--snp-ovmf-hash only works with mode snp")
    if mode in ("snp", "seves", "snp:svsm") and args.vcpus is None:
        raise UnsupportedInputError(f"--vcpus is required in mode {mode}")
    needs_sig = mode in ("seves", "snp:svsm") or (mode == "snp" and vmm is not VmmType.GCE)
    if needs_sig and sig is None:
        raise UnsupportedInputError(
            f"missing --vcpu-type, --vcpu-sig or --vcpu-family in mode {mode} (VMM {vmm.value})")
    if mode == "snp":
        ovmf_hash = LaunchDigest(bytes.fromhex(args.snp_ovmf_hash)) if args.snp_ovmf_hash else None
        result = snp_launch_digest(fw, args.vcpus, sig, args.guest_features, _boot(args), vmm, ovmf_hash)
        _dump(list(snp_vmsa_pages(fw, args.vcpus, sig, args.guest_features, vmm)), args.dump_vmsa)
    elif mode == "snp:ovmf-hash":
        result = ovmf_pages_digest(fw).value
    elif mode == "seves":
        assert sig is not None
        result = seves_digest(fw, args.vcpus, sig, _boot(args), vmm)
        _dump(list(seves_vmsa_pages(fw, args.vcpus, sig, vmm)), args.dump_vmsa)
    elif mode == "sev":
        result = sev_digest(fw, _boot(args))
    else:
        if vmm is not VmmType.QEMU:
            raise UnsupportedInputError("snp:svsm is only defined for QEMU")
        if args.svsm is None or args.vars_size is None:
            raise UnsupportedInputError("snp:svsm needs --svsm and --vars-size")
        if args.kernel is not None:
            raise UnsupportedInputError("snp:svsm does not measure a kernel")
        svsm = _read(args.svsm)
        assert svsm is not None and sig is not None
        result = svsm_launch_digest(fw, svsm, args.vars_size, args.vcpus, sig)
        _dump(list(svsm_vmsa_pages(svsm_parse(fw, svsm, args.vars_size), args.vcpus, sig)), args.dump_vmsa)
    text = base64.b64encode(result).decode() if args.output_format == "base64" else result.hex()
    write_output(text + "\n", None)
    return 0


def _run_id_block(args: argparse.Namespace) -> int:
    digest = bytes.fromhex(args.digest)
    policy = args.policy if args.policy is not None else GuestPolicy().to_u64()
    block = IdBlock(digest, policy)
    key = contrast_id_key(block)
    out = {
        "IDBlock": base64.b64encode(block.to_bytes()).decode(),
        "IDAuth": base64.b64encode(contrast_id_auth(block)).decode(),
        "IDKeyDigest": id_key_digest(key).hex(),
        "GuestPolicy": hex(policy),
    }
    write_output(json.dumps(out, indent=2) + "\n", args.output)
    return 0


def _run_tdx_mrtd(args: argparse.Namespace) -> int:
    fw_bytes = _read(args.ovmf)
    assert fw_bytes is not None
    write_output(mrtd(parse_firmware(fw_bytes), PageOrder(args.page_order)).hex() + "\n", None)
    return 0


def _load_events(path: str) -> list[Any]:
    data = _read(path)
    assert data is not None
    if data.lstrip()[:1] in (b"[", b"{"):
        doc = json.loads(data)
        if isinstance(doc, dict) and "event_log" in doc:
            inner = doc["event_log"]
            return parse_json_events(inner if isinstance(inner, str) else json.dumps(inner))
        return parse_json_events(data)
    return parse_ccel(data)[0]


def _run_tdx_replay(args: argparse.Namespace) -> int:
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


def _run_tdx_rtmr(args: argparse.Namespace) -> int:
    kernel = _read(args.kernel)
    assert kernel is not None
    inputs = _tdx_inputs(kernel, _read(args.initrd), args.append or "", args)
    rtmrs = predict_rtmrs(inputs, _rtmr0(args))
    write_output(json.dumps({f"rtmr{i}": r.hex() for i, r in enumerate(rtmrs)}, indent=2) + "\n", None)
    return 0


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
    p.add_argument("--initrd-arg", choices=[a.value for a in InitrdArg], default=InitrdArg.PREPEND.value,
                   help="how OVMF adds initrd=initrd to the command line (default: prepend, edk2 >= 2023)")
    p.add_argument("--rtmr0", help="RTMR0 of the target host configuration (hex)")
    p.add_argument("--event-log", help="CCEL or JSON event log captured on the target host (RTMR0 source)")


def _add_measure(sub: Any) -> None:
    p = sub.add_parser("measure", help="launch measurements (SNP digest, ID block, TDX MRTD/RTMRs)")
    modes = p.add_subparsers(dest="mode", required=True, metavar="MODE")
    for mode in SNP_MODES:
        m = modes.add_parser(mode, help=f"{mode} launch digest")
        m.add_argument("--ovmf", required=True, help="firmware image passed with -bios")
        m.add_argument("--vcpus", type=int)
        _add_vcpu_options(m)
        m.add_argument("--vmm-type", choices=[v.value for v in VmmType], default=VmmType.QEMU.value)
        m.add_argument("--kernel")
        m.add_argument("--initrd")
        m.add_argument("--append")
        m.add_argument("--guest-features", type=_int, default=0x1, help="SEV_FEATURES (default 0x1)")
        m.add_argument("--snp-ovmf-hash", help="precomputed snp:ovmf-hash digest (skips hashing the pages)")
        m.add_argument("--output-format", choices=("hex", "base64"), default="hex")
        m.add_argument("--dump-vmsa", metavar="DIR", help="write vmsa<N>.bin into DIR")
        m.add_argument("--svsm", help="Coconut-SVSM image (snp:svsm)")
        m.add_argument("--vars-size", type=_int, help="OVMF_VARS size in bytes (snp:svsm)")
        m.set_defaults(func=_guarded(_run_snp_mode))
    i = modes.add_parser("id-block", help="Contrast ID block + ID auth for a digest and guest policy")
    i.add_argument("--digest", required=True, help="launch digest (96 hex)")
    i.add_argument("--policy", type=_int, help="guest policy u64 (default 0x30000)")
    i.add_argument("--output")
    i.set_defaults(func=_guarded(_run_id_block))
    t = modes.add_parser("tdx-mrtd", help="MRTD from the TDVF metadata")
    t.add_argument("--ovmf", required=True)
    t.add_argument("--page-order", choices=[o.value for o in PageOrder], default=PageOrder.TWO_PASS.value,
                   help="two-pass: QEMU 8.x/Contrast; single-pass: QEMU >= 9")
    t.set_defaults(func=_guarded(_run_tdx_mrtd))
    r = modes.add_parser("tdx-replay", help="RTMR0-3 replayed from a CCEL or JSON event log")
    r.add_argument("--event-log", required=True)
    r.set_defaults(func=_guarded(_run_tdx_replay))
    k = modes.add_parser("tdx-rtmr", help="RTMR predictions for direct kernel boot")
    k.add_argument("--kernel", required=True)
    k.add_argument("--initrd")
    k.add_argument("--append", default="")
    _add_tdx_boot_options(k)
    k.set_defaults(func=_guarded(_run_tdx_rtmr))


# --- reference-values ---

def _run_reference_values(args: argparse.Namespace) -> int:
    desc = load_image_description(Path(args.image_description))
    fw_bytes = _read(args.ovmf)
    assert fw_bytes is not None
    fw = parse_firmware(fw_bytes)
    doc: dict[str, Any]
    if args.platform == "metal-qemu-snp":
        tcb = None
        if args.minimum_tcb is not None:
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
            write_output(json.dumps(id_blocks(digests), indent=2) + "\n", args.id_blocks)
    else:
        inputs = _tdx_inputs(desc.kernel.read_bytes(),
                             desc.initrd.read_bytes() if desc.initrd else None, desc.cmdline, args)
        entries = tdx_reference_values(
            fw, inputs, _rtmr0(args), PageOrder(args.page_order), mrseam=args.mrseam,
            platform=PLATFORM_NAMES[args.platform] if args.with_platform else None)
        doc = {"tdx": entries}
    write_output(json.dumps(doc, indent=2) + "\n", args.output)
    return 0


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
    p.add_argument("--minimum-tcb", help="bootloader,tee,snp,microcode (SNP; omitted when not given)")
    p.add_argument("--id-blocks", metavar="FILE", help="also write per-product/vCPU ID blocks (SNP)")
    p.add_argument("--with-platform", action=argparse.BooleanOptionalAction, default=False,
                   help="add the Platform marker field to each entry")
    p.add_argument("--page-order", choices=[o.value for o in PageOrder], default=PageOrder.TWO_PASS.value)
    p.add_argument("--mrseam", help="TDX module measurement (hex), if known")
    _add_tdx_boot_options(p)
    p.add_argument("--output", help="write here atomically instead of stdout")
    p.set_defaults(func=_guarded(_run_reference_values))


def add_parser(subparsers: Any) -> None:
    """Register ``measure`` and ``reference-values`` on the image dispatcher's subparsers."""
    _add_measure(subparsers)
    _add_reference_values(subparsers)


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command so a dispatcher calling ``args.func(args)`` gets exit codes, not tracebacks."""
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except MeasureError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:  # malformed hex given on the command line
            print(f"error: invalid argument: {exc}", file=sys.stderr)
            return 2
    return run


def run(args: argparse.Namespace) -> int:
    result: int = args.func(args)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image.measure", description=__doc__)
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
