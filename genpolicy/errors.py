"""Typed errors of the policy generator: every one names the resource, the field and what was expected."""

from __future__ import annotations


class GenerateError(Exception):
    """The input cannot be turned into a policy.

    ``resource`` is ``Kind/name`` (or a file name), ``field`` the YAML path of the offending field,
    ``problem`` what was found and ``expected`` what would have been accepted.
    """

    def __init__(self, resource: str, field: str, problem: str, expected: str = "") -> None:
        self.resource = resource
        self.field = field
        self.problem = problem
        self.expected = expected
        text = f"{resource}: {field}: {problem}"
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)


class SettingsError(GenerateError):
    """genpolicy-settings.json or one of its drop-ins is unusable."""


class ImageError(GenerateError):
    """A container image's configuration could not be obtained or is not usable for a policy."""
