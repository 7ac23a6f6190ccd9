"""Typed errors of the image builder."""

from __future__ import annotations

__all__ = ["BuildError", "ToolError"]


class BuildError(Exception):
    """The image could not be built; the message names the step and what was expected."""


class ToolError(BuildError):
    """An external build tool (mkfs.erofs, veritysetup, ldd) failed."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-3:]
        super().__init__(f"{argv[0]} exited with {returncode}: {' | '.join(tail)}")
