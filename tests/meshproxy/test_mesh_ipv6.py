"""The host's IPv6 attack on the mesh: plaintext to a dual-stack application over the pod's IPv6 addresses.

Pod B runs the dual-stack test application; pod A is the attacker on the same link (the host's network).
Every connection goes to pod B's ULA and to its link-local address, the one every IPv6-enabled interface
has whether or not the pod was given IPv6. With default deny in place nothing may connect; with the proxy
running, a port not listed as plain passthrough is reachable only through the proxy's TLS listeners; after
the proxy stops, the deny rule is back for both families.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mesh_netns import (
    APP_SERVER,
    PROBE,
    PYTHON,
    Pod,
    Topology,
    _env,
    meshproxy_argv,
    metrics,
    netns_marks,
    start_proxy,
    wait_for,
)

pytestmark = netns_marks()

INGRESS = "plain#8081#true##tls#8082#false"
CHAINS = ("CONTRAST_INBOUND", "CONTRAST_IN_REDIRECT")


def probe(client: Pod, server: Pod, address: str, port: int, *args: str,
          timeout: float = 2.0) -> subprocess.CompletedProcess[bytes]:
    """Connect from ``client`` to one of ``server``'s addresses (a link-local one in the client's zone)."""
    extra = ["--scope", str(client.scope_id)] if address == server.link_local else []
    argv = (*PROBE, address, str(port), *extra, "--timeout", str(timeout), *args)
    return client.run(*argv, timeout=timeout + 20)


def targets(pod: Pod) -> dict[str, str]:
    return {"ipv4": pod.ip, "ula": pod.ip6, "link-local": pod.link_local}


def saves(pod: Pod, backend: str = "iptables-legacy") -> tuple[str, str]:
    """``iptables-save`` and ``ip6tables-save`` of ``backend``."""
    return pod.iptables_save(backend), pod.ip6tables_save(backend.replace("iptables", "ip6tables"))


def deny_rules(pod: Pod, backend: str = "iptables-legacy") -> dict[str, list[str]]:
    """The DROP rules of the filter table's INPUT chain, per family."""
    return {
        family: [line for line in text.splitlines() if line.startswith("-A INPUT") and "-j DROP" in line]
        for family, text in zip(("ipv4", "ipv6"), saves(pod, backend), strict=True)
    }


@pytest.fixture
def topo() -> Iterator[Topology]:
    topology = Topology("v", subnet=82)
    try:
        topology.b.spawn(*APP_SERVER, "8080", "8081", "8082")
        yield topology
    finally:
        topology.close()


def _app_listening(pod: Pod) -> bool:
    return pod.run("sh", "-c", "ss -ltn | grep -q ':8082 '").returncode == 0


def test_default_deny_drops_ipv6_and_keeps_neighbour_discovery(topo: Topology) -> None:
    assert wait_for(lambda: _app_listening(topo.b), 10)
    for _ in range(2):  # idempotent
        r = topo.b.run(PYTHON, "-m", "meshproxy", "default-deny", "install")
        assert r.returncode == 0, r.stderr
    # the attack: plaintext to the application over every address of the pod
    for kind, address in targets(topo.b).items():
        for port in (8080, 8081):
            r = probe(topo.a, topo.b, address, port)
            assert r.stdout == b"error=timeout\n", (kind, port, r.stdout)
    rules = deny_rules(topo.b)
    assert len(rules["ipv4"]) == 1 and len(rules["ipv6"]) == 1, rules

    # the pod itself can still open IPv6 connections (the initializer talks to the Coordinator while the
    # deny rule is in place): neighbour discovery is not dropped
    topo.a.spawn(*APP_SERVER, "7000")
    assert wait_for(lambda: probe(topo.b, topo.a, topo.a.ip6, 7000).returncode == 0, 10)
    assert probe(topo.b, topo.a, topo.a.ip6, 7000).stdout == f"app port=7000 peer={topo.b.ip6}\n".encode()

    for _ in range(2):  # idempotent
        r = topo.b.run(PYTHON, "-m", "meshproxy", "default-deny", "remove")
        assert r.returncode == 0, r.stderr
    assert deny_rules(topo.b) == {"ipv4": [], "ipv6": []}
    # the probe sees an open path when there is one
    r = probe(topo.a, topo.b, topo.b.link_local, 8081)
    assert r.stdout == f"app port=8081 peer={topo.a.link_local}\n".encode()


