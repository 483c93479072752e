"""Login throttle: slow down password guessing, per remote address and per account.

Pure and clock-free: every method takes `now` (seconds, any monotonic origin). After
`per_address` failed logins from one address, or `per_account` failed logins against one
account, within `window` seconds, further attempts wait `lockout` seconds. RFC 6120 §13.9.4
leaves the policy to the server; this is the usual one.

A success clears the account's count (its owner knows the password) but not the address's,
so an attacker cannot reset its own address counter by logging into an account of its own.
Memory is bounded: idle entries are dropped and at most `max_keys` entries are kept, the
least recently touched ones going first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import StrEnum


class _Kind(StrEnum):
    ADDRESS = "address"
    ACCOUNT = "account"


@dataclass(slots=True)
class _Entry:
    failures: deque[float] = field(default_factory=deque)  # times within the window
    locked_until: float = 0.0
    touched: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        *,
        per_address: int = 10,
        per_account: int = 5,
        window: float = 60.0,
        lockout: float = 60.0,
        max_keys: int = 100_000,
    ) -> None:
        if per_address < 1 or per_account < 1 or max_keys < 2:
            raise ValueError("limits must be positive")
        if window <= 0 or lockout < 0:
            raise ValueError("window must be positive and lockout not negative")
        self._limits = {_Kind.ADDRESS: per_address, _Kind.ACCOUNT: per_account}
        self._window = window
        self._lockout = lockout
        self._max_keys = max_keys
        self._entries: OrderedDict[tuple[_Kind, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        """Number of tracked addresses and accounts."""
        return len(self._entries)

    def retry_after(self, address: str, account: str | None, now: float) -> float:
        """Seconds to wait before this attempt may be made; 0.0 if it may be made now."""
        self._prune(now)
        wait = 0.0
        for key in self._keys(address, account):
            entry = self._entries.get(key)
            if entry is not None:
                wait = max(wait, entry.locked_until - now)
        return wait

    def record_failure(self, address: str, account: str | None, now: float) -> None:
        self._prune(now)
        for key in self._keys(address, account):
            entry = self._touch(key, now)
            self._expire(entry, now)
            entry.failures.append(now)
            if len(entry.failures) >= self._limits[key[0]]:
                entry.locked_until = now + self._lockout
                entry.failures.clear()
        while len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)

    def record_success(self, address: str, account: str | None, now: float) -> None:
        self._prune(now)
        if account is not None:
            self._entries.pop((_Kind.ACCOUNT, account), None)

    @staticmethod
    def _keys(address: str, account: str | None) -> list[tuple[_Kind, str]]:
        keys = [(_Kind.ADDRESS, address)]
        if account is not None:
            keys.append((_Kind.ACCOUNT, account))
        return keys

    def _touch(self, key: tuple[_Kind, str], now: float) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        else:
            self._entries.move_to_end(key)
        entry.touched = max(entry.touched, now)
        return entry

    def _expire(self, entry: _Entry, now: float) -> None:
        while entry.failures and entry.failures[0] <= now - self._window:
            entry.failures.popleft()

    def _is_idle(self, entry: _Entry, now: float) -> bool:
        return entry.locked_until <= now and entry.touched <= now - self._window

    def _prune(self, now: float) -> None:
        # Entries are in order of last touch, so the idle ones are at the front.
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if not self._is_idle(entry, now):
                break
            del self._entries[key]
