"""FEDERATION.md storage: partner table, settings, users' settings, change log, audit log.

Every test runs on SQLite and PostgreSQL (fixtures in conftest.py).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from alembic import command

from imedge.domain.jid import Jid
from imedge.domain.roster import RosterItem
from imedge.policy import (
    DEFAULT,
    EdgeAddress,
    Filter,
    GlobalSettings,
    Origin,
    OriginKind,
    Partner,
    Requirement,
    UserSettings,
    VerifiedSubscriptions,
    default_partners,
)
from imedge.store.ports import AlreadyExists, AuditEntry, NotFound, ScramCredential
from imedge.store.sql import SqlStore, current_revision, open_store, upgrade_database
from imedge.store.sql import federation as federation_module
from imedge.store.sql.database import Database
from imedge.store.sql.engine import create_engine, writer
from imedge.store.sql.migrate import alembic_config

ALICE = Jid.parse("alice@example.org")
BOB = Jid.parse("bob@example.org")
ADMIN = "cli:root"

FULL = Partner(
    name="Fabrikam ☃",
    domains=("fabrikam.example", "*.fabrikam.example", "xn--bcher-kva.example"),
    comment="Our supplier.\nSecond line, ünïcode.",
    edge_address=EdgeAddress("2001:db8::1", 5270),
    allowed=False,
    public=True,
    filter=Filter.ALL,
    tls=Requirement.OPTIONAL,
    sasl_external=Requirement.REQUIRED,
    dialback=False,
    connection_limit=3,
    origin=Origin(OriginKind.PEER_SERVER, "7"),
)


def partner(name: str, *domains: str, **fields: object) -> Partner:
    return replace(Partner(name=name, domains=domains or (f"{name.lower()}.example",)), **fields)  # type: ignore[arg-type]


def same_but_id(saved: Partner, given: Partner) -> bool:
    return saved.id is not None and saved == replace(given, id=saved.id)


# --- partners ---------------------------------------------------------------------------


async def test_partner_with_every_field_set_round_trips(store: SqlStore) -> None:
    fed = store.federation
    saved = await fed.add_partner(replace(FULL, id=999), ADMIN)
    assert saved.id is not None and saved.id != 999  # the given id is ignored
    assert same_but_id(saved, FULL)
    assert await fed.get_partner(saved.id) == saved
    assert await fed.get_partner_by_name("Fabrikam ☃") == saved
    assert await fed.list_partners() == [saved]
    assert str(saved.edge_address) == "[2001:db8::1]:5270"
    assert str(saved.origin) == "peer-server:7"


async def test_partner_defaults_round_trip(store: SqlStore) -> None:
    given = Partner(name="Contoso", domains=("contoso.example",))
    saved = await store.federation.add_partner(given, ADMIN)
    assert same_but_id(saved, given)
    assert await store.federation.list_partners() == [saved]
    assert saved.edge_address is None and saved.connection_limit is None


async def test_every_enum_value_origin_and_edge_address_is_stored(store: SqlStore) -> None:
    fed = store.federation
    variants = [
        *(partner(f"F{i}", filter=f) for i, f in enumerate(Filter)),
        *(partner(f"T{i}", tls=r) for i, r in enumerate(Requirement)),
        *(partner(f"S{i}", sasl_external=r) for i, r in enumerate(Requirement)),
        partner("O1", origin=Origin(OriginKind.MANUAL)),
        partner("O2", origin=DEFAULT),
        partner("O3", origin=Origin(OriginKind.PEER_SERVER, "ldap-eu:7")),
        partner("E1", edge_address=EdgeAddress("edge.example")),
        partner("E2", edge_address=EdgeAddress("192.0.2.1", 1)),
        partner("E3", edge_address=EdgeAddress("::1", 65535)),
    ]
    saved = [await fed.add_partner(v, ADMIN) for v in variants]
    for stored, given in zip(saved, variants, strict=True):
        assert same_but_id(stored, given)
    assert await fed.list_partners() == saved  # oldest first


async def test_lookups_of_missing_partners(store: SqlStore) -> None:
    assert await store.federation.get_partner(1) is None
    assert await store.federation.get_partner_by_name("nobody") is None
    assert await store.federation.list_partners() == []


async def test_name_lookup_ignores_case_and_spaces(store: SqlStore) -> None:
    saved = await store.federation.add_partner(partner("Contoso"), ADMIN)
    assert await store.federation.get_partner_by_name("  cONTOSO ") == saved


async def test_update_replaces_every_field_and_the_domains(store: SqlStore) -> None:
    fed = store.federation
    first = await fed.add_partner(partner("Contoso", "contoso.example", "*.contoso.example"), ADMIN)
    other = await fed.add_partner(partner("Other"), ADMIN)
    assert first.id is not None
    edited = replace(FULL, id=first.id, domains=("*.contoso.example", "contoso.test"))
    assert await fed.update_partner(edited, ADMIN) == edited
    assert await fed.get_partner(first.id) == edited
    assert await fed.get_partner_by_name("Contoso") is None
    assert await fed.list_partners() == [edited, other]
    # The freed domain can be listed again by someone else.
    again = await fed.add_partner(partner("Again", "contoso.example"), ADMIN)
    assert again.domains == ("contoso.example",)
    # Blocking keeps the configuration; unblocking restores it exactly.
    blocked = await fed.update_partner(replace(edited, allowed=True), ADMIN, "partner.unblock")
    assert await fed.get_partner(first.id) == blocked == replace(edited, allowed=True)


async def test_update_or_remove_of_a_missing_partner_is_not_found(store: SqlStore) -> None:
    fed = store.federation
    with pytest.raises(NotFound):
        await fed.update_partner(partner("Ghost"), ADMIN)  # never stored: no id
    with pytest.raises(NotFound):
        await fed.update_partner(partner("Ghost", id=42), ADMIN)
    with pytest.raises(NotFound):
        await fed.remove_partner(42, ADMIN)
    saved = await fed.add_partner(partner("Contoso"), ADMIN)
    assert saved.id is not None
    await fed.remove_partner(saved.id, ADMIN)
    assert await fed.get_partner(saved.id) is None
    assert await fed.list_partners() == []
    with pytest.raises(NotFound):
        await fed.remove_partner(saved.id, ADMIN)
    with pytest.raises(NotFound):
        await fed.update_partner(saved, ADMIN)


async def test_removed_partner_ids_are_never_reused(store: SqlStore) -> None:
    fed = store.federation
    first = await fed.add_partner(partner("A"), ADMIN)
    second = await fed.add_partner(partner("B"), ADMIN)
    assert first.id is not None and second.id is not None
    await fed.remove_partner(second.id, ADMIN)
    third = await fed.add_partner(partner("B"), ADMIN)  # its domain is free again too
    assert third.id is not None and third.id > second.id


async def test_duplicate_names_and_domains_are_refused(store: SqlStore) -> None:
    fed = store.federation
    contoso = await fed.add_partner(partner("Contoso", "contoso.example"), ADMIN)
    before = await store.audit.changes()
    with pytest.raises(AlreadyExists, match="Contoso"):
        await fed.add_partner(partner("Contoso", "other.example"), ADMIN)
    with pytest.raises(AlreadyExists):
        await fed.add_partner(partner(" contoso ", "other.example"), ADMIN)
    with pytest.raises(AlreadyExists, match=r"contoso\.example.*Contoso"):
        await fed.add_partner(partner("Other", "new.example", "contoso.example"), ADMIN)
    other = await fed.add_partner(partner("Other", "other.example"), ADMIN)
    with pytest.raises(AlreadyExists):
        await fed.update_partner(replace(other, name="CONTOSO"), ADMIN)
    with pytest.raises(AlreadyExists):
        await fed.update_partner(replace(other, domains=("contoso.example",)), ADMIN)
    # Nothing of the refused writes was kept, nor logged.
    assert await fed.list_partners() == [contoso, other]
    assert len(await store.audit.changes()) == len(before) + 1
    # A row may keep its own name and domains when edited.
    renamed = replace(contoso, name="contoso", comment="case changed")
    assert await fed.update_partner(renamed, ADMIN) == renamed


async def test_unique_constraints_back_the_checks(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a writer racing past the checks meets: the constraints, reported as AlreadyExists.
    await store.federation.add_partner(partner("Contoso", "contoso.example"), ADMIN)

    async def no_check(*_args: object) -> None:
        return None

    monkeypatch.setattr(federation_module, "_check_free", no_check)
    with pytest.raises(AlreadyExists):
        await store.federation.add_partner(partner("CONTOSO", "other.example"), ADMIN)
    with pytest.raises(AlreadyExists):
        await store.federation.add_partner(partner("Other", "contoso.example"), ADMIN)
    assert [p.name for p in await store.federation.list_partners()] == ["Contoso"]


async def test_concurrent_adds_of_one_name_store_one_row(store: SqlStore) -> None:
    results = await asyncio.gather(
        *(store.federation.add_partner(partner("Race", f"r{i}.example"), ADMIN) for i in range(4)),
        return_exceptions=True,
    )
    saved = [r for r in results if isinstance(r, Partner)]
    assert len(saved) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if not isinstance(r, Partner))
    assert await store.federation.list_partners() == saved


async def test_concurrent_adds_of_one_domain_store_one_row(store: SqlStore) -> None:
    results = await asyncio.gather(
        *(store.federation.add_partner(partner(f"R{i}", "race.example"), ADMIN) for i in range(4)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Partner) for r in results) == 1
    assert all(isinstance(r, Partner | AlreadyExists) for r in results)


async def test_seed_defaults_only_once_ever(store: SqlStore) -> None:
    fed = store.federation
    defaults = default_partners()
    assert await fed.seed_defaults(defaults) is True
    listed = await fed.list_partners()
    assert [replace(p, id=None) for p in listed] == list(defaults)
    assert await fed.seed_defaults(defaults) is False
    assert await fed.list_partners() == listed
    # An administrator removes one: it does not come back at the next start.
    assert listed[0].id is not None
    await fed.remove_partner(listed[0].id, ADMIN)
    assert await fed.seed_defaults(defaults) is False
    assert await fed.list_partners() == listed[1:]
    seeded = [c for c in await store.audit.changes() if c.action == "partner.seed"]
    assert sorted(c.target for c in seeded) == sorted(p.name for p in defaults)
    assert {c.actor for c in seeded} == {"system:install"}


async def test_seed_defaults_skips_rows_that_clash(store: SqlStore) -> None:
    fed = store.federation
    mine = await fed.add_partner(partner("Mine", "jabber.org"), ADMIN)
    assert await fed.seed_defaults(default_partners()) is True
    listed = await fed.list_partners()
    assert listed[0] == mine
    assert "jabber.org" not in [p.name for p in listed]
    assert len(listed) == len(default_partners())


async def test_concurrent_seeding_seeds_once(store: SqlStore) -> None:
    results = await asyncio.gather(
        *(store.federation.seed_defaults(default_partners()) for _ in range(3))
    )
    assert sorted(results) == [False, False, True]
    assert len(await store.federation.list_partners()) == len(default_partners())


# --- global settings --------------------------------------------------------------------


async def test_settings_default_until_saved_then_round_trip(store: SqlStore) -> None:
    fed = store.federation
    assert await fed.get_settings() == GlobalSettings()
    saved = GlobalSettings(
        federation=False,
        open_federation=True,
        open_federation_max_contacts=7,
        open_federation_stanza_rate=2.5,
        blocked_domains=("spam.example", "*.evil.example"),
        public_im_licences=12,
    )
    await fed.save_settings(saved, ADMIN)
    assert await fed.get_settings() == saved
    await fed.save_settings(GlobalSettings(), ADMIN)
    assert await fed.get_settings() == GlobalSettings()


# --- users' settings --------------------------------------------------------------------


async def test_user_settings_default_round_trip_list_and_count(store: SqlStore) -> None:
    fed = store.federation
    assert await fed.get_user_settings(ALICE) == UserSettings()
    assert await fed.list_user_settings() == []
    assert await fed.count_public_im() == 0
    alice = UserSettings(
        federation=False,
        public_im=True,
        verified_subscriptions=VerifiedSubscriptions.BLOCK,
        block_non_allowed_im=True,
        allow_list=("john_smith@ocs.example", "*.fabrikam.example", "ü.example"),
    )
    bob = UserSettings(public_im=True, verified_subscriptions=VerifiedSubscriptions.ALLOW)
    await fed.save_user_settings(Jid.parse("alice@example.org/phone"), alice, ADMIN)
    await fed.save_user_settings(BOB, bob, ADMIN)
    assert await fed.get_user_settings(ALICE) == alice
    assert await fed.get_user_settings(Jid.parse("alice@example.org/laptop")) == alice
    assert await fed.list_user_settings() == [(ALICE, alice), (BOB, bob)]
    assert await fed.count_public_im() == 2
    await fed.save_user_settings(BOB, replace(bob, public_im=False), ADMIN)
    assert await fed.count_public_im() == 1
    # Back to the defaults: no longer listed as an exception.
    await fed.save_user_settings(BOB, UserSettings(), ADMIN)
    assert await fed.list_user_settings() == [(ALICE, alice)]
    assert await fed.get_user_settings(BOB) == UserSettings()


async def test_deleting_an_account_deletes_its_federation_settings(store: SqlStore) -> None:
    fed = store.federation
    for user in (ALICE, BOB):
        await store.accounts.create(user, [])
        await fed.save_user_settings(user, UserSettings(public_im=True), ADMIN)
    await store.accounts.delete(ALICE)
    assert await fed.get_user_settings(ALICE) == UserSettings()
    assert await fed.list_user_settings() == [(BOB, UserSettings(public_im=True))]
    assert await fed.count_public_im() == 1


# --- change log -------------------------------------------------------------------------


async def test_every_write_is_in_the_change_log(store: SqlStore) -> None:
    fed = store.federation
    saved = await fed.add_partner(FULL, "api:token")
    assert saved.id is not None
    await fed.update_partner(
        replace(saved, allowed=True), "admin:root@example.org", "partner.unblock"
    )
    await fed.remove_partner(saved.id, "cli:root")
    await fed.save_settings(GlobalSettings(open_federation=True), "cli:root")
    await fed.save_user_settings(ALICE, UserSettings(public_im=True), "api:token")

    changes = await store.audit.changes()
    assert [(c.actor, c.action, c.target) for c in changes] == [
        ("api:token", "user.federation", "alice@example.org"),
        ("cli:root", "settings.update", "settings"),
        ("cli:root", "partner.remove", FULL.name),
        ("admin:root@example.org", "partner.unblock", FULL.name),
        ("api:token", "partner.add", FULL.name),
    ]
    ids = [c.id for c in changes]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    assert all(c.at > 0 for c in changes)
    added = json.loads(changes[-1].detail)
    assert added["id"] == saved.id
    assert added["domains"] == list(FULL.domains)
    assert added["edge_address"] == "[2001:db8::1]:5270"
    assert added["origin"] == "peer-server:7"
    assert added["filter"] == "all"
    assert json.loads(changes[-2].detail)["allowed"] is True
    assert json.loads(changes[0].detail)["public_im"] is True
    assert json.loads(changes[1].detail)["open_federation"] is True


async def test_change_log_since_and_limit(store: SqlStore) -> None:
    for i in range(5):
        await store.federation.save_settings(GlobalSettings(public_im_licences=i), ADMIN)
    changes = await store.audit.changes()
    assert len(changes) == 5
    assert await store.audit.changes(limit=2) == changes[:2]
    assert await store.audit.changes(since=changes[2].at) == [
        c for c in changes if c.at >= changes[2].at
    ]
    assert await store.audit.changes(limit=0) == []


# --- audit log --------------------------------------------------------------------------


def entry(at: float, **fields: str | None) -> AuditEntry:
    values: dict[str, str | None] = {
        "direction": "in",
        "domain": "fabrikam.example",
        "partner": "Fabrikam",
        "sender": "s@fabrikam.example/desk",
        "recipient": "r@example.org",
        "kind": "message",
        "verdict": "refuse",
        "reason": "unverified_not_allowed",
        "text": "refused: the sender is not on r's allow list",
    }
    values.update(fields)
    return AuditEntry(at=at, **values)  # type: ignore[arg-type]


async def test_audit_record_and_query_by_each_filter(store: SqlStore) -> None:
    audit = store.audit
    entries = [
        entry(100.0),
        entry(101.0, domain="other.example", partner=None, sender="x@other.example"),
        entry(102.0, direction="out", sender="r@example.org/phone", recipient="s@fabrikam.example"),
        entry(
            103.0,
            reason="federation_disabled",
            verdict="refuse",
            kind="stream",
            direction="stream",
            sender="fabrikam.example",
            recipient="example.org",
        ),
        entry(104.0, recipient="q@example.org", verdict="accept", reason="ok"),
    ]
    await audit.record(entries)
    await audit.record([])

    def ats(found: list[AuditEntry]) -> list[float]:
        return [e.at for e in found]

    everything = await audit.query()
    assert ats(everything) == [104.0, 103.0, 102.0, 101.0, 100.0]
    assert [replace(e, id=None) for e in reversed(everything)] == entries
    assert all(e.id is not None for e in everything)
    assert ats(await audit.query(since=101.0, until=103.0)) == [103.0, 102.0, 101.0]
    assert ats(await audit.query(domain="other.example")) == [101.0]
    assert ats(await audit.query(partner="Fabrikam")) == [104.0, 103.0, 102.0, 100.0]
    # `user` matches sender or recipient, in bare form, whatever the resource.
    assert ats(await audit.query(user="r@example.org")) == [102.0, 101.0, 100.0]
    assert ats(await audit.query(user="r@example.org/other")) == [102.0, 101.0, 100.0]
    assert ats(await audit.query(user="s@fabrikam.example")) == [104.0, 102.0, 100.0]
    assert ats(await audit.query(user="fabrikam.example")) == [103.0]
    assert ats(await audit.query(reason="federation_disabled")) == [103.0]
    assert ats(await audit.query(limit=2)) == [104.0, 103.0]
    assert await audit.query(limit=0) == []
    assert ats(await audit.query(partner="Fabrikam", user="q@example.org", since=50)) == [104.0]
    assert await audit.query(domain="nowhere.example") == []


async def test_audit_prune_keeps_the_newest(store: SqlStore) -> None:
    audit = store.audit
    assert await audit.prune(10) == 0
    # Two entries share a time: order among them is by id (insertion order).
    await audit.record([entry(float(at)) for at in (1, 2, 3, 3, 4, 5)])
    assert await audit.prune(10) == 0
    assert await audit.prune(3) == 3
    kept = await audit.query()
    assert [e.at for e in kept] == [5.0, 4.0, 3.0]
    assert await audit.prune(3) == 0
    assert await audit.prune(0) == 3
    assert await audit.query() == []
    with pytest.raises(ValueError, match="keep"):
        await audit.prune(-1)


async def test_audit_survives_oversized_addresses(store: SqlStore) -> None:
    huge = "ü" * 3000
    await store.audit.record(
        [entry(1.0, sender=f"{huge}@{huge}/r", recipient=huge, domain=huge, partner=huge)]
    )
    [found] = await store.audit.query()
    assert found.sender == f"{huge}@{huge}/r"  # unindexed columns keep it all
    assert found.recipient == huge
    assert len(found.domain.encode()) <= 1023


# --- migration --------------------------------------------------------------------------


async def test_upgrade_from_0001_keeps_existing_data(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with writer(engine).begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0001"))
        old = SqlStore(Database(engine))
        credential = ScramCredential("SCRAM-SHA-256", b"s" * 16, 4096, b"k" * 32, b"v" * 32)
        await old.accounts.create(ALICE, [credential])
        await old.rosters.put_item(ALICE, RosterItem(BOB, name="Bob"))
    finally:
        await engine.dispose()
    assert await current_revision(db_url) == "0001"

    assert (await upgrade_database(db_url))[0] == "0002"  # and any later revisions

    store = await open_store(db_url, upgrade=False)
    try:
        assert await store.accounts.get(ALICE) is not None
        assert await store.accounts.get_credential(ALICE, "SCRAM-SHA-256") == credential
        assert await store.rosters.get_roster(ALICE) == (1, [RosterItem(BOB, name="Bob")])
        assert await store.federation.seed_defaults(default_partners()) is True
        assert await store.federation.get_user_settings(ALICE) == UserSettings()
        await store.accounts.delete(ALICE)
        assert await store.accounts.get(ALICE) is None
    finally:
        await store.close()
