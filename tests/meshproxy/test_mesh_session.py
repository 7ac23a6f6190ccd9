"""The sans-IO TLS session driven against itself over memory: handshakes, failures, end of stream."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.certs import load_credentials
from meshproxy.errors import CertificateError, HandshakeError
from meshproxy.session import TLSSession, TruncatedError


def _pump(client: TLSSession, server: TLSSession, rounds: int = 8) -> None:
    for _ in range(rounds):
        for side in (client, server):
            if not side.handshake_complete:
                side.do_handshake()
        if client.has_data_to_send:
            server.receive_ciphertext(client.data_to_send())
        if server.has_data_to_send:
            client.receive_ciphertext(server.data_to_send())
        if client.handshake_complete and server.handshake_complete:
            return


def _pair(
    tls_dirs: dict[str, Path],
    client_dir: str = "a",
    mtls: bool = True,
    max_version: ssl.TLSVersion | None = None,
) -> tuple[TLSSession, TLSSession]:
    server_creds = load_credentials(tls_dirs["b"])
    client_ctx = load_credentials(tls_dirs[client_dir]).client
    if max_version is not None:
        client_ctx.maximum_version = max_version
    server = TLSSession(server_creds.server_mtls if mtls else server_creds.server_tls, server_side=True)
    return TLSSession(client_ctx, server_side=False), server


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_mutual_handshake_and_data(tls_dirs: dict[str, Path], version: ssl.TLSVersion) -> None:
    client, server = _pair(tls_dirs, max_version=version)
    _pump(client, server)
    assert server.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    assert server.peer_certificate_der() is not None
    client.send_plaintext(b"hello mesh")
    server.receive_ciphertext(client.data_to_send())
    buf = memoryview(bytearray(64))
    n = server.read_plaintext(buf)
    assert bytes(buf[:n]) == b"hello mesh"


def test_foreign_ca_client_is_refused(tls_dirs: dict[str, Path]) -> None:
    client, server = _pair(tls_dirs, client_dir="foreign")
    with pytest.raises(HandshakeError) as info:
        _pump(client, server)
    # whichever side notices first: the client rejects the server's CA or the server the client's
    assert info.value.reason in ("certificate_verify_failed", "unknown_ca")


def test_missing_client_certificate_reason(tls_dirs: dict[str, Path]) -> None:
    server_creds = load_credentials(tls_dirs["b"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(tls_dirs["b"] / "mesh-ca.pem")
    client = TLSSession(ctx, server_side=False)
    server = TLSSession(server_creds.server_mtls, server_side=True)
    with pytest.raises(HandshakeError) as info:
        _pump(client, server)
    assert info.value.reason == "no_client_certificate"
    # without client auth the same client is accepted
    client = TLSSession(ctx, server_side=False)
    server = TLSSession(server_creds.server_tls, server_side=True)
    _pump(client, server)
    assert server.handshake_complete and server.peer_certificate_der() is None


def test_plaintext_client_is_not_tls(tls_dirs: dict[str, Path]) -> None:
    server = TLSSession(load_credentials(tls_dirs["b"]).server_mtls, server_side=True)
    server.receive_ciphertext(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(HandshakeError) as info:
        server.do_handshake()
    assert info.value.reason == "not_tls"


def test_eof_during_handshake(tls_dirs: dict[str, Path]) -> None:
    server = TLSSession(load_credentials(tls_dirs["b"]).server_mtls, server_side=True)
    server.receive_eof()
    with pytest.raises(HandshakeError) as info:
        server.do_handshake()
    assert info.value.reason == "eof"


def test_close_notify_half_close_then_reply(tls_dirs: dict[str, Path]) -> None:
    client, server = _pair(tls_dirs)
    _pump(client, server)
    client.send_plaintext(b"request")
    client.close()
    server.receive_ciphertext(client.data_to_send())
    buf = memoryview(bytearray(64))
    n = server.read_plaintext(buf)
    assert bytes(buf[:n]) == b"request" and server.peer_closed
    # TLS 1.3 half-close: the server can still answer after the client's close_notify
    server.send_plaintext(b"reply")
    server.close()
    client.receive_ciphertext(server.data_to_send())
    n = client.read_plaintext(buf)
    assert bytes(buf[:n]) == b"reply" and client.peer_closed


def test_truncation_is_not_a_clean_end(tls_dirs: dict[str, Path]) -> None:
    client, server = _pair(tls_dirs)
    _pump(client, server)
    client.send_plaintext(b"partial")
    server.receive_ciphertext(client.data_to_send())
    server.receive_eof()  # TCP FIN without close_notify
    buf = memoryview(bytearray(64))
    with pytest.raises(TruncatedError):
        server.read_plaintext(buf)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=40000), st.lists(st.integers(1, 5000), min_size=1, max_size=20))
def test_any_split_of_the_ciphertext_gives_the_same_plaintext(
    tls_dirs: dict[str, Path], payload: bytes, cuts: list[int]
) -> None:
    client, server = _pair(tls_dirs)
    _pump(client, server)
    client.send_plaintext(payload)
    wire = client.data_to_send()
    out = bytearray()
    buf = memoryview(bytearray(7000))  # smaller than a record: exercises partial record reads
    pos = 0
    for cut in [*cuts, len(wire)]:
        server.receive_ciphertext(wire[pos : pos + cut])
        pos += cut
        while n := server.read_plaintext(buf):
            out += buf[:n]
        if pos >= len(wire):
            break
    assert bytes(out) == payload


def test_credentials_errors_name_the_file(tmp_path: Path, tls_dirs: dict[str, Path]) -> None:
    with pytest.raises(CertificateError) as info:
        load_credentials(tmp_path)
    assert info.value.path.endswith("mesh-ca.pem") and info.value.reason == "missing"
    for name in ("mesh-ca.pem", "certChain.pem"):
        (tmp_path / name).write_bytes((tls_dirs["a"] / name).read_bytes())
    (tmp_path / "key.pem").write_bytes((tls_dirs["b"] / "key.pem").read_bytes())  # key of another workload
    with pytest.raises(CertificateError) as info:
        load_credentials(tmp_path)
    assert "PRIVATE KEY" not in str(info.value) and "cannot load" in info.value.reason


@pytest.mark.parametrize("broken", ["mesh-ca.pem", "certChain.pem", "key.pem", "mismatched key.pem"])
def test_meshproxy_names_the_unloadable_credential_file(
    tmp_path: Path, tls_dirs: dict[str, Path], broken: str
) -> None:
    """Run as the user runs it: OpenSSL's "[SSL] PEM lib" alone does not say which file is wrong."""
    import subprocess
    import sys

    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("mesh-ca.pem", "certChain.pem", "key.pem"):
        (tls / name).write_bytes((tls_dirs["a"] / name).read_bytes())
    name = broken.split()[-1]
    if broken.startswith("mismatched"):
        (tls / name).write_bytes((tls_dirs["b"] / name).read_bytes())  # another workload's key
    else:
        (tls / name).write_bytes(b"-----BEGIN GARBAGE-----\nnot pem\n")
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "meshproxy", "--tls-dir", str(tls), "--no-netfilter",
                           "--ready-file", str(tmp_path / "ready")], cwd=repo, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"meshproxy: {tls / name}: cannot load mesh credentials: "), last
    assert "PEM lib" not in last and "PRIVATE KEY" not in proc.stderr
    assert not (tmp_path / "ready").exists()


def test_meshproxy_help_is_plain_text() -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    shown = subprocess.run([sys.executable, "-m", "meshproxy", "--help"], cwd=repo, capture_output=True,
                           text=True, timeout=60, check=False)
    assert shown.returncode == 0 and "--tls-dir" in shown.stdout and "`" not in shown.stdout
