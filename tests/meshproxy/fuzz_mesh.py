"""atheris target: attacker bytes into the configuration parser and into a server-side TLS session.

The parser either returns a configuration or raises ConfigError; the session fed arbitrary bytes as a
client's first flight either waits for more or raises HandshakeError. Anything else is a bug. Run by
test_mesh_fuzz.py as ``python tests/meshproxy/fuzz_mesh.py -max_total_time=N``.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import atheris

from tests.meshproxy.mesh_pki import MeshPKI

with atheris.instrument_imports():
    from meshproxy.certs import load_credentials
    from meshproxy.config import EGRESS_ENV, INGRESS_ENV, from_environ
    from meshproxy.errors import ConfigError, HandshakeError
    from meshproxy.session import TLSSession

_TLS_DIR = MeshPKI.create("fuzz").write_workload(Path(tempfile.mkdtemp()), "fuzz")
_CONTEXT = load_credentials(_TLS_DIR).server_mtls


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    text = fdp.ConsumeUnicodeNoSurrogates(200)
    with contextlib.suppress(ConfigError):
        from_environ({INGRESS_ENV: text})
    with contextlib.suppress(ConfigError):
        from_environ({EGRESS_ENV: text})
    session = TLSSession(_CONTEXT, server_side=True)
    session.receive_ciphertext(fdp.ConsumeBytes(4096))
    if fdp.ConsumeBool():
        session.receive_eof()
    with contextlib.suppress(HandshakeError):
        session.do_handshake()
        session.data_to_send()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
