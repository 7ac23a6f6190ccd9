"""Fails loudly when a private pyOpenSSL/cryptography internal that aTLS relies on disappears."""

from attestation.atls import _hooks


def test_private_hooks_present() -> None:
    _hooks.require()
