"""Listeners and connection setup: TPROXY ingress (15006 mTLS, 15007 TLS) and loopback egress.

Ingress: listeners bound to 0.0.0.0 with ``IP_TRANSPARENT`` and to [::] with ``IPV6_TRANSPARENT`` (IPv6
only, so each family has its own socket and IPv4 addresses stay plain) receive what the mangle-table TPROXY
rules of each family steer to them; the accepted socket's local address *is* the original destination (no
SO_ORIGINAL_DST with TPROXY), including the zone of a link-local IPv6 address. The TLS handshake completes
and verifies before any connection to the application is opened, so nothing reaches the application from an
unauthenticated peer. Connections whose original destination is a
proxy port are dropped (Envoy's loop guard: Contrast sends them to a black hole).

Egress: one loopback listener per entry; each accepted connection opens TCP to the remote, completes mTLS
with the pod's mesh certificate while verifying the server against the mesh CA, and only then starts
reading the application's plaintext. A failed handshake closes the application connection: plaintext never
falls back to an unencrypted path.

Robustness: handshakes and upstream connects have deadlines and run as separate tasks (a client that never
finishes its handshake holds only its own task); a sweeper closes idle and half-closed relays; the number
of open connections is capped from RLIMIT_NOFILE, and accept pauses (not fails) when descriptors run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshproxy.certs import CredentialStore
from meshproxy.config import MTLS_PORT, TLS_NO_CLIENT_AUTH_PORT, EgressEntry, ProxyConfig
from meshproxy.errors import HandshakeError
from meshproxy.metrics import ListenerStats, Metrics
from meshproxy.netfilter import ipv6_in_kernel
from meshproxy.relay import Buffers, Relay
from meshproxy.session import TLSSession

log = logging.getLogger("meshproxy.proxy")

INGRESS_LISTENER = "ingress"
INGRESS_NO_CLIENT_AUTH_LISTENER = "ingressWithoutClientAuth"
PROXY_PORTS = frozenset({MTLS_PORT, TLS_NO_CLIENT_AUTH_PORT})
_FD_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_HANDSHAKE_READ = 16 << 10

#: Sets up one accepted connection; True when a relay took ownership of the sockets.
Handler = Callable[[socket.socket, "ListenerStats"], Awaitable[bool]]
_ANY = "0.0.0.0"  # noqa: S104 - TPROXY listeners must accept every local address (as Envoy's)
_ANY6 = "::"
#: linux/in6.h; Python's socket module does not export it.
IPV6_TRANSPARENT = 75
#: The IPv6 twin of a listener is reported under this suffix in ``Proxy.addresses``.
IPV6_SUFFIX = "/ipv6"

Address = tuple[str, int] | tuple[str, int, int, int]


@dataclass(frozen=True)
class Limits:
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    idle_timeout: float = 3600.0  # Envoy tcp_proxy's default idle timeout
    half_open_timeout: float = 60.0
    sweep_interval: float = 1.0
    max_connections: int | None = None  # default: derived from RLIMIT_NOFILE
    backlog: int = 1024


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; returns the limit in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def _family(address: Address) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


def _listen(address: Address, transparent: bool, backlog: int) -> socket.socket:
    family = _family(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if transparent:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        elif transparent:
            sock.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _original_destination(conn: socket.socket) -> Address:
    """With TPROXY the accepted socket's own address is where the client was connecting to."""
    name = conn.getsockname()
    if conn.family == socket.AF_INET6:
        return (str(name[0]), int(name[1]), 0, int(name[3]))
    return (str(name[0]), int(name[1]))


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _handshake(loop: asyncio.AbstractEventLoop, sock: socket.socket, session: TLSSession) -> None:
    while True:
        done = session.do_handshake()
        if session.has_data_to_send:
            await loop.sock_sendall(sock, session.data_to_send())
        if done:
            return
        data = await loop.sock_recv(sock, _HANDSHAKE_READ)
        if data:
            session.receive_ciphertext(data)
        else:
            session.receive_eof()


