"""FEDERATION.md §Words (peer server): the pure sync plan and the sync report."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from imedge.directory.model import (
    MAX_REPORTED_ISSUES,
    DirectoryEntry,
    IssueKind,
    SyncIssue,
    SyncPlan,
    SyncStatus,
)
from imedge.directory.plan import plan_sync, sync_report


def entry(local: str, **fields: str) -> DirectoryEntry:
    return DirectoryEntry(
        peer_server_id=1,
        im_address=f"{local}@ocs.example",
        dn=f"uid={local},ou=people",
        **fields,  # type: ignore[arg-type]
    )


def test_nothing_to_do() -> None:
    plan = plan_sync([], [])
    assert plan == SyncPlan()
    assert plan.is_empty


def test_added_changed_removed_and_unchanged() -> None:
    current = [entry("keep", display_name="Keep"), entry("gone"), entry("edit", title="Old")]
    desired = [entry("new"), entry("edit", title="New"), entry("keep", display_name="Keep")]
    plan = plan_sync(current, desired)
    assert plan.added == (entry("new"),)
    assert plan.changed == ((entry("edit", title="Old"), entry("edit", title="New")),)
    assert plan.removed == (entry("gone"),)
    assert plan.unchanged == 1
    assert not plan.is_empty


def test_every_field_counts_as_a_change_including_the_dn() -> None:
    base = entry("a", display_name="A", email="a@x", phone="1", department="D", title="T")
    for field in ("dn", "display_name", "email", "phone", "department", "title"):
        new = replace(base, **{field: "other"})
        assert plan_sync([base], [new]).changed == ((base, new),), field
    assert plan_sync([base], [replace(base)]).unchanged == 1


def test_only_unchanged_is_an_empty_plan() -> None:
    people = [entry("a"), entry("b")]
    plan = plan_sync(people, list(reversed(people)))
    assert plan.is_empty and plan.unchanged == 2


def test_output_is_sorted_by_address_whatever_the_input_order() -> None:
    names = [f"p{i:03}" for i in range(50)]
    current = [entry(n) for n in names[:25]]
    desired = [entry(n, title="x") for n in names[10:]]
    shuffled_current, shuffled_desired = current[:], desired[:]
    rng = random.Random(5)
    rng.shuffle(shuffled_current)
    rng.shuffle(shuffled_desired)
    plan = plan_sync(current, desired)
    assert plan_sync(shuffled_current, shuffled_desired) == plan
    assert [e.im_address for e in plan.added] == sorted(e.im_address for e in plan.added)
    assert [new.im_address for _, new in plan.changed] == [
        f"p{i:03}@ocs.example" for i in range(10, 25)
    ]
    assert [e.im_address for e in plan.removed] == [f"p{i:03}@ocs.example" for i in range(10)]


def test_a_side_listing_an_address_twice_is_a_bug() -> None:
    with pytest.raises(ValueError, match=r"desired lists a@ocs\.example twice"):
        plan_sync([], [entry("a"), entry("a", title="x")])
    with pytest.raises(ValueError, match="current"):
        plan_sync([entry("a"), entry("a")], [])


def test_a_hundred_thousand_entries() -> None:
    n = 100_000
    current = (entry(f"u{i}", display_name=f"User {i}") for i in range(n))
    # A tenth removed, a tenth changed, a tenth added; generators: one pass each.
    desired = (
        entry(f"u{i}", display_name=f"User {i}" if i % 10 else f"Renamed {i}")
        for i in range(n // 10, n + n // 10)
    )
    plan = plan_sync(current, desired)
    assert len(plan.removed) == n // 10
    assert len(plan.added) == n // 10
    assert len(plan.changed) == n // 10 - n // 100  # i % 10 == 0 among the kept ones
    assert plan.unchanged == n - n // 10 - len(plan.changed)


# --- the report -----------------------------------------------------------------------------


def test_report_of_an_applied_plan_counts_it() -> None:
    plan = plan_sync([entry("gone"), entry("same")], [entry("same"), entry("new")])
    issue = SyncIssue(IssueKind.MISSING_IM_ADDRESS, "uid=x", "no value for uid")
    report = sync_report(1, started=10.0, finished=12.5, plan=plan, issues=[issue])
    assert (report.added, report.changed, report.removed, report.unchanged) == (1, 0, 1, 1)
    assert report.status is SyncStatus.OK
    assert report.issues == (issue,) and report.issue_count == 1
    assert report.error is None and report.id is None


def test_report_keeps_the_first_issues_and_counts_all() -> None:
    issues = [
        SyncIssue(IssueKind.INVALID_IM_ADDRESS, f"uid={i}", "bad")
        for i in range(MAX_REPORTED_ISSUES + 5)
    ]
    report = sync_report(1, started=0, finished=1, plan=None, issues=issues)
    assert len(report.issues) == MAX_REPORTED_ISSUES
    assert report.issues[0].dn == "uid=0"
    assert report.issue_count == MAX_REPORTED_ISSUES + 5


def test_report_of_a_failed_sync() -> None:
    report = sync_report(
        3,
        started=0,
        finished=1,
        plan=None,
        status=SyncStatus.FAILED,
        error="invalid credentials for cn=reader",
    )
    assert (report.added, report.changed, report.removed, report.unchanged) == (0, 0, 0, 0)
    assert report.status is SyncStatus.FAILED
    assert report.error == "invalid credentials for cn=reader"
