"""The one schema of IM Edge, for SQLite and PostgreSQL alike.

This is the current shape of the tables; each change also needs a migration in
`migrations/versions/` (a test compares the migrated database with this metadata).
JIDs are stored as `str(jid)`, bare except for block-list entries, which XEP-0191 lets be
full JIDs or domains.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

# Deterministic constraint names, so later migrations can refer to them on both engines.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BARE_JID = 2047  # RFC 7622: localpart and domainpart of at most 1023 bytes each, plus '@'
FULL_JID = 3071

metadata = MetaData(naming_convention=NAMING_CONVENTION)

accounts = Table(
    "accounts",
    metadata,
    Column("jid", String(BARE_JID), primary_key=True),
    Column("domain", String(1023), nullable=False, index=True),
    Column("created_at", Double, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

credentials = Table(
    "credentials",
    metadata,
    Column(
        "jid",
        String(BARE_JID),
        ForeignKey("accounts.jid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("mechanism", String(64), primary_key=True),
    Column("salt", LargeBinary, nullable=False),
    Column("iterations", Integer, nullable=False),
    Column("stored_key", LargeBinary, nullable=False),
    Column("server_key", LargeBinary, nullable=False),
)

roster_versions = Table(
    "roster_versions",
    metadata,
    Column("user_jid", String(BARE_JID), primary_key=True),
    Column("version", BigInteger, nullable=False),
)

roster_items = Table(
    "roster_items",
    metadata,
    Column("user_jid", String(BARE_JID), primary_key=True),
    Column("contact_jid", String(BARE_JID), primary_key=True),
    Column("name", Text, nullable=True),
    Column("groups", Text, nullable=False),  # JSON array of strings, in the user's order
    Column("subscription", String(4), nullable=False),
    Column("pending_out", Boolean, nullable=False),
    Column("pending_in", Boolean, nullable=False),
    Column("approved", Boolean, nullable=False),
    Column("listed", Boolean, nullable=False),
    CheckConstraint("subscription IN ('none', 'to', 'from', 'both')", name="subscription"),
)

subscription_requests = Table(
    "subscription_requests",
    metadata,
    Column("user_jid", String(BARE_JID), primary_key=True),
    Column("contact_jid", String(BARE_JID), primary_key=True),
    Column("stanza", LargeBinary, nullable=False),
)

offline_messages = Table(
    "offline_messages",
    metadata,
    # SQLite: INTEGER PRIMARY KEY AUTOINCREMENT, so ids are never reused after deletes.
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("user_jid", String(BARE_JID), nullable=False),
    Column("stanza", LargeBinary, nullable=False),
    Column("stored_at", Double, nullable=False),
    Index("ix_offline_messages_user_jid_id", "user_jid", "id"),
    sqlite_autoincrement=True,
)

blocklist = Table(
    "blocklist",
    metadata,
    Column("user_jid", String(BARE_JID), primary_key=True),
    Column("blocked_jid", String(FULL_JID), primary_key=True),
)
