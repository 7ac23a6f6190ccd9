"""The TPROXY and default-deny rules as data, compared with golden files (Contrast's shape)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from meshproxy.config import from_environ
from meshproxy.errors import BackendError
from meshproxy.netfilter import family_binary
from meshproxy.rules import DEFAULT_DENY, DEFAULT_DENY_IPV6, Family, ingress_rules, render_all

GOLDEN = Path(__file__).with_name("golden")
CASES = {
    "empty": {},
    "mixed": {"CONTRAST_INGRESS_PROXY_CONFIG": "web#8080#false##metrics#9090#true##api#443#false"},
    "disabled": {"CONTRAST_INGRESS_PROXY_CONFIG": "DISABLED"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rules_match_golden(case: str) -> None:
    rendered = "\n".join(ingress_rules(from_environ(CASES[case])).render()) + "\n"
    golden = GOLDEN / f"{case}.rules"
    if os.environ.get("MESHPROXY_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_mark_variant_adds_tproxy_mark_and_marks_proxied_connections() -> None:
    plain = ingress_rules(from_environ(CASES["mixed"])).render()
    marked = ingress_rules(from_environ(CASES["mixed"]), tproxy_mark=0x1).render()
    socket_mark = "-t mangle -A CONTRAST_INBOUND -p tcp -m socket --transparent -j MARK --set-xmark 0x1/0x1"
    # right after the loopback RETURN, before the conntrack RETURN that skips TPROXY for later packets
    assert marked.index(socket_mark) == plain.index("-t mangle -A CONTRAST_INBOUND -i lo -j RETURN") + 1
    marked.remove(socket_mark)
    assert [line.replace(" --tproxy-mark 0x1/0x1", "") for line in marked] == plain


def test_default_deny_is_contrasts_rule() -> None:
    assert DEFAULT_DENY.render() == "-t filter -A INPUT -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP"


def test_ipv6_default_deny_is_the_same_rule_except_icmpv6() -> None:
    assert DEFAULT_DENY_IPV6.render() == (
        "-t filter -A INPUT ! -p ipv6-icmp -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP"
    )


def test_every_rule_is_rendered_for_both_families() -> None:
    config = from_environ(CASES["mixed"])
    lines = render_all(config)
    ingress = ingress_rules(config).render()
    assert lines[0] == "# iptables" and "# ip6tables" in lines
    half = lines.index("# ip6tables")
    assert lines[1:half - 1] == ingress and lines[half + 1:-1] == ingress
    assert lines[half - 1].startswith(DEFAULT_DENY.render())
    assert lines[-1].startswith(DEFAULT_DENY_IPV6.render())


@pytest.mark.parametrize(
    ("backend", "ipv6"),
    [
        ("iptables", "ip6tables"),
        ("iptables-legacy", "ip6tables-legacy"),
        ("iptables-nft", "ip6tables-nft"),
        ("/usr/sbin/iptables-nft", "/usr/sbin/ip6tables-nft"),
    ],
)
def test_each_backend_has_an_ipv6_twin(backend: str, ipv6: str) -> None:
    assert family_binary(backend, Family.IPV4) == backend
    assert family_binary(backend, Family.IPV6) == ipv6


@pytest.mark.parametrize("backend", ["nft", "ip6tables", "/bin/sh", "iptables-legacy; reboot", ""])
def test_unknown_backend_is_refused(backend: str) -> None:
    with pytest.raises(BackendError, match="want one of iptables, iptables-legacy, iptables-nft"):
        family_binary(backend, Family.IPV6)


def test_show_rules_cli_and_config_error_exit_code() -> None:
    env = dict(os.environ, **CASES["mixed"])
    ok = subprocess.run(
        [sys.executable, "-m", "meshproxy", "show-rules"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0
    golden = GOLDEN / "mixed.show-rules"
    if os.environ.get("MESHPROXY_UPDATE_GOLDEN"):
        golden.write_text(ok.stdout)
    assert ok.stdout == golden.read_text()
    env["CONTRAST_EGRESS_PROXY_CONFIG"] = "leak#10.0.0.5:80#svc:80"
    bad = subprocess.run(
        [sys.executable, "-m", "meshproxy", "show-rules"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "leak#10.0.0.5:80#svc:80" in bad.stderr and "127.0.0.0/8" in bad.stderr


def test_ktls_detection_reads_the_ulp_list(tmp_path: Path) -> None:
    from meshproxy.ktls import detect

    ulp = tmp_path / "tcp_available_ulp"
    ulp.write_text("mptcp tls\n")
    assert detect(ulp).kernel_ulp
    ulp.write_text("mptcp\n")
    assert not detect(ulp).kernel_ulp
    assert not detect(tmp_path / "missing").kernel_ulp


def _socket_without(family: int, error: int) -> type[socket.socket]:
    class Socket(socket.socket):
        def __init__(self, fam: int = -1, *args: object, **kwargs: object) -> None:
            if fam == family:
                raise OSError(error, os.strerror(error))
            super().__init__(fam, *args, **kwargs)

    return Socket


def test_ipv6_rules_are_left_out_only_when_the_kernel_has_no_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshproxy import netfilter

    assert netfilter.ipv6_in_kernel()  # this machine has IPv6: both families are managed
    assert set(netfilter.Netfilter("iptables-legacy").tables) == {Family.IPV4, Family.IPV6}
    # a kernel without IPv6 (ipv6.disable=1): socket(AF_INET6) fails with EAFNOSUPPORT, there is nothing
    # to protect, and the IPv6 front end is not even looked for
    monkeypatch.setattr(netfilter.socket, "socket", _socket_without(socket.AF_INET6, errno.EAFNOSUPPORT))
    assert not netfilter.ipv6_in_kernel()
    assert set(netfilter.Netfilter("iptables-legacy").tables) == {Family.IPV4}
    # any other failure is not proof that IPv6 is off: it is raised, nothing is decided
    monkeypatch.setattr(netfilter.socket, "socket", _socket_without(socket.AF_INET6, errno.EMFILE))
    with pytest.raises(OSError, match="Too many open files"):
        netfilter.Netfilter("iptables-legacy")
