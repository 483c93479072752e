"""XEP-0077 In-Band Registration: off by default; when on, register, change password, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from imedge.domain.errors import StanzaError, StanzaErrorCondition
from imedge.domain.jid import Jid
from imedge.features.register import (
    AccountActions,
    InBandRegistration,
    RegistrationLimits,
    registration_fields,
)
from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.store.ports import AlreadyExists
from tests.helpers import DOMAIN, PASSWORD, RawClient, RunningServer, running_server

FEATURE = b"<register xmlns='http://jabber.org/features/iq-register'/>"
GET = "<iq type='get' id='{id}'><query xmlns='jabber:iq:register'/></iq>"
SET = (
    "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>"
    "<username>{user}</username><password>{password}</password></query></iq>"
)
REG_PLUGINS = ("xep_0030", "xep_0199", "xep_0004", "xep_0066", "xep_0077")


@pytest.fixture
async def open_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, **{"accounts.registration": True}) as rs:
        yield rs


async def tls_stream(server: RunningServer) -> tuple[RawClient, bytes]:
    """A raw client after STARTTLS: (client, the features of the new stream)."""
    raw = await RawClient.connect(server.c2s_port)
    await raw.open_stream()
    await raw.starttls(server.pki.ca_path)
    return raw, await raw.open_stream()


async def exchange(raw: RawClient, request: str, id_: str) -> bytes:
    """Send an IQ and return its reply, whole."""
    await raw.send(request)
    head = await raw.read_until(f"id='{id_}'".encode())
    start = head.rfind(b"<iq")
    rest = await raw.read_until(b">")
    if rest.endswith(b"/>"):
        return head[start:] + rest
    return head[start:] + rest + await raw.read_until(b"</iq>")


def condition(reply: bytes) -> str | None:
    for cond in StanzaErrorCondition:
        if f"<{cond} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>".encode() in reply:
            return str(cond)
    return None


def registering(username: str, password: str) -> Any:
    """slixmpp setup: answer the registration form with this username and password."""

    def setup(client: slixmpp.ClientXMPP) -> None:
        async def on_register(_form: Any) -> None:
            iq = client.Iq()
            iq["type"] = "set"
            iq["register"]["username"] = username
            iq["register"]["password"] = password
            await iq.send(timeout=5)

        client.add_event_handler("register", on_register)

    return setup


# --- off by default ---------------------------------------------------------------------
async def test_registration_is_off_by_default(server: RunningServer) -> None:
    await server.add_user("alice")
    raw, features = await tls_stream(server)
    assert b"iq-register" not in features
    for request, id_ in (
        (GET.format(id="g"), "g"),
        (SET.format(id="s", user="eve", password="x"), "s"),
    ):
        reply = await exchange(raw, request, id_)
        assert condition(reply) == "service-unavailable"
    assert await server.server.store.accounts.get(Jid.parse(f"eve@{DOMAIN}")) is None
    # The stream goes on: the client can still log in.
    await raw.login_plain("alice", PASSWORD)


# --- registering ------------------------------------------------------------------------
async def test_feature_is_offered_after_tls_only(open_server: RunningServer) -> None:
    raw = await RawClient.connect(open_server.c2s_port)
    before = await raw.open_stream()
    assert FEATURE not in before
    await raw.starttls(open_server.pki.ca_path)
    after = await raw.open_stream()
    assert FEATURE in after


async def test_register_before_tls_is_refused(open_server: RunningServer) -> None:
    raw = await RawClient.connect(open_server.c2s_port)
    await raw.open_stream()
    await raw.send(SET.format(id="s", user="eve", password="secret"))
    out = await raw.read_to_eof()
    assert b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in out
    assert await open_server.server.store.accounts.get(Jid.parse(f"eve@{DOMAIN}")) is None


async def test_raw_registration_then_login(open_server: RunningServer) -> None:
    raw, _ = await tls_stream(open_server)
    form = await exchange(raw, GET.format(id="form"), "form")
    assert b"type='result'" in form
    for field in (b"<instructions>", b"<username/>", b"<password/>"):
        assert field in form
    done = await exchange(raw, SET.format(id="reg", user="Dave", password="s3cret"), "reg")
    assert b"type='result'" in done, done
    # PRECIS: the username is case-folded like any localpart.
    assert await open_server.server.store.accounts.get(Jid.parse(f"dave@{DOMAIN}")) is not None
    again = await exchange(raw, SET.format(id="dup", user="dave", password="other"), "dup")
    assert condition(again) == "conflict"
    # Same stream: log in with the new account.
    await raw.login_plain("dave", "s3cret")
    await raw.bind()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("<username>frank</username>", "not-acceptable"),
        ("<password>pw</password>", "not-acceptable"),
        ("<username>frank@elsewhere</username><password>pw</password>", "not-acceptable"),
        ("<username>frank/res</username><password>pw</password>", "not-acceptable"),
        ("<username>a b</username><password>pw</password>", "not-acceptable"),
        ("<remove/>", "not-authorized"),
    ],
)
async def test_invalid_registrations(open_server: RunningServer, query: str, expected: str) -> None:
    raw, _ = await tls_stream(open_server)
    reply = await exchange(
        raw,
        f"<iq type='set' id='bad'><query xmlns='jabber:iq:register'>{query}</query></iq>",
        "bad",
    )
    assert condition(reply) == expected, reply
    assert await open_server.server.store.accounts.list() == []


async def test_registrations_are_rate_limited_per_address(open_server: RunningServer) -> None:
    raw, _ = await tls_stream(open_server)
    for i in range(5):
        reply = await exchange(raw, SET.format(id=f"r{i}", user=f"user{i}", password="pw"), f"r{i}")
        assert b"type='result'" in reply
    refused = await exchange(raw, SET.format(id="r5", user="user5", password="pw"), "r5")
    assert condition(refused) == "resource-constraint"
    assert b"type='wait'" in refused
    # Another connection from the same address is refused too.
    other, _ = await tls_stream(open_server)
    refused = await exchange(other, SET.format(id="o", user="user6", password="pw"), "o")
    assert condition(refused) == "resource-constraint"
    assert len(await open_server.server.store.accounts.list()) == 5


async def test_slixmpp_registers_and_logs_in(open_server: RunningServer) -> None:
    jid = f"carol@{DOMAIN}"
    client = await open_server.client(
        jid, plugins=REG_PLUGINS, setup=registering("carol", PASSWORD)
    )
    assert str(client.boundjid.bare) == jid
    assert await client.plugin["xep_0199"].ping(jid=DOMAIN, timeout=5) is not None
    client.abort()
    # A fresh connection logs in with the new account, without registering again.
    again = await open_server.client(jid)
    assert str(again.boundjid.bare) == jid


# --- after login ------------------------------------------------------------------------
async def test_registered_query_and_password_change(open_server: RunningServer) -> None:
    jid = await open_server.add_user("alice")
    client = await open_server.client(jid, plugins=REG_PLUGINS)
    info = await client.plugin["xep_0077"].get_registration(timeout=5)
    assert info["register"]["registered"]
    assert info["register"]["username"] == "alice"
    await client.plugin["xep_0077"].change_password("new password", timeout=5)
    client.abort()
    relogged = await open_server.client(jid, "new password")
    assert str(relogged.boundjid.bare) == jid
    with pytest.raises(AssertionError, match="login of alice@localhost failed"):
        await open_server.client(jid, PASSWORD)


async def test_password_change_for_someone_else_is_refused(open_server: RunningServer) -> None:
    jid = await open_server.add_user("alice")
    await open_server.add_user("bob")
    client = await open_server.client(jid, plugins=REG_PLUGINS)
    iq = client.Iq()
    iq["type"] = "set"
    iq["register"]["username"] = "bob"
    iq["register"]["password"] = "taken over"
    with pytest.raises(slixmpp.exceptions.IqError) as err:
        await iq.send(timeout=5)
    assert err.value.condition == "bad-request"
    bob = await open_server.client(f"bob@{DOMAIN}", PASSWORD)
    assert str(bob.boundjid.bare) == f"bob@{DOMAIN}"


async def test_cancel_deletes_the_account_and_ends_its_sessions(
    open_server: RunningServer,
) -> None:
    jid = await open_server.add_user("alice")
    other = await open_server.client(jid)
    ended = asyncio.Event()
    other.add_event_handler("disconnected", lambda _: ended.set())
    client = await open_server.client(jid, plugins=REG_PLUGINS)
    await client.plugin["xep_0077"].cancel_registration(timeout=5)
    async with asyncio.timeout(5):
        await ended.wait()
    assert await open_server.server.store.accounts.get(Jid.parse(jid)) is None
    with pytest.raises(AssertionError, match="failed"):
        await open_server.client(jid)


async def test_not_answered_after_login_when_off(server: RunningServer) -> None:
    jid = await server.add_user("alice")
    client = await server.client(jid, plugins=REG_PLUGINS)
    with pytest.raises(slixmpp.exceptions.IqError) as err:
        await client.plugin["xep_0077"].cancel_registration(timeout=5)
    assert err.value.condition == "service-unavailable"
    assert await server.server.store.accounts.get(Jid.parse(jid)) is not None


# --- pure ---------------------------------------------------------------------------------
def query(*children: tuple[str, str]) -> Element:
    q = Element("query", ns.REGISTER)
    for name, text in children:
        q.sub(name, text=text)
    return q


def test_registration_fields() -> None:
    assert registration_fields(query(("username", " eve "), ("password", " pw "))) == (
        "eve",
        " pw ",
    )
    for bad in (query(("username", "eve")), query(("username", "e@x"), ("password", "p"))):
        with pytest.raises(StanzaError) as err:
            registration_fields(bad)
        assert err.value.condition == StanzaErrorCondition.NOT_ACCEPTABLE


async def test_limit_window_reopens() -> None:
    now = [0.0]
    created: list[str] = []

    async def create(address: str, password: str) -> None:
        if address in created:
            raise AlreadyExists(address)
        created.append(address)

    async def unused(*_: str) -> None:
        raise AssertionError("not called")

    reg = InBandRegistration(
        AccountActions(create, unused, unused),
        RegistrationLimits(per_address=2, window=60),
        clock=lambda: now[0],
    )

    def request(user: str) -> Element:
        iq = Element("iq", ns.CLIENT, {"type": "set", "id": user})
        iq.add(query(("username", user), ("password", "pw")))
        return iq

    async def answer(user: str, address: str = "192.0.2.1") -> str | None:
        reply = await reg.handle(request(user), address, "example.org")
        assert reply is not None
        err = reply.find("error", ns.CLIENT)
        return None if err is None else next(err.elements()).name

    assert await answer("a") is None
    assert await answer("a") == "conflict"  # counts as an attempt
    assert await answer("b") == "resource-constraint"
    assert await answer("b", "192.0.2.2") is None  # another address
    now[0] = 61
    assert await answer("b") == "conflict"
    assert created == ["a@example.org", "b@example.org"]
