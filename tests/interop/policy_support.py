"""FEDERATION.md end to end: the world the policy tests run in.

IM Edge `home.test` (127.0.0.40) is the server under test. Its peers, each on its own
loopback address so that these tests never collide with other s2s tests:

- `pa.test` (127.0.0.41): Prosody in certificate mode. Its certificate comes from the CA
  home trusts, and it authenticates with SASL EXTERNAL: **strong** trust.
- `pw.test` (127.0.0.42): Prosody in dialback mode with a certificate from a CA nobody
  trusts: it can only prove its domain with dialback, so trust is **weak**.
- `far.test` (127.0.0.43): a second IM Edge whose certificate comes from another CA:
  dialback again, **weak** trust.

Home finds its peers through `[s2s] edge_addresses` or the partner's edge address, never
through DNS; the peers find home through hosts files written from `ZONE`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from imedge.policy import EdgeAddress, Filter, Partner
from imedge.server.s2s.info import S2SStreamInfo
from tests.helpers import Inbox, PkiFiles, RunningServer, imedge_instance
from tests.peers import fixtures as peer_fixtures
from tests.peers.clients import PeerClients
from tests.peers.common import S2SMode
from tests.peers.dns import DnsStub, Zone
from tests.peers.pki import PrivateCA, issue_untrusted
from tests.peers.prosody import Prosody

HOME, HOME_IP = "home.test", "127.0.0.40"
PA, PA_IP = "pa.test", "127.0.0.41"  # Prosody, SASL EXTERNAL: strong trust
PW, PW_IP = "pw.test", "127.0.0.42"  # Prosody, dialback with an untrusted certificate: weak
FAR, FAR_IP = "far.test", "127.0.0.43"  # IM Edge with a certificate from another CA: weak
ADDRESSES = {HOME: HOME_IP, PA: PA_IP, PW: PW_IP, FAR: FAR_IP}
EDGES = {domain: f"{ip}:5269" for domain, ip in ADDRESSES.items()}
ZONE = Zone(hosts=ADDRESSES)

WAIT = 15.0  # a first stanza may have to wait for a stream to be negotiated (and dialback)


def partner(name: str, domain: str, filter_: Filter = Filter.VERIFIED, **kw: Any) -> Partner:
    """A partner row for one of the peers above, reached through its edge address."""
    return Partner(
        name=name,
        domains=(domain,),
        filter=filter_,
        edge_address=EdgeAddress(ADDRESSES[domain]),
        **kw,
    )


def quiet(client: slixmpp.ClientXMPP) -> None:
    """The user decides: slixmpp must not answer subscription requests by itself."""
    client.auto_authorize = None
    client.auto_subscribe = False


@dataclass
class World:
    tmp: Path
    ca: PrivateCA
    dns: DnsStub
    clients: PeerClients = field(default_factory=PeerClients)
    prosodies: list[Prosody] = field(default_factory=list)

    def prosody(self, domain: str, *, untrusted: bool = False) -> Prosody:
        """Prosody for `domain`: certificate mode, or dialback with an untrusted certificate."""
        cert = issue_untrusted(domain, self.tmp / f"{domain}-rogue") if untrusted else None
        peer = Prosody(
            self.tmp / f"prosody-{domain}",
            domain=domain,
            address=ADDRESSES[domain],
            ca=self.ca,
            mode=S2SMode.DIALBACK if untrusted else S2SMode.CERTIFICATE,
            zone=ZONE,
            dns_port=self.dns.port,
            cert=cert,
        )
        peer.start()
        self.prosodies.append(peer)
        peer_fixtures._LIVE.add(peer)  # stopped at interpreter exit should teardown not run
        return peer

    async def login(self, peer: Prosody, jid: str) -> slixmpp.ClientXMPP:
        return await self.clients.login(peer, jid, setup=quiet)

    async def close(self) -> None:
        # Log out first (COMPAT: prosody 0.12.3 may hang in its shutdown when SIGTERM
        # lands while it tears down a client that was just cut off).
        await self.clients.close()
        for peer in self.prosodies:
            peer_fixtures._LIVE.discard(peer)
            await asyncio.to_thread(peer.stop)


def overrides(world: World, **extra: Any) -> dict[str, Any]:
    return {
        "dns.nameservers": [world.dns.nameserver],
        "s2s.edge_addresses": EDGES,
        "s2s.idle_timeout": 60,
        **extra,
    }


@contextlib.asynccontextmanager
async def home_server(
    world: World, partners: tuple[Partner, ...], **extra: Any
) -> AsyncIterator[RunningServer]:
    """IM Edge home.test with the given partner table, trusting the test CA."""
    files = world.ca.issue(HOME, directory=world.tmp / "home-pki")
    pki = PkiFiles(None, files.ca, files.cert, files.key)
    async with imedge_instance(
        world.tmp / "home", HOME, HOME_IP, pki, partners=partners, **overrides(world, **extra)
    ) as rs:
        yield rs


@contextlib.asynccontextmanager
async def far_server(world: World, partners: tuple[Partner, ...]) -> AsyncIterator[RunningServer]:
    """IM Edge far.test, its certificate from a CA of its own that home does not trust."""
    own_ca = PrivateCA(world.tmp / "far-ca", name="far.test's own CA")
    files = own_ca.issue(FAR, directory=world.tmp / "far-pki")
    pki = PkiFiles(None, files.ca, files.cert, files.key)
    async with imedge_instance(
        world.tmp / "far", FAR, FAR_IP, pki, partners=partners, **overrides(world)
    ) as rs:
        yield rs


async def add_contact(client: slixmpp.ClientXMPP, contact: str) -> None:
    """Put `contact` in the roster (no subscription): on the user's allow list."""
    answer = client.update_roster(slixmpp.JID(contact), name="Friend")
    assert answer is not None
    await answer