@pytest.mark.parametrize("backend", ["iptables-legacy", "iptables-nft"])
def test_ipv6_ingress_only_through_the_proxy_and_deny_back_on_shutdown(
    topo: Topology, tls_dirs: dict[str, Path], tmp_path: Path, backend: str
) -> None:
    deny_env = _env(MESHPROXY_IPTABLES=backend)
    assert topo.b.run(PYTHON, "-m", "meshproxy", "default-deny", "install", env=deny_env).returncode == 0
    ready = tmp_path / "ready"
    env = _env(CONTRAST_INGRESS_PROXY_CONFIG=INGRESS, CONTRAST_ADMIN_PORT="9901", MESHPROXY_IPTABLES=backend)
    start_proxy(topo.b, tls_dirs["b"], ready, env, tmp_path / "proxy.log", "--handshake-timeout", "2")
    proxy = topo.b.procs[-1]
    assert wait_for(lambda: _app_listening(topo.b), 10)
    a_tls = str(tls_dirs["a"])
    a_addresses = targets(topo.a)
    for kind, address in targets(topo.b).items():
        # plaintext to a port that needs mTLS meets the proxy's TLS listener, never the application
        r = probe(topo.a, topo.b, address, 8080)
        assert r.returncode == 1 and b"app port" not in r.stdout, (kind, r.stdout)
        # without a client certificate: refused
        r = probe(topo.a, topo.b, address, 8080, "--tls", a_tls, "--no-cert")
        assert r.returncode == 1 and b"app port" not in r.stdout, (kind, r.stdout)
        # a certificate of another mesh: refused
        r = probe(topo.a, topo.b, address, 8080, "--tls", str(tls_dirs["foreign"]))
        assert r.returncode == 1 and b"app port" not in r.stdout, (kind, r.stdout)
        # a mesh client: relayed by the proxy, which connects from the original destination
        r = probe(topo.a, topo.b, address, 8080, "--tls", a_tls)
        assert r.stdout == f"app port=8080 peer={address}\n".encode(), (kind, r.stdout, r.stderr)
        # disableTLS=false: server-only TLS
        r = probe(topo.a, topo.b, address, 8082, "--tls", a_tls, "--no-cert")
        assert r.stdout == f"app port=8082 peer={address}\n".encode(), (kind, r.stdout)
        r = probe(topo.a, topo.b, address, 8082)
        assert r.returncode == 1 and b"app port" not in r.stdout, (kind, r.stdout)
        # disableTLS=true: plain passthrough, as configured (the application sees pod A)
        r = probe(topo.a, topo.b, address, 8081)
        assert r.stdout == f"app port=8081 peer={a_addresses[kind]}\n".encode(), (kind, r.stdout)
        # the loop guard holds for IPv6 destinations too
        r = probe(topo.a, topo.b, address, 15006, "--tls", a_tls)
        assert b"app port" not in r.stdout
    text = metrics(topo.b)
    assert 'listener="ingress",reason="not_tls"' in text
    assert 'reason="no_client_certificate"' in text and 'reason="loop_guard"' in text

    # egress to an IPv6 remote: pod A's proxy speaks mTLS to B's IPv6 ingress, and never plaintext to a
    # remote that does not answer TLS (B's plain passthrough port)
    egress = f"app#127.137.0.1:8000#[{topo.b.ip6}]:8080##plainport#127.137.0.4:8000#[{topo.b.ip6}]:8081"
    start_proxy(topo.a, tls_dirs["a"], tmp_path / "ready-a",
                _env(CONTRAST_EGRESS_PROXY_CONFIG=egress, CONTRAST_ADMIN_PORT="9902"),
                tmp_path / "proxy-a.log", "--handshake-timeout", "2")
    r = probe(topo.a, topo.a, "127.137.0.1", 8000)
    assert r.stdout == f"app port=8080 peer={topo.b.ip6}\n".encode(), (r.stdout, r.stderr)
    r = probe(topo.a, topo.a, "127.137.0.4", 8000, timeout=5.0)
    assert r.returncode == 1 and b"app port" not in r.stdout, r.stdout
    assert wait_for(lambda: 'listener="plainport",reason="timeout"' in metrics(topo.a, 9902), 6)

    # installing the same rules again changes neither family
    before = saves(topo.b, backend)
    again = topo.b.run(
        PYTHON,
        "-c",
        (
            "import os; from meshproxy import Netfilter, ingress_rules, from_environ; "
            "Netfilter().install_ingress(ingress_rules(from_environ(os.environ)))"
        ),
        env=env,
    )
    assert again.returncode == 0, again.stderr
    after = saves(topo.b, backend)
    assert [_without_counters(t) for t in after] == [_without_counters(t) for t in before]
    assert "-A PREROUTING -p tcp -j CONTRAST_INBOUND" in after[1]

    # shutdown: our chains leave both families, the deny rule comes back in both
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait(timeout=20) == 0
    for text in saves(topo.b, backend):
        assert not any(chain in text for chain in CHAINS)
    rules = deny_rules(topo.b, backend)
    assert len(rules["ipv4"]) == 1 and len(rules["ipv6"]) == 1, rules
    for kind, address in targets(topo.b).items():
        r = probe(topo.a, topo.b, address, 8081)
        assert r.stdout == b"error=timeout\n", (kind, r.stdout)


