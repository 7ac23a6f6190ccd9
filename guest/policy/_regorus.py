"""The regorus module, imported with library backtraces off.

regorus reports errors through `anyhow`, which captures a stack backtrace into every error when
RUST_BACKTRACE=1 is set (as in many dev and CI shells): slow on the "rule not defined" path and
hundreds of lines of noise in INTERNAL replies to the host. RUST_LIB_BACKTRACE=0 turns off library
backtraces only (panics still print theirs). It must be set before regorus creates its first error.
"""

from __future__ import annotations

import os

os.environ["RUST_LIB_BACKTRACE"] = "0"

import regorus

__all__ = ["regorus"]
