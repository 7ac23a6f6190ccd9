"""Typed errors of the attestation core.

Everything we raise derives from `AttestationError`, so callers (the Coordinator, the CLI, the
initdata check) can fail closed on one type. Sub-types say which layer failed:

* `ParseError`        bytes do not follow the format (field, offset, what was found);
* `VerificationError` a signature, certificate chain, CRL or date check failed;
* `ValidationError`   claims differ from reference values (every mismatch: field, expected, got);
* `ReferenceValuesError` the reference-value document itself is malformed;
* `ProviderError`     the local device / configfs could not produce evidence.

Messages carry only public data (report fields, certificate names); no key material.
"""

from __future__ import annotations

from dataclasses import dataclass


class AttestationError(Exception):
    """Base class of every error raised by the attestation package."""


class ParseError(AttestationError):
    """Input bytes do not follow the expected layout."""

    def __init__(
        self, message: str, *, field: str = "", offset: int | None = None, found: bytes | int | None = None
    ) -> None:
        self.field = field
        self.offset = offset
        self.found = found
        super().__init__(message)


class VerificationError(AttestationError):
    """A cryptographic or certificate check failed. `step` names the check."""

    def __init__(self, message: str, *, step: str = "") -> None:
        self.step = step
        super().__init__(message)


class SignatureError(VerificationError):
    """A signature over the report, quote, QE report or collateral does not verify."""


class CertificateError(VerificationError):
    """A certificate is missing, malformed, mis-named or does not chain to the trusted root."""


class CertificateExpiredError(CertificateError):
    """A certificate, CRL or collateral item is not valid at the reference time."""


class RevokedError(VerificationError):
    """A certificate is listed in a CRL."""


class CollateralError(VerificationError):
    """TDX collateral (TCB info, QE identity, CRLs) is invalid or does not match the quote."""


class TcbStatusError(CollateralError):
    """The TCB status derived from collateral is not acceptable."""

    def __init__(self, message: str, *, status: str, step: str = "tcb_status") -> None:
        self.status = status
        super().__init__(message, step=step)


@dataclass(frozen=True)
class Mismatch:
    """One differing claim: field name, expected value and value found (hex for bytes)."""

    field: str
    expected: str
    got: str

    def __str__(self) -> str:
        return f"{self.field} is {self.got}, expected {self.expected}"


class ValidationError(AttestationError):
    """Claims do not match reference values.

    `mismatches` lists every differing field of the closest candidate; `per_entry` holds the
    mismatch list of each reference-value entry that was tried (a report passes if any entry
    matches, so a failure has to explain all of them).
    """

    def __init__(self, mismatches: list[Mismatch], *, per_entry: list[list[Mismatch]] | None = None) -> None:
        self.mismatches = list(mismatches)
        self.per_entry = per_entry if per_entry is not None else [self.mismatches]
        if len(self.per_entry) > 1:
            parts = [f"entry {i}: " + "; ".join(str(m) for m in ms) for i, ms in enumerate(self.per_entry)]
            text = "no reference-value entry matches: " + " | ".join(parts)
        else:
            text = "; ".join(str(m) for m in self.mismatches) or "validation failed"
        super().__init__(text)

    @property
    def fields(self) -> list[str]:
        return [m.field for m in self.mismatches]


class ReferenceValuesError(AttestationError):
    """The reference-value JSON is malformed (unknown field, wrong size, disallowed value).

    `expected_missing` marks a value the user still has to fill in (an empty MrSeam, an absent
    MinimumTCB component): still an error, but the one `contrast generate` reports as a to-do.
    """

    def __init__(self, message: str, *, path: str = "", expected_missing: bool = False) -> None:
        self.path = path
        self.reason = message
        self.expected_missing = expected_missing
        self.problems: tuple[ReferenceValuesError, ...] = (self,)
        super().__init__(f"{path}: {message}" if path else message)

    @classmethod
    def grouped(cls, errors: list[ReferenceValuesError]) -> ReferenceValuesError:
        """One error standing for several (each in `.problems`), e.g. every value an entry lacks."""
        flat = [p for e in errors for p in e.problems]
        if len(flat) == 1:
            return flat[0]
        group = cls("; ".join(str(e) for e in flat), expected_missing=all(e.expected_missing for e in flat))
        group.problems = tuple(flat)
        return group


class ProviderError(AttestationError):
    """The local evidence provider failed."""


class NoProviderError(ProviderError):
    """No TEE interface was found on this machine."""


class FirmwareError(ProviderError):
    """The SNP firmware answered with a non-zero status."""

    def __init__(self, message: str, *, fw_error: int, vmm_error: int = 0) -> None:
        self.fw_error = fw_error
        self.vmm_error = vmm_error
        super().__init__(message)


class DeviceLockedError(ProviderError):
    """The guest driver wiped its VMPCK (ENOTTY): no further request can succeed until reboot."""


class GenerationRaceError(ProviderError):
    """Another writer changed the configfs-tsm report entry while we used it."""


__all__ = [
    "AttestationError",
    "CertificateError",
    "CertificateExpiredError",
    "CollateralError",
    "DeviceLockedError",
    "FirmwareError",
    "GenerationRaceError",
    "Mismatch",
    "NoProviderError",
    "ParseError",
    "ProviderError",
    "ReferenceValuesError",
    "RevokedError",
    "SignatureError",
    "TcbStatusError",
    "ValidationError",
    "VerificationError",
]
