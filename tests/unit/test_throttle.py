"""The login throttle: limits per address and per account, lockout, memory bound."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imedge.domain.throttle import LoginThrottle


def fail(
    throttle: LoginThrottle, times: int, address: str, account: str | None, now: float
) -> None:
    for _ in range(times):
        throttle.record_failure(address, account, now)


def test_fresh_throttle_allows() -> None:
    assert LoginThrottle().retry_after("192.0.2.1", "alice@example.org", 0.0) == 0.0


def test_account_locked_after_per_account_failures() -> None:
    throttle = LoginThrottle(per_address=100, per_account=3, window=60, lockout=30)
    fail(throttle, 2, "192.0.2.1", "alice", 10.0)
    assert throttle.retry_after("192.0.2.1", "alice", 10.0) == 0.0
    throttle.record_failure("192.0.2.2", "alice", 11.0)
    # Any address, same account: locked for 30 s from the third failure.
    assert throttle.retry_after("198.51.100.7", "alice", 11.0) == 30.0
    assert throttle.retry_after("198.51.100.7", "alice", 31.0) == 10.0
    assert throttle.retry_after("198.51.100.7", "alice", 41.0) == 0.0
    # Other accounts from the same addresses are unaffected.
    assert throttle.retry_after("192.0.2.1", "bob", 11.0) == 0.0


def test_address_locked_after_per_address_failures_across_accounts() -> None:
    throttle = LoginThrottle(per_address=3, per_account=100, window=60, lockout=60)
    for i, account in enumerate(["a", "b", "c"]):
        throttle.record_failure("192.0.2.1", account, float(i))
    assert throttle.retry_after("192.0.2.1", "d", 2.0) == 60.0
    assert throttle.retry_after("192.0.2.1", None, 2.0) == 60.0
    assert throttle.retry_after("192.0.2.9", "d", 2.0) == 0.0


def test_failures_outside_the_window_are_forgotten() -> None:
    throttle = LoginThrottle(per_address=100, per_account=3, window=10, lockout=30)
    fail(throttle, 2, "192.0.2.1", "alice", 0.0)
    throttle.record_failure("192.0.2.1", "alice", 10.0)  # the first two left the window
    assert throttle.retry_after("192.0.2.1", "alice", 10.0) == 0.0
    fail(throttle, 2, "192.0.2.1", "alice", 11.0)
    assert throttle.retry_after("192.0.2.1", "alice", 11.0) == 30.0


def test_success_clears_the_account_but_not_the_address() -> None:
    throttle = LoginThrottle(per_address=4, per_account=3, window=60, lockout=60)
    fail(throttle, 2, "192.0.2.1", "alice", 0.0)
    throttle.record_success("192.0.2.1", "alice", 1.0)
    fail(throttle, 1, "192.0.2.1", "alice", 2.0)
    assert throttle.retry_after("192.0.2.1", "alice", 2.0) == 0.0  # count restarted
    fail(throttle, 1, "192.0.2.1", "mallory", 3.0)  # fourth from this address
    assert throttle.retry_after("192.0.2.1", "mallory", 3.0) == 60.0
    throttle.record_success("192.0.2.1", "mallory", 4.0)
    assert throttle.retry_after("192.0.2.1", "bob", 4.0) == 59.0


def test_failure_without_account_counts_for_the_address_only() -> None:
    throttle = LoginThrottle(per_address=2, per_account=1, window=60, lockout=5)
    throttle.record_failure("192.0.2.1", None, 0.0)
    assert throttle.retry_after("192.0.2.1", "alice", 0.0) == 0.0
    throttle.record_failure("192.0.2.1", None, 0.0)
    assert throttle.retry_after("192.0.2.1", "alice", 1.0) == 4.0


def test_idle_entries_are_pruned() -> None:
    throttle = LoginThrottle(per_address=5, per_account=5, window=10, lockout=20)
    throttle.record_failure("192.0.2.1", "alice", 0.0)
    assert len(throttle) == 2
    assert throttle.retry_after("192.0.2.2", None, 10.0) == 0.0
    assert len(throttle) == 0


def test_locked_entries_are_kept_until_the_lockout_ends() -> None:
    throttle = LoginThrottle(per_address=1, per_account=1, window=1, lockout=100)
    throttle.record_failure("192.0.2.1", "alice", 0.0)
    assert throttle.retry_after("192.0.2.1", None, 50.0) == 50.0
    assert len(throttle) == 2
    assert throttle.retry_after("192.0.2.1", None, 100.0) == 0.0
    assert len(throttle) == 0


def test_number_of_keys_is_capped_oldest_evicted() -> None:
    throttle = LoginThrottle(per_address=2, per_account=2, window=1000, lockout=10, max_keys=10)
    for i in range(20):
        throttle.record_failure(f"198.51.100.{i}", None, float(i))
    assert len(throttle) == 10
    throttle.record_failure("198.51.100.19", None, 20.0)  # the newest one is still tracked
    assert throttle.retry_after("198.51.100.19", None, 20.0) == 10.0


@pytest.mark.parametrize(
    "kwargs",
    [{"per_address": 0}, {"per_account": 0}, {"window": 0}, {"lockout": -1}, {"max_keys": 1}],
)
def test_bad_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LoginThrottle(**kwargs)  # type: ignore[arg-type]


_events = st.lists(
    st.tuples(
        st.sampled_from(["fail", "ok", "ask"]),
        st.sampled_from(["a1", "a2", "a3"]),
        st.sampled_from(["u1", "u2", None]),
        st.floats(min_value=0, max_value=5, allow_nan=False),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_events)
def test_invariants(events: list[tuple[str, str, str | None, float]]) -> None:
    throttle = LoginThrottle(per_address=3, per_account=2, window=10, lockout=7, max_keys=4)
    now = 0.0
    for op, address, account, delta in events:
        now += delta
        if op == "fail":
            throttle.record_failure(address, account, now)
        elif op == "ok":
            throttle.record_success(address, account, now)
        wait = throttle.retry_after(address, account, now)
        assert 0.0 <= wait <= 7.0 + 1e-9
        assert len(throttle) <= 4
