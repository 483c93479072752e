"""RFC 6120 §13 hardening of server-to-server federation, over real sockets.

What a hostile or broken peer cannot do (spoof `from`, talk before authenticating, win
dialback with a forged key, flood us), what happens around outages (idle close, peer
restart, our shutdown), and how IM Edge is reached (direct TLS via `_xmpps-server` SRV,
behind HAProxy with the PROXY protocol). Hostile peers are driven with IM Edge's own
`OutboundStream` over a `Channel`, so each test says exactly what it sends.

Addresses: IM Edge edge1.test on 127.0.0.10, edge2.test on 127.0.0.11; Prosody a.test on
127.0.0.2. Every certificate comes from the session's private CA (`peer_pki`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.server.metrics import Metrics
from imedge.server.s2s import link as s2s_link
from imedge.server.s2s import pool as s2s_pool
from imedge.server.s2s.channel import Channel, TlsSettings
from imedge.server.s2s.info import Direction, S2SStreamInfo
from imedge.server.s2s.link import CLOSE, Link, StreamClosed
from imedge.server.s2s.outbound import OutboundStream, S2SFailure
from imedge.server.s2s.settings import S2SSettings
from tests.helpers import Inbox, PkiFiles, RunningServer, imedge_instance, require_binary, wait_for
from tests.interop.test_s2s_peers import subscribe_both_ways
from tests.peers.clients import PeerClients
from tests.peers.common import S2SMode
from tests.peers.dns import DnsStub, SrvRecord, SrvService
from tests.peers.pki import CertFiles, PrivateCA
from tests.peers.process import free_port, spawn, stop_group, tail, wait_listening

pytestmark = pytest.mark.interop

EDGE1, EDGE1_IP = "edge1.test", "127.0.0.10"
EDGE2, EDGE2_IP = "edge2.test", "127.0.0.11"
EDGES = {EDGE1: f"{EDGE1_IP}:5269", EDGE2: f"{EDGE2_IP}:5269"}


# --- IM Edge instances --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def edge_server(
    tmp: Path, ca: PrivateCA, domain: str, address: str, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """An IM Edge for `domain` on `address` with a certificate from the test CA."""
    files = ca.issue(domain, directory=tmp / f"{domain}-pki")
    pki = PkiFiles(None, files.ca, files.cert, files.key)
    async with imedge_instance(tmp / domain, domain, address, pki, **overrides) as rs:
        yield rs


def live(rs: RunningServer, direction: str, remote: str) -> list[S2SStreamInfo]:
    return [s for s in rs.server.s2s.streams() if s.direction == direction and s.remote == remote]


def seen(rs: RunningServer, direction: str, remote: str) -> list[S2SStreamInfo]:
    """Live and recently closed streams with `remote`."""
    every = [*rs.server.s2s.recently_closed, *rs.server.s2s.streams()]
    return [s for s in every if s.direction == direction and s.remote == remote]


# --- a hand-driven peer -------------------------------------------------------------------


class Peer:
    """A peer server speaking to IM Edge through IM Edge's own `OutboundStream`.

    Everything it reads is also kept as raw bytes, to assert what went over the wire.
    """

    def __init__(self, stream: OutboundStream) -> None:
        self.stream = stream
        self.raw = bytearray()
        read = stream.channel.read

        async def tee(n: int = 65536) -> bytes:
            data = await read(n)
            self.raw += data
            return data

        stream.channel.read = tee  # type: ignore[method-assign]

    @classmethod
    async def connect(
        cls,
        local: str,
        remote: str,
        *,
        ca: Path,
        cert: CertFiles | None,
        secret: bytes = b"a secret nobody else knows",
        address: str = EDGE1_IP,
        port: int = 5269,
    ) -> Peer:
        # No client certificate at all when `cert` is None: then only dialback is left.
        tls = TlsSettings.create(
            cert.cert if cert else None, cert.key if cert else None, ca, system_ca=False
        )
        settings = S2SSettings(hosts=frozenset({local}), secret=secret, negotiation_timeout=5)
        channel = await Channel.connect(address, port, timeout=5)
        return cls(OutboundStream(channel, settings, tls, local, remote, metrics=Metrics()))

    def message(self, from_: str, to: str, body: str) -> bool:
        msg = Element("message", ns.CLIENT, {"from": from_, "to": to, "type": "chat", "id": body})
        msg.sub("body", text=body)
        return self.stream.send(msg)

    async def stream_error(self) -> str:
        """Read until IM Edge's stream error; return its condition, after the stream ends."""
        condition = None
        with contextlib.suppress(StreamClosed):
            while True:
                item = await self.stream.next_item(5)
                if item is CLOSE:
                    break
                if isinstance(item, Element) and item.name == "error" and item.ns == ns.STREAMS:
                    condition = next(c.name for c in item.elements() if c.ns == ns.STREAM_ERRORS)
        assert condition is not None, f"no stream error; got {bytes(self.raw)!r}"
        # RFC 6120 §4.9.1.1: the error, then the closing tag, then the TCP connection.
        assert b"</stream:stream>" in self.raw
        assert await self.stream.channel.read() == b""
        return condition

    def close(self) -> None:
        self.stream.close()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Hand-driven peers of one test, closed at its end."""
    opened: list[Peer] = []
    yield opened
    for peer in opened:
        peer.close()
    await asyncio.sleep(0)  # let the transports close inside this loop


async def negotiated(peers: list[Peer], *args: Any, authenticate: bool = True, **kw: Any) -> Peer:
    peer = await Peer.connect(*args, **kw)
    peers.append(peer)
    await peer.stream.negotiate(authenticate=authenticate)
    return peer


@pytest.fixture
async def edge1(tmp_path: Path, peer_pki: PrivateCA) -> AsyncIterator[RunningServer]:
    async with edge_server(
        tmp_path, peer_pki, EDGE1, EDGE1_IP, **{"s2s.edge_addresses": EDGES}
    ) as rs:
        yield rs


# --- 1. spoofed from ----------------------------------------------------------------------


@pytest.mark.parametrize("forged", ["mallory@c.test", "bob@edge1.test"], ids=["other", "ours"])
async def test_stanza_from_a_domain_the_stream_did_not_prove_is_invalid_from(
    edge1: RunningServer, peer_pki: PrivateCA, peers: list[Peer], tmp_path: Path, forged: str
) -> None:
    alice = await edge1.add_user("alice")
    await edge1.add_user("bob")
    inbox = Inbox(await edge1.client(alice))
    cert = peer_pki.issue(EDGE2, directory=tmp_path / "attacker")
    peer = await negotiated(peers, EDGE2, EDGE1, ca=peer_pki.ca_path, cert=cert)
    assert peer.stream.info.auth == "sasl-external"  # it really is edge2.test

    peer.message(forged, alice, "forged")
    assert await peer.stream_error() == "invalid-from"
    assert b"<invalid-from" in peer.raw
    await inbox.nothing(wait=0.5)
    closed = seen(edge1, "in", EDGE2)
    assert closed and closed[-1].closed and "invalid-from" in closed[-1].closed


# --- 2. not authenticated, unknown host ---------------------------------------------------


async def test_stanza_before_authentication_is_not_authorized(
    edge1: RunningServer, peer_pki: PrivateCA, peers: list[Peer], tmp_path: Path
) -> None:
    alice = await edge1.add_user("alice")
    inbox = Inbox(await edge1.client(alice))
    cert = peer_pki.issue(EDGE2, directory=tmp_path / "peer")
    # TLS is up, but the peer skips SASL and dialback.
    peer = await negotiated(peers, EDGE2, EDGE1, ca=peer_pki.ca_path, cert=cert, authenticate=False)
    peer.message(f"bob@{EDGE2}", alice, "too early")
    assert await peer.stream_error() == "not-authorized"
    await inbox.nothing(wait=0.5)


async def test_stanza_to_a_domain_we_do_not_serve_is_host_unknown(
    edge1: RunningServer, peer_pki: PrivateCA, peers: list[Peer], tmp_path: Path
) -> None:
    cert = peer_pki.issue(EDGE2, directory=tmp_path / "peer")
    peer = await negotiated(peers, EDGE2, EDGE1, ca=peer_pki.ca_path, cert=cert)
    peer.message(f"bob@{EDGE2}", "someone@elsewhere.test", "where to?")
    assert await peer.stream_error() == "host-unknown"


async def test_stream_to_a_domain_we_do_not_serve_is_host_unknown(
    edge1: RunningServer, peer_pki: PrivateCA, peers: list[Peer], tmp_path: Path
) -> None:
    cert = peer_pki.issue(EDGE2, directory=tmp_path / "peer")
    with pytest.raises(S2SFailure, match="host-unknown"):
        await negotiated(peers, EDGE2, "elsewhere.test", ca=peer_pki.ca_path, cert=cert)


# --- 3. dialback with a forged key --------------------------------------------------------


@pytest.mark.parametrize("certificate", ["none", "wrong-name"])
async def test_forged_dialback_key_is_invalid_after_asking_the_authoritative_server(
    tmp_path: Path, peer_pki: PrivateCA, peers: list[Peer], certificate: str
) -> None:
    async with (
        edge_server(tmp_path, peer_pki, EDGE1, EDGE1_IP, **{"s2s.edge_addresses": EDGES}) as e1,
        edge_server(tmp_path, peer_pki, EDGE2, EDGE2_IP, **{"s2s.edge_addresses": EDGES}) as e2,
    ):
        alice = await e1.add_user("alice")
        inbox = Inbox(await e1.client(alice))
        # An impostor claiming edge2.test: its certificate cannot prove it, and it does
        # not know edge2.test's dialback secret.
        cert = (
            peer_pki.issue_wrong_name(EDGE2, "impostor.test", directory=tmp_path / "impostor")
            if certificate == "wrong-name"
            else None
        )
        with pytest.raises(S2SFailure, match="rejected our dialback key"):
            await negotiated(peers, EDGE2, EDGE1, ca=peer_pki.ca_path, cert=cert)
        peer = peers[-1]
        assert not peer.stream.info.authenticated
        assert b"type='invalid'" in peer.raw or b'type="invalid"' in peer.raw
        # The real edge2.test was asked (XEP-0220 §2.3) and said the key is not its own.
        asked = seen(e2, "in", EDGE1)
        assert asked, "edge1 never asked edge2.test about the key"
        assert all(not s.authenticated for s in asked)  # a verify-only connection
        assert not any(EDGE2 in s.authenticated for s in live(e1, "in", EDGE2))
        # The stream stays unauthenticated: a stanza now ends it.
        peer.message(f"bob@{EDGE2}", alice, "let me in")
        assert await peer.stream_error() == "not-authorized"
        await inbox.nothing(wait=0.5)

        # The control: the same peer with edge2.test's real secret is let in.
        honest = await negotiated(
            peers,
            EDGE2,
            EDGE1,
            ca=peer_pki.ca_path,
            cert=cert,
            secret=e2.server.s2s_settings.secret,
        )
        assert honest.stream.info.auth == "dialback"
        assert honest.message(f"bob@{EDGE2}", alice, "honest now")
        got = await inbox.get(lambda m: m["body"] == "honest now", timeout=10)
        assert str(got["from"].bare) == f"bob@{EDGE2}"
        proven = [s for s in live(e1, "in", EDGE2) if EDGE2 in s.authenticated]
        assert len(proven) == 1 and proven[0].auth == "dialback" and not proven[0].strong


# --- 4. idle streams ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_edges(
    tmp_path: Path, ca: PrivateCA, **overrides: Any
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    settings = {"s2s.edge_addresses": EDGES, **overrides}
    async with (
        edge_server(tmp_path, ca, EDGE1, EDGE1_IP, **settings) as e1,
        edge_server(tmp_path, ca, EDGE2, EDGE2_IP, **settings) as e2,
    ):
        yield e1, e2


async def test_idle_streams_close_and_the_next_message_reconnects(
    tmp_path: Path, peer_pki: PrivateCA
) -> None:
    async with two_edges(tmp_path, peer_pki, **{"s2s.idle_timeout": 1}) as (e1, e2):
        alice, bob = await e1.add_user("alice"), await e2.add_user("bob")
        sender = await e1.client(alice)
        inbox = Inbox(await e2.client(bob))
        sender.send_message(mto=bob, mbody="one", mtype="chat")
        await inbox.get(lambda m: m["body"] == "one", timeout=10)
        first = live(e1, "out", EDGE2)
        assert len(first) == 1

        # No traffic: both ends of the link go away.
        await wait_for(lambda: not live(e1, "out", EDGE2) and not live(e2, "in", EDGE1), timeout=10)
        ours = [s for s in seen(e1, "out", EDGE2) if s.id == first[0].id]
        assert ours and ours[0].closed == "idle", ours
        theirs = seen(e2, "in", EDGE1)
        assert theirs and all(s.closed in ("idle", "closed by peer") for s in theirs), theirs

        sender.send_message(mto=bob, mbody="two", mtype="chat")
        await inbox.get(lambda m: m["body"] == "two", timeout=10)
        again = live(e1, "out", EDGE2)
        assert again and again[0].id != first[0].id


# --- 5. per-peer rate limit ---------------------------------------------------------------


async def test_rate_limited_peer_is_slowed_down_not_cut_off(
    tmp_path: Path, peer_pki: PrivateCA
) -> None:
    burst, rate = 200, 50
    async with two_edges(tmp_path, peer_pki, **{"s2s.max_stanzas_per_second": rate}) as (e1, e2):
        alice, bob = await e1.add_user("alice"), await e2.add_user("bob")
        sender = await e1.client(alice)
        inbox = Inbox(await e2.client(bob))
        bodies = [f"m{i}" for i in range(burst)]
        for body in bodies:
            sender.send_message(mto=bob, mbody=body, mtype="chat")
        got = [(await inbox.get(timeout=15))["body"] for _ in bodies]
        assert got == bodies  # all of them, in order
        inbound = live(e2, "in", EDGE1)
        assert len(inbound) == 1
        assert inbound[0].stanzas_in >= burst
        assert inbound[0].throttled > 0  # the bucket ran dry: the limiter engaged
        assert inbound[0].as_dict()["throttled"] == inbound[0].throttled
        assert not seen(e2, "in", EDGE1)[0].closed  # slowed, never cut


async def test_token_bucket_holds_a_flood_to_the_configured_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In virtual time: a flood of stanzas is read at `rate` per second once the burst
    allowance is spent, and every wait is counted."""
    rate, flood = 10, 110
    settings = S2SSettings(hosts=frozenset({EDGE1}), secret=b"s", max_stanzas_per_second=rate)
    info = S2SStreamInfo("id", Direction.INBOUND, EDGE1, EDGE2, "127.0.0.1:1")
    link = Link(cast(Channel, None), settings, info, Metrics())
    loop = asyncio.get_running_loop()
    clock = [1000.0]

    async def sleep(delay: float) -> None:
        clock[0] += delay

    with monkeypatch.context() as m:
        m.setattr(loop, "time", lambda: clock[0])
        m.setattr(s2s_link.asyncio, "sleep", sleep)
        for _ in range(flood):
            await link.throttle()
    # The bucket starts with `rate` tokens; each further stanza waits 1/rate s.
    assert clock[0] - 1000.0 == pytest.approx((flood - rate) / rate)
    assert info.throttled == flood - rate


