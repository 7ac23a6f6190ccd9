"""Errors raised by the launch-measurement code.

Every failure is a subclass of :class:`MeasureError`, so a caller (the CLI, the reference-value
generator) catches one type. Parsers of untrusted bytes (firmware images, event logs) raise only
the typed errors below; any other exception escaping them is a bug.
"""

from __future__ import annotations

__all__ = [
    "EventLogError",
    "FirmwareError",
    "ImageDescriptionError",
    "MeasureError",
    "UnsupportedInputError",
]


class MeasureError(Exception):
    """Base class of every error in :mod:`image.measure`."""


class FirmwareError(MeasureError):
    """A firmware image (OVMF/TDVF/SVSM) is malformed.

    Carries the structure field that failed, the file offset it was read from (or ``None``), what was
    expected and what was found, so the message reads like
    ``firmware SEV metadata signature at 0x1000: expected b'ASEV', found b'XXXX'``.
    """

    def __init__(self, field: str, offset: int | None, expected: str, found: str) -> None:
        self.field = field
        self.offset = offset
        self.expected = expected
        self.found = found
        where = "" if offset is None else f" at 0x{offset:x}"
        super().__init__(f"firmware {field}{where}: expected {expected}, found {found}")


class UnsupportedInputError(MeasureError):
    """The inputs are well-formed but cannot be measured together.

    Example: a kernel is given but the firmware has no SNP_KERNEL_HASHES section, or an unknown vCPU
    type. The message texts for the kernel-hash cases follow sev-snp-measure so users recognise them.
    """


class EventLogError(MeasureError):
    """A TCG2 / CCEL event log (or a JSON event list) is malformed."""

    def __init__(self, what: str, offset: int | None = None) -> None:
        self.what = what
        self.offset = offset
        where = "" if offset is None else f" at 0x{offset:x}"
        super().__init__(f"event log{where}: {what}")


class ImageDescriptionError(MeasureError):
    """The image description JSON (written by the image build) is missing a field or is invalid."""

    def __init__(self, field: str, expected: str, found: str) -> None:
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(f"image description {field}: expected {expected}, found {found}")
