"""FEDERATION.md §Words (peer server, directory): administering peer servers and their sync.

The CLI, the REST API and the web console go through this service. A sync is: fetch the
peer server's people from LDAP (`directory.ldap`), map them to entries
(`directory.mapping`), plan against the stored directory (`directory.plan`, pure), then
apply the plan with its report in one transaction. Whatever goes wrong (LDAP, the store,
a cancellation) the previous directory stays as it was and the kept report says why.

After a peer server's first successful sync its domains become an allowed partner with
origin `peer-server:<id>` (FEDERATION.md §The partner table), unless a partner row
already covers them; removing the peer server removes that row, and only that one.

A scheduler (one task, owned by `start`/`stop`) syncs the peer servers that have a
`schedule_minutes`, each that long after its previous attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from imedge.directory import ldap
from imedge.directory.ldap import LdapError, LdapInterrupted
from imedge.directory.mapping import map_records, requested_attributes
from imedge.directory.model import (
    DirectoryEntry,
    LdapRecord,
    LdapSource,
    MappingInvalid,
    PeerServer,
    SyncPlan,
    SyncReport,
    SyncStatus,
    normalize_peer_server,
    validate_peer_server,
)
from imedge.directory.plan import plan_sync, sync_report
from imedge.policy import Origin, OriginKind, Partner, Problem, Severity, covers, has_errors
from imedge.services.federation import FederationError, FederationService, NoSuchPartner
from imedge.store.ports import AlreadyExists, NotFound, Store, StoreError

log = logging.getLogger(__name__)

SCHEDULER_ACTOR = "scheduler"
# The scheduler wakes at least this often (seconds) to notice new or edited peer servers.
SCHEDULER_TICK = 60.0
# How many past reports are read to tell whether a sync is the first successful one.
HISTORY_DEPTH = 10_000

Fetch = Callable[..., Awaitable[list[LdapRecord]]]


class DirectoryError(ValueError):
    """A change that cannot be made; `problems` name the fields and say why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = list(problems)


class NoSuchPeerServer(LookupError):
    pass


