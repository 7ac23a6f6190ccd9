"""The sidecar's lifecycle, in Contrast's order with one change: rules go in only once we listen.

1. Parse the configuration (a bad entry exits non-zero here, before any rule is touched).
2. Load the mesh credentials.
3. Bind all listeners and the admin port.
4. Install the mangle-table TPROXY chains (one atomic iptables-restore transaction).
5. Remove the default-deny INPUT rule: inbound traffic can flow now that the proxy takes it.
6. Mark ready and write the ready file (atomically: temp file, fsync, rename).
7. Serve; reload credentials when the files change.
8. On SIGTERM/SIGINT: delete the ready file, put the default-deny rule back (fail closed: without the
   proxy, traffic must not reach the application in plaintext), remove our chains, close everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from common.files import atomic_write
from meshproxy.admin import AdminServer
from meshproxy.certs import CredentialStore
from meshproxy.config import ProxyConfig
from meshproxy.ktls import detect as detect_ktls
from meshproxy.metrics import Metrics
from meshproxy.netfilter import Netfilter
from meshproxy.proxy import Limits, Proxy
from meshproxy.rules import ingress_rules

log = logging.getLogger("meshproxy")


@dataclass(frozen=True, slots=True)
class Options:
    tls_dir: Path
    ready_file: Path
    netfilter: bool = True
    iptables: str | None = None
    reload_interval: float = 1.0
    tproxy_mark: int | None = None
    restore_deny_on_exit: bool = True
    limits: Limits = field(default_factory=Limits)


def write_ready_file(path: Path) -> None:
    """Create ``path`` atomically, so a probe never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, b"", mode=0o644)


async def run(config: ProxyConfig, options: Options, stop: asyncio.Event | None = None) -> None:
    metrics = Metrics()
    credentials = CredentialStore(options.tls_dir, on_reload=metrics.cert_reloaded)
    proxy = Proxy(config, credentials, metrics, options.limits)
    admin = AdminServer(metrics, config.admin_port) if config.admin_port is not None else None
    netfilter = Netfilter(options.iptables) if options.netfilter else None
    rules = ingress_rules(config, options.tproxy_mark)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    ktls = detect_ktls()
    metrics.ktls_available = ktls.usable
    log.info("event=starting ktls_kernel=%s ktls_python=%s offload=not_implemented", ktls.kernel_ulp,
             ktls.python_ssl_option)
    rules_installed = False
    routing_installed = False
    watcher: asyncio.Task[None] | None = None
    try:
        proxy.start()
        if admin is not None:
            await admin.start()
        if netfilter is not None:
            rules_installed = True  # set first: a failure half-way must still be cleaned up
            netfilter.install_ingress(rules)
            if options.tproxy_mark is not None and rules.chains:
                from meshproxy.routing import install_local_route
                routing_installed = True
                install_local_route(options.tproxy_mark)
            netfilter.remove_default_deny()
        metrics.ready = True
        write_ready_file(options.ready_file)
        log.info("event=ready ready_file=%s listeners=%s", options.ready_file,
                 ",".join(f"{n}={a[0]}:{a[1]}" for n, a in proxy.addresses.items()))
        watcher = asyncio.ensure_future(credentials.watch(options.reload_interval))
        await stop.wait()
        log.info("event=shutting_down")
    finally:
        metrics.ready = False
        with contextlib.suppress(FileNotFoundError):
            options.ready_file.unlink()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if netfilter is not None:
            if options.restore_deny_on_exit:
                netfilter.install_default_deny()
            if rules_installed:
                netfilter.remove_ingress(rules)
            if routing_installed and options.tproxy_mark is not None:
                from meshproxy.routing import remove_local_route
                remove_local_route(options.tproxy_mark)
        await proxy.stop()
        if admin is not None:
            await admin.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
