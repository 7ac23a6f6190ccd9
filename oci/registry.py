"""A registry client over the OCI distribution API (``/v2/``), pulling by digest only.

- Transport: TLS (system trust store, or the CA bundle configured for the host). Like Docker,
  plain HTTP is allowed only for loopback hosts (``localhost``, 127.0.0.0/8, ``::1``) and hosts
  configured as insecure; for those HTTPS is tried first and HTTP is the fallback.
- Auth: the ``WWW-Authenticate`` challenge of a 401 decides, as Docker clients do: ``Bearer`` gets a
  pull token from the realm (with the configured username/password as Basic auth, else anonymous),
  ``Basic`` gets the credentials directly. Credentials go only to the registry host and its token
  realm, never over plain HTTP to a host that must use TLS, and never into a log line.
- Redirects (blob storage backends) are followed up to 5 times under the same transport rule;
  the Authorization header is dropped when the host changes.
- Every manifest's bytes must hash to the requested digest and every blob is streamed through its
  descriptor's digest and size check; the registry's own digest headers are not trusted.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import mediatypes as mt
from .cache import VerifyingWriter
from .digest import Digest
from .errors import BlobMismatchError, RegistryError, TransportPolicyError
from .manifest import MAX_MANIFEST_BYTES, Descriptor
from .reference import Reference

__all__ = ["Credentials", "RegistryClient", "RegistryConfig", "is_loopback", "parse_challenge"]

log = logging.getLogger("oci.registry")

CHUNK = 1 << 20
MAX_REDIRECTS = 5
MAX_TOKEN_BYTES = 1 << 20
_REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


@dataclass(frozen=True)
class RegistryConfig:
    """Per-host settings. Hosts are ``host`` or ``host:port`` as in image references."""

    credentials: Mapping[str, Credentials] = field(default_factory=dict)
    insecure: frozenset[str] = frozenset()
    ca_certs: Mapping[str, str] = field(default_factory=dict)  # PEM; replaces the system trust store
    timeout: float = 60.0

    def allows_plain_http(self, hostport: str) -> bool:
        host, _ = split_hostport(hostport)
        return is_loopback(host) or hostport in self.insecure or host in self.insecure

    def credentials_for(self, hostport: str) -> Credentials | None:
        return self.credentials.get(hostport) or self.credentials.get(split_hostport(hostport)[0])


def split_hostport(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = hostport.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return hostport, None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """(scheme lowercased, parameters) of a ``WWW-Authenticate`` value such as
    ``Bearer realm="https://auth/token",service="registry",scope="repository:x:pull"``."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return scheme.lower(), params


@dataclass
class Reply:
    """One response and its connection (one request per connection); close() releases both."""

    conn: http.client.HTTPConnection
    resp: http.client.HTTPResponse

    @property
    def status(self) -> int:
        return self.resp.status

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.resp.getheader(name, default)

    def read(self, n: int) -> bytes:
        return self.resp.read(n)

    def readinto(self, buffer: memoryview) -> int:
        return self.resp.readinto(buffer)

    def close(self) -> None:
        self.resp.close()
        self.conn.close()


