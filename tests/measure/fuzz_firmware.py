"""atheris target: firmware parsing and measuring raise only MeasureError.

Run by test_fuzz.py as ``python -m tests.measure.fuzz_firmware -max_total_time=N``; seeds are the
real and synthetic firmwares so the fuzzer starts inside the GUID table and metadata formats.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from image.measure.errors import MeasureError
    from image.measure.firmware import parse_firmware
    from image.measure.snp import snp_launch_digest
    from image.measure.tdvf import PageOrder, mrtd


def _pad(data: bytes) -> bytes:
    # Pad to a page multiple so inputs reach the table parser instead of failing the size check.
    return data + bytes(-len(data) % 4096)


def test_one_input(data: bytes) -> None:
    try:
        fw = parse_firmware(_pad(data))
        snp_launch_digest(fw, 2, 0xA00F11, 1)
        mrtd(fw, PageOrder.TWO_PASS)
    except MeasureError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