# --- peers: Prosody and the DNS stub -------------------------------------------------------


@contextlib.asynccontextmanager
async def edge_with_dns(
    tmp_path: Path,
    ca: PrivateCA,
    dns: DnsStub,
    domain: str = EDGE1,
    address: str = EDGE1_IP,
    **overrides: Any,
) -> AsyncIterator[RunningServer]:
    async with edge_server(
        tmp_path, ca, domain, address, **{"dns.nameservers": [dns.nameserver], **overrides}
    ) as rs:
        yield rs


@pytest.fixture
async def clients(prosody_peers: Any, peer_clients: PeerClients) -> AsyncIterator[PeerClients]:
    """`peer_clients` whose logins end with a proper logout before the peers stop.

    COMPAT: prosody 0.12.3 fails its own shutdown ("mod_c2s.lua:469: attempt to call a nil
    value (method 'close')") when SIGTERM lands while it is still tearing down a client that
    was just cut off, and then hangs until it is killed; a logged-out client is long gone.
    """
    yield peer_clients
    for c in peer_clients.clients:
        if c.is_connected():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await c.disconnect()


# --- 6. unavailable on shutdown -----------------------------------------------------------


async def test_shutdown_sends_unavailable_to_federated_contacts(
    tmp_path: Path, peer_pki: PrivateCA, peer_dns: DnsStub, prosody_peers: Any, clients: PeerClients
) -> None:
    prosody = prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.CERTIFICATE)
    async with edge_with_dns(tmp_path, peer_pki, peer_dns) as edge:
        alice = await edge.add_user("alice")
        remote_user = await prosody.new_user("bob")
        ours = await edge.client(alice)
        theirs = await clients.login(prosody, remote_user)
        await subscribe_both_ways(ours, alice, theirs, remote_user)

        gone = Inbox(theirs, "presence_unavailable")
        await edge.server.stop()
        got = await gone.get(lambda p: p["from"].bare == alice, timeout=10)
        assert got["type"] == "unavailable"


