"""What the server needs from storage. The SQL adapter (`imedge.store.sql`) implements these.

Every method is a coroutine; each call is its own transaction unless it says otherwise, and
returns only once the change is durable (committed), so that an accepted stanza survives
a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from imedge.domain.jid import Jid
from imedge.domain.roster import RosterItem


class StoreError(Exception):
    """The store failed (unreachable, full disk, ...); the message is for operators."""


class AlreadyExists(StoreError):
    pass


class NotFound(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """Salted SCRAM keys for one hash (RFC 5802 §3); the password itself is never stored."""

    mechanism: str  # "SCRAM-SHA-1" or "SCRAM-SHA-256"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, slots=True)
class Account:
    jid: Jid  # bare
    created_at: float  # unix time
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class OfflineMessage:
    id: int
    stanza: bytes  # serialised stanza, with its delay stamp already added
    stored_at: float


class AccountStore(Protocol):
    async def create(self, jid: Jid, credentials: Sequence[ScramCredential]) -> None:
        """Raise `AlreadyExists` if the account exists."""

    async def set_credentials(self, jid: Jid, credentials: Sequence[ScramCredential]) -> None:
        """Replace all credentials; raise `NotFound` if there is no such account."""

    async def get_credential(self, jid: Jid, mechanism: str) -> ScramCredential | None: ...

    async def get(self, jid: Jid) -> Account | None: ...

    async def list(self, domain: str | None = None) -> list[Account]: ...

    async def delete(self, jid: Jid) -> None:
        """Remove the account and everything it owns (roster, offline, blocklist...)."""


class RosterStore(Protocol):
    async def get_roster(self, user: Jid) -> tuple[int, list[RosterItem]]:
        """The user's version counter and all items, listed or not."""

    async def get_item(self, user: Jid, contact: Jid) -> RosterItem | None: ...

    async def put_item(self, user: Jid, item: RosterItem) -> int:
        """Insert or replace the item for `item.jid`; return the new roster version."""

    async def remove_item(self, user: Jid, contact: Jid) -> int:
        """Remove the item if present; return the new roster version."""

    async def get_version(self, user: Jid) -> int: ...


class SubscriptionRequestStore(Protocol):
    """Inbound subscription requests not yet answered (RFC 6121 §3.1.3), kept to redeliver."""

    async def put_request(self, user: Jid, contact: Jid, stanza: bytes) -> None: ...

    async def get_requests(self, user: Jid) -> list[tuple[Jid, bytes]]: ...

    async def delete_request(self, user: Jid, contact: Jid) -> None: ...


class OfflineStore(Protocol):
    async def push(self, user: Jid, stanza: bytes, limit: int) -> int | None:
        """Store a message for an offline user; return its id, or None if the queue is full."""

    async def fetch(self, user: Jid) -> list[OfflineMessage]:
        """Oldest first; messages stay until `delete` is called with their ids."""

    async def delete(self, user: Jid, ids: Sequence[int]) -> None: ...

    async def count(self, user: Jid) -> int: ...


class BlockingStore(Protocol):
    """The XEP-0191 block list of each user."""

    async def get_blocklist(self, user: Jid) -> list[Jid]: ...

    async def block(self, user: Jid, jids: Sequence[Jid]) -> None: ...

    async def unblock(self, user: Jid, jids: Sequence[Jid]) -> None: ...

    async def unblock_all(self, user: Jid) -> None: ...


class Store(Protocol):
    """All ports together; `close()` releases connections."""

    accounts: AccountStore
    rosters: RosterStore
    subscription_requests: SubscriptionRequestStore
    offline: OfflineStore
    blocking: BlockingStore

    async def ping(self) -> None:
        """Raise `StoreError` if the database cannot be reached."""

    async def close(self) -> None: ...