class RegistryClient:
    """Pulls manifests and blobs of one or more registries; thread-safe (one connection per call)."""

    def __init__(self, config: RegistryConfig | None = None) -> None:
        self.config = config or RegistryConfig()
        self._tokens: dict[tuple[str, str], str] = {}
        self._plain: set[str] = set()  # hosts that answered only on plain HTTP
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self.requests = 0

    # -- transport --------------------------------------------------------------------------------

    def _context(self, hostport: str) -> ssl.SSLContext:
        with self._lock:
            ctx = self._contexts.get(hostport)
        if ctx is None:  # loading the trust store costs tens of ms: once per host
            ca = self.config.ca_certs.get(hostport) or self.config.ca_certs.get(split_hostport(hostport)[0])
            ctx = ssl.create_default_context(cadata=ca) if ca else ssl.create_default_context()
            with self._lock:
                self._contexts[hostport] = ctx
        return ctx

    def _base(self, hostport: str) -> str:
        return f"{'http' if hostport in self._plain else 'https'}://{hostport}"

    def _open(self, url: str, headers: Mapping[str, str]) -> Reply:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryError(url, "only http(s) URLs are followed")
        hostport = parts.netloc.rpartition("@")[2]
        if parts.scheme == "http" and not self.config.allows_plain_http(hostport):
            raise TransportPolicyError(hostport)
        host, port = split_hostport(hostport)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.config.timeout,
                                               context=self._context(hostport))
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.config.timeout)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        with self._lock:
            self.requests += 1
        try:
            conn.request("GET", target, headers=dict(headers))
            return Reply(conn, conn.getresponse())
        except BaseException:
            conn.close()
            raise

    def _open_host(self, hostport: str, path: str, headers: Mapping[str, str]) -> Reply:
        """GET on the registry host, HTTPS first; HTTP only as Docker's fallback for allowed hosts."""
        try:
            return self._open(self._base(hostport) + path, headers)
        except (ssl.SSLError, ConnectionError) as exc:
            if hostport in self._plain or not self.config.allows_plain_http(hostport):
                raise RegistryError(f"https://{hostport}{path}", f"TLS connection failed: {exc}") from None
            with self._lock:
                self._plain.add(hostport)
            log.info("event=registry_plain_http host=%s", hostport)
            return self._open(self._base(hostport) + path, headers)
        except OSError as exc:
            raise RegistryError(f"{self._base(hostport)}{path}", f"connection failed: {exc}") from None

    # -- auth -------------------------------------------------------------------------------------

    def _token(self, hostport: str, challenge: dict[str, str], repository: str) -> str:
        realm = challenge.get("realm")
        if not realm:
            raise RegistryError(hostport, "Bearer challenge without a realm")
        query = {"scope": f"repository:{repository}:pull"}
        if challenge.get("service"):
            query["service"] = challenge["service"]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        creds = self.config.credentials_for(hostport)
        if creds is not None:
            realm_url = urllib.parse.urlsplit(realm)
            realm_host = realm_url.netloc.rpartition("@")[2]
            if realm_url.scheme != "https" and not self.config.allows_plain_http(realm_host):
                raise TransportPolicyError(realm_host)
            headers["Authorization"] = creds.basic()
        try:
            resp = self._open(url, headers)
            body = resp.read(MAX_TOKEN_BYTES + 1)
        except OSError as exc:
            raise RegistryError(realm, f"token request failed: {exc}") from None
        if resp.status != 200:
            raise RegistryError(realm, f"token request answered HTTP {resp.status}", resp.status)
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(realm, "token response has no token")
        return token

    def _get(self, ref: Reference, path: str, accept: str | None = None) -> Reply:
        hostport = ref.api_host
        key = (hostport, ref.path)
        headers: dict[str, str] = {}
        if accept:
            headers["Accept"] = accept
        for attempt in range(2):
            with self._lock:
                auth = self._tokens.get(key)
            if auth:
                headers["Authorization"] = auth
            resp = self._open_host(hostport, path, headers)
            if resp.status != 401 or attempt == 1:
                return self._follow(resp, headers, hostport)
            scheme, params = parse_challenge(resp.getheader("WWW-Authenticate") or "")
            resp.read(CHUNK)
            resp.close()
            creds = self.config.credentials_for(hostport)
            if scheme == "bearer":
                auth = "Bearer " + self._token(hostport, params, ref.path)
            elif scheme == "basic" and creds is not None:
                auth = creds.basic()
            else:
                raise RegistryError(self._base(hostport) + path, "authentication required and no usable "
                                    "credentials configured for this registry", 401)
            with self._lock:
                self._tokens[key] = auth
        raise AssertionError("unreachable")

    def _follow(self, resp: Reply, headers: dict[str, str],
                hostport: str) -> Reply:
        for _ in range(MAX_REDIRECTS):
            if resp.status not in _REDIRECTS:
                return resp
            location = resp.getheader("Location")
            resp.read(CHUNK)
            resp.close()
            if not location:
                raise RegistryError(hostport, f"HTTP {resp.status} without Location")
            url = urllib.parse.urljoin(f"{self._base(hostport)}/", location)
            new_host = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
            if new_host != hostport:
                headers = {k: v for k, v in headers.items() if k != "Authorization"}
            try:
                resp = self._open(url, headers)
            except OSError as exc:
                raise RegistryError(url, f"redirected request failed: {exc}") from None
            hostport = new_host
        raise RegistryError(hostport, f"more than {MAX_REDIRECTS} redirects")

    # -- API --------------------------------------------------------------------------------------

    def fetch_manifest(self, ref: Reference, digest: Digest) -> tuple[bytes, str | None]:
        """A manifest or index by digest: its bytes (verified) and the Content-Type."""
        path = f"/v2/{ref.path}/manifests/{digest}"
        resp = self._get(ref, path, mt.MANIFEST_ACCEPT)
        try:
            if resp.status != 200:
                raise RegistryError(f"{ref.api_host}{path}", f"HTTP {resp.status} for manifest {digest}",
                                    resp.status)
            data = resp.read(MAX_MANIFEST_BYTES + 1)
        finally:
            resp.close()
        if len(data) > MAX_MANIFEST_BYTES:
            raise BlobMismatchError(str(digest), f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        if not digest.matches(data):
            raise BlobMismatchError(str(digest), "the registry served a manifest with another digest")
        content_type = resp.getheader("Content-Type")
        return data, content_type.split(";")[0].strip() if content_type else None

    def fetch_blob(self, ref: Reference, desc: Descriptor, sink: VerifyingWriter) -> None:
        """Stream a blob into ``sink``, which checks size and digest (the caller calls finish())."""
        path = f"/v2/{ref.path}/blobs/{desc.digest}"
        started = time.monotonic()
        resp = self._get(ref, path)
        try:
            if resp.status != 200:
                raise RegistryError(f"{ref.api_host}{path}", f"HTTP {resp.status} for blob {desc.digest}",
                                    resp.status)
            length = resp.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) != desc.size:
                raise BlobMismatchError(str(desc.digest), f"registry announces {length} bytes, "
                                        f"descriptor says {desc.size}")
            buffer = memoryview(bytearray(CHUNK))
            while True:
                try:
                    n = resp.readinto(buffer)
                except (OSError, http.client.HTTPException) as exc:
                    raise RegistryError(f"{ref.api_host}{path}", f"transfer failed: {exc}") from None
                if not n:
                    break
                sink.write(buffer[:n])  # a local write error (a full disk) is not the registry's
        finally:
            resp.close()
        log.info("event=blob_fetched digest=%s size=%d seconds=%.3f", desc.digest, desc.size,
                 time.monotonic() - started)
