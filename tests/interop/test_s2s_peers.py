"""IM Edge federating with real Prosody 0.12 and ejabberd 23.01 processes (RFC 6120 §13).

IM Edge serves edge1.test on 127.0.0.10; Prosody a.test is on 127.0.0.2, ejabberd c.test
on 127.0.0.4. Names resolve through the test DNS stub (IM Edge) and hosts files (peers).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from tests.helpers import Inbox, PkiFiles, RunningServer, imedge_instance
from tests.peers.common import S2SMode
from tests.peers.dns import DnsStub
from tests.peers.pki import PrivateCA

pytestmark = pytest.mark.interop

EDGE, EDGE_IP = "edge1.test", "127.0.0.10"


@pytest.fixture
async def edge(
    tmp_path: Path, peer_pki: PrivateCA, peer_dns: DnsStub
) -> AsyncIterator[RunningServer]:
    files = peer_pki.issue(EDGE, directory=tmp_path / "edge-pki")
    pki = PkiFiles(None, files.ca, files.cert, files.key)
    async with imedge_instance(
        tmp_path / "edge", EDGE, EDGE_IP, pki, **{"dns.nameservers": [peer_dns.nameserver]}
    ) as rs:
        yield rs


async def subscribe_both_ways(
    ours: slixmpp.ClientXMPP, our_jid: str, theirs: slixmpp.ClientXMPP, their_jid: str
) -> None:
    """Each asks the other and approves the other's request; wait for presence both ways."""
    seen_by_ours = Inbox(ours, "presence_available")
    seen_by_theirs = Inbox(theirs, "presence_available")
    theirs.add_event_handler(
        "presence_subscribe", lambda p: theirs.send_presence(pto=p["from"].bare, ptype="subscribed")
    )
    ours.add_event_handler(
        "presence_subscribe", lambda p: ours.send_presence(pto=p["from"].bare, ptype="subscribed")
    )
    ours.send_presence(pto=their_jid, ptype="subscribe")
    theirs.send_presence(pto=our_jid, ptype="subscribe")
    await seen_by_ours.get(lambda p: p["from"].bare == their_jid, timeout=15)
    await seen_by_theirs.get(lambda p: p["from"].bare == our_jid, timeout=15)


async def exchange_everything(edge: RunningServer, peer: Any, peer_clients: Any) -> None:
    """Chat both ways, mutual subscription, presence, unavailable on logout, offline delivery."""
    alice = await edge.add_user("alice")
    remote_user = await peer.new_user("bob")
    ours = await edge.client(alice)
    theirs = await peer_clients.login(peer, remote_user)

    await subscribe_both_ways(ours, alice, theirs, remote_user)

    inbox_theirs = Inbox(theirs)
    inbox_ours = Inbox(ours)
    ours.send_message(mto=remote_user, mbody="hello from IM Edge", mtype="chat")
    got = await inbox_theirs.get(lambda m: m["body"] == "hello from IM Edge", timeout=15)
    assert got["from"].bare == alice
    theirs.send_message(mto=alice, mbody="hello back", mtype="chat")
    got = await inbox_ours.get(lambda m: m["body"] == "hello back", timeout=15)
    assert got["from"].bare == remote_user

    # Unavailable is seen when the remote user logs out.
    gone = Inbox(ours, "presence_unavailable")
    theirs.disconnect()
    await gone.get(lambda p: p["from"].bare == remote_user, timeout=15)

    # A message to the now offline remote user is stored by the peer and delivered at login.
    ours.send_message(mto=remote_user, mbody="while you were away", mtype="chat")
    await asyncio.sleep(1.0)  # let it cross the link before the peer user logs back in
    again = await peer_clients.login(peer, remote_user, start=False)
    inbox_again = Inbox(again)
    again.send_presence()
    got = await inbox_again.get(lambda m: m["body"] == "while you were away", timeout=15)
    assert got["from"].bare == alice