# --- 7. a peer restarts -------------------------------------------------------------------


async def test_peer_restart_bounces_while_down_then_delivers(
    tmp_path: Path,
    peer_pki: PrivateCA,
    peer_dns: DnsStub,
    prosody_peers: Any,
    clients: PeerClients,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(s2s_pool, "BACKOFF_FIRST", 0.5)
    prosody = prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.CERTIFICATE)
    async with edge_with_dns(tmp_path, peer_pki, peer_dns) as edge:
        alice = await edge.add_user("alice")
        remote_user = await prosody.new_user("bob")
        ours = await edge.client(alice)
        errors = Inbox(ours, "message_error")
        theirs = await clients.login(prosody, remote_user)
        delivered = Inbox(theirs)
        sent: dict[str, str] = {}  # id -> body

        def say(body: str) -> str:
            msg = ours.make_message(mto=remote_user, mbody=body, mtype="chat")
            msg["id"] = f"id-{len(sent)}"
            sent[msg["id"]] = body
            msg.send()
            return str(msg["id"])

        say("before")
        await delivered.get(lambda m: m["body"] == "before", timeout=10)

        prosody.stop()  # the process ends; it stays the fixture's to clean up
        await wait_for(lambda: not live(edge, "out", "a.test"), timeout=10)
        bounced: list[Any] = []
        for body in ("while down 1", "while down 2", "while down 3"):
            sid = say(body)
            bounced.append(await errors.get(lambda m, i=sid: m["id"] == i, timeout=10))
        for err in bounced:
            assert err["error"]["condition"] in (
                "remote-server-not-found",
                "remote-server-timeout",
            ), err
            assert "a.test" in err["error"]["text"]

        prosody.start()
        theirs = await clients.login(prosody, remote_user)
        delivered = Inbox(theirs)
        link = next(s for s in edge.server.s2s.link_status() if s.remote == "a.test")
        assert link.state == "failed"
        await wait_for(lambda: _retry_due(edge, "a.test"), timeout=10)
        say("after")
        await delivered.get(lambda m: m["body"] == "after", timeout=10)

        # Nothing silently lost: each message arrived or came back to its sender.
        returned = {sent[err["id"]] for err in bounced}
        assert {"before", "after"} | returned == set(sent.values())
        await errors.nothing(wait=0.3)


