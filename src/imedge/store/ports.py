"""What the server needs from storage. The SQL adapter (`imedge.store.sql`) implements these.

Every method is a coroutine; each call is its own transaction unless it says otherwise, and
returns only once the change is durable (committed), so that an accepted stanza survives
a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from imedge.domain.jid import Jid
from imedge.domain.roster import RosterItem
from imedge.policy import EdgeAddress, GlobalSettings, Partner, UserSettings


class StoreError(Exception):
    """The store failed (unreachable, full disk, ...); the message is for operators."""


class AlreadyExists(StoreError):
    pass


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    """The data changed since the caller read it (e.g. a sync plan made from an old state)."""


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


# --- the corporate directory (FEDERATION.md §Words: peer server, directory) ----------------
#
# These values are the directory's model (`imedge.directory.model` re-exports them). They
# live here, in the store layer, because the ports below take and return them and the
# layers point downwards: `imedge.directory` may import the store ports, not the reverse.


@dataclass(frozen=True, slots=True, kw_only=True)
class LdapSource:
    """Where a peer server's people come from (RFC 4510 LDAP, RFC 2696 paged search).

    `url` is `ldap://host[:port]` (with `start_tls`, RFC 4513 §3) or `ldaps://host[:port]`.
    `ca_file` is a PEM file of the CAs the server's certificate is validated against
    (RFC 6125); None means the system's trusted CAs. `bind_password` is plaintext in
    memory only: the store keeps it encrypted and `repr` never shows it. An empty
    `bind_dn` and password mean an anonymous bind.
    """

    url: str
    base_dn: str
    start_tls: bool = True
    bind_dn: str = ""
    bind_password: str = field(default="", repr=False)
    filter: str = "(objectClass=inetOrgPerson)"
    page_size: int = 500
    timeout: float = 30.0  # seconds, for each network wait
    ca_file: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributeMapping:
    """Which LDAP attributes fill which directory fields.

    Each field is an attribute name (`mail`) or a template with `{attribute}` placeholders
    (`{uid}@ocs.example`; `{{` and `}}` are literal braces); None leaves the field empty.
    Attribute names compare ignoring case, as LDAP's do (RFC 4512 §2.5).
    """

    im_address: str
    display_name: str | None = "cn"
    email: str | None = "mail"
    phone: str | None = "telephoneNumber"
    department: str | None = "departmentNumber"
    title: str | None = "title"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerServer:
    """A peer IM server: its XMPP domains (canonical patterns, as partner domains), where
    its s2s traffic goes, and the LDAP source whose people fill the directory."""

    name: str
    domains: tuple[str, ...]
    ldap: LdapSource
    mapping: AttributeMapping
    id: int | None = None  # assigned by the store
    edge_address: EdgeAddress | None = None
    schedule_minutes: int | None = None  # None: synced on demand only
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryEntry:
    """One person of a peer server in the directory. Equality is what "changed" means to
    the sync plan: any field differing is a change."""

    peer_server_id: int
    im_address: str  # a prepared bare JID with a localpart (RFC 7622)
    dn: str
    display_name: str | None = None
    email: str | None = None
    phone: str | None = None
    department: str | None = None
    title: str | None = None


class IssueKind(StrEnum):
    """Why an LDAP entry was left out of the directory."""

    MISSING_IM_ADDRESS = "missing_im_address"  # the IM attribute (or a template's) is absent
    INVALID_IM_ADDRESS = "invalid_im_address"  # not a bare JID with a localpart (RFC 7622)
    DUPLICATE_IM_ADDRESS = "duplicate_im_address"  # several entries map to one address
    OUTSIDE_DOMAINS = "outside_domains"  # the address is not in the peer server's domains


@dataclass(frozen=True, slots=True)
class SyncIssue:
    kind: IssueKind
    dn: str
    detail: str


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What a sync changes, sorted by IM address; `unchanged` only counts."""

    added: tuple[DirectoryEntry, ...] = ()
    changed: tuple[tuple[DirectoryEntry, DirectoryEntry], ...] = ()  # (old, new)
    removed: tuple[DirectoryEntry, ...] = ()
    unchanged: int = 0

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


class SyncStatus(StrEnum):
    OK = "ok"  # the plan was applied
    FAILED = "failed"  # LDAP or the store failed; the previous directory is intact
    INTERRUPTED = "interrupted"  # cancelled (shutdown, timeout); nothing was applied


MAX_REPORTED_ISSUES = 1000  # a report keeps the first ones; `issue_count` counts them all


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncReport:
    """What one sync of a peer server did, kept for the administrator."""

    peer_server_id: int
    started: float  # unix time
    finished: float
    status: SyncStatus
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    issues: tuple[SyncIssue, ...] = ()  # at most MAX_REPORTED_ISSUES
    issue_count: int = 0  # all issues, including those not kept
    error: str | None = None  # why a failed or interrupted sync stopped
    id: int | None = None  # assigned by the store


class DirectoryStore(Protocol):
    """Peer servers, the directory entries synced from them, and the sync reports.

    Peer-server writes take the `actor` and record a `ChangeEntry` (without secrets) in the
    same transaction. Bind passwords are encrypted at rest; storing a non-empty one
    without an encryption key raises `StoreError`.
    """

    async def add_peer_server(self, peer: PeerServer, actor: str) -> PeerServer:
        """Insert (peer.id is ignored); return it with its new id. `AlreadyExists` for a
        duplicate name (ignoring case) or a domain another peer server lists."""

    async def update_peer_server(self, peer: PeerServer, actor: str) -> PeerServer:
        """Replace the row `peer.id`, password included; `NotFound` if it is gone."""

    async def get_peer_server(self, peer_server_id: int) -> PeerServer | None: ...

    async def list_peer_servers(self) -> list[PeerServer]:
        """Oldest first (by id)."""

    async def remove_peer_server(self, peer_server_id: int, actor: str) -> None:
        """Remove the peer server with its entries and reports; `NotFound` if absent."""

    async def entries(self, peer_server_id: int) -> list[DirectoryEntry]:
        """All entries of a peer server, by IM address: the `current` of a sync plan."""

    async def get_entry(self, im_address: str) -> DirectoryEntry | None:
        """The entry with this (prepared) IM address, if any peer server has it."""

    async def search(
        self, text: str, *, peer_server_id: int | None = None, limit: int = 50
    ) -> list[DirectoryEntry]:
        """Entries whose name, e-mail, IM address or department contains `text`, ignoring
        case (Unicode case folding, the same on every engine); by name."""

    async def count_entries(self, peer_server_id: int) -> int: ...

    async def apply_plan(self, peer_server_id: int, plan: SyncPlan, report: SyncReport) -> None:
        """Apply the plan and keep the report, in one transaction: all or nothing.
        `Conflict` if the directory no longer matches the state the plan was made from;
        `NotFound` if the peer server is gone."""

    async def record_report(self, report: SyncReport) -> None:
        """Keep the report of a sync that applied nothing (failed, interrupted, dry run)."""

    async def reports(self, peer_server_id: int, limit: int = 20) -> list[SyncReport]:
        """Newest first."""


class Store(Protocol):
    """All ports together; `close()` releases connections."""

    accounts: AccountStore
    rosters: RosterStore
    subscription_requests: SubscriptionRequestStore
    offline: OfflineStore
    blocking: BlockingStore
    federation: FederationStore
    audit: AuditStore
    directory: DirectoryStore

    async def ping(self) -> None:
        """Raise `StoreError` if the database cannot be reached."""

    async def close(self) -> None: ...
