from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

import imedge
from imedge.domain.jid import Jid
from imedge.domain.roster import RosterItem, Subscription
from imedge.store.ports import AlreadyExists, NotFound, ScramCredential, StoreError
from imedge.store.sql import (
    SqlStore,
    current_revision,
    head_revision,
    open_store,
    parse_url,
    upgrade_database,
)
from imedge.store.sql.database import Database
from imedge.store.sql.engine import create_engine

ALICE = Jid.parse("alice@example.org")
BOB = Jid.parse("bob@example.org")
CAROL = Jid.parse("carol@example.net")
UNREACHABLE_PG = "postgresql+asyncpg://postgres@127.0.0.1:1/test"
SRC_DIR = str(Path(imedge.__file__).resolve().parent.parent)


def cred(mechanism: str = "SCRAM-SHA-256", seed: int = 1) -> ScramCredential:
    return ScramCredential(
        mechanism=mechanism,
        salt=bytes([seed]) * 16,
        iterations=4096 + seed,
        stored_key=bytes([seed, 0, 255]) * 8,
        server_key=bytes([255 - seed]) * 32,
    )


# --- migrations -------------------------------------------------------------------------


async def test_migrations_apply_on_empty_database_then_do_nothing(db_url: str) -> None:
    assert await current_revision(db_url) is None
    applied = await upgrade_database(db_url)
    assert applied[0] == "0001"
    assert applied[-1] == head_revision()
    assert await current_revision(db_url) == head_revision()
    assert await upgrade_database(db_url) == []
    store = await open_store(db_url)  # reopening applies nothing and works
    try:
        await store.ping()
        assert await current_revision(db_url) == head_revision()
    finally:
        await store.close()