def _retry_due(rs: RunningServer, remote: str) -> bool:
    status = next(s for s in rs.server.s2s.link_status() if s.remote == remote)
    return status.retry_in is None or status.retry_in <= 0


# --- 8. direct TLS via _xmpps-server SRV --------------------------------------------------


async def test_direct_tls_found_through_xmpps_server_srv(
    tmp_path: Path, peer_pki: PrivateCA, peer_dns: DnsStub
) -> None:
    zone = peer_dns.zone.without_srv(EDGE2).with_srv(
        SrvRecord(EDGE2, EDGE2, 5270, service=SrvService.XMPPS_SERVER)
    )
    with peer_dns.serving(zone):
        mark = len(peer_dns.query_log())
        async with (
            edge_with_dns(tmp_path, peer_pki, peer_dns) as e1,
            # edge2.test listens for servers with direct TLS only: no STARTTLS port.
            edge_with_dns(
                tmp_path,
                peer_pki,
                peer_dns,
                EDGE2,
                EDGE2_IP,
                **{"listen.s2s": "", "listen.s2s_tls": f"{EDGE2_IP}:5270"},
            ) as e2,
        ):
            assert "s2s" not in e2.server.bound
            alice, bob = await e1.add_user("alice"), await e2.add_user("bob")
            ours = await e1.client(alice)
            inbox = Inbox(await e2.client(bob))
            ours.send_message(mto=bob, mbody="over direct TLS", mtype="chat")
            await inbox.get(lambda m: m["body"] == "over direct TLS", timeout=10)

            assert f"_xmpps-server._tcp.{EDGE2}" in peer_dns.query_log()[mark:]
            out = live(e1, "out", EDGE2)
            assert out and out[0].tls_version in ("TLSv1.2", "TLSv1.3")
            assert out[0].auth == "sasl-external" and out[0].cert == "valid"
            assert out[0].peer.endswith(":5270")
            inbound = live(e2, "in", EDGE1)
            assert inbound and inbound[0].tls_version == out[0].tls_version


