"""Test peer: Debian's docker-registry (distribution 2.8) in a network namespace this test creates.

The registry listens with TLS on an address inside the namespace; the test process reaches it over
a veth pair (host side in the root namespace, no route anywhere else). Names and addresses derive
from the pid so parallel runs do not collide. Its access log counts the requests per path.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
_REQUEST = re.compile(r'"(GET|HEAD) (/v2/[^ "]+) HTTP/1\.[01]" (\d{3})')


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if REGISTRY is None or SKOPEO is None:
        return "docker-registry and skopeo (Debian packages) are not installed"
    return None


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _cert(ip: str, directory: Path, ca_dir: Path) -> tuple[Path, Path, str]:
    """A CA (``ca_dir/ca.crt``) and a server certificate for ``ip``; (cert, key, CA PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test registry CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage, critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    (ca_dir / "ca.crt").write_text(ca_pem)
    return cert_path, key_path, ca_pem


@dataclass
class NetnsRegistry:
    ns: str
    host_if: str
    address: str  # the registry's address inside the namespace
    port: int
    storage: Path
    log: Path
    ca_pem: str
    cert_dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port}"

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far, from the access log."""
        text = self.log.read_text(errors="replace")
        return [(m.group(1), m.group(2), int(m.group(3))) for m in _REQUEST.finditer(text)]

    def blob_file(self, digest: str) -> Path:
        hex_ = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def push(self, layout: Path, repo: str, tag: str, *, index: bool, creds: str | None = None) -> None:
        """Copy a local OCI layout's tagged image with skopeo, digests preserved."""
        argv = [str(SKOPEO), "--insecure-policy", "copy", "--quiet", "--preserve-digests",
                *(["--dest-creds", creds] if creds else []),
                "--dest-cert-dir", str(self.cert_dir), *(["--all"] if index else []),
                f"oci:{layout}:{tag}", f"docker://{self.hostport}/{repo}:{tag}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"skopeo push failed: {proc.stderr}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)


def start_registry(workdir: Path, tag: str = "", *, auth: str = "", subnet: int = 203) -> NetnsRegistry:
    """``auth``: extra YAML for the registry's ``auth:`` section (e.g. a token realm)."""
    pid = os.getpid()
    n = pid % (1 << 14)
    base = ipaddress.ip_address(f"10.{subnet}.{n >> 6}.{(n & 63) << 2}")
    reg_ip, host_ip = str(base + 1), str(base + 2)
    ns, host_if, ns_if = f"ocireg{tag}{pid}", f"ocih{tag}{pid}"[:15], f"ocin{tag}{pid}"[:15]
    workdir.mkdir(parents=True, exist_ok=True)
    cert_dir, server_dir = workdir / "certs", workdir / "server"
    cert_dir.mkdir(exist_ok=True)
    server_dir.mkdir(exist_ok=True)
    cert, key, ca_pem = _cert(reg_ip, server_dir, cert_dir)
    storage, log = workdir / "storage", workdir / "registry.log"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {reg_ip}:5000\n  tls:\n    certificate: {cert}\n    key: {key}\n" + auth)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    _sh("ip", "netns", "add", ns)
    try:
        _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _sh("ip", "link", "set", ns_if, "netns", ns)
        _sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _sh("ip", "link", "set", host_if, "up")
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{reg_ip}/30", "dev", ns_if)
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        out = open(log, "wb")  # noqa: SIM115 (owned by the child)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, str(REGISTRY), "serve", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)
        out.close()
    except BaseException:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        raise
    reg = NetnsRegistry(ns, host_if, reg_ip, 5000, storage, log, ca_pem, cert_dir, proc)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((reg_ip, 5000), timeout=1).close()
            return reg
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                reg.close()
                raise RuntimeError(f"registry did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
