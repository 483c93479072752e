"""RFC 6120 §3.2, XEP-0368, RFC 2782: s2s target resolution against a real dnsmasq."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from imedge.server.s2s.resolver import (
    DEFAULT_S2S_PORT,
    ResolutionError,
    ResolutionSource,
    S2SResolver,
    SrvRecord,
    Target,
    order_srv,
)
from tests.helpers import require_binary, wait_for
from tests.peers.dns import DnsStub, Zone
from tests.peers.dns import SrvRecord as Srv
from tests.peers.dns import SrvService as Service
from tests.peers.process import free_port

ZONE = Zone(
    hosts={
        # Two SRV targets of different priorities.
        "lo.two.test": "127.0.0.20",
        "hi.two.test": "127.0.0.21",
        # Direct TLS (XEP-0368) and STARTTLS targets.
        "tls.mix.test": "127.0.0.22",
        "plain.mix.test": "127.0.0.23",
        # No SRV at all: A/AAAA fallback. Both families (dnsmasq's host-record syntax).
        "fallback.test": "127.0.0.24,::1",
        # Has an A record, but its SRV says "not available": no fallback.
        "dot.test": "127.0.0.25",
        "xmpp.dotls.test": "127.0.0.26",
        "edge.test": "127.0.0.27",
        # IDN: bücher.test, and its SRV target.
        "xn--bcher-kva.test": "127.0.0.28",
        "xmpp.xn--bcher-kva.test": "127.0.0.29",
    },
    srv=(
        Srv("two.test", "hi.two.test", 5301, priority=20),
        Srv("two.test", "lo.two.test", 5300, priority=10),
        Srv("mix.test", "plain.mix.test", 5269, priority=10),
        Srv("mix.test", "tls.mix.test", 5270, service=Service.XMPPS_SERVER, priority=5),
        Srv("dot.test", "", 0),  # empty target: dnsmasq answers target "."
        # XEP-0368 §4: xmpps "." only turns direct TLS off.
        Srv("dotls.test", "", 0, service=Service.XMPPS_SERVER),
        Srv("dotls.test", "xmpp.dotls.test", 5269),
        Srv("noaddr.test", "nowhere.noaddr.test", 5269),
        Srv("xn--bcher-kva.test", "xmpp.xn--bcher-kva.test", 5275),
        Srv("partner.test", "hi.two.test", 5269),  # what an override must not consult
    ),
)


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsStub]:
    binary = require_binary("dnsmasq")
    stub = DnsStub(tmp_path_factory.mktemp("dns"), ZONE)
    stub.start(binary)
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture
def resolver(dns: DnsStub) -> S2SResolver:
    # cache_size=0: every test sees dnsmasq's answers, and its query log, afresh.
    return S2SResolver([(dns.address, dns.port)], timeout=3, cache_size=0)


async def test_srv_targets_in_priority_order(resolver: S2SResolver) -> None:
    assert await resolver.resolve("two.test") == [
        Target("lo.two.test", 5300, False, "127.0.0.20"),
        Target("hi.two.test", 5301, False, "127.0.0.21"),
    ]


async def test_direct_tls_srv_merged_by_priority(resolver: S2SResolver) -> None:
    resolution = await resolver.explain("mix.test")
    assert resolution.source is ResolutionSource.SRV
    assert list(resolution.targets) == [
        Target("tls.mix.test", 5270, True, "127.0.0.22"),
        Target("plain.mix.test", 5269, False, "127.0.0.23"),
    ]


async def test_no_srv_falls_back_to_a_and_aaaa_on_5269(resolver: S2SResolver) -> None:
    resolution = await resolver.explain("fallback.test")
    assert resolution.source is ResolutionSource.FALLBACK
    # IPv4 first, IPv6 kept.
    assert list(resolution.targets) == [
        Target("fallback.test", DEFAULT_S2S_PORT, False, "127.0.0.24"),
        Target("fallback.test", DEFAULT_S2S_PORT, False, "::1"),
    ]


async def test_srv_target_dot_means_not_available(resolver: S2SResolver) -> None:
    resolution = await resolver.explain("dot.test")
    assert resolution.source is ResolutionSource.NOT_AVAILABLE
    assert resolution.targets == ()
    assert "'.'" in resolution.reason
    # dot.test has an A record: not used (RFC 2782 "decidedly not available").
    assert await resolver.resolve("dot.test") == []


async def test_xmpps_dot_leaves_the_starttls_records(resolver: S2SResolver) -> None:
    assert await resolver.resolve("dotls.test") == [
        Target("xmpp.dotls.test", 5269, False, "127.0.0.26")
    ]


async def test_unknown_domain_is_a_permanent_error(resolver: S2SResolver) -> None:
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve("nowhere.test")
    assert info.value.temporary is False
    assert "no such domain" in info.value.reason


async def test_srv_target_without_address_is_a_permanent_error(resolver: S2SResolver) -> None:
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve("noaddr.test")
    assert info.value.temporary is False
    assert "nowhere.noaddr.test" in info.value.reason


async def test_unreachable_nameserver_is_a_temporary_error_quickly() -> None:
    # Nobody listens there (and, configured, the system resolver is never asked instead).
    resolver = S2SResolver([("127.0.0.1", free_port(udp=True))], timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve("two.test")
    assert info.value.temporary is True
    assert time.monotonic() - started < 2


async def test_override_skips_srv(resolver: S2SResolver, dns: DnsStub) -> None:
    resolution = await resolver.explain("partner.test", override=("edge.test", 5999))
    assert resolution.source is ResolutionSource.OVERRIDE
    assert list(resolution.targets) == [Target("edge.test", 5999, False, "127.0.0.27")]
    # Once the override host's query is in dnsmasq's log, any SRV query would be too.
    await wait_for(lambda: "query[A] edge.test" in dns.query_log(), what="dnsmasq log")
    assert "_xmpp-server._tcp.partner.test" not in dns.query_log()
    assert "_xmpps-server._tcp.partner.test" not in dns.query_log()


async def test_override_ip_literal_needs_no_dns() -> None:
    offline = S2SResolver([("127.0.0.1", free_port(udp=True))], timeout=0.5)
    assert await offline.resolve("partner.test", override=("127.0.0.30", 5269)) == [
        Target("127.0.0.30", 5269, False, "127.0.0.30")
    ]
    assert await offline.resolve("partner.test", override=("[::1]", 5270)) == [
        Target("::1", 5270, False, "::1")
    ]


async def test_unknown_override_host_is_a_permanent_error(resolver: S2SResolver) -> None:
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve("two.test", override=("gone.test", 5269))
    assert info.value.temporary is False


async def test_idn_domain_queried_in_a_label_form(resolver: S2SResolver) -> None:
    assert await resolver.resolve("bücher.test") == [
        Target("xmpp.xn--bcher-kva.test", 5275, False, "127.0.0.29")
    ]


async def test_ip_literal_domain_needs_no_dns() -> None:
    offline = S2SResolver([("127.0.0.1", free_port(udp=True))], timeout=0.5)
    assert await offline.resolve("127.0.0.31") == [
        Target("127.0.0.31", DEFAULT_S2S_PORT, False, "127.0.0.31")
    ]


async def test_invalid_domain_is_a_permanent_error(resolver: S2SResolver) -> None:
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve("a..test")
    assert info.value.temporary is False


# --- RFC 2782 ordering (pure) -----------------------------------------------------------


def srv(host: str, priority: int, weight: int) -> SrvRecord:
    return SrvRecord(priority=priority, weight=weight, port=5269, host=host, direct_tls=False)


def test_lower_priority_always_first() -> None:
    records = [srv("c", 30, 100), srv("a", 10, 0), srv("b", 20, 50)]
    for seed in range(20):
        assert [r.host for r in order_srv(records, random.Random(seed))] == ["a", "b", "c"]


def test_weights_share_the_first_place_proportionally() -> None:
    records = [srv("heavy", 10, 90), srv("light", 10, 10)]
    rng = random.Random(1)
    firsts = Counter(order_srv(records, rng)[0].host for _ in range(2000))
    assert 0.85 < firsts["heavy"] / 2000 < 0.95
    # Every record is still in the list, once.
    assert sorted(r.host for r in order_srv(records, rng)) == ["heavy", "light"]


def test_zero_weight_rarely_first_among_weighted() -> None:
    records = [srv("zero", 10, 0), srv("some", 10, 100)]
    rng = random.Random(2)
    firsts = Counter(order_srv(records, rng)[0].host for _ in range(1000))
    # Chosen first only on a roll of 0 out of 0..100 (RFC 2782).
    assert firsts["zero"] < 40


def test_injected_randomness_is_reproducible() -> None:
    records = [srv(str(i), 10, 10) for i in range(6)]
    assert order_srv(records, random.Random(7)) == order_srv(records, random.Random(7))