# --- 9. behind HAProxy with the PROXY protocol --------------------------------------------


@contextlib.asynccontextmanager
async def haproxy(directory: Path, config: str, address: str, port: int) -> AsyncIterator[None]:
    """HAProxy in the foreground (-db) with `config`, stopped by its process group."""
    binary = require_binary("haproxy")
    cfg, console = _haproxy_files(directory, config)
    proc = spawn([binary, "-f", str(cfg), "-db"], console=console)
    try:
        await asyncio.to_thread(
            wait_listening, address, [port], proc=proc, what="haproxy", logs=[console]
        )
        yield
    finally:
        await asyncio.to_thread(stop_group, proc)
        assert proc.poll() is not None, tail(console)


def _haproxy_files(directory: Path, config: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cfg = directory / "haproxy.cfg"
    cfg.write_text(config)
    return cfg, directory / "haproxy.console"


HAPROXY = """\
global
    maxconn 64
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe_s2s
    bind {front}
    default_backend be_s2s
backend be_s2s
    # IM Edge's TCP peer is HAProxy at this address; only the PROXY header tells the truth.
    source {source}
    server edge {back} {send_proxy}
"""
CONNECTOR_SOURCE = "127.0.0.50"


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
async def test_behind_haproxy_the_real_peer_address_is_seen(
    tmp_path: Path,
    peer_pki: PrivateCA,
    peer_dns: DnsStub,
    prosody_peers: Any,
    clients: PeerClients,
    send_proxy: str,
) -> None:
    back = free_port(EDGE1_IP)
    async with edge_with_dns(
        tmp_path,
        peer_pki,
        peer_dns,
        **{"listen.s2s": f"{EDGE1_IP}:{back}", "s2s.proxy_protocol": True},
    ) as edge:
        config = HAPROXY.format(
            front=f"{EDGE1_IP}:5269",
            back=f"{EDGE1_IP}:{back}",
            source=CONNECTOR_SOURCE,
            send_proxy=send_proxy,
        )
        async with haproxy(tmp_path / "haproxy", config, EDGE1_IP, 5269):
            prosody = prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.CERTIFICATE)
            alice = await edge.add_user("alice")
            remote_user = await prosody.new_user("bob")
            inbox = Inbox(await edge.client(alice))
            theirs = await clients.login(prosody, remote_user)
            theirs.send_message(mto=alice, mbody="through the connector", mtype="chat")
            got = await inbox.get(lambda m: m["body"] == "through the connector", timeout=15)
            assert got["from"].bare == remote_user

            inbound = [s for s in live(edge, "in", "a.test") if "a.test" in s.authenticated]
            assert len(inbound) == 1, edge.server.s2s.streams()
            host = inbound[0].peer.rsplit(":", 1)[0]
            # Prosody connects from the machine's loopback (127.0.0.1) or its own address;
            # never from the connector's.
            assert host != CONNECTOR_SOURCE
            assert host in ("127.0.0.1", "127.0.0.2"), inbound[0].peer

            # With the PROXY protocol on, a connection without the header is just closed.
            reader, writer = await asyncio.open_connection(EDGE1_IP, back)
            try:
                writer.write(
                    b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                    b"xmlns:stream='http://etherx.jabber.org/streams' to='edge1.test' "
                    b"version='1.0'>"
                )
                async with asyncio.timeout(10):
                    assert await reader.read() == b""  # no reply at all
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

            # ... without harming the stream already there.
            theirs.send_message(mto=alice, mbody="still here", mtype="chat")
            await inbox.get(lambda m: m["body"] == "still here", timeout=10)
            assert [s.id for s in live(edge, "in", "a.test") if s.authenticated] == [inbound[0].id]


