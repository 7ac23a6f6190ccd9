"""Test peer: a Docker-style token server (the realm of distribution's ``auth: token``).

It checks HTTP Basic credentials and issues an ES256 JWT whose ``x5c`` header carries a signing
certificate under the CA the registry trusts (``rootcertbundle``), granting the requested scope.
Anonymous or wrong credentials get 401. It records the Authorization headers it saw.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

SERVICE = "test-registry"
ISSUER = "test-token-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    def __init__(self, directory: Path, username: str, password: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token CA")])
        self._ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                    .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(minutes=5))
                    .not_valid_after(now + datetime.timedelta(days=1))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .sign(ca_key, hashes.SHA256()))
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = (x509.CertificateBuilder()
                      .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token signer")]))
                      .issuer_name(name).public_key(self._key.public_key())
                      .serial_number(x509.random_serial_number())
                      .not_valid_before(now - datetime.timedelta(minutes=5))
                      .not_valid_after(now + datetime.timedelta(days=1))
                      .sign(ca_key, hashes.SHA256()))
        self.root_bundle = directory / "token-ca.pem"
        self.root_bundle.write_bytes(self._ca.public_bytes(serialization.Encoding.PEM))
        self._expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.seen_auth: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                server.seen_auth.append(auth)
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if auth != server._expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                repo, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": repo, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": "tester", "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": _b64(os.urandom(12)), "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def registry_auth_yaml(self) -> str:
        return (f"auth:\n  token:\n    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
                f"    rootcertbundle: {self.root_bundle}\n")

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
