"""Handlers behind ``measure snp|seves|sev|snp:*`` and ``measure id-block`` (imported when one runs).

Each ``run_*`` takes the parsed arguments and returns an exit code; errors are raised as
:class:`MeasureError` and turned into messages by ``cli``. Results go to stdout or are written
atomically (temp file in the target directory, fsync, rename), so a failure never leaves a partial
file behind. Imports are kept to what a digest needs, so a one-shot CLI run starts fast.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from pathlib import Path

from common.files import atomic_write, atomic_write_text
from image.measure.digest import LaunchDigest
from image.measure.errors import UnsupportedInputError
from image.measure.firmware import parse_firmware
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
from image.measure.vmsa import VmmType, cpu_signature, parse_vcpu

__all__ = ["read_input", "run_id_block", "run_snp_mode", "write_output"]


def read_input(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UnsupportedInputError(f"cannot read {path}: {exc.strerror}") from None


def write_output(text: str, output: str | None) -> None:
    """Print, or write ``output`` atomically (temp file in the same directory, fsync, rename)."""
    if output is None or output == "-":
        sys.stdout.write(text)
        return
    atomic_write_text(Path(output), text, mode=0o644)


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
    kernel = read_input(args.kernel)
    assert kernel is not None
    return BootHashes.of(kernel, read_input(args.initrd), args.append)


def _dump(pages: Sequence[bytes], directory: str | None) -> None:
    if directory is None:
        return
    for i, page in enumerate(pages):
        atomic_write(Path(directory) / f"vmsa{i}.bin", page)



def run_snp_mode(args: argparse.Namespace) -> int:
    mode: str = args.mode
    fw_bytes = read_input(args.ovmf)
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
        svsm = read_input(args.svsm)
        assert svsm is not None and sig is not None
        result = svsm_launch_digest(fw, svsm, args.vars_size, args.vcpus, sig)
        _dump(list(svsm_vmsa_pages(svsm_parse(fw, svsm, args.vars_size), args.vcpus, sig)), args.dump_vmsa)
    text = base64.b64encode(result).decode() if args.output_format == "base64" else result.hex()
    write_output(text + "\n", None)
    return 0


def run_id_block(args: argparse.Namespace) -> int:
    # cryptography (via idblock) is imported only by the commands that need it: keeps `measure snp` fast.
    import json

    from image.measure.idblock import GuestPolicy, IdBlock, contrast_id_auth, contrast_id_key, id_key_digest

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