async def local_client(rs: RunningServer, jid: str) -> slixmpp.ClientXMPP:
    return await rs.client(jid, setup=quiet)


# --- what the remote user sees ------------------------------------------------------------


class Sent:
    """A remote (or local) client's view of what it sends and what comes back."""

    def __init__(self, client: slixmpp.ClientXMPP) -> None:
        self.client = client
        self.errors = Inbox(client, "message_error")
        self.messages = Inbox(client, "message")
        self.subscribed = Inbox(client, "presence_subscribed")
        self.unsubscribed = Inbox(client, "presence_unsubscribed")
        self.subscribe_requests = Inbox(client, "presence_subscribe")
        self._n = 0

    def message(self, to: str, body: str) -> str:
        """Send a chat message; return its id."""
        self._n += 1
        msg = self.client.make_message(mto=to, mbody=body, mtype="chat")
        msg["id"] = f"{body}-{self._n}"
        msg.send()
        return str(msg["id"])

    async def error_for(self, msg_id: str) -> tuple[str, str | None]:
        """The (condition, text) of the error answering message `msg_id`."""
        err = await self.errors.get(lambda m: m["id"] == msg_id, timeout=WAIT)
        text = err["error"]["text"] or None
        return str(err["error"]["condition"]), text

    async def ping(self, to: str) -> str:
        """XEP-0199 ping to `to`: "result", or the error condition."""
        iq = self.client.Iq()
        iq["type"] = "get"
        iq["to"] = to
        iq.enable("ping")
        try:
            await iq.send(timeout=WAIT)  # type: ignore[no-untyped-call]
        except IqError as exc:
            return str(exc.iq["error"]["condition"])
        except IqTimeout:
            return "timeout"
        return "result"

    def subscribe(self, to: str) -> None:
        self.client.send_presence(pto=to, ptype="subscribe")


async def got_message(inbox: Inbox, body: str, sender: str) -> None:
    msg = await inbox.get(lambda m: m["body"] == body, timeout=WAIT)
    assert str(msg["from"].bare) == sender


def from_(bare: str) -> Callable[[Any], bool]:
    return lambda stanza: str(stanza["from"].bare) == bare


# --- what the server sees -----------------------------------------------------------------


def streams(rs: RunningServer, remote: str, direction: str | None = None) -> list[S2SStreamInfo]:
    """Live streams with `remote` (inbound ones once `remote` proved its domain)."""
    return [
        s
        for s in rs.server.s2s.streams()
        if (direction is None or s.direction == direction)
        and (s.remote == remote or remote in s.authenticated)
    ]


def inbound_stream(rs: RunningServer, remote: str) -> S2SStreamInfo:
    live = [s for s in streams(rs, remote, "in") if remote in s.authenticated]
    assert live, f"no inbound stream from {remote}: {rs.server.s2s.streams()}"
    return live[0]


def closed_inbound(rs: RunningServer, remote: str) -> list[S2SStreamInfo]:
    return [s for s in rs.server.s2s.recently_closed if s.direction == "in" and s.remote == remote]


def decisions(rs: RunningServer, partner_label: str, verdict: str, reason: str) -> float:
    """imedge_federation_decisions_total{partner, verdict, reason} as /metrics shows it."""
    value = rs.server.metrics.registry.get_sample_value(
        "imedge_federation_decisions_total",
        {"partner": partner_label, "verdict": verdict, "reason": reason},
    )
    return value or 0.0
