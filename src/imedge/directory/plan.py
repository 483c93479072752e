"""FEDERATION.md §Words (peer server): the sync plan, as a pure function.

A sync compares the directory as stored (`current`) with what LDAP says now (`desired`)
and yields the entries to add, change and remove; the store then applies the plan in one
transaction, so a failed sync changes nothing. Entries are matched by IM address: that
is how users and the federation know a person, while a DN changes when an entry moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from imedge.directory.model import (
    MAX_REPORTED_ISSUES,
    DirectoryEntry,
    SyncIssue,
    SyncPlan,
    SyncReport,
    SyncStatus,
)


def plan_sync(current: Iterable[DirectoryEntry], desired: Iterable[DirectoryEntry]) -> SyncPlan:
    """What turns `current` into `desired`: O(n) lookups, then each list sorted by IM
    address so that a plan (and a dry run's output) is the same whatever the input order.

    `ValueError` if either side lists an IM address twice (`map_records` never does).
    """
    before = _by_address(current, "current")
    after = _by_address(desired, "desired")
    added: list[DirectoryEntry] = []
    changed: list[tuple[DirectoryEntry, DirectoryEntry]] = []
    unchanged = 0
    for address, new in after.items():
        old = before.get(address)
        if old is None:
            added.append(new)
        elif old != new:
            changed.append((old, new))
        else:
            unchanged += 1
    removed = [old for address, old in before.items() if address not in after]
    added.sort(key=_address)
    changed.sort(key=lambda pair: pair[1].im_address)
    removed.sort(key=_address)
    return SyncPlan(tuple(added), tuple(changed), tuple(removed), unchanged)


def _address(entry: DirectoryEntry) -> str:
    return entry.im_address


def _by_address(entries: Iterable[DirectoryEntry], side: str) -> dict[str, DirectoryEntry]:
    index: dict[str, DirectoryEntry] = {}
    for entry in entries:
        if entry.im_address in index:
            raise ValueError(f"{side} lists {entry.im_address} twice")
        index[entry.im_address] = entry
    return index


def sync_report(
    peer_server_id: int,
    *,
    started: float,
    finished: float,
    plan: SyncPlan | None,
    issues: Sequence[SyncIssue] = (),
    status: SyncStatus = SyncStatus.OK,
    error: str | None = None,
) -> SyncReport:
    """The report of one sync: the plan's counts (none if it stopped before planning) and
    the first `MAX_REPORTED_ISSUES` issues with the total count."""
    return SyncReport(
        peer_server_id=peer_server_id,
        started=started,
        finished=finished,
        status=status,
        added=len(plan.added) if plan else 0,
        changed=len(plan.changed) if plan else 0,
        removed=len(plan.removed) if plan else 0,
        unchanged=plan.unchanged if plan else 0,
        issues=tuple(issues[:MAX_REPORTED_ISSUES]),
        issue_count=len(issues),
        error=error,
    )