class SyncRunning(RuntimeError):
    """A sync of this peer server is already running; only one at a time."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    """One person found in the directory: a local user or a peer server's entry.

    `reachable` says whether federation with the person's domain is possible now: federation
    is on, the domain is not blocked, and the partner covering it is allowed (or, with no
    partner, open federation is on). Local users are always reachable.
    """

    im_address: str
    local: bool
    reachable: bool
    peer_server_id: int | None = None
    display_name: str | None = None
    email: str | None = None
    phone: str | None = None
    department: str | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True)
class _PartnerStep:
    """What a sync does to the partner table, decided before its plan is applied."""

    create: Partner | None = None  # to add once the plan is applied
    note: str | None = None  # what the report says about it


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """How far the latest sync of a peer server got (the API's progress), since start."""

    running: bool
    fetched: int = 0  # entries fetched from LDAP so far
    started: float | None = None  # unix time; None if none ran since the service started


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """A sync's report and, when it got that far, its plan (what `--dry-run` prints)."""

    report: SyncReport
    plan: SyncPlan | None


class DirectoryService:
    def __init__(
        self,
        store: Store,
        federation: FederationService,
        *,
        fetch: Fetch = ldap.fetch,
        clock: Callable[[], float] = time.time,
        tick: float = SCHEDULER_TICK,
    ) -> None:
        self.store = store
        self.federation = federation
        self._fetch = fetch
        self._clock = clock
        self._tick = tick
        self._running: set[int] = set()  # peer servers being synced now
        self._attempted: dict[int, float] = {}  # the scheduler's last attempt per peer
        self._fetched: dict[int, tuple[float, int]] = {}  # (started, fetched) per peer
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None

    # --- peer servers ---------------------------------------------------------------
    async def peer_servers(self) -> list[PeerServer]:
        return await self.store.directory.list_peer_servers()

    async def get(self, peer_id: int) -> PeerServer:
        peer = await self.store.directory.get_peer_server(peer_id)
        if peer is None:
            raise NoSuchPeerServer(f"no peer server with id {peer_id}")
        return peer

    async def _check(self, peer: PeerServer) -> PeerServer:
        peer = normalize_peer_server(peer)
        problems = validate_peer_server(peer, await self.store.directory.list_peer_servers())
        if has_errors(problems):
            raise DirectoryError([p for p in problems if p.severity is Severity.ERROR])
        for p in problems:
            log.warning("peer server %s: %s: %s", peer.name, p.field, p.message)
        return peer

    async def add_peer_server(self, peer: PeerServer, actor: str) -> PeerServer:
        peer = await self._check(replace(peer, id=None))
        try:
            saved = await self.store.directory.add_peer_server(peer, actor)
        except AlreadyExists as exc:
            raise DirectoryError([Problem("name", str(exc))]) from None
        self._wake.set()
        return saved

    async def update_peer_server(self, peer: PeerServer, actor: str) -> PeerServer:
        """Replace a peer server's row; its partner row (if the sync made one) follows its
        domains and edge address."""
        if peer.id is None:
            raise NoSuchPeerServer("the peer server has no id")
        await self.get(peer.id)
        peer = await self._check(peer)
        try:
            saved = await self.store.directory.update_peer_server(peer, actor)
        except NotFound:
            raise NoSuchPeerServer(f"no peer server with id {peer.id}") from None
        except AlreadyExists as exc:
            raise DirectoryError([Problem("name", str(exc))]) from None
        partner = self._own_partner(saved)
        if partner is not None and (
            partner.domains != saved.domains or partner.edge_address != saved.edge_address
        ):
            assert partner.id is not None
            try:
                await self.federation.edit_partner(
                    partner.id,
                    {"domains": saved.domains, "edge_address": saved.edge_address},
                    actor,
                )
            except FederationError as exc:
                log.warning("partner %s of peer server %s kept: %s", partner.name, saved.id, exc)
        self._wake.set()
        return saved

    async def remove_peer_server(self, peer_id: int, actor: str) -> PeerServer:
        """Remove the peer server, its entries and reports, and the partner row its first
        sync made (origin `peer-server:<id>`); partners added otherwise stay."""
        peer = await self.get(peer_id)
        if peer_id in self._running:
            raise SyncRunning(f"a sync of peer server {peer.name!r} is running; try again")
        try:
            await self.store.directory.remove_peer_server(peer_id, actor)
        except NotFound:
            raise NoSuchPeerServer(f"no peer server with id {peer_id}") from None
        self._fetched.pop(peer_id, None)
        partner = self._own_partner(peer)
        if partner is not None:
            assert partner.id is not None
            with contextlib.suppress(NoSuchPartner):
                await self.federation.remove(partner.id, actor)
                log.info("removed partner %s with peer server %s", partner.name, peer.name)
        self._wake.set()
        return peer

    async def reports(self, peer_id: int, limit: int = 20) -> list[SyncReport]:
        await self.get(peer_id)
        return await self.store.directory.reports(peer_id, limit)

    async def test_connection(self, source: LdapSource) -> str:
        """Bind, check the base DN and the filter; a summary, or `LdapError`."""
        return await ldap.test_connection(source)

    def is_syncing(self, peer_id: int) -> bool:
        return peer_id in self._running

    def progress(self, peer_id: int) -> SyncProgress:
        """The running (or latest) sync's count of entries fetched, for a progress bar."""
        started, fetched = self._fetched.get(peer_id, (None, 0))
        return SyncProgress(peer_id in self._running, fetched, started)

    def _own_partner(self, peer: PeerServer) -> Partner | None:
        origin = Origin(OriginKind.PEER_SERVER, str(peer.id))
        return next((p for p in self.federation.config.partners if p.origin == origin), None)

    # --- sync -----------------------------------------------------------------------
    async def sync(
        self,
        peer_id: int,
        *,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
        cancel: asyncio.Event | None = None,
        actor: str,
    ) -> SyncReport:
        """Sync one peer server now; the report (also kept, except for a dry run).

        `progress(count)` gets the running number of entries fetched; setting `cancel`
        interrupts the sync before anything is applied. `SyncRunning` if one is running.
        """
        outcome = await self.run_sync(
            peer_id, dry_run=dry_run, progress=progress, cancel=cancel, actor=actor
        )
        return outcome.report

    async def run_sync(
        self,
        peer_id: int,
        *,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
        cancel: asyncio.Event | None = None,
        actor: str,
    ) -> SyncOutcome:
        """`sync`, with the plan (for a dry run's listing)."""
        peer = await self.get(peer_id)
        # Test and set with no await in between: the event loop makes this atomic.
        if peer_id in self._running:
            raise SyncRunning(f"a sync of peer server {peer.name!r} is already running")
        self._running.add(peer_id)
        started = self._clock()
        self._fetched[peer_id] = (started, 0)

        def counted(fetched: int) -> None:
            self._fetched[peer_id] = (started, fetched)
            if progress is not None:
                progress(fetched)

        try:
            return await self._sync(peer, dry_run, counted, cancel, actor)
        finally:
            self._running.discard(peer_id)

    async def _sync(
        self,
        peer: PeerServer,
        dry_run: bool,
        progress: Callable[[int], None] | None,
        cancel: asyncio.Event | None,
        actor: str,
    ) -> SyncOutcome:
        assert peer.id is not None
        started = self._clock()
        log.info("sync of peer server %s (%s) started by %s", peer.name, peer.id, actor)

        def stopped(status: SyncStatus, error: str, plan: SyncPlan | None = None) -> SyncReport:
            return sync_report(
                peer.id or 0,
                started=started,
                finished=self._clock(),
                plan=plan,
                status=status,
                error=error,
            )

        try:
            records = await self._fetch(
                peer.ldap, requested_attributes(peer), progress=progress, cancel=cancel
            )
            entries, issues = map_records(records, peer)
            current = await self.store.directory.entries(peer.id)
        except LdapInterrupted as exc:
            return await self._keep(peer, stopped(SyncStatus.INTERRUPTED, str(exc)), dry_run)
        except LdapError as exc:
            return await self._keep(peer, stopped(SyncStatus.FAILED, exc.message), dry_run)
        except MappingInvalid as exc:
            return await self._keep(
                peer, stopped(SyncStatus.FAILED, f"the attribute mapping: {exc}"), dry_run
            )
        except StoreError as exc:
            return await self._keep(
                peer, stopped(SyncStatus.FAILED, f"reading the directory failed: {exc}"), dry_run
            )
        plan = plan_sync(current, entries)
        if cancel is not None and cancel.is_set():
            error = "the sync was interrupted before its plan was applied"
            return await self._keep(peer, stopped(SyncStatus.INTERRUPTED, error), dry_run, plan)

        partner_step = await self._partner_step(peer)
        report = sync_report(
            peer.id,
            started=started,
            finished=self._clock(),
            plan=plan,
            issues=issues,
            error=partner_step.note,
        )
        if dry_run:
            return SyncOutcome(report, plan)
        try:
            await self.store.directory.apply_plan(peer.id, plan, report)
        except StoreError as exc:
            error = f"applying the plan failed, nothing was changed: {exc}"
            return await self._keep(peer, stopped(SyncStatus.FAILED, error), dry_run, plan)
        log.info(
            "sync of peer server %s: %d added, %d changed, %d removed, %d issue(s)",
            peer.name,
            report.added,
            report.changed,
            report.removed,
            report.issue_count,
        )
        if partner_step.create is not None:
            note = await self._add_partner(peer, partner_step.create, actor)
            if note is not None:
                report = replace(report, error=note)
        return SyncOutcome(report, plan)

    async def _keep(
        self,
        peer: PeerServer,
        report: SyncReport,
        dry_run: bool,
        plan: SyncPlan | None = None,
    ) -> SyncOutcome:
        """Log and keep the report of a sync that applied nothing."""
        log.warning("sync of peer server %s %s: %s", peer.name, report.status, report.error)
        if not dry_run:
            try:
                await self.store.directory.record_report(report)
            except StoreError as exc:
                log.error("could not keep the report of peer server %s: %s", peer.name, exc)
        return SyncOutcome(report, plan)

    # --- the partner row (FEDERATION.md §Words: peer server) -----------------------------
    async def _partner_step(self, peer: PeerServer) -> _PartnerStep:
        """Decide, before applying, what this sync does to the partner table: only the first
        successful sync adds a row, and only if no row covers the peer's domains yet."""
        assert peer.id is not None
        if self._own_partner(peer) is not None:
            return _PartnerStep()
        history = await self.store.directory.reports(peer.id, HISTORY_DEPTH)
        if any(r.status is SyncStatus.OK for r in history):
            return _PartnerStep()
        covering = sorted(
            {
                p.name
                for p in self.federation.config.partners
                for domain in peer.domains
                if any(pattern_covers(pattern, domain) for pattern in p.domains)
            }
        )
        if covering:
            names = ", ".join(repr(n) for n in covering)
            return _PartnerStep(
                note=f"federation with {', '.join(peer.domains)} stays governed by the "
                f"existing partner {names}; no partner row was added"
            )
        partner = Partner(
            name=peer.name,
            domains=peer.domains,
            edge_address=peer.edge_address,
            allowed=True,
            comment=f"added by the first sync of peer server {peer.name!r}",
            origin=Origin(OriginKind.PEER_SERVER, str(peer.id)),
        )
        return _PartnerStep(create=partner)

    async def _add_partner(self, peer: PeerServer, partner: Partner, actor: str) -> str | None:
        """Add the peer server's partner row; a note for the report if it could not be."""
        attempts = [partner, replace(partner, name=f"{peer.name} (peer server {peer.id})")]
        error: FederationError | None = None
        for candidate in attempts:
            try:
                saved = await self.federation.add_partner(candidate, actor)
            except FederationError as exc:
                error = exc
                if any(p.field == "name" for p in exc.problems):
                    continue  # a manual partner has the name: try the qualified one
                break
            log.info(
                "federation with %s enabled: partner %s (origin %s)",
                ", ".join(saved.domains),
                saved.name,
                saved.origin,
            )
            return None
        log.warning("peer server %s: partner row not added: %s", peer.name, error)
        return f"the synced domains were not added as a partner: {error}"

    # --- search ---------------------------------------------------------------------
    async def search(self, text: str, limit: int = 50) -> list[SearchResult]:
        """Local users and peer servers' people whose address or details contain `text`
        (ignoring case): local users first, then entries by name; at most `limit`."""
        limit = max(1, limit)
        needle = " ".join(text.split()).casefold()
        results: list[SearchResult] = []
        for account in await self.store.accounts.list():
            if needle in str(account.jid).casefold():
                results.append(
                    SearchResult(im_address=str(account.jid), local=True, reachable=True)
                )
                if len(results) >= limit:
                    return results
        for entry in await self.store.directory.search(text, limit=limit - len(results)):
            results.append(self._result(entry))
        return results

    def reachable(self, im_address: str) -> bool:
        """Whether federation with the address's domain is possible now (see `SearchResult`)."""
        domain = im_address.rpartition("@")[2]
        if domain in self.federation.hosts:
            return True
        cfg = self.federation.config
        if not cfg.settings.federation or cfg.blocked_by(domain) is not None:
            return False
        partner = cfg.partner_for(domain)
        if partner is None:
            return cfg.settings.open_federation
        return partner.allowed

    def _result(self, entry: DirectoryEntry) -> SearchResult:
        return SearchResult(
            im_address=entry.im_address,
            local=False,
            reachable=self.reachable(entry.im_address),
            peer_server_id=entry.peer_server_id,
            display_name=entry.display_name,
            email=entry.email,
            phone=entry.phone,
            department=entry.department,
            title=entry.title,
        )

    # --- the scheduler --------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler task (idempotent)."""
        if self._scheduler is None or self._scheduler.done():
            self._stopping.clear()
            self._scheduler = asyncio.get_running_loop().create_task(
                self._schedule(), name="directory-scheduler"
            )

    async def stop(self) -> None:
        """Interrupt a scheduled sync (nothing is applied) and end the scheduler."""
        self._stopping.set()
        task, self._scheduler = self._scheduler, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _schedule(self) -> None:
        while not self._stopping.is_set():
            try:
                delay = await self._run_due()
            except StoreError as exc:
                log.error("directory scheduler: %s", exc)
                delay = self._tick
            except Exception:
                # One bad peer server must not stop the syncs of the others.
                log.exception("directory scheduler failed; retrying in %s s", self._tick)
                delay = self._tick
            self._wake.clear()
            # Sleep until the next sync is due, a peer server changes, or a tick passes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, self._tick)):
                    await self._wake.wait()

    async def _run_due(self) -> float:
        """Sync every scheduled peer server that is due; seconds until the next is."""
        next_in = self._tick
        for peer in await self.store.directory.list_peer_servers():
            if not (peer.enabled and peer.schedule_minutes and peer.id is not None):
                continue
            interval = peer.schedule_minutes * 60.0
            last = await self.store.directory.reports(peer.id, 1)
            # The kept report, or our own attempt if even keeping its report failed.
            previous = max(last[0].finished if last else 0.0, self._attempted.get(peer.id, 0.0))
            due_in = previous + interval - self._clock() if previous else 0.0
            if due_in <= 0 and peer.id in self._running:
                due_in = interval  # an on-demand sync is running: it counts as this one
            elif due_in <= 0:
                self._attempted[peer.id] = self._clock()
                try:
                    await self.sync(peer.id, cancel=self._stopping, actor=SCHEDULER_ACTOR)
                except (SyncRunning, NoSuchPeerServer) as exc:
                    log.info("scheduled sync of %s skipped: %s", peer.name, exc)
                if self._stopping.is_set():
                    return 0.0
                due_in = interval
            next_in = min(next_in, max(due_in, 0.0))
        return next_in


def pattern_covers(pattern: str, domain: str) -> bool:
    """Whether a partner's canonical `pattern` covers all of a peer server's `domain`, which
    may itself be a `*.` pattern (then only an equal or wider wildcard covers it)."""
    if domain.startswith("*."):
        return pattern == domain or (pattern.startswith("*.") and covers(pattern, domain[2:]))
    return covers(pattern, domain)
