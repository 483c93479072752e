"""FEDERATION.md §Words (personal contact, allow list): a synced person as a personal contact.

IM Edge serves edge1.test on 127.0.0.10 and starts with no partner for a.test. A peer
server's LDAP (the real slapd of the `slapd_server` fixture) holds people whose IM
addresses are built as `{uid}@a.test`, a real Prosody on 127.0.0.2. After a sync the
partner a.test appears on its own (origin `peer-server:<id>`); a local user finds a
person through Jabber Search (XEP-0055) on directory.edge1.test, adds them (RFC 6121 §2.3
roster set, §3.1 subscribe), the Prosody user approves, and they chat both ways. With the
partner's filter at `contacts_only`, that person's messages are refused until the user
adds them: only then do they count as the user's allow list (FEDERATION.md §Inbound 5).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from imedge.directory.model import AttributeMapping, LdapSource, PeerServer, SyncStatus
from imedge.policy import Filter, Origin, OriginKind, Partner
from tests.helpers import Inbox, PkiFiles, RunningServer, imedge_instance
from tests.peers.common import S2SMode
from tests.peers.dns import DnsStub
from tests.peers.pki import PrivateCA
from tests.peers.slapd import Slapd

pytestmark = pytest.mark.interop

EDGE, EDGE_IP = "edge1.test", "127.0.0.10"
PEER_DOMAIN, PEER_IP = "a.test", "127.0.0.2"
SERVICE = f"directory.{EDGE}"
PERSON = "john_smith"  # the slapd fixture's first person, "John Smith"
PERSON_JID = f"{PERSON}@{PEER_DOMAIN}"
ADMIN = "test"


@dataclass
class Federated:
    edge: RunningServer
    prosody: Any
    peer: PeerServer
    partner: Partner


def peer_server(server: Slapd) -> PeerServer:
    """The slapd's people, living on the Prosody: IM address from the uid."""
    return PeerServer(
        name="A corp",
        domains=(PEER_DOMAIN,),
        ldap=LdapSource(
            url=server.url,
            base_dn=server.base_dn,
            start_tls=True,
            ca_file=str(server.ca_path),
            bind_dn=server.bind_dn,
            bind_password=server.password,
            page_size=100,
            timeout=5.0,
        ),
        mapping=AttributeMapping(im_address=f"{{uid}}@{PEER_DOMAIN}", display_name="cn"),
    )


@pytest.fixture
async def synced(
    tmp_path: Path,
    peer_pki: PrivateCA,
    peer_dns: DnsStub,
    prosody_peers: Any,
    slapd_server: Slapd,
) -> AsyncIterator[Federated]:
    prosody = prosody_peers.prosody(PEER_DOMAIN, PEER_IP, S2SMode.CERTIFICATE)
    await prosody.aregister(PERSON)
    files = peer_pki.issue(EDGE, directory=tmp_path / "edge-pki")
    pki = PkiFiles(None, files.ca, files.cert, files.key)
    async with imedge_instance(
        tmp_path / "edge",
        EDGE,
        EDGE_IP,
        pki,
        partners=(),
        **{"dns.nameservers": [peer_dns.nameserver]},
    ) as rs:
        assert not own_partners(rs)
        peer = await rs.server.directory.add_peer_server(peer_server(slapd_server), ADMIN)
        assert peer.id is not None
        report = await rs.server.directory.sync(peer.id, actor=ADMIN)
        assert report.status is SyncStatus.OK, report
        assert report.added > 0
        [partner] = own_partners(rs)
        yield Federated(rs, prosody, peer, partner)


def own_partners(rs: RunningServer) -> list[Partner]:
    """Partner rows covering the Prosody's domain (the table has built-in rows too)."""
    return [p for p in rs.server.federation.config.partners if PEER_DOMAIN in p.domains]


async def find_person(c: slixmpp.ClientXMPP, name: str) -> dict[str, Any]:
    """XEP-0055 §3 with a data form (XEP-0004): the one result for PERSON_JID."""
    iq = c.plugin["xep_0055"].make_search_iq(ito=SERVICE)
    iq["search"]["form"].add_field("name", value=name)
    res = await iq.send(timeout=5)
    [item] = [dict(i) for i in res["search"]["form"]["items"] if str(i["jid"]) == PERSON_JID]
    return item


