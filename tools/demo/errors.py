"""Typed failure of a demo step: the message says what happened and what was expected."""

from __future__ import annotations


class StepFailedError(Exception):
    """A step did not do what it should."""
