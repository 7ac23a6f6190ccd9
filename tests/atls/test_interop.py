"""aTLS interop with real peers: the Go crypto/tls peer (both directions) and OpenSSL's s_client/s_server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation.atls import AtlsError, ClientConfig, ServerConfig, aio, wire
from attestation.atls.certificate import evidence_extensions, spki_der
from tests.atls.fakes import FakeIssuer, FakeValidator
from tests.atls.peers import goatls_binary

pytestmark = pytest.mark.interop


@contextlib.asynccontextmanager
async def python_server(config: Callable[[], ServerConfig], results: list[object]) -> AsyncIterator[int]:
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            stream = await aio.accept(reader, writer, config(), 10)
            results.append(stream.peer)
            data = await stream.read()
            await stream.write(b"pong:" + data)
            await stream.close()
        except AtlsError as exc:
            results.append(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@contextlib.asynccontextmanager
async def go_server(*flags: str) -> AsyncIterator[int]:
    proc = await asyncio.create_subprocess_exec(
        str(goatls_binary()), "server", "127.0.0.1:0", *flags, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.match(r"listening 127\.0\.0\.1:(\d+)", line)
        assert match, line
        yield int(match.group(1))
    finally:
        proc.kill()
        await proc.wait()


async def test_go_client_to_python_server_mutual() -> None:
    results: list[object] = []
    mutual = lambda: ServerConfig(issuer=FakeIssuer(), validators=[FakeValidator()])  # noqa: E731
    async with python_server(mutual, results) as port:
        rc, out = await run(str(goatls_binary()), "client", f"127.0.0.1:{port}", "attest")
    assert rc == 0, out
    assert "verified peer evidence host_data=" + "11" * 32 in out
    assert "client ok version=304 alpn=h2" in out
    peer = results[0]
    assert peer is not None and not isinstance(peer, Exception)
    assert peer.verdict is not None and peer.verdict.host_data == b"\x44" * 32  # type: ignore[union-attr]


async def test_go_client_without_evidence_rejected_by_python_server() -> None:
    results: list[object] = []
    mutual = lambda: ServerConfig(issuer=FakeIssuer(), validators=[FakeValidator()])  # noqa: E731
    async with python_server(mutual, results) as port:
        rc, out = await run(str(goatls_binary()), "client", f"127.0.0.1:{port}")
    assert rc != 0, out
    assert "no valid attestation document certificate extensions found" in str(results[0])


@pytest.mark.parametrize("tls12", [False, True])
async def test_python_client_to_go_server_mutual(tls12: bool) -> None:
    flags = ("require", "tls12") if tls12 else ("require",)
    async with go_server(*flags) as port:
        cfg = ClientConfig(issuer=FakeIssuer(), validators=[FakeValidator()])
        stream = await aio.connect("127.0.0.1", port, cfg, 10)
        await stream.write(b"ping")
        assert await stream.read() == b"pong:ping"
        await stream.close()
    assert stream.atls.version == ("TLSv1.2" if tls12 else "TLSv1.3")
    assert stream.peer is not None and stream.peer.verdict is not None
    assert stream.peer.verdict.host_data == b"\x44" * 32


async def test_python_client_rejects_go_server_with_wrong_measurement() -> None:
    async with go_server("require") as port:
        cfg = ClientConfig(issuer=FakeIssuer(), validators=[FakeValidator(measurement=b"N" * 16)])
        with pytest.raises(AtlsError, match="MEASUREMENT is"):
            await aio.connect("127.0.0.1", port, cfg, 10)


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("openssl is not installed")
    return path


async def test_openssl_s_client_sees_evidence_bound_to_its_alpn_nonce() -> None:
    nonce = os.urandom(32)
    results: list[object] = []
    async with python_server(lambda: ServerConfig(issuer=FakeIssuer()), results) as port:
        proc = await asyncio.create_subprocess_exec(
            _openssl(), "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-showcerts",
            "-alpn", f"atls:v1:nonce:{nonce.hex()},h2",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(b"ping"), 30)
    text = out.decode()
    assert "ALPN protocol: h2" in text, text
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    assert pem
    cert = x509.load_pem_x509_certificate(pem.group(0).encode())
    ((_oid, evidence),) = evidence_extensions(cert)
    verdict = FakeValidator().validate(evidence, wire.report_data(spki_der(cert), nonce))
    assert verdict.host_data == b"\x11" * 32


async def test_openssl_s_server_ca_list_nonce_reaches_python_client() -> None:
    """s_server sends our chosen CN=base64(nonce) as its CA list; our client's evidence binds it."""
    nonce = os.urandom(32)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        key = ec.generate_private_key(ec.SECP256R1())
        import datetime

        now = datetime.datetime.now(datetime.UTC)

        def selfsigned(cn: str) -> x509.Certificate:
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
            return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                    .public_key(key.public_key()).serial_number(1).not_valid_before(now)
                    .not_valid_after(now + datetime.timedelta(hours=1))
                    .sign(key, hashes.SHA256()))

        (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
        (d / "cert.pem").write_bytes(selfsigned("server").public_bytes(serialization.Encoding.PEM))
        (d / "ca.pem").write_bytes(selfsigned(base64.b64encode(nonce).decode()).public_bytes(
            serialization.Encoding.PEM))
        proc = await asyncio.create_subprocess_exec(
            _openssl(), "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-tls1_3",
            "-cert", str(d / "cert.pem"), "-key", str(d / "key.pem"),
            "-Verify", "1", "-CAfile", str(d / "ca.pem"), "-alpn", "h2",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            port = 0
            while not port:
                line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                assert line, "s_server exited"
                if m := re.search(r"ACCEPT .*:(\d+)", line):
                    port = int(m.group(1))
            client_key = ec.generate_private_key(ec.SECP256R1())
            cfg = ClientConfig(issuer=FakeIssuer(), key=client_key)
            stream = await aio.connect("127.0.0.1", port, cfg, 10)
            await stream.write(b"ping\n")
            await stream.close()
            out = ""
            while "BEGIN CERTIFICATE" not in out or "END CERTIFICATE" not in out:
                line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                assert line, out
                out += line
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            if proc.stdin is not None:
                proc.stdin.close()
            await proc.wait()
    # s_server prints the client certificate it received; evidence must bind our key to its nonce.
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    assert pem, out
    cert = x509.load_pem_x509_certificate(pem.group(0).encode())
    assert spki_der(cert) == client_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ((_oid, evidence),) = evidence_extensions(cert)
    FakeValidator().validate(evidence, wire.report_data(spki_der(cert), nonce))


async def test_openssl_s_client_sni_fallback() -> None:
    """An old client without an atls ALPN entry carries base64(nonce) in SNI; the server binds to it."""
    nonce = bytes(range(32))
    results: list[object] = []
    async with python_server(lambda: ServerConfig(issuer=FakeIssuer()), results) as port:
        proc = await asyncio.create_subprocess_exec(
            _openssl(), "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-showcerts",
            "-alpn", "h2", "-servername", base64.b64encode(nonce).decode(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(b"ping"), 30)
    text = out.decode()
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    assert pem, text
    cert = x509.load_pem_x509_certificate(pem.group(0).encode())
    ((_oid, evidence),) = evidence_extensions(cert)
    FakeValidator().validate(evidence, wire.report_data(spki_der(cert), nonce))
