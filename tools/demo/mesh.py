"""Step 5: one mTLS request from pod "web" to pod "db" with the mesh certificates the initializers got.

Pod web runs the real sidecar (`python -m meshproxy`) in its loopback-only form: ingress DISABLED and
`--no-netfilter`, so no root, netns or TPROXY is needed; its egress listener takes the application's
plaintext and speaks mTLS to the remote. Pod db's side is a stdlib TLS server holding db's mesh
certificate and requiring a client certificate that chains to the mesh CA, i.e. what db's sidecar
ingress (port 15006) enforces; that ingress needs TPROXY, which this demo does not install on the host.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StepFailedError
from .processes import Children, tail
from .report import Narrator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class DbServer:
    """Pod db's mTLS endpoint: answers one line naming the verified client."""

    tls_dir: Path
    sock: socket.socket = field(init=False)
    peers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def start(self) -> int:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(self.tls_dir / "mesh-ca.pem")
        ctx.load_cert_chain(self.tls_dir / "certChain.pem", self.tls_dir / "key.pem")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(20)
        threading.Thread(target=self._serve, args=(ctx,), daemon=True).start()
        port: int = self.sock.getsockname()[1]
        return port

    def _serve(self, ctx: ssl.SSLContext) -> None:
        try:
            raw, _ = self.sock.accept()
            with ctx.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(10)
                cert = conn.getpeercert() or {}
                subject = dict(x[0] for x in cert.get("subject", ()))  # type: ignore[misc]
                cn = str(subject.get("commonName", "?"))
                self.peers.append(cn)
                request = conn.recv(1024).decode(errors="replace").strip()
                conn.sendall(f"db got {request!r} from mesh peer CN={cn} over {conn.version()}\n".encode())
                conn.unwrap()
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.sock.close()


def run_mesh(children: Children, work: Path, web_tls: Path, db_tls: Path, say: Narrator) -> None:
    db = DbServer(db_tls)
    db_port = db.start()
    try:
        egress_port = free_port()
        ready = work / "meshproxy-ready"
        log = work / "meshproxy.log"
        proc = children.popen(
            ["-m", "meshproxy", "--tls-dir", str(web_tls), "--ready-file", str(ready), "--no-netfilter"],
            log,
            extra_env={
                "CONTRAST_INGRESS_PROXY_CONFIG": "DISABLED",
                "CONTRAST_EGRESS_PROXY_CONFIG": f"db#127.0.0.1:{egress_port}#127.0.0.1:{db_port}",
                "CONTRAST_ADMIN_PORT": "",
            },
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StepFailedError(f"meshproxy did not become ready (exit status {proc.poll()}); "
                                 f"log:\n{tail(log)}")
            time.sleep(0.05)
        say.ok(f"web's sidecar ready: plaintext 127.0.0.1:{egress_port} -> mTLS 127.0.0.1:{db_port} (db)")
        with socket.create_connection(("127.0.0.1", egress_port), timeout=15) as app:
            app.sendall(b"GET /orders (plaintext from web's app)\n")
            reply = b""
            while chunk := app.recv(4096):
                reply += chunk
        if db.errors or db.peers != ["web"]:
            raise StepFailedError(f"db should have accepted exactly one mTLS client CN=web, "
                                  f"got peers={db.peers} errors={db.errors}; meshproxy log:\n{tail(log)}")
        say.ok(f"reply through the mesh: {reply.decode(errors='replace').strip()}")
    finally:
        db.close()
