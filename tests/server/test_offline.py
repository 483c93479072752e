"""XEP-0160 offline messages with XEP-0203 delay stamps, end to end and as pure functions."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from imedge.domain.jid import Jid
from imedge.features.offline import delay_stamp, is_chat_state_only, may_store, stamped
from imedge.protocol import ns
from imedge.protocol.element import Element, stanza_bytes
from imedge.protocol.fragment import FragmentError, parse_stanza
from tests.helpers import DOMAIN, Inbox, RunningServer, running_server

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CHATSTATES = "http://jabber.org/protocol/chatstates"
PLUGINS = ("xep_0030", "xep_0199", "xep_0203")


async def sync(client: slixmpp.ClientXMPP) -> None:
    """A ping to the server: everything the client sent before has been handled."""
    await client.plugin["xep_0199"].send_ping(DOMAIN, timeout=5)


async def online(
    server: RunningServer, jid: str, priority: int | None = None
) -> tuple[slixmpp.ClientXMPP, Inbox]:
    """Log in, listen, then send initial presence: nothing delivered on it is missed."""
    client = await server.client(jid, start=False, plugins=PLUGINS)
    inbox = Inbox(client, "message")
    client.send_presence(ppriority=priority)
    await sync(client)
    return client, inbox


def condition_of(msg: Any) -> str | None:
    err = msg.xml.find("{jabber:client}error")
    if err is None:
        return None
    names = [c.tag.split("}", 1)[1] for c in err if c.tag.startswith("{" + STANZAS + "}")]
    return next((n for n in names if n != "text"), None)


async def stored(server: RunningServer, user: str) -> int:
    return await server.server.store.offline.count(Jid.parse(user))


# --- pure --------------------------------------------------------------------------------
def test_delay_stamp_is_utc_xep_0082() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert delay_stamp(when) == "2024-05-06T07:08:09.123Z"
    other_zone = when.astimezone(timezone(timedelta(hours=2)))
    assert delay_stamp(other_zone) == "2024-05-06T07:08:09.123Z"


def test_stamped_adds_delay_to_a_copy_and_round_trips() -> None:
    msg = Element("message", ns.CLIENT, {"from": "a@x/r", "to": "b@x", "type": "chat"})
    msg.sub("body", text="hi <there> & 'you'")
    msg.sub("x", "urn:example", {"{urn:other}attr": "v"})
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = stamped(msg, "x", when)
    assert msg.find("delay", ns.DELAY) is None  # the original is untouched
    back = parse_stanza(stanza_bytes(out, ns.CLIENT))
    delay = back.find("delay", ns.DELAY)
    assert delay is not None
    assert delay.attrs == {"from": "x", "stamp": "2024-01-02T03:04:05.000Z"}
    assert back.find_text("body", ns.CLIENT) == "hi <there> & 'you'"
    x = back.find("x", "urn:example")
    assert x is not None
    assert x.attrs == {"{urn:other}attr": "v"}
    assert back.attrs == msg.attrs


def test_server_namespace_is_stored_as_client() -> None:
    msg = Element("message", ns.SERVER, {"to": "b@x"})
    msg.sub("body", text="from afar")
    back = parse_stanza(stanza_bytes(msg, ns.CLIENT))
    assert back.ns == ns.CLIENT
    assert back.find_text("body", ns.CLIENT) == "from afar"


@pytest.mark.parametrize(
    "data",
    [b"", b"<message>", b"<message/><message/>", b"<message/>junk", b"<!-- c --><message/>"],
)
def test_parse_stanza_refuses_anything_but_one_stanza(data: bytes) -> None:
    with pytest.raises(FragmentError):
        parse_stanza(data)


def test_chat_state_only_messages_are_recognised() -> None:
    only = Element("message", ns.CLIENT, {"type": "chat"})
    only.sub("composing", CHATSTATES)
    only.sub("thread", text="t1")
    assert is_chat_state_only(only)
    with_body = only.copy()
    with_body.sub("body", text="hi")
    assert not is_chat_state_only(with_body)
    assert not is_chat_state_only(Element("message", ns.CLIENT))


def test_no_store_hint_is_honoured() -> None:
    msg = Element("message", ns.CLIENT)
    assert may_store(msg)
    msg.sub("no-store", ns.HINTS)
    assert not may_store(msg)


# --- end to end ---------------------------------------------------------------------------
async def test_offline_messages_arrive_in_order_at_next_login(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a, _ = await online(server, alice)
    errors = Inbox(a, "message_error")
    before = datetime.now(UTC).replace(microsecond=0)
    for i in range(3):
        a.send_message(mto=bob, mbody=f"offline {i}", mtype="chat")
    await sync(a)
    assert await stored(server, bob) == 3
    await errors.nothing(wait=0.1)

    _, inbox = await online(server, bob)
    got = [await inbox.get() for _ in range(3)]
    assert [m["body"] for m in got] == ["offline 0", "offline 1", "offline 2"]
    for m in got:
        assert m["from"] == a.boundjid
        assert m["delay"]["from"] == DOMAIN
        stamp = m["delay"]["stamp"]
        assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC) + timedelta(seconds=1)
        assert m["delay"]["text"] == "Offline Storage"
    assert await stored(server, bob) == 0


async def test_offline_messages_go_to_a_non_negative_resource_only(
    server: RunningServer,
) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a, _ = await online(server, alice)
    a.send_message(mto=bob, mbody="wait for me", mtype="normal")
    await sync(a)
    _, hidden = await online(server, bob + "/hidden", priority=-5)
    await hidden.nothing(wait=0.2)
    assert await stored(server, bob) == 1
    _, shown = await online(server, bob + "/shown", priority=0)
    msg = await shown.get()
    assert msg["body"] == "wait for me"
    assert await stored(server, bob) == 0
    await hidden.nothing(wait=0.1)


async def test_full_offline_queue_answers_the_sender(tmp_path: Path) -> None:
    async with running_server(tmp_path, **{"limits.offline_max_messages": 3}) as server:
        alice = await server.add_user("alice")
        bob = await server.add_user("bob")
        a, _ = await online(server, alice)
        errors = Inbox(a, "message_error")
        for i in range(4):
            msg = a.make_message(mto=bob, mbody=f"m{i}", mtype="chat")
            msg["id"] = f"id{i}"
            msg.send()
        err = await errors.get()
        assert err["id"] == "id3"
        assert condition_of(err) == "service-unavailable"
        assert err["from"] == bob
        assert await stored(server, bob) == 3
        _, inbox = await online(server, bob)
        got = [(await inbox.get())["body"] for _ in range(3)]
        assert got == ["m0", "m1", "m2"]


async def test_offline_messages_survive_a_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path) as first:
        alice = await first.add_user("alice")
        bob = await first.add_user("bob")
        a, _ = await online(first, alice)
        a.send_message(mto=bob, mbody="across the restart", mtype="chat")
        await sync(a)
        assert await stored(first, bob) == 1
    async with running_server(tmp_path) as second:
        _, inbox = await online(second, bob)
        msg = await inbox.get()
        assert msg["body"] == "across the restart"
        assert msg["delay"]["from"] == DOMAIN


async def test_what_is_not_stored(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    bob = await server.add_user("bob")
    a, _ = await online(server, alice)
    errors = Inbox(a, "message_error")
    # XEP-0160 §3: headlines are dropped silently; chat states alone are not kept.
    a.send_message(mto=bob, mbody="breaking news", mtype="headline")
    state = a.make_message(mto=bob, mtype="chat")
    state.xml.append(ET.Element(f"{{{CHATSTATES}}}composing"))
    state.send()
    await sync(a)
    assert await stored(server, bob) == 0
    await errors.nothing(wait=0.1)
    # XEP-0334: <no-store/> turns storage into service-unavailable.
    hinted = a.make_message(mto=bob, mbody="do not keep", mtype="chat")
    hinted.xml.append(ET.Element(f"{{{ns.HINTS}}}no-store"))
    hinted.send()
    err = await errors.get()
    assert condition_of(err) == "service-unavailable"
    assert await stored(server, bob) == 0