async def test_prosody_certificate_mode(
    edge: RunningServer, prosody_peers: Any, peer_clients: Any
) -> None:
    prosody = prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.CERTIFICATE)
    await exchange_everything(edge, prosody, peer_clients)
    streams = edge.server.s2s.streams()
    inbound = [s for s in streams if s.direction == "in" and "a.test" in s.authenticated]
    assert inbound and inbound[0].auth == "sasl-external" and inbound[0].cert == "valid"
    assert "Accepting SASL EXTERNAL identity from edge1.test" in prosody.log_text() or any(
        s.auth == "sasl-external" for s in streams if s.direction == "out"
    )


async def test_prosody_dialback_mode(
    edge: RunningServer, prosody_peers: Any, peer_clients: Any
) -> None:
    prosody = prosody_peers.prosody("b.test", "127.0.0.3", S2SMode.DIALBACK)
    await exchange_everything(edge, prosody, peer_clients)
    outbound = [
        s for s in edge.server.s2s.streams() if s.direction == "out" and s.remote == "b.test"
    ]
    assert outbound and outbound[0].auth == "dialback"


async def test_ejabberd_certificate_mode(
    edge: RunningServer, ejabberd_peers: Any, peer_clients: Any
) -> None:
    ejabberd = ejabberd_peers.ejabberd("c.test", "127.0.0.4", S2SMode.CERTIFICATE)
    await exchange_everything(edge, ejabberd, peer_clients)
    inbound = [
        s for s in edge.server.s2s.streams() if s.direction == "in" and "c.test" in s.authenticated
    ]
    assert inbound and inbound[0].cert == "valid"


async def test_peer_going_down_bounces_then_recovers(
    edge: RunningServer, prosody_peers: Any, peer_clients: Any
) -> None:
    prosody = prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.CERTIFICATE)
    alice = await edge.add_user("alice")
    remote_user = await prosody.new_user("bob")
    ours = await edge.client(alice)
    theirs = await peer_clients.login(prosody, remote_user)
    inbox = Inbox(theirs)
    ours.send_message(mto=remote_user, mbody="first", mtype="chat")
    await inbox.get(lambda m: m["body"] == "first", timeout=15)

    prosody_peers.stop(prosody)
    errors = Inbox(ours, "message_error")
    ours.send_message(mto=remote_user, mbody="into the void?", mtype="chat")
    err = await errors.get(timeout=15)
    assert err["error"]["condition"] in ("remote-server-not-found", "remote-server-timeout")
    assert "a.test" in err["error"]["text"]


async def test_untrusted_certificate_is_refused_when_certificates_are_required(
    tmp_path: Path, peer_pki: PrivateCA, peer_dns: DnsStub, prosody_peers: Any, peer_clients: Any
) -> None:
    files = peer_pki.issue(EDGE, directory=tmp_path / "edge-pki")
    pki = PkiFiles(None, files.ca, files.cert, files.key)
    # Dialback off: a peer must prove its domain with a certificate we trust.
    async with imedge_instance(
        tmp_path / "edge",
        EDGE,
        EDGE_IP,
        pki,
        **{"dns.nameservers": [peer_dns.nameserver], "s2s.dialback": False},
    ) as edge:
        from tests.peers.pki import issue_untrusted

        bad = issue_untrusted("a.test", tmp_path / "bad-pki")
        prosody = prosody_peers.prosody("a.test", "127.0.0.2", S2SMode.DIALBACK, cert=bad)
        await edge.add_user("alice")
        remote_user = await prosody.new_user("bob")
        theirs = await peer_clients.login(prosody, remote_user)
        errors = Inbox(theirs, "message_error")
        theirs.send_message(mto=f"alice@{EDGE}", mbody="let me in", mtype="chat")
        # Prosody gives up on us: we offered neither EXTERNAL (its certificate is not
        # trusted) nor dialback, and its user is told.
        err = await errors.get(timeout=20)
        assert err["error"]["condition"] in ("remote-server-not-found", "remote-server-timeout")
        seen = [*edge.server.s2s.recently_closed, *edge.server.s2s.streams()]
        tried = [s for s in seen if s.direction == "in" and s.remote == "a.test"]
        assert tried, "Prosody never connected"
        assert all(not s.authenticated and s.cert is None for s in tried)
        assert not any("a.test" in s.authenticated for s in edge.server.s2s.streams())