# --- 10. a certificate for the wrong name -------------------------------------------------


@pytest.mark.parametrize("dialback", [False, True], ids=["dialback-off", "dialback-on"])
async def test_wrong_name_certificate_needs_dialback_and_is_weak(
    tmp_path: Path,
    peer_pki: PrivateCA,
    peer_dns: DnsStub,
    prosody_peers: Any,
    clients: PeerClients,
    dialback: bool,
) -> None:
    async with edge_with_dns(tmp_path, peer_pki, peer_dns, **{"s2s.dialback": dialback}) as edge:
        wrong = peer_pki.issue_wrong_name("a.test", directory=tmp_path / "wrong")
        good = peer_pki.issue("a.test", directory=tmp_path / "c2s")
        # Prosody's server-to-server identity names wrong.test; its clients still see a
        # certificate for a.test (c2s_ssl), so they can log in.
        prosody = prosody_peers.prosody(
            "a.test",
            "127.0.0.2",
            S2SMode.DIALBACK,
            cert=wrong,
            extra_config=[f'c2s_ssl = {{ certificate = "{good.cert}"; key = "{good.key}" }}'],
        )
        alice = await edge.add_user("alice")
        remote_user = await prosody.new_user("bob")
        inbox = Inbox(await edge.client(alice))
        theirs = await clients.login(prosody, remote_user)
        errors = Inbox(theirs, "message_error")
        theirs.send_message(mto=alice, mbody="who am I?", mtype="chat")

        tried: Callable[[], list[S2SStreamInfo]] = lambda: seen(edge, "in", "a.test")  # noqa: E731
        if not dialback:
            err = await errors.get(timeout=20)
            assert err["error"]["condition"] in (
                "remote-server-not-found",
                "remote-server-timeout",
            )
            assert tried(), "Prosody never connected"
            assert all(not s.authenticated for s in tried())
            await inbox.nothing(wait=0.3)
            return

        got = await inbox.get(lambda m: m["body"] == "who am I?", timeout=15)
        assert got["from"].bare == remote_user
        proven = [s for s in tried() if "a.test" in s.authenticated]
        assert len(proven) == 1
        assert proven[0].auth == "dialback"
        assert proven[0].cert == "name_mismatch"
        assert not proven[0].strong  # FEDERATION.md: dialback without a valid cert is weak
        assert proven[0].cert_detail
