"""Local end-to-end demo: `python -m tools.demo` (see docs/demo.md)."""

from __future__ import annotations

from .run import main

__all__ = ["main"]