async def test_migrated_database_matches_schema_module(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from imedge.store.sql.schema import metadata

    await upgrade_database(db_url)
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_open_without_upgrade_refuses_an_old_schema(db_url: str) -> None:
    with pytest.raises(StoreError, match="imedge db upgrade"):
        await open_store(db_url, upgrade=False)
    await upgrade_database(db_url)
    store = await open_store(db_url, upgrade=False)
    await store.close()


async def test_data_survives_close_and_reopen(db_url: str) -> None:
    store = await open_store(db_url)
    try:
        await store.accounts.create(ALICE, [cred()])
        await store.rosters.put_item(ALICE, RosterItem(BOB, name="Bob", groups=("Friends",)))
        await store.offline.push(ALICE, b"<message/>", limit=10)
        await store.blocking.block(ALICE, [CAROL])
        await store.subscription_requests.put_request(ALICE, CAROL, b"<presence/>")
    finally:
        await store.close()
    store = await open_store(db_url)
    try:
        assert await store.accounts.get_credential(ALICE, "SCRAM-SHA-256") == cred()
        assert await store.rosters.get_roster(ALICE) == (
            1,
            [RosterItem(BOB, name="Bob", groups=("Friends",))],
        )
        assert [m.stanza for m in await store.offline.fetch(ALICE)] == [b"<message/>"]
        assert await store.blocking.get_blocklist(ALICE) == [CAROL]
        assert await store.subscription_requests.get_requests(ALICE) == [(CAROL, b"<presence/>")]
    finally:
        await store.close()


# --- accounts ---------------------------------------------------------------------------


async def test_create_get_and_duplicate_account(store: SqlStore) -> None:
    assert await store.accounts.get(ALICE) is None
    await store.accounts.create(ALICE, [cred("SCRAM-SHA-1", 1), cred("SCRAM-SHA-256", 2)])
    account = await store.accounts.get(ALICE)
    assert account is not None
    assert account.jid == ALICE
    assert not account.disabled
    assert account.created_at > 0
    with pytest.raises(AlreadyExists):
        await store.accounts.create(ALICE, [cred()])
    # The failed create changed nothing.
    assert await store.accounts.get_credential(ALICE, "SCRAM-SHA-1") == cred("SCRAM-SHA-1", 1)
    assert await store.accounts.get_credential(ALICE, "SCRAM-SHA-256") == cred("SCRAM-SHA-256", 2)


async def test_account_lookup_uses_the_bare_jid(store: SqlStore) -> None:
    await store.accounts.create(ALICE.with_resource("phone"), [cred()])
    account = await store.accounts.get(ALICE)
    assert account is not None
    assert account.jid == ALICE
    assert await store.accounts.get_credential(ALICE.with_resource("pc"), "SCRAM-SHA-256")


async def test_set_credentials_replaces_all(store: SqlStore) -> None:
    await store.accounts.create(ALICE, [cred("SCRAM-SHA-1", 1), cred("SCRAM-SHA-256", 2)])
    await store.accounts.set_credentials(ALICE, [cred("SCRAM-SHA-256", 7)])
    assert await store.accounts.get_credential(ALICE, "SCRAM-SHA-1") is None
    assert await store.accounts.get_credential(ALICE, "SCRAM-SHA-256") == cred("SCRAM-SHA-256", 7)
    with pytest.raises(NotFound):
        await store.accounts.set_credentials(BOB, [cred()])
    assert await store.accounts.get(BOB) is None


async def test_list_accounts_by_domain(store: SqlStore) -> None:
    for jid in (BOB, CAROL, ALICE):
        await store.accounts.create(jid, [])
    assert [a.jid for a in await store.accounts.list()] == [ALICE, BOB, CAROL]
    assert [a.jid for a in await store.accounts.list("example.org")] == [ALICE, BOB]
    assert [a.jid for a in await store.accounts.list("example.net")] == [CAROL]
    assert await store.accounts.list("nowhere.test") == []


async def test_delete_account_removes_everything_it_owns(store: SqlStore) -> None:
    for user in (ALICE, BOB):
        await store.accounts.create(user, [cred()])
        await store.rosters.put_item(user, RosterItem(CAROL))
        await store.subscription_requests.put_request(user, CAROL, b"<presence/>")
        await store.offline.push(user, b"<message/>", limit=10)
        await store.blocking.block(user, [CAROL])

    await store.accounts.delete(ALICE)

    assert await store.accounts.get(ALICE) is None
    assert await store.accounts.get_credential(ALICE, "SCRAM-SHA-256") is None
    assert await store.rosters.get_roster(ALICE) == (0, [])
    assert await store.subscription_requests.get_requests(ALICE) == []
    assert await store.offline.count(ALICE) == 0
    assert await store.blocking.get_blocklist(ALICE) == []
    # Bob's data is untouched.
    assert await store.accounts.get(BOB) is not None
    assert await store.accounts.get_credential(BOB, "SCRAM-SHA-256") == cred()
    assert await store.rosters.get_roster(BOB) == (1, [RosterItem(CAROL)])
    assert await store.subscription_requests.get_requests(BOB) == [(CAROL, b"<presence/>")]
    assert await store.offline.count(BOB) == 1
    assert await store.blocking.get_blocklist(BOB) == [CAROL]
    # Deleting again, or an unknown account, is harmless; the JID can be registered anew.
    await store.accounts.delete(ALICE)
    await store.accounts.create(ALICE, [])


# --- roster -----------------------------------------------------------------------------


async def test_roster_items_round_trip_every_field(store: SqlStore) -> None:
    full = RosterItem(
        jid=BOB,
        name="Bøb ☃",
        groups=("Zeta", "Ålpha", ""),
        subscription=Subscription.BOTH,
        pending_out=True,
        pending_in=True,
        approved=True,
        listed=False,
    )
    plain = RosterItem(CAROL)
    assert await store.rosters.get_roster(ALICE) == (0, [])
    assert await store.rosters.get_item(ALICE, BOB) is None
    await store.rosters.put_item(ALICE, full)
    await store.rosters.put_item(ALICE, plain)
    assert await store.rosters.get_item(ALICE, BOB) == full
    assert await store.rosters.get_item(ALICE, CAROL) == plain
    version, items = await store.rosters.get_roster(ALICE)
    assert version == 2
    assert sorted(items, key=str) == sorted([full, plain], key=str)  # unlisted items too


@pytest.mark.parametrize("subscription", list(Subscription))
async def test_every_subscription_state_is_stored(
    store: SqlStore, subscription: Subscription
) -> None:
    item = RosterItem(BOB, subscription=subscription)
    await store.rosters.put_item(ALICE, item)
    assert await store.rosters.get_item(ALICE, BOB) == item


async def test_roster_version_increments_on_every_change(store: SqlStore) -> None:
    assert await store.rosters.get_version(ALICE) == 0
    assert await store.rosters.put_item(ALICE, RosterItem(BOB)) == 1
    assert await store.rosters.put_item(ALICE, RosterItem(BOB, name="B")) == 2  # replace
    assert await store.rosters.get_item(ALICE, BOB) == RosterItem(BOB, name="B")
    assert await store.rosters.put_item(ALICE, RosterItem(CAROL)) == 3
    assert await store.rosters.remove_item(ALICE, BOB) == 4
    assert await store.rosters.get_item(ALICE, BOB) is None
    assert await store.rosters.get_version(ALICE) == 4
    assert await store.rosters.get_roster(ALICE) == (4, [RosterItem(CAROL)])
    # Versions are per user.
    assert await store.rosters.get_version(BOB) == 0
    assert await store.rosters.put_item(BOB, RosterItem(ALICE)) == 1
    assert await store.rosters.get_version(ALICE) == 4


async def test_concurrent_roster_writes_get_distinct_versions(store: SqlStore) -> None:
    contacts = [Jid.of(f"c{i}", "example.com") for i in range(20)]
    versions = await asyncio.gather(
        *(store.rosters.put_item(ALICE, RosterItem(c)) for c in contacts)
    )
    assert sorted(versions) == list(range(1, 21))
    version, items = await store.rosters.get_roster(ALICE)
    assert version == 20
    assert len(items) == 20


# --- subscription requests --------------------------------------------------------------


async def test_subscription_requests_put_replace_delete(store: SqlStore) -> None:
    await store.subscription_requests.put_request(ALICE, BOB, b"<presence id='1'/>")
    await store.subscription_requests.put_request(ALICE, CAROL, b"<presence id='2'/>")
    await store.subscription_requests.put_request(ALICE, BOB, b"<presence id='3'/>")
    assert await store.subscription_requests.get_requests(ALICE) == [
        (BOB, b"<presence id='3'/>"),
        (CAROL, b"<presence id='2'/>"),
    ]
    assert await store.subscription_requests.get_requests(BOB) == []
    await store.subscription_requests.delete_request(ALICE, BOB)
    await store.subscription_requests.delete_request(ALICE, BOB)  # absent: no error
    assert await store.subscription_requests.get_requests(ALICE) == [(CAROL, b"<presence id='2'/>")]


# --- offline messages -------------------------------------------------------------------


async def test_offline_push_fetch_delete(store: SqlStore) -> None:
    stanzas = [f"<message id='{i}'>\u00e9\x00</message>".encode() for i in range(3)]
    ids = [await store.offline.push(ALICE, s, limit=10) for s in stanzas]
    assert all(i is not None for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    await store.offline.push(BOB, b"<message/>", limit=10)
    fetched = await store.offline.fetch(ALICE)
    assert [m.id for m in fetched] == ids
    assert [m.stanza for m in fetched] == stanzas
    assert all(m.stored_at > 0 for m in fetched)
    assert await store.offline.fetch(ALICE) == fetched  # fetching does not consume
    assert await store.offline.count(ALICE) == 3

    await store.offline.delete(ALICE, [ids[0], ids[2]])
    assert [m.id for m in await store.offline.fetch(ALICE)] == [ids[1]]
    await store.offline.delete(ALICE, [])
    bob_ids = [m.id for m in await store.offline.fetch(BOB)]
    await store.offline.delete(ALICE, bob_ids)  # another user's ids are not touched
    assert await store.offline.count(BOB) == 1


async def test_offline_push_refuses_when_full(store: SqlStore) -> None:
    for _ in range(3):
        assert await store.offline.push(ALICE, b"<message/>", limit=3) is not None
    assert await store.offline.push(ALICE, b"<message/>", limit=3) is None
    assert await store.offline.count(ALICE) == 3
    assert await store.offline.push(BOB, b"<message/>", limit=3) is not None  # per user


async def test_concurrent_offline_pushes_respect_the_limit(store: SqlStore) -> None:
    results = await asyncio.gather(
        *(store.offline.push(ALICE, b"<message/>", limit=5) for _ in range(20))
    )
    assert sum(r is not None for r in results) == 5
    assert await store.offline.count(ALICE) == 5


async def test_offline_ids_are_never_reused(store: SqlStore) -> None:
    first = await store.offline.push(ALICE, b"<message/>", limit=10)
    assert first is not None
    await store.offline.delete(ALICE, [first])
    second = await store.offline.push(ALICE, b"<message/>", limit=10)
    assert second is not None
    assert second > first


# --- blocking ---------------------------------------------------------------------------


async def test_block_unblock(store: SqlStore) -> None:
    full = Jid.parse("mallory@evil.example/bot")
    domain = Jid.parse("spam.example")
    assert await store.blocking.get_blocklist(ALICE) == []
    await store.blocking.block(ALICE, [BOB, full, domain, BOB])
    await store.blocking.block(ALICE, [BOB])  # already blocked: no error
    assert set(await store.blocking.get_blocklist(ALICE)) == {BOB, full, domain}
    assert len(await store.blocking.get_blocklist(ALICE)) == 3
    await store.blocking.block(BOB, [CAROL])

    await store.blocking.unblock(ALICE, [full, CAROL])
    assert set(await store.blocking.get_blocklist(ALICE)) == {BOB, domain}
    await store.blocking.unblock(ALICE, [])
    await store.blocking.unblock_all(ALICE)
    assert await store.blocking.get_blocklist(ALICE) == []
    assert await store.blocking.get_blocklist(BOB) == [CAROL]


# --- connections and errors -------------------------------------------------------------


async def test_ping(store: SqlStore) -> None:
    await store.ping()


async def test_unreachable_postgres_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="unreachable") as info:
        await open_store(UNREACHABLE_PG)
    assert type(info.value).__module__ == "imedge.store.ports"
    with pytest.raises(StoreError, match="unreachable"):
        await upgrade_database(UNREACHABLE_PG)
    store = SqlStore(Database(create_engine(UNREACHABLE_PG)))
    try:
        with pytest.raises(StoreError, match="unreachable"):
            await store.ping()
        with pytest.raises(StoreError, match="unreachable"):
            await store.accounts.get(ALICE)
    finally:
        await store.close()


async def test_missing_schema_is_a_readable_store_error(db_url: str) -> None:
    store = SqlStore(Database(create_engine(db_url)))  # no migrations run
    try:
        with pytest.raises(StoreError, match="imedge db upgrade"):
            await store.accounts.get(ALICE)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///var/lib/imedge.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_urls_map_to_async_drivers(url: str, driver: str) -> None:
    assert parse_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", "postgresql+psycopg2://h/db"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError):
        parse_url(url)


# --- SQLite specifics -------------------------------------------------------------------


async def test_sqlite_creates_directory_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "imedge.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        assert path.exists()
        async with store.db.engine.connect() as conn:
            pragmas = {
                name: (await conn.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await store.close()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 2  # FULL
    assert pragmas["foreign_keys"] == 1
    assert pragmas["busy_timeout"] >= 1000


async def test_sqlite_unopenable_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError):
        await open_store(f"sqlite:///{tmp_path / 'file' / 'imedge.db'}")


_WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from imedge.domain.jid import Jid
    from imedge.domain.roster import RosterItem
    from imedge.store.sql import open_store

    async def main() -> None:
        store = await open_store(sys.argv[1])
        alice = Jid.parse("alice@example.org")
        await store.rosters.put_item(alice, RosterItem(Jid.parse("bob@example.org")))
        await store.offline.push(alice, b"<message>last words</message>", limit=10)
        print("ok", flush=True)
        time.sleep(60)  # keep the connection open: killed here

    asyncio.run(main())
    """
)


async def test_sqlite_acknowledged_write_survives_sigkill(sqlite_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC_DIR, os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        sqlite_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = await proc.stdout.readline()
        assert line == b"ok\n", (await proc.stderr.read()).decode() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = await open_store(sqlite_url)
    try:
        assert await store.rosters.get_roster(ALICE) == (1, [RosterItem(BOB)])
        assert [m.stanza for m in await store.offline.fetch(ALICE)] == [
            b"<message>last words</message>"
        ]
    finally:
        await store.close()


async def test_count_contacts_at_a_domain_across_users(store: SqlStore) -> None:
    at = Jid.parse
    await store.rosters.put_item(ALICE, RosterItem(at("x@far.example")))
    await store.rosters.put_item(ALICE, RosterItem(at("y@far.example")))
    await store.rosters.put_item(BOB, RosterItem(at("x@far.example")))
    await store.rosters.put_item(BOB, RosterItem(at("z@near.example")))
    await store.rosters.put_item(
        BOB, RosterItem(at("w@far.example"), listed=False)
    )  # a request only
    await store.rosters.put_item(BOB, RosterItem(at("q@sub.far.example")))
    await store.rosters.put_item(BOB, RosterItem(at("r@far_example")))  # LIKE wildcards escaped
    assert await store.rosters.count_contacts_at("far.example") == 3
    assert await store.rosters.count_contacts_at("far.example", exclude=at("y@far.example")) == 2
    assert await store.rosters.count_contacts_at("nowhere.example") == 0
