"""FEDERATION.md §Words (peer server, directory): the sync service against a real slapd.

A first sync imports the good people and reports the flawed ones; the peer server's
domain becomes an allowed partner with origin `peer-server:<id>`; incremental changes in
LDAP show in the next plan; a dry run, a wrong password and an interrupted sync change
nothing; removing the peer server removes its partner only; the search says who is
reachable by federation now; the scheduler syncs on its own and stops cleanly.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from imedge.directory import ldap
from imedge.directory.model import (
    AttributeMapping,
    IssueKind,
    LdapRecord,
    LdapSource,
    PeerServer,
    SyncStatus,
)
from imedge.domain.jid import Jid
from imedge.policy import EdgeAddress, Origin, OriginKind, Partner
from imedge.services.directory import DirectoryService, SyncRunning
from imedge.services.federation import FederationService
from imedge.store.sql import SqlStore, open_store
from imedge.store.sql.secrets import KEY_BYTES
from tests.peers.slapd import Flaw, Slapd, new_person

pytestmark = pytest.mark.interop

ADMIN = "cli:root"
KEY = bytes(range(KEY_BYTES))


@dataclasses.dataclass
class Setup:
    store: SqlStore
    federation: FederationService
    directory: DirectoryService


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'imedge.db'}", secret_key=KEY)
    federation = FederationService(store, frozenset({"localhost"}))
    await federation.load()
    directory = DirectoryService(store, federation)
    try:
        yield Setup(store, federation, directory)
    finally:
        await directory.stop()
        await store.close()


def ocs(server: Slapd, **changes: Any) -> PeerServer:
    """The slapd's people as a peer server: IM address from labeledURI (`xmpp:` dropped),
    so entries without it, duplicated or foreign addresses are reported."""
    peer = PeerServer(
        name="OCS",
        domains=(server.im_domain,),
        edge_address=EdgeAddress("127.0.0.1", 5270),
        ldap=LdapSource(
            url=server.url,
            base_dn=server.base_dn,
            start_tls=False,
            bind_dn=server.bind_dn,
            bind_password=server.password,
            page_size=40,
            timeout=5.0,
        ),
        mapping=AttributeMapping(im_address="labeledURI", display_name="cn"),
    )
    return dataclasses.replace(peer, **changes)


def expected_addresses(server: Slapd) -> set[str]:
    """Good people whose address nobody else claims (duplicates import neither claimant)."""
    dup = server.people.duplicated_ims
    return {p.im for p in server.people.people if p.im and p.flaw is Flaw.NONE and p.im not in dup}


async def addresses(s: Setup, peer_id: int) -> set[str]:
    return {e.im_address for e in await s.store.directory.entries(peer_id)}


async def first_sync(s: Setup, server: Slapd, **changes: Any) -> PeerServer:
    peer = await s.directory.add_peer_server(ocs(server, **changes), ADMIN)
    assert peer.id is not None
    report = await s.directory.sync(peer.id, actor=ADMIN)
    assert report.status is SyncStatus.OK, report
    return peer


def own_partners(s: Setup) -> list[Partner]:
    return [p for p in s.federation.config.partners if p.origin.kind is OriginKind.PEER_SERVER]


async def test_first_sync_imports_good_people_reports_flaws_and_adds_the_partner(
    setup: Setup, slapd_server: Slapd
) -> None:
    peer = await setup.directory.add_peer_server(ocs(slapd_server), ADMIN)
    assert peer.id is not None
    seen: list[int] = []
    report = await setup.directory.sync(peer.id, progress=seen.append, actor=ADMIN)

    people = slapd_server.people
    good = expected_addresses(slapd_server)
    assert report.status is SyncStatus.OK and report.error is None
    assert (report.added, report.changed, report.removed) == (len(good), 0, 0)
    assert await addresses(setup, peer.id) == good
    assert seen[-1] == len(people)
    kinds = Counter(issue.kind for issue in report.issues)
    claimants = [p for p in people.people if p.im in people.duplicated_ims]
    assert kinds == {
        IssueKind.MISSING_IM_ADDRESS: len(people.with_flaw(Flaw.NO_UID))
        + len(people.with_flaw(Flaw.NO_IM_ATTRIBUTE)),
        IssueKind.DUPLICATE_IM_ADDRESS: len(claimants),
        IssueKind.OUTSIDE_DOMAINS: len(people.with_flaw(Flaw.FOREIGN_DOMAIN)),
    }
    assert report.issue_count == len(report.issues)
    foreign = people.with_flaw(Flaw.FOREIGN_DOMAIN)[0]
    [issue] = [i for i in report.issues if i.dn == foreign.dn]
    assert "elsewhere.example" in issue.detail and "ocs.example" in issue.detail
    john = await setup.store.directory.get_entry("john_smith@ocs.example")
    assert john is not None and john.display_name == "John Smith"

    # FEDERATION.md §Words: the peer's domain is now an allowed partner of its origin.
    [partner] = own_partners(setup)
    assert partner.origin == Origin(OriginKind.PEER_SERVER, str(peer.id))
    assert partner.name == "OCS" and partner.allowed
    assert partner.domains == ("ocs.example",)
    assert partner.edge_address == EdgeAddress("127.0.0.1", 5270)
    [kept] = await setup.directory.reports(peer.id)
    assert kept.status is SyncStatus.OK and kept.added == len(good)

    # A second sync changes nothing and adds no second partner.
    again = await setup.directory.sync(peer.id, actor=ADMIN)
    assert (again.added, again.changed, again.removed) == (0, 0, 0)
    assert again.unchanged == len(good)
    assert len(own_partners(setup)) == 1


async def test_incremental_changes_show_in_the_next_plan(setup: Setup, slapd_server: Slapd) -> None:
    peer = await first_sync(setup, slapd_server)
    assert peer.id is not None
    good = expected_addresses(slapd_server)
    john = slapd_server.people.by_uid("john_smith")
    gone = next(p for p in slapd_server.people.good if p.im in good and p is not john)
    assert gone.im is not None
    try:
        slapd_server.add_person(new_person("zoe_quinn"))
        slapd_server.modify(john.dn, {"title": ["Chief Engineer"]})
        slapd_server.delete(gone.dn)

        outcome = await setup.directory.run_sync(peer.id, actor=ADMIN)
        report, plan = outcome.report, outcome.plan
        assert report.status is SyncStatus.OK
        assert (report.added, report.changed, report.removed) == (1, 1, 1)
        assert report.unchanged == len(good) - 2
        assert plan is not None
        assert [e.im_address for e in plan.added] == ["zoe_quinn@ocs.example"]
        [(old, new)] = plan.changed
        assert (old.title, new.title) == ("Engineer", "Chief Engineer")
        assert [e.im_address for e in plan.removed] == [gone.im]
        assert await addresses(setup, peer.id) == (good - {gone.im}) | {"zoe_quinn@ocs.example"}
    finally:
        await asyncio.to_thread(slapd_server.reset)


async def test_a_dry_run_changes_nothing(setup: Setup, slapd_server: Slapd) -> None:
    peer = await setup.directory.add_peer_server(ocs(slapd_server), ADMIN)
    assert peer.id is not None
    outcome = await setup.directory.run_sync(peer.id, dry_run=True, actor=ADMIN)
    good = expected_addresses(slapd_server)
    assert outcome.report.status is SyncStatus.OK
    assert outcome.report.added == len(good)
    assert outcome.plan is not None and len(outcome.plan.added) == len(good)
    assert await setup.store.directory.count_entries(peer.id) == 0
    assert await setup.directory.reports(peer.id) == []
    assert own_partners(setup) == []


async def test_a_wrong_password_fails_and_keeps_the_previous_directory(
    setup: Setup, slapd_server: Slapd
) -> None:
    peer = await first_sync(setup, slapd_server)
    assert peer.id is not None
    before = await setup.store.directory.entries(peer.id)
    wrong = dataclasses.replace(peer.ldap, bind_password="not the password 1")
    await setup.directory.update_peer_server(dataclasses.replace(peer, ldap=wrong), ADMIN)

    report = await setup.directory.sync(peer.id, actor=ADMIN)
    assert report.status is SyncStatus.FAILED
    assert report.error is not None and "invalid credentials" in report.error
    assert "not the password 1" not in report.error
    assert await setup.store.directory.entries(peer.id) == before
    latest = (await setup.directory.reports(peer.id))[0]
    assert latest.status is SyncStatus.FAILED and latest.error == report.error


async def test_an_interrupted_sync_keeps_the_previous_directory(
    setup: Setup, slapd_server: Slapd
) -> None:
    peer = await first_sync(setup, slapd_server)
    assert peer.id is not None
    before = await setup.store.directory.entries(peer.id)
    gone = slapd_server.people.by_uid("john_smith")
    try:
        slapd_server.delete(gone.dn)  # what the interrupted sync must not apply
        cancel = asyncio.Event()

        def progress(count: int) -> None:
            if count >= 80:
                cancel.set()

        report = await setup.directory.sync(peer.id, progress=progress, cancel=cancel, actor=ADMIN)
        assert report.status is SyncStatus.INTERRUPTED
        assert report.error is not None and "interrupted" in report.error
        assert await setup.store.directory.entries(peer.id) == before
        assert (await setup.directory.reports(peer.id))[0].status is SyncStatus.INTERRUPTED
    finally:
        await asyncio.to_thread(slapd_server.reset)


async def test_only_one_sync_per_peer_server_at_a_time(tmp_path: Path, slapd_server: Slapd) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def gated(source: LdapSource, *args: Any, **kwargs: Any) -> list[LdapRecord]:
        entered.set()
        await gate.wait()
        return await ldap.fetch(source, *args, **kwargs)

    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'imedge.db'}", secret_key=KEY)
    try:
        federation = FederationService(store, frozenset({"localhost"}))
        await federation.load()
        directory = DirectoryService(store, federation, fetch=gated)
        peer = await directory.add_peer_server(ocs(slapd_server), ADMIN)
        assert peer.id is not None
        first = asyncio.create_task(directory.sync(peer.id, actor=ADMIN))
        await entered.wait()
        with pytest.raises(SyncRunning, match="already running"):
            await directory.sync(peer.id, actor=ADMIN)
        gate.set()
        assert (await first).status is SyncStatus.OK
        assert not directory.is_syncing(peer.id)
    finally:
        await store.close()


async def test_removing_the_peer_server_removes_its_partner_only(
    setup: Setup, slapd_server: Slapd
) -> None:
    manual = await setup.federation.add_partner(
        Partner(name="Other", domains=("other.example",)), ADMIN
    )
    peer = await first_sync(setup, slapd_server)
    assert peer.id is not None
    assert len(own_partners(setup)) == 1

    await setup.directory.remove_peer_server(peer.id, ADMIN)
    assert own_partners(setup) == []
    assert [p.name for p in setup.federation.config.partners if p.id == manual.id] == ["Other"]
    assert await setup.store.directory.count_entries(peer.id) == 0
    assert await setup.store.directory.list_peer_servers() == []


async def test_an_existing_partner_for_the_domain_is_left_and_noted(
    setup: Setup, slapd_server: Slapd
) -> None:
    manual = await setup.federation.add_partner(
        Partner(
            name="OCS by hand", domains=("ocs.example",), comment="set up before the peer server"
        ),
        ADMIN,
    )
    peer = await first_sync(setup, slapd_server)
    assert peer.id is not None
    [report] = await setup.directory.reports(peer.id)
    assert report.error is not None and "'OCS by hand'" in report.error
    assert own_partners(setup) == []

    await setup.directory.remove_peer_server(peer.id, ADMIN)
    assert setup.federation.find("OCS by hand") == manual


async def test_search_finds_people_with_reachability(setup: Setup, slapd_server: Slapd) -> None:
    await setup.store.accounts.create(Jid.parse("john@localhost"), [])
    await first_sync(setup, slapd_server)

    found = {r.im_address: r for r in await setup.directory.search("john", limit=50)}
    assert found["john@localhost"].local and found["john@localhost"].reachable
    smith = found["john_smith@ocs.example"]
    assert not smith.local and smith.reachable and smith.display_name == "John Smith"

    # Blocking the partner, or switching federation off, makes them unreachable now.
    await setup.federation.block("OCS", ADMIN)
    [smith] = [r for r in await setup.directory.search("john_smith") if not r.local]
    assert not smith.reachable
    await setup.federation.unblock("OCS", ADMIN)
    await setup.federation.update_settings({"federation": False}, ADMIN)
    [smith] = [r for r in await setup.directory.search("john_smith") if not r.local]
    assert not smith.reachable
    assert len(await setup.directory.search("", limit=7)) == 7


async def poll(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_the_scheduler_syncs_due_peer_servers_and_stops_cleanly(
    setup: Setup, slapd_server: Slapd
) -> None:
    scheduled = await setup.directory.add_peer_server(ocs(slapd_server, schedule_minutes=60), ADMIN)
    on_demand = await setup.directory.add_peer_server(
        ocs(slapd_server, name="On demand", domains=("ondemand.example",)), ADMIN
    )
    assert scheduled.id is not None and on_demand.id is not None
    setup.directory.start()

    async def synced() -> bool:
        assert scheduled.id is not None
        return bool(await setup.directory.reports(scheduled.id))

    await poll(synced)
    [report] = await setup.directory.reports(scheduled.id)
    assert report.status is SyncStatus.OK
    await setup.directory.stop()
    assert await setup.directory.reports(on_demand.id) == []
    assert not setup.directory.is_syncing(scheduled.id)
