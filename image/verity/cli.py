"""``python -m image verity ...``: veritysetup's format/verify/dump with its option spellings, plus
``table`` for the kernel table line.

Exit codes follow veritysetup: 0 success; 1 bad parameters, unusable device, wrong root hash;
2 corrupt data or hash area.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.cli import ArgumentParser
from common.files import atomic_write_text

from .errors import (
    HashAreaCorruptError,
    ParameterError,
    RootHashMismatchError,
    VerityError,
)
from .params import VerityParams, parse_salt

__all__ = ["add_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CORRUPT = 2
PAGE_SIZE = os.sysconf("SC_PAGESIZE")


def _int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"negative: {text!r}")
    return value


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-?", "--help", action="help", help="show this help and exit")
    p.add_argument("-h", "--hash", dest="hash_name", default="sha256", help="hash algorithm (default sha256)")
    p.add_argument("--data-block-size", type=_int, default=4096, help="data block size in bytes")
    p.add_argument("--hash-block-size", type=_int, default=4096, help="hash block size in bytes")
    p.add_argument("-s", "--salt", default=None,
                   help="salt as hex, or '-' for none (default: 32 random bytes)")
    p.add_argument("--format", dest="hash_type", type=_int, default=1, help="0 = Chrome OS, 1 = normal")
    p.add_argument("--no-superblock", action="store_true", help="do not write/read the superblock")
    p.add_argument("--data-blocks", type=_int, default=0, help="number of data blocks (default: whole file)")
    p.add_argument("--hash-offset", type=_int, default=0,
                   help="byte offset of the hash area on the hash device")
    p.add_argument("--uuid", default=None, help="superblock UUID for format (default: random)")
    p.add_argument("--workers", type=_int, default=None, help="hashing processes (default: available CPUs)")


def _params(args: argparse.Namespace) -> VerityParams:
    return VerityParams(
        hash_name=args.hash_name, data_block_size=args.data_block_size, hash_block_size=args.hash_block_size,
        salt=None if args.salt is None else parse_salt(args.salt), hash_type=args.hash_type,
        superblock=not args.no_superblock, uuid=getattr(args, "uuid", None),
        data_blocks=args.data_blocks or None, hash_offset=args.hash_offset)


def _write_root_hash_file(path: Path, root_hex: str) -> None:
    # veritysetup writes lowercase hex without a newline, mode 0600; we also replace atomically.
    atomic_write_text(path, root_hex, mode=0o600)


def _cmd_format(args: argparse.Namespace) -> int:
    from .builder import format_hash_tree
    from .result import veritysetup_report

    params = _params(args)
    if params.data_block_size > PAGE_SIZE:
        print(f"WARNING: Kernel cannot activate device if data block size exceeds page size ({PAGE_SIZE}).",
              file=sys.stderr)
    result = format_hash_tree(args.data_device, args.hash_device, params, workers=args.workers)
    sys.stdout.write(veritysetup_report(result, args.hash_device))
    if args.root_hash_file:
        _write_root_hash_file(Path(args.root_hash_file), result.root_hex)
    return EXIT_OK


def _read_root_hash_file(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(1024).strip()
    except OSError as exc:
        raise ParameterError("root hash file", path, f"a readable file ({exc.strerror})") from exc


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verifier import verify

    if args.root_hash is None and not args.root_hash_file:
        raise ParameterError("root hash", None, "<root_hash> or --root-hash-file")
    root = args.root_hash if args.root_hash is not None else _read_root_hash_file(args.root_hash_file)
    params = _params(args)
    if not params.superblock and args.salt is None:
        # veritysetup would pick a random salt here and fail the comparison; say why instead.
        raise ParameterError("salt", None, "the salt used at format time with --no-superblock ('-' for none)")
    verify(args.data_device, args.hash_device, root, params, workers=args.workers)
    if args.verbose:
        print("Command successful.")
    return EXIT_OK


def _cmd_dump(args: argparse.Namespace) -> int:
    from .verifier import read_superblock

    sb = read_superblock(args.hash_device, args.hash_offset)
    print(f"VERITY header information for {args.hash_device}")
    print(f"UUID:            \t{sb.uuid}")
    print(f"Hash type:       \t{sb.hash_type}")
    print(f"Data blocks:     \t{sb.data_blocks}")
    print(f"Data block size: \t{sb.data_block_size}")
    print(f"Hash block size: \t{sb.hash_block_size}")
    print(f"Hash algorithm:  \t{sb.hash_name}")
    print(f"Salt:            \t{sb.salt.hex() or '-'}")
    return EXIT_OK


def _cmd_table(args: argparse.Namespace) -> int:
    from .result import VerityResult
    from .table import dm_mod_create, kernel_table
    from .verifier import params_from_superblock

    if args.from_superblock:
        params = params_from_superblock(args.from_superblock, args.hash_offset)
    else:
        if args.salt is None:
            raise ParameterError("salt", None, "--salt (hex or '-') or --from-superblock")
        if not args.data_blocks:
            raise ParameterError("data blocks", 0, "--data-blocks or --from-superblock")
        params = _params(args)
    try:
        root = bytes.fromhex(args.root_hash)
    except ValueError:
        raise ParameterError("root hash", args.root_hash, "hex digits") from None
    table = kernel_table(VerityResult.describe(params, root), args.data_dev, args.hash_dev,
                         optional=args.opt)
    print(dm_mod_create(table, name=args.dm_mod_create) if args.dm_mod_create else table)
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``verity`` on the ``python -m image`` dispatcher (see docs/verity.md for the contract)."""
    verity = subparsers.add_parser("verity", help="dm-verity hash trees (veritysetup compatible)",
                                   description="dm-verity hash trees, bit-exact with veritysetup.")
    actions = verity.add_subparsers(dest="verity_action", required=True)

    fmt = actions.add_parser("format", add_help=False, help="build the hash tree (veritysetup format)")
    fmt.add_argument("data_device")
    fmt.add_argument("hash_device")
    _common_options(fmt)
    fmt.add_argument("--root-hash-file", default=None, help="also write the root hash (hex) to this file")
    fmt.set_defaults(func=_guarded(_cmd_format))

    ver = actions.add_parser("verify", add_help=False,
                             help="check data against the tree (veritysetup verify)")
    ver.add_argument("data_device")
    ver.add_argument("hash_device")
    ver.add_argument("root_hash", nargs="?", default=None)
    _common_options(ver)
    ver.add_argument("--root-hash-file", default=None, help="read the root hash (hex) from this file")
    ver.add_argument("-v", "--verbose", action="store_true")
    ver.set_defaults(func=_guarded(_cmd_verify))

    dump = actions.add_parser("dump", help="print the superblock (veritysetup dump)")
    dump.add_argument("hash_device")
    dump.add_argument("--hash-offset", type=_int, default=0)
    dump.set_defaults(func=_guarded(_cmd_dump))

    tab = actions.add_parser("table", add_help=False,
                             help="print the kernel dm table line (or dm-mod.create=)")
    tab.add_argument("data_dev", help="data device as the kernel sees it (/dev/vda1 or major:minor)")
    tab.add_argument("hash_dev", help="hash device as the kernel sees it")
    tab.add_argument("--root-hash", required=True)
    _common_options(tab)
    tab.add_argument("--from-superblock", metavar="HASH_FILE", default=None,
                     help="take parameters from the superblock of this hash file (at --hash-offset)")
    tab.add_argument("--opt", action="append", default=[], help="optional table argument (repeatable)")
    tab.add_argument("--dm-mod-create", metavar="NAME", nargs="?", const="dm-verity", default=None,
                     help="print the quoted dm-mod.create= kernel parameter for device NAME")
    tab.set_defaults(func=_guarded(_cmd_table))


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map errors onto veritysetup's messages and exit codes (the dispatcher just calls func)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except HashAreaCorruptError as exc:
            if exc.kind == "digest":
                print(f"Verification failed at position {exc.position}.", file=sys.stderr)
            else:
                print(f"Spare area is not zeroed at position {exc.position}.", file=sys.stderr)
            print("Verification of data area failed.", file=sys.stderr)
            return EXIT_CORRUPT
        except RootHashMismatchError:
            print("Verification of root hash failed.", file=sys.stderr)
            return EXIT_FAILURE
        except VerityError as exc:
            print(f"verity: {exc}", file=sys.stderr)
            return EXIT_FAILURE

    return run


def main(argv: list[str] | None = None) -> int:
    """``python -m image.verity``: the same commands without the ``verity`` word."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    parser = ArgumentParser(prog="python -m image")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["verity", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
