"""atheris target: the attacker-controlled inputs of guest storage setup raise only typed errors.

Inputs: kata ``X-kata.dmverity.*`` option lists (from the host's CreateContainer request) and
policy pins, and the hybrid-vsock mux frames (the host writes the virtio-serial port).
Run by test_storage_fuzz.py as ``python tests/storage/fuzz_storage.py -max_total_time=N``.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from guest.storage import StorageOptionError, params_from_options, params_from_pin
    from image.build.inside.mux import FrameDecoder, FrameError

PREFIXES = ["X-kata.dmverity-enabled=true", "X-kata.dmverity.roothash=", "X-kata.dmverity.hashoffset=",
            "X-kata.dmverity.salt=", "X-kata.dmverity.blocksize=", "X-kata.dmverity.hashsize=",
            "X-kata.dmverity.algorithm=", "X-kata.dmverity.hashtype=", "X-kata.dmverity.no-superblock=", "ro"]


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    options = [fdp.PickValueInList(PREFIXES) + fdp.ConsumeUnicodeNoSurrogates(70)
               for _ in range(fdp.ConsumeIntInRange(0, 10))]
    with contextlib.suppress(StorageOptionError):
        params_from_options(options)
    pin = {o.split("=", 1)[0].removeprefix("X-kata.dmverity."): o.split("=", 1)[-1] for o in options}
    with contextlib.suppress(StorageOptionError):
        params_from_pin(pin)
    with contextlib.suppress(FrameError):
        FrameDecoder().receive_data(fdp.ConsumeBytes(4096))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
