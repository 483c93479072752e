"""XEP-0280 Message Carbons, end to end with slixmpp's carbons plugin, and its pure rules."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
import slixmpp

from imedge.domain.jid import Jid
from imedge.features.carbons import CarbonKind, is_eligible, wrap
from imedge.protocol import ns
from imedge.protocol.element import Element, stanza_bytes
from imedge.server.session import C2SSession
from tests.helpers import DOMAIN, Inbox, RunningServer

PLUGINS = ("xep_0030", "xep_0199", "xep_0280")


async def sync(client: slixmpp.ClientXMPP) -> None:
    await client.plugin["xep_0199"].send_ping(DOMAIN, timeout=5)


class Device:
    """One logged-in resource with inboxes for messages and both kinds of carbons."""

    def __init__(self, client: slixmpp.ClientXMPP) -> None:
        self.client = client
        self.messages = Inbox(client, "message")
        self.sent = Inbox(client, "carbon_sent")
        self.received = Inbox(client, "carbon_received")

    @property
    def jid(self) -> Any:
        return self.client.boundjid

    async def enable(self) -> None:
        await self.client.plugin["xep_0280"].enable(timeout=5)

    async def disable(self) -> None:
        await self.client.plugin["xep_0280"].disable(timeout=5)

    async def quiet(self) -> None:
        """No message and no carbon of either kind has arrived (after a short wait)."""
        await self.messages.nothing(wait=0.2)
        await self.sent.nothing(wait=0)
        await self.received.nothing(wait=0)


async def device(server: RunningServer, jid: str, priority: int | None = None) -> Device:
    client = await server.client(jid, start=False, plugins=PLUGINS)
    dev = Device(client)
    client.send_presence(ppriority=priority)
    await sync(client)
    return dev


def forwarded_body(carbon: Any, kind: str) -> tuple[str, Any, Any]:
    inner = carbon[f"carbon_{kind}"]  # slixmpp: the forwarded stanza itself
    return inner["body"], inner["from"], inner["to"]


# --- pure ------------------------------------------------------------------------------------
def _msg(mtype: str | None, body: str | None = "hi") -> Element:
    m = Element("message", ns.CLIENT, {"to": "b@x"} | ({"type": mtype} if mtype else {}))
    if body is not None:
        m.sub("body", text=body)
    return m


@pytest.mark.parametrize(
    ("stanza", "eligible"),
    [
        (_msg("chat"), True),
        (_msg("chat", None), True),  # chat states travel as chat messages (§10.2)
        (_msg("normal"), True),
        (_msg(None), True),
        (_msg("normal", None), False),
        (_msg("headline"), False),
        (_msg("groupchat"), False),
        (_msg("error"), False),
    ],
)
def test_eligibility_by_type(stanza: Element, eligible: bool) -> None:
    assert is_eligible(stanza) is eligible


@pytest.mark.parametrize(
    ("child", "child_ns"),
    [
        ("private", ns.CARBONS),
        ("received", ns.CARBONS),
        ("no-copy", ns.HINTS),
        ("x", ns.MUC_USER),
    ],
)
def test_opt_outs_and_muc_are_not_copied(child: str, child_ns: str) -> None:
    m = _msg("chat")
    m.sub(child, child_ns)
    assert not is_eligible(m)


def test_wrap_forwards_a_server_stanza_as_client() -> None:
    original = Element("message", ns.SERVER, {"from": "r@far/x", "to": "b@x/1", "type": "chat"})
    original.sub("body", text="from afar")
    session = C2SSession("s", Jid.parse("b@x/2"), "peer", lambda _: None, lambda *_: None)
    carbon = wrap(CarbonKind.RECEIVED, original, Jid.parse("b@x"), session)
    data = stanza_bytes(carbon, ns.CLIENT).decode()
    assert "jabber:server" not in data
    assert data.startswith("<message from='b@x' to='b@x/2' type='chat'>")
    assert "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>" in data
    assert "<message xmlns='jabber:client' from='r@far/x'" in data


# --- end to end -------------------------------------------------------------------------------
async def test_sent_carbons_follow_enable_and_disable(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    laptop = await device(server, alice + "/laptop")
    phone = await device(server, alice + "/phone")
    b = await device(server, bob)

    # Not enabled yet: no copy.
    phone.client.send_message(mto=bob, mbody="one", mtype="chat")
    await b.messages.get(lambda m: m["body"] == "one")
    await laptop.quiet()

    await laptop.enable()
    phone.client.send_message(mto=bob, mbody="two", mtype="chat")
    carbon = await laptop.sent.get()
    assert carbon["from"] == alice
    assert carbon["to"] == laptop.jid
    assert carbon["type"] == "chat"
    assert forwarded_body(carbon, "sent") == ("two", phone.jid, bob)
    await b.messages.get(lambda m: m["body"] == "two")
    # The sender never gets its own copy, enabled or not.
    await phone.quiet()

    await laptop.disable()
    phone.client.send_message(mto=bob, mbody="three", mtype="chat")
    await b.messages.get(lambda m: m["body"] == "three")
    await laptop.quiet()


async def test_received_carbons_go_to_the_resources_without_the_original(
    server: RunningServer,
) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    laptop = await device(server, alice + "/laptop", priority=0)
    phone = await device(server, alice + "/phone", priority=5)
    await laptop.enable()
    await phone.enable()
    b = await device(server, bob)

    # To the full JID of the laptop: the phone gets a <received/> copy.
    b.client.send_message(mto=laptop.jid, mbody="to the laptop", mtype="chat")
    await laptop.messages.get(lambda m: m["body"] == "to the laptop")
    carbon = await phone.received.get()
    assert carbon["from"] == alice
    assert carbon["to"] == phone.jid
    assert forwarded_body(carbon, "received") == ("to the laptop", b.jid, laptop.jid)
    await laptop.quiet()

    # To the bare JID: the phone (priority 5) gets it, the laptop a copy.
    b.client.send_message(mto=alice, mbody="to alice", mtype="chat")
    await phone.messages.get(lambda m: m["body"] == "to alice")
    carbon = await laptop.received.get()
    assert forwarded_body(carbon, "received") == ("to alice", b.jid, alice)
    await phone.quiet()


async def test_equal_priorities_get_originals_not_copies(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    laptop = await device(server, alice + "/laptop")
    phone = await device(server, alice + "/phone")
    await laptop.enable()
    await phone.enable()
    b = await device(server, bob)
    b.client.send_message(mto=alice, mbody="both of you", mtype="chat")
    await laptop.messages.get(lambda m: m["body"] == "both of you")
    await phone.messages.get(lambda m: m["body"] == "both of you")
    await laptop.quiet()
    await phone.quiet()


async def test_private_messages_are_not_copied_and_lose_the_marker(
    server: RunningServer,
) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    laptop = await device(server, alice + "/laptop")
    phone = await device(server, alice + "/phone")
    await laptop.enable()
    bob_desk = await device(server, bob + "/desk")
    bob_mobile = await device(server, bob + "/mobile")
    await bob_mobile.enable()

    msg = phone.client.make_message(mto=bob_desk.jid, mbody="just us", mtype="chat")
    msg.xml.append(ET.Element(f"{{{ns.CARBONS}}}private"))
    msg.send()
    got = await bob_desk.messages.get(lambda m: m["body"] == "just us")
    # §9: the receiving server removes <private/> before delivery.
    assert got.xml.find(f"{{{ns.CARBONS}}}private") is None
    await laptop.quiet()
    await bob_mobile.quiet()


async def test_headlines_and_messages_to_self_are_not_copied(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    laptop = await device(server, alice + "/laptop")
    phone = await device(server, alice + "/phone")
    tablet = await device(server, alice + "/tablet")
    await laptop.enable()
    b = await device(server, bob)
    phone.client.send_message(mto=bob, mbody="news", mtype="headline")
    await b.messages.get(lambda m: m["body"] == "news")
    phone.client.send_message(mto=tablet.jid, mbody="note", mtype="chat")
    await tablet.messages.get(lambda m: m["body"] == "note")
    await laptop.quiet()


async def test_carbons_cannot_be_set_for_another_account(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    b = await device(server, bob)
    iq = b.client.make_iq_set(ito=alice)
    iq.enable("carbon_enable")
    with pytest.raises(slixmpp.exceptions.IqError) as info:
        await iq.send(timeout=5)
    assert info.value.iq["error"]["condition"] == "service-unavailable"
