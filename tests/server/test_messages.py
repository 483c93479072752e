"""RFC 6121 §8.5: message delivery to local accounts, over real sockets with slixmpp.

Also XEP-0115: entity capabilities in presence pass through untouched.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import slixmpp

from imedge.domain.jid import Jid
from imedge.features.messages import pick_sessions
from imedge.protocol.stanza import MessageType
from imedge.server.session import C2SSession
from tests.helpers import DOMAIN, Inbox, RunningServer, wait_for

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CAPS = "http://jabber.org/protocol/caps"


async def sync(client: slixmpp.ClientXMPP) -> None:
    """A ping to the server: everything the client sent before has been handled."""
    await client.plugin["xep_0199"].send_ping(DOMAIN, timeout=5)


async def online(
    server: RunningServer, jid: str, priority: int | None = None, **kw: Any
) -> tuple[slixmpp.ClientXMPP, Inbox]:
    """A client that has sent initial presence (with `priority`), and its message inbox."""
    client = await server.client(jid, start=False, **kw)
    inbox = Inbox(client, "message")
    client.send_presence(ppriority=priority)
    await sync(client)
    return client, inbox


def condition_of(msg: Any) -> str | None:
    err = msg.xml.find("{jabber:client}error")
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{" + STANZAS + "}") and not child.tag.endswith("}text"):
            return str(child.tag.split("}", 1)[1])
    return None


def body_is(text: str) -> Any:
    return lambda m: m["body"] == text


# --- pure: which resources get a message to the bare JID ------------------------------
def _session(resource: str, priority: int) -> C2SSession:
    s = C2SSession(
        "id-" + resource,
        Jid.parse(f"bob@{DOMAIN}/{resource}"),
        "peer",
        lambda _: None,
        lambda *_: None,
    )
    s.priority = priority
    s.available = True
    return s


def test_pick_highest_priority_for_chat_and_normal() -> None:
    a, b, c = _session("a", 1), _session("b", 5), _session("c", 5)
    for mtype in (MessageType.CHAT, MessageType.NORMAL):
        assert pick_sessions(mtype, [a, b, c]) == [b, c]


def test_pick_never_negative_priority() -> None:
    assert pick_sessions(MessageType.CHAT, [_session("a", -1)]) == []
    assert pick_sessions(MessageType.HEADLINE, [_session("a", -1)]) == []


def test_pick_headline_goes_to_every_non_negative_resource() -> None:
    a, b, c = _session("a", 0), _session("b", 5), _session("c", -3)
    assert pick_sessions(MessageType.HEADLINE, [a, b, c]) == [a, b]


# --- end to end -------------------------------------------------------------------------
async def test_message_to_bare_jid_reaches_online_user(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a, _ = await online(server, alice)
    _, bob_inbox = await online(server, bob)
    a.send_message(mto=bob, mbody="hello bob", mtype="chat")
    msg = await bob_inbox.get(body_is("hello bob"))
    assert msg["from"] == a.boundjid
    assert msg["type"] == "chat"


async def test_message_to_full_jid_reaches_only_that_resource(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a, _ = await online(server, alice)
    _, inbox_1 = await online(server, bob + "/one")
    b2, inbox_2 = await online(server, bob + "/two")
    a.send_message(mto=b2.boundjid, mbody="for two", mtype="chat")
    await inbox_2.get(body_is("for two"))
    await inbox_1.nothing(body_is("for two"))


async def test_bare_jid_goes_to_highest_priority_only(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a, _ = await online(server, alice)
    _, low = await online(server, bob + "/low", priority=1)
    _, high = await online(server, bob + "/high", priority=5)
    a.send_message(mto=bob, mbody="to the top", mtype="chat")
    await high.get(body_is("to the top"))
    await low.nothing(body_is("to the top"))


async def test_equal_priorities_all_get_the_message(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a, _ = await online(server, alice)
    _, one = await online(server, bob + "/one", priority=3)
    _, two = await online(server, bob + "/two", priority=3)
    a.send_message(mto=bob, mbody="to both", mtype="normal")
    await one.get(body_is("to both"))
    await two.get(body_is("to both"))


async def test_negative_priority_only_means_offline_storage(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a, _ = await online(server, alice)
    a_errors = Inbox(a, "message_error")
    _, neg = await online(server, bob + "/busy", priority=-1)
    a.send_message(mto=bob, mbody="later", mtype="chat")
    await sync(a)
    assert await server.server.store.offline.count(Jid.parse(bob)) == 1
    await neg.nothing(body_is("later"), wait=0.2)
    await a_errors.nothing(wait=0.1)
    # A full JID still reaches the negative-priority resource (§8.5.3.1).
    a.send_message(mto=bob + "/busy", mbody="direct", mtype="chat")
    await neg.get(body_is("direct"))


async def test_full_jid_of_a_gone_resource_is_handled_as_bare(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a, _ = await online(server, alice)
    _, here = await online(server, bob + "/here")
    a.send_message(mto=bob + "/gone", mbody="where are you", mtype="chat")
    msg = await here.get(body_is("where are you"))
    assert msg["to"] == bob + "/gone"


async def test_groupchat_to_an_account_is_refused(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a, _ = await online(server, alice)
    _, b_inbox = await online(server, bob)
    errors = Inbox(a, "message_error")
    a.send_message(mto=bob, mbody="room talk", mtype="groupchat")
    err = await errors.get()
    assert condition_of(err) == "service-unavailable"
    assert err["from"] == bob
    await b_inbox.nothing(body_is("room talk"), wait=0.1)


async def test_nonexistent_account_gets_service_unavailable(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    a, _ = await online(server, alice)
    errors = Inbox(a, "message_error")
    msg = a.make_message(mto=f"nobody@{DOMAIN}", mbody="anyone?", mtype="chat")
    msg["id"] = "m1"
    msg.send()
    err = await errors.get()
    assert condition_of(err) == "service-unavailable"
    assert err["id"] == "m1"
    assert err["from"] == f"nobody@{DOMAIN}"
    # Headlines are dropped without a word, as for an existing account (§8.5.1).
    a.send_message(mto=f"nobody@{DOMAIN}", mbody="news", mtype="headline")
    a.send_message(mto=f"nobody@{DOMAIN}/res", mbody="news", mtype="headline")
    await sync(a)
    await errors.nothing(wait=0.2)


async def test_message_without_to_goes_to_own_account(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    a1, inbox_1 = await online(server, alice + "/one", priority=-1)
    _, inbox_2 = await online(server, alice + "/two", priority=1)
    msg = a1.Message()
    msg["body"] = "note to self"
    msg.send()
    await inbox_2.get(body_is("note to self"))
    await inbox_1.nothing(body_is("note to self"), wait=0.2)


async def test_message_to_the_server_is_answered_service_unavailable(
    server: RunningServer,
) -> None:
    alice = await server.add_user("alice")
    a, _ = await online(server, alice)
    errors = Inbox(a, "message_error")
    a.send_message(mto=DOMAIN, mbody="hello server", mtype="chat")
    err = await errors.get()
    assert condition_of(err) == "service-unavailable"


async def test_error_messages_are_never_answered(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    a, _ = await online(server, alice)
    errors = Inbox(a, "message_error")
    for to in (f"nobody@{DOMAIN}", f"nobody@{DOMAIN}/x", DOMAIN):
        msg = a.make_message(mto=to, mtype="error")
        msg["error"]["condition"] = "item-not-found"
        msg.send()
    await sync(a)
    await errors.nothing(wait=0.2)


# --- XEP-0115: entity capabilities pass through ---------------------------------------
async def test_presence_caps_element_reaches_contacts_untouched(server: RunningServer) -> None:
    # Needs the presence and roster features (subscriptions and broadcast).
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a = await server.client(alice)
    b = await server.client(bob)
    b.send_presence_subscription(pto=alice)
    await wait_for(lambda: b.client_roster[alice]["subscription"] in ("to", "both"))
    presences = Inbox(b, "presence_available")
    p = a.make_presence(ppriority=1)
    p.xml.append(
        ET.fromstring(
            f"<c xmlns='{CAPS}' hash='sha-1' node='https://example.org/client' "
            "ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>"
        )
    )
    p.send()

    def has_caps(pres: Any) -> bool:
        return pres["from"] == a.boundjid and pres.xml.find(f"{{{CAPS}}}c") is not None

    got = await presences.get(has_caps)
    c = got.xml.find(f"{{{CAPS}}}c")
    assert c.attrib == {
        "hash": "sha-1",
        "node": "https://example.org/client",
        "ver": "QgayPKawpkPSDYmwT/WM94uAlu0=",
    }
