"""RFC 6121 flows with the whole server on PostgreSQL: login, subscriptions, offline delivery.

The store tests prove the SQL adapter on both engines; these prove the server running on
PostgreSQL end to end. A fresh database per test, dropped afterwards. PostgreSQL is
IMEDGE_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test, the database
used for CREATE/DROP DATABASE); unreachable means skip, or fail when CI=true.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import slixmpp
from sqlalchemy.engine import make_url

from imedge.domain.jid import Jid
from tests.helpers import DOMAIN, IN_CI, Inbox, RunningServer, running_server, wait_for

pytestmark = pytest.mark.postgres

ADMIN_URL = os.environ.get("IMEDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _dsn(url: str) -> str:
    """The URL as asyncpg takes it (no +driver)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database (its postgresql:// URL), dropped afterwards."""
    try:
        admin = await asyncpg.connect(_dsn(ADMIN_URL), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL at {ADMIN_URL} is unreachable: {exc}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    name = f"imedge_test_{uuid.uuid4().hex[:16]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _dsn(make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pg_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with fresh_database() as url, running_server(tmp_path, **{"database.url": url}) as rs:
        yield rs


def manual(client: slixmpp.ClientXMPP) -> None:
    """The test answers subscription requests itself (slixmpp approves them by default)."""
    client.auto_authorize = None
    client.auto_subscribe = False


async def sync(client: slixmpp.ClientXMPP) -> None:
    """A ping to the server: everything the client sent before has been handled."""
    await client.plugin["xep_0199"].send_ping(DOMAIN, timeout=5)


def kind(type_: str, sender: str) -> Any:
    return lambda p: p["type"] == type_ and p["from"].bare == sender


async def test_server_runs_on_postgresql(pg_server: RunningServer) -> None:
    assert pg_server.server.config.database.url.startswith("postgresql+asyncpg://")
    alice = await pg_server.add_user("alice")
    client = await pg_server.client(alice)
    assert str(client.boundjid.bare) == alice


async def test_subscription_flow_on_postgresql(pg_server: RunningServer) -> None:
    alice_jid, bob_jid = await pg_server.add_user("alice"), await pg_server.add_user("bob")
    alice = await pg_server.client(alice_jid, start=False, setup=manual)
    bob = await pg_server.client(bob_jid, start=False, setup=manual)
    alice_in, bob_in = Inbox(alice, "presence"), Inbox(bob, "presence")
    for c in (alice, bob):
        await c.get_roster()
        c.send_presence()
        await sync(c)

    alice.send_presence(pto=bob_jid, ptype="subscribe")
    await bob_in.get(kind("subscribe", alice_jid))
    bob.send_presence(pto=alice_jid, ptype="subscribed")
    await alice_in.get(kind("subscribed", bob_jid))
    bob.send_presence(pto=alice_jid, ptype="subscribe")
    await alice_in.get(kind("subscribe", bob_jid))
    alice.send_presence(pto=bob_jid, ptype="subscribed")
    await bob_in.get(kind("subscribed", alice_jid))
    await wait_for(lambda: alice.client_roster[bob_jid]["subscription"] == "both")
    await wait_for(lambda: bob.client_roster[alice_jid]["subscription"] == "both")

    rosters = pg_server.server.store.rosters
    for user, contact in ((alice_jid, bob_jid), (bob_jid, alice_jid)):
        item = await rosters.get_item(Jid.parse(user), Jid.parse(contact))
        assert item is not None
        assert str(item.subscription) == "both"

    # Presence flows both ways now.
    alice.send_presence(pstatus="on postgres")
    seen = await bob_in.get(lambda p: p["from"].bare == alice_jid and p["status"] == "on postgres")
    assert seen["type"] in ("", "available")


async def test_offline_message_is_delivered_at_login_on_postgresql(
    pg_server: RunningServer,
) -> None:
    alice_jid, bob_jid = await pg_server.add_user("alice"), await pg_server.add_user("bob")
    alice = await pg_server.client(alice_jid)
    for i in range(3):
        alice.send_message(mto=bob_jid, mbody=f"while you were out {i}", mtype="chat")
    await sync(alice)
    assert await pg_server.server.store.offline.count(Jid.parse(bob_jid)) == 3

    bob = await pg_server.client(bob_jid, start=False, plugins=("xep_0030", "xep_0199", "xep_0203"))
    bob_in = Inbox(bob, "message")
    bob.send_presence()
    bodies = [(await bob_in.get())["body"] for _ in range(3)]
    assert bodies == [f"while you were out {i}" for i in range(3)]
    await bob_in.nothing()
    assert await pg_server.server.store.offline.count(Jid.parse(bob_jid)) == 0