class Proxy:
    """Owns the listeners and every live relay."""

    def __init__(self, config: ProxyConfig, credentials: CredentialStore, metrics: Metrics,
                 limits: Limits | None = None) -> None:
        self.config = config
        self.credentials = credentials
        self.metrics = metrics
        self.limits = limits or Limits()
        self._buffers = Buffers()
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._relays: set[Relay] = set()
        self._open = 0
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        fd_limit = raise_fd_limit()
        # two descriptors per relayed connection, some reserved for listeners, admin and reloads
        self.max_connections = self.limits.max_connections or max(16, (fd_limit - 64) // 2)
        self.addresses: dict[str, Address] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind every listener (fails before any accept if one cannot be bound) and start accepting."""
        plan: list[tuple[str, str, Address, bool, Handler]] = []
        if not self.config.ingress_disabled:
            # The IPv6 listeners exist whenever the kernel has IPv6, as the ip6tables rules do: they take
            # what TPROXY steers from the pod's IPv6 addresses (see netfilter.py).
            anys = (_ANY, _ANY6) if ipv6_in_kernel() else (_ANY,)
            for any_address in anys:
                plan.append((INGRESS_LISTENER, "ingress", (any_address, MTLS_PORT), True, self._ingress_mtls))
                plan.append((INGRESS_NO_CLIENT_AUTH_LISTENER, "ingress",
                             (any_address, TLS_NO_CLIENT_AUTH_PORT), True, self._ingress_tls))
        for entry in self.config.egress:
            plan.append((entry.name, "egress", (entry.listen_ip, entry.listen_port), False,
                         self._egress_for(entry)))
        bound: list[tuple[socket.socket, str, str, Handler]] = []
        try:
            for name, kind, address, transparent, handler in plan:
                bound.append((_listen(address, transparent, self.limits.backlog), name, kind, handler))
        except OSError:
            for sock, *_ in bound:
                sock.close()
            raise
        for sock, name, kind, handler in bound:
            self._listeners.append(sock)
            address = sock.getsockname()
            self.addresses[name + (IPV6_SUFFIX if sock.family == socket.AF_INET6 else "")] = address
            stats = self.metrics.listener(name, kind)
            self._spawn(self._accept_loop(sock, stats, handler))
            log.info("event=listening listener=%s address=%s port=%d", name, address[0], address[1])
        self._spawn(self._sweep())

    async def stop(self) -> None:
        # Cancel the accept loops before closing their sockets, so no pending accept sees a closed fd.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()
        for relay in list(self._relays):
            relay.abort()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- accept ------------------------------------------------------------------------------------

    async def _accept_loop(self, lsock: socket.socket, stats: ListenerStats,
                           handler: Handler) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._open >= self.max_connections:
                self._slot_free.clear()
                await self._slot_free.wait()
            try:
                conn, _ = await loop.sock_accept(lsock)
            except OSError as exc:
                if exc.errno in _FD_EXHAUSTED:
                    stats.rejected["fd_exhausted"] += 1
                    log.warning("event=accept_paused listener=%s reason=%s", stats.name,
                                errno.errorcode.get(exc.errno or 0, "?"))
                    await asyncio.sleep(0.1)
                    continue
                raise
            stats.connections += 1
            stats.active += 1
            self._open += 1
            self._spawn(self._guard(conn, stats, handler))

    async def _guard(self, conn: socket.socket, stats: ListenerStats,
                     handler: Handler) -> None:
        # Until a relay owns the sockets, this task does; on any exit without a relay, release the slot.
        handed_over = False
        try:
            handed_over = await handler(conn, stats)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one connection must not take the listener down
            log.exception("event=connection_error listener=%s error=%r", stats.name, str(exc))
        finally:
            if not handed_over:
                conn.close()
                self._release(stats)

    def _release(self, stats: ListenerStats) -> None:
        stats.active -= 1
        self._open -= 1
        self._slot_free.set()

    def _relay(self, tls_sock: socket.socket, plain_sock: socket.socket, session: TLSSession,
               stats: ListenerStats) -> None:
        def closed(relay: Relay) -> None:
            self._relays.discard(relay)
            self._release(stats)

        relay = Relay(asyncio.get_running_loop(), tls_sock, plain_sock, session, stats.bytes, self._buffers,
                      closed)
        self._relays.add(relay)
        relay.start()

    async def _do_handshake(self, sock: socket.socket, session: TLSSession, stats: ListenerStats) -> bool:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.limits.handshake_timeout):
                await _handshake(loop, sock, session)
            return True
        except HandshakeError as exc:
            stats.handshake_failures[exc.reason] += 1
            log.info("event=handshake_failed listener=%s reason=%s detail=%r", stats.name, exc.reason,
                     exc.detail)
            if session.has_data_to_send:  # best effort: tell the peer why (TLS alert)
                with contextlib.suppress(OSError):
                    sock.send(session.data_to_send())
        except TimeoutError:
            stats.handshake_failures["timeout"] += 1
        except OSError as exc:
            stats.handshake_failures[errno.errorcode.get(exc.errno or 0, "os_error").lower()] += 1
        return False

    async def _connect(self, address: Address, stats: ListenerStats,
                       local_only: bool = False) -> socket.socket | None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(_family(address), socket.SOCK_STREAM)
        _tune(sock)
        if local_only:
            # Binding to the destination address succeeds only for an address of this pod: ingress never
            # turns into a relay towards other hosts, whatever the packet's destination was. For IPv6 the
            # zone (scope id) comes along, so a link-local destination is the one on the receiving link.
            local: Address = (address[0], 0) if len(address) == 2 else (address[0], 0, 0, address[3])
            try:
                sock.bind(local)
            except OSError:
                stats.rejected["non_local_destination"] += 1
                sock.close()
                return None
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                await loop.sock_connect(sock, address)
            return sock
        except TimeoutError:
            stats.upstream_failures["timeout"] += 1
        except OSError as exc:
            stats.upstream_failures[errno.errorcode.get(exc.errno or 0, "os_error").lower()] += 1
        sock.close()
        return None

    # -- ingress -----------------------------------------------------------------------------------

    async def _ingress_mtls(self, conn: socket.socket, stats: ListenerStats) -> bool:
        return await self._ingress(conn, stats, self.credentials.current.server_mtls)

    async def _ingress_tls(self, conn: socket.socket, stats: ListenerStats) -> bool:
        return await self._ingress(conn, stats, self.credentials.current.server_tls)

    async def _ingress(self, conn: socket.socket, stats: ListenerStats, context: ssl.SSLContext) -> bool:
        _tune(conn)
        original_dst = _original_destination(conn)
        if original_dst[1] in PROXY_PORTS:
            stats.rejected["loop_guard"] += 1
            return False
        session = TLSSession(context, server_side=True)
        if not await self._do_handshake(conn, session, stats):
            return False
        upstream = await self._connect(original_dst, stats, local_only=True)
        if upstream is None:
            return False
        self._relay(conn, upstream, session, stats)
        return True

    # -- egress ------------------------------------------------------------------------------------

    def _egress_for(self, entry: EgressEntry) -> Handler:
        async def handler(conn: socket.socket, stats: ListenerStats) -> bool:
            return await self._egress(conn, stats, entry)
        return handler

    async def _egress(self, conn: socket.socket, stats: ListenerStats, entry: EgressEntry) -> bool:
        _tune(conn)
        loop = asyncio.get_running_loop()
        # Names resolve IPv4-only (Envoy's V4_ONLY); an IPv6 remote is given as a literal.
        family = socket.AF_INET6 if ":" in entry.remote_host else socket.AF_INET
        try:
            infos = await loop.getaddrinfo(entry.remote_host, entry.remote_port, family=family,
                                           type=socket.SOCK_STREAM)
        except OSError:
            stats.upstream_failures["dns"] += 1
            return False
        upstream = None
        for info in infos:
            address = info[4]
            upstream = await self._connect((str(address[0]), int(address[1])), stats)
            if upstream is not None:
                break
        if upstream is None:
            return False
        session = TLSSession(self.credentials.current.client, server_side=False)
        if not await self._do_handshake(upstream, session, stats):
            upstream.close()
            return False
        self._relay(upstream, conn, session, stats)
        return True

    # -- timeouts ----------------------------------------------------------------------------------

    async def _sweep(self) -> None:
        interval = self.limits.sweep_interval
        while True:
            await asyncio.sleep(interval)
            for relay in list(self._relays):
                if relay.active:
                    relay.active = False
                    relay.idle_time = 0.0
                    continue
                relay.idle_time += interval
                half_open = relay.tls_eof or relay.plain_eof
                limit = self.limits.half_open_timeout if half_open else self.limits.idle_timeout
                if relay.idle_time >= limit:
                    log.info("event=timeout kind=%s", "half_open" if half_open else "idle")
                    relay.abort()