async def add_contact(c: slixmpp.ClientXMPP, jid: str, name: str) -> None:
    """RFC 6121 §2.3 roster set, then §3.1.1 subscription request."""
    await c.update_roster(jid, name=name, timeout=5)
    c.send_presence(pto=jid, ptype="subscribe")


def approve_requests(c: slixmpp.ClientXMPP) -> None:
    c.add_event_handler(
        "presence_subscribe", lambda p: c.send_presence(pto=p["from"].bare, ptype="subscribed")
    )


async def test_the_sync_enables_federation_with_the_peer_domain(synced: Federated) -> None:
    p = synced.partner
    assert p.origin == Origin(OriginKind.PEER_SERVER, str(synced.peer.id))
    assert p.allowed and p.domains == (PEER_DOMAIN,)
    entry = await synced.edge.server.store.directory.get_entry(PERSON_JID)
    assert entry is not None and entry.display_name == "John Smith"


async def test_a_user_finds_a_synced_person_adds_them_and_chats(
    synced: Federated, peer_clients: Any
) -> None:
    alice = await synced.edge.add_user("alice")
    ours = await synced.edge.client(alice, plugins=("xep_0030", "xep_0004", "xep_0055"))
    theirs = await peer_clients.login(synced.prosody, PERSON_JID)
    approve_requests(theirs)

    # The partner's default filter (verified) with a validated certificate: an IM
    # invitation from someone not yet a contact is delivered (FEDERATION.md §Inbound 5).
    inbox_ours = Inbox(ours)
    theirs.send_message(mto=alice, mbody="may I?", mtype="chat")
    await inbox_ours.get(lambda m: m["body"] == "may I?", timeout=15)

    item = await find_person(ours, "john smith")
    assert item["name"] == "John Smith" and item["reachable"] == "yes"

    available = Inbox(ours, "presence_available")
    await add_contact(ours, PERSON_JID, item["name"])
    await available.get(lambda p: p["from"].bare == PERSON_JID, timeout=15)
    assert ours.client_roster[PERSON_JID]["subscription"] in ("to", "both")

    inbox_theirs = Inbox(theirs)
    ours.send_message(mto=PERSON_JID, mbody="hello John", mtype="chat")
    got = await inbox_theirs.get(lambda m: m["body"] == "hello John", timeout=15)
    assert got["from"].bare == alice
    theirs.send_message(mto=alice, mbody="hello Alice", mtype="chat")
    got = await inbox_ours.get(lambda m: m["body"] == "hello Alice", timeout=15)
    assert got["from"].bare == PERSON_JID


async def test_a_synced_person_counts_as_allowed_only_once_added(
    synced: Federated, peer_clients: Any
) -> None:
    # FEDERATION.md §Inbound 2: contacts_only marks every stanza of the partner unverified,
    # so only the user's allow list (explicit entries and roster) gets through (§Inbound 5).
    await synced.edge.server.federation.edit_partner(
        synced.partner.name, {"filter": Filter.CONTACTS_ONLY}, ADMIN
    )
    alice = await synced.edge.add_user("alice")
    ours = await synced.edge.client(alice, plugins=("xep_0030", "xep_0004", "xep_0055"))
    theirs = await peer_clients.login(synced.prosody, PERSON_JID)
    approve_requests(theirs)
    inbox_ours, errors = Inbox(ours), Inbox(theirs, "message_error")

    theirs.send_message(mto=alice, mbody="before", mtype="chat")
    refused = await errors.get(timeout=15)
    # RFC 6121 §8.5.2.1.1: the same answer as for a user who does not exist.
    assert refused["from"].bare == alice
    assert refused["error"]["condition"] == "service-unavailable"
    await inbox_ours.nothing(lambda m: m["body"] == "before", wait=0.5)

    item = await find_person(ours, "john smith")
    available = Inbox(ours, "presence_available")
    await add_contact(ours, PERSON_JID, item["name"])
    await available.get(lambda p: p["from"].bare == PERSON_JID, timeout=15)

    theirs.send_message(mto=alice, mbody="after", mtype="chat")
    got = await inbox_ours.get(lambda m: m["body"] == "after", timeout=15)
    assert got["from"].bare == PERSON_JID
