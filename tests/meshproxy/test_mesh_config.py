"""Contrast's proxy configuration syntax: accepted forms, and every malformed entry named in the error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshproxy.config import (
    ADMIN_ENV,
    EGRESS_ENV,
    INGRESS_ENV,
    EgressEntry,
    IngressEntry,
    from_environ,
    parse_egress,
    parse_ingress,
)
from meshproxy.errors import ConfigError


def test_empty_environment_means_mtls_on_every_port() -> None:
    config = from_environ({})
    assert config.ingress == () and config.egress == () and config.admin_port is None
    assert not config.ingress_disabled


def test_ingress_entries_and_go_bool_spellings() -> None:
    entries, disabled = parse_ingress("web#8080#false##metrics#9090#true##x#1#T##y#2#0")
    assert not disabled
    assert entries == (
        IngressEntry("web", 8080, False),
        IngressEntry("metrics", 9090, True),
        IngressEntry("x", 1, True),
        IngressEntry("y", 2, False),
    )


def test_ingress_disabled_value() -> None:
    assert parse_ingress("DISABLED") == ((), True)


def test_egress_ipv6_literal_remote() -> None:
    (entry,) = parse_egress("db#127.137.0.9:5432#[FD00:0:0::2]:5432")
    assert (entry.remote_host, entry.remote_port) == ("fd00::2", 5432)


def test_egress_example_from_contrast_docs() -> None:
    entries = parse_egress("billing#127.137.0.1:8081#billing-svc:8080##cart#127.137.0.2:8081#cart-svc:8080")
    assert entries == (
        EgressEntry("billing", "127.137.0.1", 8081, "billing-svc", 8080),
        EgressEntry("cart", "127.137.0.2", 8081, "cart-svc", 8080),
    )


def test_full_environment() -> None:
    config = from_environ(
        {
            INGRESS_ENV: "web#8080#false",
            EGRESS_ENV: "emoji#127.137.0.1:8081#emoji-svc:8080",
            ADMIN_ENV: "9901",
        }
    )
    assert config.admin_port == 9901
    assert config.tls_no_client_auth_ports == (8080,) and config.plain_ports == ()


@pytest.mark.parametrize(
    ("variable", "value", "entry", "fragment"),
    [
        (INGRESS_ENV, "web#8080", "web#8080", "got 2 fields"),
        (INGRESS_ENV, "web#8080#false#x", "web#8080#false#x", "got 4 fields"),
        (INGRESS_ENV, "ok#1#true##web#80a#true", "web#80a#true", "not a decimal port"),
        (INGRESS_ENV, "web#0#true", "web#0#true", "outside 1..65535"),
        (INGRESS_ENV, "web#65536#true", "web#65536#true", "outside 1..65535"),
        (INGRESS_ENV, "web#+80#true", "web#+80#true", "not a decimal port"),
        (INGRESS_ENV, "web#8080#yes", "web#8080#yes", "not a boolean"),
        (INGRESS_ENV, "web#8080#", "web#8080#", "not a boolean"),
        (INGRESS_ENV, "#8080#true", "#8080#true", "name"),
        (INGRESS_ENV, "a#15006#true", "a#15006#true", "reserved"),
        (INGRESS_ENV, "a#80#true##a#81#true", "a#81#true", "duplicate name"),
        (INGRESS_ENV, "a#80#true##b#80#false", "b#80#false", "duplicate port"),
        (INGRESS_ENV, "a#80#true####b#81#true", "", "got 1 fields"),
        (EGRESS_ENV, "svc#10.0.0.1:8081#svc:80", "svc#10.0.0.1:8081#svc:80", "not in 127.0.0.0/8"),
        (EGRESS_ENV, "svc#0.0.0.0:8081#svc:80", "svc#0.0.0.0:8081#svc:80", "not in 127.0.0.0/8"),
        (EGRESS_ENV, "svc#localhost:8081#svc:80", "svc#localhost:8081#svc:80", "not an IPv4 address"),
        (EGRESS_ENV, "svc#127.0.0.1#svc:80", "svc#127.0.0.1#svc:80", "has no :port"),
        (EGRESS_ENV, "svc#127.0.0.1:8081#svc", "svc#127.0.0.1:8081#svc", "has no :port"),
        (EGRESS_ENV, "svc#127.0.0.1:8081#sv_c:80", "svc#127.0.0.1:8081#sv_c:80", "DNS name"),
        (EGRESS_ENV, "svc#127.0.0.1:8081#fd00::2:80", "svc#127.0.0.1:8081#fd00::2:80", "DNS name"),
        (EGRESS_ENV, "svc#127.0.0.1:8081#[fd00::g]:80", "svc#127.0.0.1:8081#[fd00::g]:80", "not an IPv6"),
        (EGRESS_ENV, "svc#127.0.0.1:8081#[10.0.0.1]:80", "svc#127.0.0.1:8081#[10.0.0.1]:80", "not an IPv6"),
        (EGRESS_ENV, "svc#127.0.0.1:8081#[fe80::1]:80", "svc#127.0.0.1:8081#[fe80::1]:80", "link-local"),
        (EGRESS_ENV, "svc#127.0.0.1:8081#[fd00::1%eth0]:80", "svc#127.0.0.1:8081#[fd00::1%eth0]:80", "zoned"),
        (EGRESS_ENV, "svc#127.0.0.1:8081#[::]:80", "svc#127.0.0.1:8081#[::]:80", "not a unicast"),
        (EGRESS_ENV, "svc#127.0.0.1:8081#[ff02::1]:80", "svc#127.0.0.1:8081#[ff02::1]:80", "not a unicast"),
        (EGRESS_ENV, "svc#[::1]:8081#svc:80", "svc#[::1]:8081#svc:80", "not an IPv4 address"),
        (EGRESS_ENV, "svc#127.0.0.1:8081#svc:http", "svc#127.0.0.1:8081#svc:http", "not a decimal port"),
        (EGRESS_ENV, "svc#127.0.0.1:8081", "svc#127.0.0.1:8081", "got 2 fields"),
        (EGRESS_ENV, "a#127.0.0.1:1#x:1##b#127.0.0.1:1#y:1", "b#127.0.0.1:1#y:1", "duplicate listen"),
        (ADMIN_ENV, "99x", "99x", "not a decimal port"),
        (ADMIN_ENV, "15007", "15007", "collides"),
    ],
)
def test_malformed_entry_is_named(variable: str, value: str, entry: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_environ({variable: value})
    assert info.value.variable == variable
    assert info.value.entry == entry
    assert fragment in info.value.reason


@given(st.text(max_size=80))
def test_arbitrary_ingress_text_parses_or_raises_config_error(text: str) -> None:
    try:
        entries, _ = parse_ingress(text)
    except ConfigError as exc:
        assert exc.variable == INGRESS_ENV
        return
    for e in entries:
        assert 1 <= e.port <= 65535


@given(st.text(alphabet="#:.0123456789abc-_ \n", max_size=80))
def test_arbitrary_egress_text_parses_or_raises_config_error(text: str) -> None:
    try:
        entries = parse_egress(text)
    except ConfigError as exc:
        assert exc.variable == EGRESS_ENV
        return
    for e in entries:
        assert e.listen_ip.startswith("127.")


_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)


@given(
    st.lists(
        st.tuples(_names, st.integers(1, 65535), st.booleans()),
        max_size=6,
        unique_by=(lambda t: t[0], lambda t: t[1]),
    )
)
def test_ingress_round_trip(items: list[tuple[str, int, bool]]) -> None:
    items = [i for i in items if i[1] not in (15006, 15007)]
    text = "##".join(f"{n}#{p}#{str(d).lower()}" for n, p, d in items)
    entries, _ = parse_ingress(text)
    assert [(e.name, e.port, e.disable_tls) for e in entries] == items


@given(
    st.lists(
        st.tuples(_names, st.integers(1, 254), st.integers(1, 65535), _names, st.integers(1, 65535)),
        max_size=5,
        unique_by=(lambda t: t[0], lambda t: (t[1], t[2])),
    )
)
def test_egress_round_trip(items: list[tuple[str, int, int, str, int]]) -> None:
    text = "##".join(f"{n}#127.0.0.{o}:{lp}#{h}:{rp}" for n, o, lp, h, rp in items)
    entries = parse_egress(text)
    assert [(e.name, e.listen_ip, e.listen_port, e.remote_host, e.remote_port) for e in entries] == [
        (n, f"127.0.0.{o}", lp, h, rp) for n, o, lp, h, rp in items
    ]