def test_failed_ipv6_install_keeps_both_families_denied(
    topo: Topology, tls_dirs: dict[str, Path], tmp_path: Path
) -> None:
    # An IPv6 backend that cannot install the chains (ip6tables-restore is missing) must stop the proxy
    # with the deny rule still in place for both families: never IPv4 open while IPv6 is broken.
    assert topo.b.run(PYTHON, "-m", "meshproxy", "default-deny", "install").returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("iptables-legacy", "iptables-legacy-restore", "iptables-legacy-save", "ip6tables-legacy",
                 "ip6tables-legacy-save"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True,
                              check=True).stdout.strip()
        (bin_dir / tool).symlink_to(real)
    env = _env(CONTRAST_INGRESS_PROXY_CONFIG=INGRESS, PATH=f"{bin_dir}:/usr/bin:/bin")
    ready = tmp_path / "ready"
    r = topo.b.run(*meshproxy_argv(tls_dirs["b"], ready, "--iptables", str(bin_dir / "iptables-legacy")),
                   env=env, timeout=60)
    assert r.returncode == 1, r.stderr
    assert b"ip6tables-legacy-restore" in r.stderr
    assert not ready.exists()
    rules = deny_rules(topo.b)
    assert len(rules["ipv4"]) == 1 and len(rules["ipv6"]) == 1, rules
    for text in (topo.b.iptables_save(), topo.b.ip6tables_save()):
        assert not any(chain in text for chain in CHAINS)


def _without_counters(text: str) -> list[str]:
    return [line.split(" [")[0] for line in text.splitlines() if not line.startswith("#")]


def test_marked_tproxy_never_relays_to_foreign_addresses(
    topo: Topology, tls_dirs: dict[str, Path], tmp_path: Path
) -> None:
    # With --tproxy-mark the proxy also takes connections to addresses that are not the pod's own (pod A
    # routes a foreign prefix of each family through pod B). The handshake succeeds, but the upstream
    # socket cannot bind to a foreign address, so nothing is relayed to another host over either family.
    sh_a = ("ip", "-n", topo.a.ns)
    subprocess.run([*sh_a, "route", "add", "10.99.0.0/24", "via", topo.b.ip], check=True)
    subprocess.run([*sh_a, "-6", "route", "add", "fd99::/64", "via", topo.b.ip6], check=True)
    assert topo.b.run(PYTHON, "-m", "meshproxy", "default-deny", "install").returncode == 0
    env = _env(CONTRAST_INGRESS_PROXY_CONFIG=INGRESS, CONTRAST_ADMIN_PORT="9901")
    start_proxy(topo.b, tls_dirs["b"], tmp_path / "ready", env, tmp_path / "proxy.log",
                "--tproxy-mark", "0x1")
    a_tls = str(tls_dirs["a"])
    for foreign in ("10.99.0.5", "fd99::5"):
        r = probe(topo.a, topo.b, foreign, 8080, "--tls", a_tls)
        assert r.stdout == b"error=eof\n", (foreign, r.stdout)
    assert 'listener="ingress",reason="non_local_destination"} 2' in metrics(topo.b)
    # the pod's own addresses are still served
    r = probe(topo.a, topo.b, topo.b.ip6, 8080, "--tls", a_tls)
    assert r.stdout == f"app port=8080 peer={topo.b.ip6}\n".encode()
    topo.b.procs[-1].send_signal(signal.SIGTERM)
    assert topo.b.procs[-1].wait(timeout=20) == 0
    for family in ("-4", "-6"):
        assert "20486" not in topo.b.run("ip", family, "rule", "show").stdout.decode()
