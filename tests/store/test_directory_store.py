"""Corporate directory storage: peer servers (bind password encrypted at rest), directory
entries, sync plans applied all or nothing, sync reports, and migration 0003.

Every test that takes `db_url` or `dstore` runs on SQLite and PostgreSQL (conftest.py).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, select

from imedge.directory.model import (
    AttributeMapping,
    DirectoryEntry,
    IssueKind,
    LdapSource,
    PeerServer,
    SyncIssue,
    SyncPlan,
    SyncReport,
    SyncStatus,
)
from imedge.directory.plan import plan_sync, sync_report
from imedge.domain.jid import Jid
from imedge.policy import EdgeAddress, Partner
from imedge.store.ports import AlreadyExists, Conflict, NotFound, StoreError
from imedge.store.sql import SqlStore, current_revision, open_store, upgrade_database
from imedge.store.sql import directory as directory_module
from imedge.store.sql import schema as t
from imedge.store.sql.database import Database
from imedge.store.sql.engine import create_engine, writer
from imedge.store.sql.migrate import alembic_config
from imedge.store.sql.secrets import KEY_BYTES, SecretBox, load_or_create_key

KEY = bytes(range(KEY_BYTES))
OTHER_KEY = bytes(reversed(range(KEY_BYTES)))
PASSWORD = "s3cret-pässword"
ADMIN = "cli:root"

OCS = PeerServer(
    name="OCS ☃",
    domains=("ocs.example", "*.lync.example"),
    edge_address=EdgeAddress("edge.ocs.example", 5270),
    ldap=LdapSource(
        url="ldaps://ldap.ocs.example:636",
        base_dn="ou=people,dc=ocs,dc=example",
        start_tls=False,
        bind_dn="cn=reader,dc=ocs,dc=example",
        bind_password=PASSWORD,
        filter="(&(objectClass=person)(!(disabled=TRUE)))",
        page_size=250,
        timeout=12.5,
    ),
    mapping=AttributeMapping(
        im_address="{uid}@ocs.example", display_name="{givenName} {sn}", phone=None
    ),
    schedule_minutes=60,
    enabled=False,
)


def peer(name: str, *domains: str, password: str = "") -> PeerServer:
    return PeerServer(
        name=name,
        domains=domains or (f"{name.lower()}.example",),
        ldap=LdapSource(url="ldap://ldap", base_dn="dc=x", bind_dn="cn=r", bind_password=password),
        mapping=AttributeMapping(im_address="mail"),
    )


def person(peer_id: int, local: str, **fields: str) -> DirectoryEntry:
    return DirectoryEntry(
        peer_server_id=peer_id,
        im_address=f"{local}@ocs.example",
        dn=f"uid={local},ou=people",
        **fields,  # type: ignore[arg-type]
    )


def report_for(peer_id: int, plan: SyncPlan | None, **fields: object) -> SyncReport:
    return replace(sync_report(peer_id, started=100.0, finished=101.5, plan=plan), **fields)  # type: ignore[arg-type]


@pytest.fixture
async def dstore(db_url: str) -> AsyncIterator[SqlStore]:
    opened = await open_store(db_url, secret_key=KEY)
    try:
        yield opened
    finally:
        await opened.close()


async def raw_rows(store: SqlStore, table: str) -> list[dict[str, object]]:
    async with store.db.read() as conn:
        result = await conn.execute(select(t.metadata.tables[table]))
        return [dict(row._mapping) for row in result]


async def sync(store: SqlStore, peer_id: int, desired: list[DirectoryEntry]) -> SyncPlan:
    plan = plan_sync(await store.directory.entries(peer_id), desired)
    await store.directory.apply_plan(peer_id, plan, report_for(peer_id, plan))
    return plan


# --- peer servers -----------------------------------------------------------------------


async def test_peer_server_with_every_field_round_trips(dstore: SqlStore) -> None:
    d = dstore.directory
    saved = await d.add_peer_server(replace(OCS, id=999), ADMIN)
    assert saved.id is not None and saved.id != 999
    assert saved == replace(OCS, id=saved.id)
    assert await d.get_peer_server(saved.id) == saved
    assert await d.list_peer_servers() == [saved]
    assert await d.get_peer_server(saved.id + 1) is None


async def test_update_replaces_every_field(dstore: SqlStore) -> None:
    d = dstore.directory
    first = await d.add_peer_server(peer("Acme", password="old"), ADMIN)
    assert first.id is not None
    edited = replace(OCS, id=first.id)
    assert await d.update_peer_server(edited, ADMIN) == edited
    assert await d.get_peer_server(first.id) == edited
    anonymous = replace(edited, ldap=replace(edited.ldap, bind_dn="", bind_password=""))
    await d.update_peer_server(anonymous, ADMIN)
    assert await d.get_peer_server(first.id) == anonymous
    assert (await raw_rows(dstore, "peer_servers"))[0]["bind_password"] is None


async def test_the_ldap_ca_file_round_trips_and_can_be_cleared(dstore: SqlStore) -> None:
    d = dstore.directory
    with_ca = replace(OCS, ldap=replace(OCS.ldap, ca_file="/etc/imedge/ocs-ca.pem"))
    saved = await d.add_peer_server(with_ca, ADMIN)
    assert saved.id is not None
    assert (await d.get_peer_server(saved.id)) == saved
    assert saved.ldap.ca_file == "/etc/imedge/ocs-ca.pem"
    system_cas = replace(saved, ldap=replace(saved.ldap, ca_file=None))
    await d.update_peer_server(system_cas, ADMIN)
    fetched = await d.get_peer_server(saved.id)
    assert fetched is not None and fetched.ldap.ca_file is None


async def test_missing_peer_servers_are_not_found(dstore: SqlStore) -> None:
    d = dstore.directory
    with pytest.raises(NotFound):
        await d.update_peer_server(replace(OCS, id=42), ADMIN)
    with pytest.raises(NotFound):
        await d.update_peer_server(OCS, ADMIN)  # never stored: no id
    with pytest.raises(NotFound):
        await d.remove_peer_server(42, ADMIN)


async def test_names_and_domains_are_unique_across_peer_servers(dstore: SqlStore) -> None:
    d = dstore.directory
    a = await d.add_peer_server(peer("Acme", "acme.example"), ADMIN)
    b = await d.add_peer_server(peer("Beta", "beta.example"), ADMIN)
    with pytest.raises(AlreadyExists, match="Acme"):
        await d.add_peer_server(peer(" ACME ", "new.example"), ADMIN)
    with pytest.raises(AlreadyExists, match=r"acme\.example"):
        await d.add_peer_server(peer("Gamma", "gamma.example", "acme.example"), ADMIN)
    with pytest.raises(AlreadyExists, match=r"acme\.example"):
        await d.update_peer_server(replace(b, domains=("acme.example",)), ADMIN)
    # A row may keep its own name and domains.
    await d.update_peer_server(replace(a, domains=("acme.example", "x.example")), ADMIN)
    assert [p.name for p in await d.list_peer_servers()] == ["Acme", "Beta"]


async def test_removed_peer_server_ids_are_never_reused(dstore: SqlStore) -> None:
    d = dstore.directory
    first = await d.add_peer_server(peer("A"), ADMIN)
    second = await d.add_peer_server(peer("B"), ADMIN)
    assert first.id is not None and second.id is not None
    await d.remove_peer_server(second.id, ADMIN)
    third = await d.add_peer_server(peer("C"), ADMIN)
    assert third.id is not None and third.id > second.id


async def test_writes_are_in_the_change_log_without_the_password(dstore: SqlStore) -> None:
    d = dstore.directory
    saved = await d.add_peer_server(OCS, ADMIN)
    assert saved.id is not None
    await d.update_peer_server(replace(saved, enabled=True), "api:token")
    await d.remove_peer_server(saved.id, ADMIN)
    changes = await dstore.audit.changes()
    assert [(c.action, c.actor, c.target) for c in changes] == [
        ("peer_server.remove", ADMIN, OCS.name),
        ("peer_server.edit", "api:token", OCS.name),
        ("peer_server.add", ADMIN, OCS.name),
    ]
    added = json.loads(changes[2].detail)
    assert added["ldap"]["bind_password_set"] is True
    assert added["domains"] == list(OCS.domains)
    assert all(PASSWORD not in c.detail for c in changes)


# --- the bind password at rest ----------------------------------------------------------


async def test_the_password_is_encrypted_in_the_database(dstore: SqlStore) -> None:
    saved = await dstore.directory.add_peer_server(OCS, ADMIN)
    (row,) = await raw_rows(dstore, "peer_servers")
    sealed = row["bind_password"]
    assert isinstance(sealed, bytes) and len(sealed) > len(PASSWORD.encode())
    for form in (PASSWORD.encode(), PASSWORD.encode("utf-16-le"), PASSWORD.encode("latin-1")):
        assert form not in sealed
    assert not any(PASSWORD in str(value) for value in row.values())
    # The same password sealed twice differs (a fresh nonce each time).
    assert saved.id is not None
    await dstore.directory.update_peer_server(saved, ADMIN)
    (again,) = await raw_rows(dstore, "peer_servers")
    assert again["bind_password"] != sealed
    assert (await dstore.directory.get_peer_server(saved.id)) == saved


async def test_without_a_key_passwords_can_be_neither_stored_nor_read(
    dstore: SqlStore, db_url: str
) -> None:
    saved = await dstore.directory.add_peer_server(OCS, ADMIN)
    assert saved.id is not None
    keyless = await open_store(db_url)
    try:
        with pytest.raises(StoreError, match="no encryption key"):
            await keyless.directory.add_peer_server(peer("B", password="pw"), ADMIN)
        with pytest.raises(StoreError, match="no encryption key"):
            await keyless.directory.get_peer_server(saved.id)
        # Anonymous binds need no key.
        anonymous = await keyless.directory.add_peer_server(peer("C"), ADMIN)
        assert anonymous.id is not None
        assert await keyless.directory.get_peer_server(anonymous.id) == anonymous
    finally:
        await keyless.close()


async def test_another_key_does_not_open_the_password(dstore: SqlStore, db_url: str) -> None:
    saved = await dstore.directory.add_peer_server(OCS, ADMIN)
    assert saved.id is not None
    other = await open_store(db_url, secret_key=OTHER_KEY)
    try:
        with pytest.raises(StoreError, match=r"secret\.key"):
            await other.directory.get_peer_server(saved.id)
    finally:
        await other.close()


async def test_a_key_of_the_wrong_size_is_refused(sqlite_url: str) -> None:
    with pytest.raises(StoreError, match="32 bytes"):
        await open_store(sqlite_url, secret_key=b"short")


def test_key_file_is_made_once_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret.key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    path.write_text("not base64 at all!")
    with pytest.raises(StoreError, match="base64"):
        load_or_create_key(path)
    path.write_text("c2hvcnQ=\n")  # "short"
    with pytest.raises(StoreError, match="5 bytes"):
        load_or_create_key(path)
    os.chmod(path, 0o000)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(StoreError, match="cannot read"):
            load_or_create_key(path)


# --- entries and sync plans -------------------------------------------------------------


async def test_apply_plan_adds_changes_and_removes(dstore: SqlStore) -> None:
    d = dstore.directory
    p = await d.add_peer_server(OCS, ADMIN)
    assert p.id is not None
    first = [person(p.id, "ann", display_name="Ann"), person(p.id, "bob"), person(p.id, "cy")]
    plan = await sync(dstore, p.id, first)
    assert len(plan.added) == 3
    assert await d.entries(p.id) == sorted(first, key=lambda e: e.im_address)
    assert await d.count_entries(p.id) == 3

    second = [person(p.id, "ann", display_name="Ann Lee"), person(p.id, "bob"), person(p.id, "di")]
    plan = await sync(dstore, p.id, second)
    assert (len(plan.added), len(plan.changed), len(plan.removed), plan.unchanged) == (1, 1, 1, 1)
    assert await d.entries(p.id) == sorted(second, key=lambda e: e.im_address)
    assert await d.get_entry("ann@ocs.example") == second[0]
    assert await d.get_entry("cy@ocs.example") is None

    # Nothing to do: an empty plan, and still a report.
    plan = await sync(dstore, p.id, second)
    assert plan.is_empty and plan.unchanged == 3
    assert len(await d.reports(p.id)) == 3


async def test_a_failed_apply_leaves_the_previous_directory_intact(dstore: SqlStore) -> None:
    d = dstore.directory
    p = await d.add_peer_server(OCS, ADMIN)
    assert p.id is not None
    before = [person(p.id, "ann"), person(p.id, "bob", title="Old"), person(p.id, "cy")]
    await sync(dstore, p.id, before)
    reports_before = await d.reports(p.id)

    good = plan_sync(before, [person(p.id, "bob", title="New"), person(p.id, "cy")])
    assert len(good.removed) == 1 and len(good.changed) == 1
    # The second insert violates the primary key, after the delete and the update ran.
    broken = replace(good, added=(person(p.id, "eve"), person(p.id, "eve", title="Twin")))
    with pytest.raises(StoreError, match="constraint"):
        await d.apply_plan(p.id, broken, report_for(p.id, broken))
    assert await d.entries(p.id) == before
    assert await d.reports(p.id) == reports_before


async def test_a_stale_plan_is_refused(dstore: SqlStore) -> None:
    d = dstore.directory
    p = await d.add_peer_server(OCS, ADMIN)
    assert p.id is not None
    stale = plan_sync([], [person(p.id, "ann")])  # made before the sync below
    await sync(dstore, p.id, [person(p.id, "bob")])
    with pytest.raises(Conflict, match="sync again"):
        await d.apply_plan(p.id, stale, report_for(p.id, stale))
    assert [e.im_address for e in await d.entries(p.id)] == ["bob@ocs.example"]


async def test_apply_plan_for_a_missing_peer_server(dstore: SqlStore) -> None:
    plan = plan_sync([], [person(5, "ann")])
    with pytest.raises(NotFound):
        await dstore.directory.apply_plan(5, plan, report_for(5, plan))


async def test_removing_a_peer_server_removes_its_entries_and_reports_only(
    dstore: SqlStore,
) -> None:
    d = dstore.directory
    a = await d.add_peer_server(peer("A", "a.example"), ADMIN)
    b = await d.add_peer_server(peer("B", "b.example"), ADMIN)
    assert a.id is not None and b.id is not None
    await sync(dstore, a.id, [person(a.id, "ann")])
    await sync(dstore, b.id, [person(b.id, "bob")])
    await dstore.federation.add_partner(Partner(name="Keep", domains=("a.example",)), ADMIN)
    await d.remove_peer_server(a.id, ADMIN)
    assert await d.get_peer_server(a.id) is None
    assert await d.count_entries(a.id) == 0 and await d.reports(a.id) == []
    assert await raw_rows(dstore, "peer_server_domains") == [
        {"peer_server_id": b.id, "position": 0, "domain": "b.example"}
    ]
    assert [e.im_address for e in await d.entries(b.id)] == ["bob@ocs.example"]
    assert len(await d.reports(b.id)) == 1
    # Partners are the sync service's business, not the store's.
    assert [x.name for x in await dstore.federation.list_partners()] == ["Keep"]


async def test_search_ignores_case_and_looks_at_the_right_fields(dstore: SqlStore) -> None:
    d = dstore.directory
    a = await d.add_peer_server(peer("A", "a.example"), ADMIN)
    b = await d.add_peer_server(peer("B", "b.example"), ADMIN)
    assert a.id is not None and b.id is not None
    people_a = [
        person(a.id, "jm", display_name="Jürgen Müller", department="Einkauf"),
        person(a.id, "ss", display_name="Straße Sam", email="Sam@Mail.example"),
        person(a.id, "pct", display_name="100% Pat_ty", title="Müller"),  # title: not searched
        person(a.id, "noname"),
    ]
    await sync(dstore, a.id, people_a)
    await sync(dstore, b.id, [person(b.id, "bm", display_name="Bea Müller")])

    async def found(text: str, **kw: int) -> list[str]:
        return [e.im_address.split("@")[0] for e in await d.search(text, **kw)]

    assert await found("MÜLLER") == ["bm", "jm"]  # Unicode case folding on both engines
    assert await found("müller", peer_server_id=a.id) == ["jm"]
    assert await found("STRASSE") == ["ss"]  # ß folds to ss
    assert await found("mail.EXAMPLE") == ["ss"]  # e-mail
    assert await found("einkauf") == ["jm"]  # department
    assert await found("NONAME@ocs") == ["noname"]  # IM address
    assert await found("100%") == ["pct"]  # LIKE wildcards are literal
    assert await found("t_t") == ["pct"]
    assert await found("%") == ["pct"]
    assert await found("nobody") == []
    # Empty text lists everyone, by name (an entry without a name sorts by its address).
    assert await found("") == ["pct", "bm", "jm", "noname", "ss"]
    assert await found("  ", limit=2) == ["pct", "bm"]


async def test_reports_newest_first_with_issues_and_pruned(
    dstore: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = dstore.directory
    p = await d.add_peer_server(OCS, ADMIN)
    assert p.id is not None
    issues = [
        SyncIssue(IssueKind.MISSING_IM_ADDRESS, "uid=ü,ou=people", "no value for uid"),
        SyncIssue(IssueKind.DUPLICATE_IM_ADDRESS, "uid=b", "a@ocs.example is also ..."),
    ]
    failed = replace(
        report_for(p.id, None, status=SyncStatus.FAILED, error="invalid credentials"),
        issues=tuple(issues),
        issue_count=2500,
    )
    await d.record_report(failed)
    await sync(dstore, p.id, [person(p.id, "ann")])
    newest, oldest = await d.reports(p.id)
    assert oldest.id is not None and newest.id is not None and newest.id > oldest.id
    assert oldest == replace(failed, id=oldest.id)
    assert (newest.status, newest.added, newest.error) == (SyncStatus.OK, 1, None)
    assert [r.id for r in await d.reports(p.id, limit=1)] == [newest.id]

    monkeypatch.setattr(directory_module, "KEEP_REPORTS", 3)
    for n in range(5):
        await d.record_report(report_for(p.id, None, status=SyncStatus.INTERRUPTED, added=n))
    kept = await d.reports(p.id)
    assert [r.added for r in kept] == [4, 3, 2]


# --- migration --------------------------------------------------------------------------


async def test_upgrade_from_0002_keeps_existing_data(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with writer(engine).begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0002"))
        old = SqlStore(Database(engine))
        partner = await old.federation.add_partner(
            Partner(name="Fab", domains=("f.example",)), ADMIN
        )
        await old.accounts.create(Jid.parse("alice@example.org"), [])
    finally:
        await engine.dispose()
    assert await current_revision(db_url) == "0002"

    assert (await upgrade_database(db_url))[:2] == ["0003", "0004"]

    store = await open_store(db_url, upgrade=False, secret_key=KEY)
    try:
        assert await store.federation.list_partners() == [partner]
        assert await store.accounts.get(Jid.parse("alice@example.org")) is not None
        saved = await store.directory.add_peer_server(OCS, ADMIN)
        assert saved.id is not None
        await sync(store, saved.id, [person(saved.id, "ann")])
        assert await store.directory.count_entries(saved.id) == 1
    finally:
        await store.close()


async def test_upgrade_from_0003_adds_the_ca_file_and_keeps_peer_servers(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with writer(engine).begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0003"))
            await conn.execute(
                insert(t.peer_servers).values(
                    name="Old",
                    name_key="old",
                    ldap_url="ldap://ldap",
                    start_tls=True,
                    bind_dn="",
                    base_dn="dc=x",
                    ldap_filter="(objectClass=person)",
                    page_size=500,
                    timeout=30.0,
                    mapping='{"im_address": "mail"}',
                    enabled=True,
                )
            )
    finally:
        await engine.dispose()

    assert await upgrade_database(db_url) == ["0004"]

    store = await open_store(db_url, upgrade=False, secret_key=KEY)
    try:
        [old] = await store.directory.list_peer_servers()
        assert old.name == "Old" and old.ldap.ca_file is None
    finally:
        await store.close()


def test_a_sealed_secret_opens_only_in_its_own_context() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(PASSWORD, "peer_servers.bind_password")
    assert box.open(sealed, "peer_servers.bind_password") == PASSWORD
    with pytest.raises(StoreError, match="does not open"):
        box.open(sealed, "another.column")
    with pytest.raises(StoreError, match="damaged"):
        box.open(b"\x02" + sealed[1:], "peer_servers.bind_password")
