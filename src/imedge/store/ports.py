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
from imedge.policy import GlobalSettings, Partner, UserSettings


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

    async def count_contacts_at(self, domain: str, *, exclude: Jid | None = None) -> int:
        """How many roster contacts all local users together hold at `domain` (the cap of
        open federation on a discovered domain), not counting the contact `exclude`."""


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


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One federation decision kept in the audit log (FEDERATION.md §Every decision...)."""

    at: float  # unix time
    direction: str  # "in" | "out" | "stream"
    domain: str  # the remote domain
    partner: str | None  # the partner's name, None for a discovered or unknown domain
    sender: str  # JID or domain as seen on the wire
    recipient: str
    kind: str  # policy.StanzaKind value, or "stream"
    verdict: str  # policy.Verdict value
    reason: str  # policy.Reason value
    text: str  # the one-paragraph explanation
    id: int | None = None


@dataclass(frozen=True, slots=True)
class ChangeEntry:
    """One administrative change: who did what to which object."""

    at: float
    actor: str  # "cli:root", "api:token", "admin:alice@example.org", "directory-sync"...
    action: str  # "partner.add", "partner.block", "settings.update", "user.federation"...
    target: str  # the partner name, "settings", a user's JID
    detail: str  # JSON text of the change (new values; never secrets)
    id: int | None = None


class FederationStore(Protocol):
    """The partner table, global federation settings and per-user federation settings.

    Every write takes the `actor` and records a `ChangeEntry` in the same transaction.
    """

    async def list_partners(self) -> list[Partner]: ...

    async def get_partner(self, partner_id: int) -> Partner | None: ...

    async def get_partner_by_name(self, name: str) -> Partner | None: ...

    async def add_partner(self, partner: Partner, actor: str) -> Partner:
        """Insert (partner.id is ignored); return it with its new id. `AlreadyExists` for a
        duplicate name."""

    async def update_partner(
        self, partner: Partner, actor: str, action: str = "partner.edit"
    ) -> Partner:
        """Replace the row `partner.id`; `NotFound` if it is gone."""

    async def remove_partner(self, partner_id: int, actor: str) -> None:
        """`NotFound` if there is no such row."""

    async def seed_defaults(self, partners: Sequence[Partner]) -> bool:
        """On a fresh install only (never seeded before): insert these rows; True if it did.
        Removing a default row later does not bring it back."""

    async def get_settings(self) -> GlobalSettings:
        """The saved settings, or the defaults if never saved."""

    async def save_settings(self, settings: GlobalSettings, actor: str) -> None: ...

    async def get_user_settings(self, user: Jid) -> UserSettings:
        """The user's settings, or the defaults."""

    async def save_user_settings(self, user: Jid, settings: UserSettings, actor: str) -> None: ...

    async def list_user_settings(self) -> list[tuple[Jid, UserSettings]]:
        """Users whose settings differ from the defaults."""

    async def count_public_im(self) -> int:
        """How many users hold a public IM licence."""


class AuditStore(Protocol):
    async def record(self, entries: Sequence[AuditEntry]) -> None:
        """Append decisions (batched by the caller)."""

    async def query(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        domain: str | None = None,
        partner: str | None = None,
        user: str | None = None,  # matches sender or recipient (bare JID)
        reason: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first."""

    async def prune(self, keep: int) -> int:
        """Keep only the newest `keep` entries; return how many were removed."""

    async def changes(self, *, since: float | None = None, limit: int = 100) -> list[ChangeEntry]:
        """The administrative change log, newest first."""


class Store(Protocol):
    """All ports together; `close()` releases connections."""

    accounts: AccountStore
    rosters: RosterStore
    subscription_requests: SubscriptionRequestStore
    offline: OfflineStore
    blocking: BlockingStore
    federation: FederationStore
    audit: AuditStore

    async def ping(self) -> None:
        """Raise `StoreError` if the database cannot be reached."""

    async def close(self) -> None: ...
