"""XEP-0198: Stream Management with resumption, over real sockets.

Precise cases drive the protocol by hand (`RawClient`); resumption is also exercised with
slixmpp's own XEP-0198 implementation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from imedge.domain.jid import Jid
from imedge.protocol.element import Element
from imedge.server.c2s.sm import MAX_SEQ, SmState, StreamManager, acked_count, parse_h, with_delay
from tests.helpers import PASSWORD, Inbox, RawClient, RunningServer, running_server, wait_for

SM = "urn:xmpp:sm:3"
ENABLE = f"<enable xmlns='{SM}' resume='true'/>"
R = f"<r xmlns='{SM}'/>"


# --- pure ---------------------------------------------------------------------------------
def test_parse_h() -> None:
    assert parse_h("0") == 0
    assert parse_h(str(MAX_SEQ - 1)) == MAX_SEQ - 1
    for bad in (None, "", "-1", "1.5", "x", str(MAX_SEQ), "\uff11"):
        assert parse_h(bad) is None


def test_acked_count_wraps_at_2_to_the_32() -> None:
    assert acked_count(5, 3) == 2
    assert acked_count(1, MAX_SEQ - 2) == 3


def test_with_delay_adds_one_stamp_only() -> None:
    msg = Element("message", "jabber:client", {"to": "a@b"})
    stamped = with_delay(msg, 0.0, "b")
    delay = stamped.find("delay", "urn:xmpp:delay")
    assert delay is not None
    assert delay.get("stamp") == "1970-01-01T00:00:00.000000Z"
    assert msg.find("delay", "urn:xmpp:delay") is None  # the original is untouched
    assert len(with_delay(stamped, 5.0, "b").find_all("delay", "urn:xmpp:delay")) == 1


# --- helpers ------------------------------------------------------------------------------
async def raw_login(server: RunningServer, user: str) -> RawClient:
    """Direct TLS, PLAIN, the stream restarted: ready to bind or resume."""
    ctx = ssl.create_default_context(cafile=str(server.pki.ca_path))
    raw = await RawClient.connect(server.c2s_tls_port, ctx)
    await raw.open_stream()
    await raw.login_plain(user, PASSWORD)
    return raw


async def raw_session(server: RunningServer, user: str, resource: str = "raw") -> RawClient:
    raw = await raw_login(server, user)
    await raw.bind(resource)
    return raw


async def expect(raw: RawClient, pattern: bytes, timeout: float = 5.0) -> re.Match[bytes]:
    """Read until `pattern` matches; consume everything up to the end of the match."""
    regex = re.compile(pattern, re.S)
    async with asyncio.timeout(timeout):
        while (m := regex.search(raw.buf)) is None:
            chunk = await raw.reader.read(65536)
            if not chunk:
                raise EOFError(f"closed before {pattern!r}; got {raw.buf!r}")
            raw.buf += chunk
    raw.buf = raw.buf[m.end() :]
    return m


def attrs(tag: bytes) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in re.findall(rb"(\w+)='([^']*)'", tag)}


async def enable(raw: RawClient, extra: str = "") -> dict[str, str]:
    await raw.send(f"<enable xmlns='{SM}' resume='true'{extra}/>")
    return attrs((await expect(raw, rb"<enabled [^>]*/>")).group(0))


def abort(raw: RawClient) -> None:
    """The connection dies without a closing tag (a phone losing its network)."""
    raw.writer.transport.abort()


def manager(server: RunningServer) -> StreamManager:
    sm = server.server.c2s.sm
    assert isinstance(sm, StreamManager)
    return sm


def state_of(server: RunningServer, full: str) -> SmState:
    session = server.server.sessions.get(Jid.parse(full))
    assert session is not None
    assert isinstance(session.sm, SmState)
    return session.sm


async def hibernating(server: RunningServer, n: int = 1) -> None:
    await wait_for(lambda: len(manager(server).hibernating()) == n)


def chat(to: str, body: str) -> str:
    return f"<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>"


# --- acknowledgements -----------------------------------------------------------------------
async def test_enable_and_count_acknowledgements(server: RunningServer) -> None:
    await server.add_user("alice")
    raw = await raw_session(server, "alice")
    enabled = await enable(raw, " max='60'")
    assert enabled["resume"] == "true"
    assert enabled["id"]
    assert enabled["max"] == "60"  # the client's wish, below the server's maximum
    await raw.send(f"<enable xmlns='{SM}'/>")  # only once per stream
    await expect(raw, rb"<failed xmlns='urn:xmpp:sm:3'><unexpected-request ")
    for i in range(3):
        await raw.send(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await raw.send(R)
    await expect(raw, rb"<a xmlns='urn:xmpp:sm:3' h='3'/>")
    state = state_of(server, "alice@localhost/raw")
    assert len(state.queue) == 3  # the three results, not yet acknowledged
    await raw.send(f"<a xmlns='{SM}' h='2'/>")
    await wait_for(lambda: len(state.queue) == 1)
    # Acknowledging more than was sent ends the stream.
    await raw.send(f"<a xmlns='{SM}' h='9'/>")
    out = await raw.read_to_eof()
    assert b"<undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out


async def test_server_asks_for_acknowledgements(server: RunningServer) -> None:
    await server.add_user("alice")
    raw = await raw_session(server, "alice")
    await enable(raw)
    for i in range(5):
        await raw.send(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>")
    # After five unacknowledged stanzas, right behind the fifth.
    await expect(raw, rb"id='p4'[^>]*/>" + re.escape(R.encode()))


async def test_enable_before_bind_fails(server: RunningServer) -> None:
    await server.add_user("alice")
    raw = await raw_login(server, "alice")
    await raw.send(ENABLE)
    await expect(raw, rb"<failed xmlns='urn:xmpp:sm:3'><unexpected-request ")
    await RawClient.close_all()  # unbound streams would hold the server's stop up


async def test_too_many_unacknowledged_stanzas_end_the_stream(server: RunningServer) -> None:
    c2s = server.server.c2s
    c2s.settings = dataclasses.replace(c2s.settings, sm_max_unacked=3)
    alice = await server.add_user("alice")
    raw = await raw_session(server, "alice")
    await enable(raw)
    bob = await server.client(await server.add_user("bob"))
    for i in range(4):
        bob.send_message(mto=f"{alice}/raw", mbody=f"m{i}", mtype="chat")
    out = await raw.read_to_eof()
    assert b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    # The session is over; what it never acknowledged waits in offline storage.
    await wait_for(lambda: not server.server.sessions.sessions_of(Jid.parse(alice)))
    offline = server.server.store.offline
    await wait_for_async(lambda: offline.count(Jid.parse(alice)), 4)


async def wait_for_async(get: Any, expected: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while (value := await get()) != expected:
            await asyncio.sleep(0.02)
    assert value == expected


# --- resumption -------------------------------------------------------------------------------
async def test_resume_resends_only_what_was_not_acknowledged(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    raw = await raw_session(server, "alice", "phone")
    sm_id = (await enable(raw))["id"]
    bob = await server.client(await server.add_user("bob"))
    bob_errors = Inbox(bob, "message_error")
    bob.send_message(mto=f"{alice}/phone", mbody="one", mtype="chat")
    bob.send_message(mto=f"{alice}/phone", mbody="two", mtype="chat")
    await expect(raw, rb"<body>two</body>")
    await raw.send(f"<a xmlns='{SM}' h='1'/>")  # "one" arrived, "two" is lost with the link
    state = state_of(server, f"{alice}/phone")
    await wait_for(lambda: len(state.queue) == 1)
    abort(raw)
    await hibernating(server)
    # The session is still there: a message for it waits in its queue.
    assert server.server.sessions.get(Jid.parse(f"{alice}/phone")) is not None
    bob.send_message(mto=f"{alice}/phone", mbody="three", mtype="chat")
    await wait_for(lambda: len(state.queue) == 2)

    again = await raw_login(server, "alice")
    await again.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='1'/>")
    resumed = attrs((await expect(again, rb"<resumed [^>]*/>")).group(0))
    assert resumed == {"xmlns": SM, "previd": sm_id, "h": "0"}
    # The session lives on in the new stream: new stanzas arrive after the resent ones.
    bob.send_message(mto=f"{alice}/phone", mbody="four", mtype="chat")
    m = await expect(again, rb"<body>four</body>")
    bodies = re.findall(rb"<body>(\w+)</body>", m.string[: m.end()])
    assert bodies == [b"two", b"three", b"four"]  # "one" was acknowledged: not again
    assert manager(server).hibernating() == []
    await again.send(f"<a xmlns='{SM}' h='4'/>")  # the count goes on across streams
    await wait_for(lambda: not state.queue)
    await bob_errors.nothing()


async def test_resume_with_unknown_or_foreign_id_fails(server: RunningServer) -> None:
    await server.add_user("alice")
    await server.add_user("mallory")
    raw = await raw_session(server, "alice")
    sm_id = (await enable(raw))["id"]
    abort(raw)
    await hibernating(server)
    bad = await raw_login(server, "alice")
    await bad.send(f"<resume xmlns='{SM}' previd='no-such-id' h='0'/>")
    await expect(bad, rb"<failed xmlns='urn:xmpp:sm:3'><item-not-found ")
    # Another account cannot take over alice's session, even knowing its id.
    thief = await raw_login(server, "mallory")
    await thief.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    await expect(thief, rb"<failed xmlns='urn:xmpp:sm:3'><item-not-found ")
    # After a failed resumption the stream can still bind a fresh session.
    await bad.bind("fresh")
    assert server.server.sessions.get(Jid.parse("alice@localhost/fresh")) is not None
    assert len(manager(server).hibernating()) == 1
    await RawClient.close_all()


async def test_clean_close_ends_the_session(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    raw = await raw_session(server, "alice")
    sm_id = (await enable(raw))["id"]
    await raw.send("</stream:stream>")
    await raw.read_to_eof()
    await wait_for(lambda: not server.server.sessions.sessions_of(Jid.parse(alice)))
    assert manager(server).hibernating() == []
    again = await raw_login(server, "alice")
    await again.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    await expect(again, rb"<item-not-found ")
    await RawClient.close_all()


async def test_new_login_on_the_same_resource_replaces_a_hibernating_session(
    server: RunningServer,
) -> None:
    alice = await server.add_user("alice")
    raw = await raw_session(server, "alice", "phone")
    sm_id = (await enable(raw))["id"]
    abort(raw)
    await hibernating(server)
    await raw_session(server, "alice", "phone")
    await hibernating(server, 0)
    session = server.server.sessions.get(Jid.parse(f"{alice}/phone"))
    assert session is not None
    assert session.sm is None
    again = await raw_login(server, "alice")
    await again.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    await expect(again, rb"<item-not-found ")
    await RawClient.close_all()


async def test_resume_with_slixmpp(server: RunningServer) -> None:
    alice_jid = await server.add_user("alice")
    alice = await server.client(alice_jid, plugins=("xep_0030", "xep_0199", "xep_0198"))
    await wait_for(lambda: bool(alice.plugin["xep_0198"].sm_id))
    inbox = Inbox(alice, "message")
    bob = await server.client(await server.add_user("bob"))
    alice.abort()
    await hibernating(server)
    for body in ("one", "two", "three"):
        bob.send_message(mto=str(alice.boundjid), mbody=body, mtype="chat")
    resumed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    alice.add_event_handler("session_resumed", lambda _: resumed.set_result(None))
    alice.connect("127.0.0.1", server.c2s_port)
    async with asyncio.timeout(10):
        await resumed
    got = [(await inbox.get())["body"] for _ in range(3)]
    assert got == ["one", "two", "three"]
    await inbox.nothing()  # exactly once


async def test_hibernation_timeout_sends_messages_to_offline_storage(tmp_path: Path) -> None:
    async with running_server(tmp_path, **{"limits.sm_resume_timeout": 1}) as server:
        alice = await server.add_user("alice")
        raw = await raw_session(server, "alice", "phone")
        enabled = await enable(raw)
        assert enabled["max"] == "1"  # from the configuration
        bob = await server.client(await server.add_user("bob"))
        bob_errors = Inbox(bob, "message_error")
        bob.send_message(mto=f"{alice}/phone", mbody="before", mtype="chat")
        await expect(raw, rb"<body>before</body>")  # received, never acknowledged
        abort(raw)
        await hibernating(server)
        bob.send_message(mto=f"{alice}/phone", mbody="after", mtype="chat")
        offline = server.server.store.offline
        await wait_for_async(lambda: offline.count(Jid.parse(alice)), 2)
        assert not server.server.sessions.sessions_of(Jid.parse(alice))
        # At the next login they arrive, in order, stamped with when they were first sent.
        client = await server.client(alice, start=False)
        inbox = Inbox(client, "message")
        client.send_presence()
        first, second = await inbox.get(), await inbox.get()
        assert [first["body"], second["body"]] == ["before", "after"]
        assert first.xml.find("{urn:xmpp:delay}delay") is not None
        await bob_errors.nothing()


async def test_shutdown_hands_hibernating_messages_to_offline_storage(
    server: RunningServer,
) -> None:
    alice = await server.add_user("alice")
    raw = await raw_session(server, "alice", "phone")
    await enable(raw)
    abort(raw)
    await hibernating(server)
    bob = await server.client(await server.add_user("bob"))
    bob.send_message(mto=f"{alice}/phone", mbody="late", mtype="chat")
    await wait_for(lambda: bool(manager(server).hibernating()[0].queue))
    await manager(server).shutdown()
    assert manager(server).hibernating() == []
    assert not server.server.sessions.sessions_of(Jid.parse(alice))
    assert await server.server.store.offline.count(Jid.parse(alice)) == 1


async def test_unacknowledged_iq_is_answered_when_the_session_ends(
    server: RunningServer,
) -> None:
    alice = await server.add_user("alice")
    raw = await raw_session(server, "alice", "phone")
    await raw.send(ENABLE)
    await expect(raw, rb"<enabled [^>]*/>")
    bob = await server.client(await server.add_user("bob"))
    ping = bob.plugin["xep_0199"].send_ping(f"{alice}/phone", timeout=5)
    task = asyncio.ensure_future(ping)
    await expect(raw, rb"<ping xmlns='urn:xmpp:ping'/>")
    await raw.send("</stream:stream>")  # leaves without answering
    with pytest.raises(IqError) as info:
        await task
    assert info.value.iq["error"]["condition"] == "service-unavailable"


async def test_resume_while_the_old_connection_still_looks_open(server: RunningServer) -> None:
    alice = await server.add_user("alice")
    old = await raw_session(server, "alice", "phone")
    sm_id = (await enable(old))["id"]
    new = await raw_login(server, "alice")
    await new.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    await expect(new, rb"<resumed [^>]*/>")
    # The old stream is closed; the session stays, now on the new stream.
    assert b"<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in await old.read_to_eof()
    bob = await server.client(await server.add_user("bob"))
    bob.send_message(mto=f"{alice}/phone", mbody="hi", mtype="chat")
    await expect(new, rb"<body>hi</body>")
    assert manager(server).hibernating() == []
