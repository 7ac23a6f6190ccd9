"""The private pyOpenSSL/cryptography internals aTLS needs, in one place.

OpenSSL's certificate callback (SSL_CTX_set_cert_cb) is the only way for a client to read the
CertificateRequest CA list *during* the handshake and choose its certificate then; pyOpenSSL has no
public wrapper. We reach it through the cffi binding that pyOpenSSL itself uses (``OpenSSL._util``),
the raw ``SSL_CTX*`` (``Context._context``) and pyOpenSSL's ``SSL*`` -> Connection map
(``Connection._reverse_mapping``). Versions are pinned in pyproject.toml; `require()` fails loudly
(HookMissingError) if any of them disappears, and tests/atls/test_hooks.py calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from OpenSSL import SSL

from attestation.atls.errors import HookMissingError

try:
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib
except ImportError:  # pragma: no cover - exercised only when pyOpenSSL changes
    _ffi = None
    _lib = None


_checked = False


def require() -> None:
    """Raise HookMissingError naming the first missing internal (checked once per process)."""
    global _checked
    if _checked:
        return
    if _ffi is None or _lib is None:
        raise HookMissingError("OpenSSL._util.ffi/lib")
    for name in ("SSL_CTX_set_cert_cb", "d2i_X509_NAME", "SSL_CTX_set_client_CA_list", "sk_X509_NAME_push"):
        if not hasattr(_lib, name):
            raise HookMissingError(f"lib.{name}")
    if not hasattr(SSL.Connection, "_reverse_mapping"):
        raise HookMissingError("SSL.Connection._reverse_mapping")
    probe = SSL.Context(SSL.TLS_METHOD)
    if not hasattr(probe, "_context"):
        raise HookMissingError("SSL.Context._context")
    _checked = True


def set_cert_callback(ctx: SSL.Context, callback: Callable[[SSL.Connection], bool]) -> Any:
    """Install `callback(conn) -> ok` as OpenSSL's cert_cb on `ctx`.

    Returns the cffi handle, which the caller must keep alive as long as `ctx` lives.
    """
    require()
    assert _ffi is not None and _lib is not None

    def trampoline(ssl_ptr: Any, _arg: Any) -> int:
        conn = SSL.Connection._reverse_mapping.get(ssl_ptr)
        if conn is None:
            return 0
        try:
            return 1 if callback(conn) else 0
        except Exception:  # an exception must never unwind through OpenSSL's C stack
            return 0

    handle = _ffi.callback("int (*)(SSL *, void *)", trampoline)
    _lib.SSL_CTX_set_cert_cb(ctx._context, handle, _ffi.NULL)
    return handle


def set_client_ca_names(ctx: SSL.Context, names_der: list[bytes]) -> None:
    """Set the CertificateRequest CA list from DER names, without pyOpenSSL's deprecated X509Name."""
    require()
    assert _ffi is not None and _lib is not None
    stack = _lib.sk_X509_NAME_new_null()
    if stack == _ffi.NULL:
        raise MemoryError("sk_X509_NAME_new_null")
    for der in names_der:
        buf = _ffi.new("unsigned char[]", der)
        ptr = _ffi.new("unsigned char **", buf)
        raw = _lib.d2i_X509_NAME(_ffi.NULL, ptr, len(der))
        if raw == _ffi.NULL or not _lib.sk_X509_NAME_push(stack, raw):
            _lib.sk_X509_NAME_free(stack)
            raise ValueError("CA name DER did not decode")
    _lib.SSL_CTX_set_client_CA_list(ctx._context, stack)  # takes ownership of the stack
