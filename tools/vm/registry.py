"""Test peer: Debian's docker-registry (distribution 2.8) with TLS, inside a network namespace.

Two placements, one ``Registry`` API (``hostport``, ``ca_pem``/``ca_file``, ``push``,
``push_archive``, ``blob_file``, ``requests``, ``close``):

- ``start_registry(workdir, tag, auth=, subnet=)``: a namespace of its own, reached from the caller's
  namespace over a veth pair (host side in the caller's namespace, no route anywhere else); the
  guest-pull tests use it;
- ``containerd_registry(ctd, workdir)``: inside the network namespace of a test containerd
  (``tools.vm.containerd.running_containerd``), listening on an address of that namespace's loopback,
  so containerd's CRI pulls (``Containerd.trust_registry`` is called with the CA) and the pods behind
  the CNI bridge (default route via the bridge) reach it.

Names and addresses derive from the pid so parallel runs do not collide. The access log counts the
requests per path.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from .containerd import Containerd

REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
PORT = 5000
_REQUEST = re.compile(r'"(GET|HEAD) (/v2/[^ "]+) HTTP/1\.[01]" (\d{3})')
CLONE_NEWNET = 0x40000000


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
class Registry:
    address: str  # the registry's address inside its namespace
    port: int
    storage: Path
    log: Path
    ca_pem: str
    cert_dir: Path  # holds ca.crt (skopeo's --cert-dir layout)
    proc: subprocess.Popen[bytes]
    enter: tuple[str, ...] = ()  # prefix running a command where the registry is reachable
    cleanup: list[tuple[str, ...]] = field(default_factory=list)  # commands run by close()
    ns: str = ""  # the registry's own namespace (start_registry)
    host_if: str = ""  # the caller's end of the veth (start_registry)

    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "ca.crt"

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far, from the access log."""
        text = self.log.read_text(errors="replace")
        return [(m.group(1), m.group(2), int(m.group(3))) for m in _REQUEST.finditer(text)]

    def blob_file(self, digest: str) -> Path:
        hex_ = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def push(self, layout: Path, repo: str, tag: str, *, index: bool, creds: str | None = None) -> None:
        """Copy a local OCI layout's tagged image with skopeo, digests preserved."""
        self._copy(f"oci:{layout}:{tag}", repo, tag, index=index, creds=creds)

    def push_archive(self, archive: Path, repo: str, tag: str) -> None:
        """Copy the image of an OCI archive (one manifest, e.g. ``busybox_image_archive``)."""
        self._copy(f"oci-archive:{archive}", repo, tag, index=False, creds=None)

    def _copy(self, source: str, repo: str, tag: str, *, index: bool, creds: str | None) -> None:
        argv = [*self.enter, str(SKOPEO), "--insecure-policy", "copy", "--quiet", "--preserve-digests",
                *(["--dest-creds", creds] if creds else []),
                "--dest-cert-dir", str(self.cert_dir), *(["--all"] if index else []),
                source, f"docker://{self.hostport}/{repo}:{tag}"]
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
        for argv in self.cleanup:
            subprocess.run(argv, capture_output=True, check=False)


def _config(workdir: Path, address: str, auth: str) -> tuple[Path, Path, Path, str, Path]:
    """(config, storage, log, CA PEM, cert dir) for a TLS registry on ``address``."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert_dir, server_dir = workdir / "certs", workdir / "server"
    cert_dir.mkdir(exist_ok=True)
    server_dir.mkdir(exist_ok=True)
    cert, key, ca_pem = _cert(address, server_dir, cert_dir)
    storage, log = workdir / "storage", workdir / "registry.log"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}:{PORT}\n  tls:\n    certificate: {cert}\n    key: {key}\n" + auth)
    return config, storage, log, ca_pem, cert_dir


def _connectable_in(netns: Path | None, address: str, port: int) -> bool:
    """Whether ``address:port`` accepts a TCP connection, seen from ``netns`` (None: from here)."""
    result: list[bool] = []

    def probe() -> None:
        if netns is not None:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:  # this thread only
                    result.append(False)
                    return
            finally:
                os.close(fd)
        try:
            socket.create_connection((address, port), timeout=1).close()
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, name="registry-probe")
    t.start()
    t.join()
    return bool(result and result[0])


def _wait_ready(reg: Registry, netns: Path | None) -> Registry:
    deadline = time.monotonic() + 60
    while not _connectable_in(netns, reg.address, reg.port):
        if reg.proc.poll() is not None or time.monotonic() > deadline:
            reg.close()
            raise RuntimeError(f"registry did not start: {reg.log.read_text()[-2000:]}")
        time.sleep(0.1)
    return reg


def start_registry(workdir: Path, tag: str = "", *, auth: str = "", subnet: int = 203) -> Registry:
    """A registry in a namespace of its own behind a veth pair. ``auth``: extra YAML for the
    registry's ``auth:`` section (e.g. a token realm)."""
    pid = os.getpid()
    n = pid % (1 << 14)
    base = ipaddress.ip_address(f"10.{subnet}.{n >> 6}.{(n & 63) << 2}")
    reg_ip, host_ip = str(base + 1), str(base + 2)
    ns, host_if, ns_if = f"ocireg{tag}{pid}", f"ocih{tag}{pid}"[:15], f"ocin{tag}{pid}"[:15]
    config, storage, log, ca_pem, cert_dir = _config(workdir, reg_ip, auth)
    cleanup: list[tuple[str, ...]] = [("ip", "link", "del", host_if), ("ip", "netns", "del", ns)]
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
        for argv in cleanup:
            subprocess.run(argv, capture_output=True, check=False)
        raise
    reg = Registry(reg_ip, PORT, storage, log, ca_pem, cert_dir, proc, cleanup=cleanup, ns=ns,
                   host_if=host_if)
    return _wait_ready(reg, None)


def start_registry_in_netns(workdir: Path, netns: Path, address: str) -> Registry:
    """A registry inside an existing namespace (a ``/proc/<pid>/ns/net`` or bind-mounted ns file),
    on ``address`` added to that namespace's loopback (which is brought up)."""
    ipaddress.ip_address(address)
    enter = ("nsenter", f"--net={netns}", "--")
    config, storage, log, ca_pem, cert_dir = _config(workdir, address, "")
    _sh(*enter, "ip", "link", "set", "lo", "up")
    _sh(*enter, "ip", "addr", "replace", f"{address}/32", "dev", "lo")
    cleanup: list[tuple[str, ...]] = [(*enter, "ip", "addr", "del", f"{address}/32", "dev", "lo")]
    out = open(log, "wb")  # noqa: SIM115 (owned by the child)
    proc = subprocess.Popen([*enter, str(REGISTRY), "serve", str(config)], stdout=out,
                            stderr=subprocess.STDOUT)
    out.close()
    reg = Registry(address, PORT, storage, log, ca_pem, cert_dir, proc, enter=enter, cleanup=cleanup)
    return _wait_ready(reg, netns)


@contextlib.contextmanager
def containerd_registry(ctd: Containerd, workdir: Path) -> Iterator[Registry]:
    """A registry in ``ctd``'s namespace, trusted by its CRI plugin; reachable from its CNI pods
    at ``hostport`` (outside the pod subnet, routed via the bridge gateway)."""
    from .containerd import pod_subnet

    _, address = pod_subnet()
    reg = start_registry_in_netns(workdir, ctd.netns, address)
    try:
        ctd.trust_registry(reg.hostport, reg.ca_file)
        yield reg
    finally:
        reg.close()
