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

# --- federation (FEDERATION.md), revision 0002 --------------------------------------------

PARTNER_NAME = 255  # the policy layer allows 100 characters; room to grow without a migration
DOMAIN_PATTERN = 1025  # "*." and a domainpart of at most 1023 bytes (RFC 7622 §3.2)
DOMAIN = 1023

# Small facts about the database itself, e.g. that the default partners were seeded once.
meta = Table(
    "meta",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
)

partners = Table(
    "partners",
    metadata,
    # SQLite: AUTOINCREMENT, so the id of a removed partner never names a new one.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(PARTNER_NAME), nullable=False),
    # name.strip().casefold(): names are unique ignoring case, as the policy layer checks.
    Column("name_key", String(PARTNER_NAME), nullable=False, unique=True),
    Column("comment", Text, nullable=False),
    Column("edge_address", Text, nullable=True),  # "host:port", "[v6]:port"
    Column("allowed", Boolean, nullable=False),
    Column("public", Boolean, nullable=False),
    Column("filter", String(16), nullable=False),
    Column("tls", String(16), nullable=False),
    Column("sasl_external", String(16), nullable=False),
    Column("dialback", Boolean, nullable=False),
    Column("connection_limit", Integer, nullable=True),
    Column("origin", Text, nullable=False),  # "manual", "default", "peer-server:<id>"
    CheckConstraint("filter IN ('contacts_only', 'verified', 'all')", name="filter"),
    CheckConstraint("tls IN ('required', 'optional', 'off')", name="tls"),
    CheckConstraint("sasl_external IN ('required', 'optional', 'off')", name="sasl_external"),
    sqlite_autoincrement=True,
)

# One row per domain pattern of a partner, in the administrator's order. A pattern belongs
# to one partner only (the policy layer checks it; the constraint closes the race).
partner_domains = Table(
    "partner_domains",
    metadata,
    Column(
        "partner_id",
        Integer,
        ForeignKey("partners.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True),
    Column("pattern", String(DOMAIN_PATTERN), nullable=False, unique=True),
)

# GlobalSettings: exactly one row (id = 1) once saved; no row means the defaults.
federation_settings = Table(
    "federation_settings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("federation", Boolean, nullable=False),
    Column("open_federation", Boolean, nullable=False),
    Column("open_federation_max_contacts", Integer, nullable=False),
    Column("open_federation_stanza_rate", Double, nullable=False),
    Column("blocked_domains", Text, nullable=False),  # JSON array of patterns
    Column("public_im_licences", Integer, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

# UserSettings of the users whose settings differ from the defaults.
user_federation_settings = Table(
    "user_federation_settings",
    metadata,
    Column("user_jid", String(BARE_JID), primary_key=True),
    Column("federation", Boolean, nullable=False),
    Column("public_im", Boolean, nullable=False),
    Column("verified_subscriptions", String(16), nullable=False),
    Column("block_non_allowed_im", Boolean, nullable=False),
    Column("allow_list", Text, nullable=False),  # JSON array of bare JIDs and patterns
    CheckConstraint(
        "verified_subscriptions IN ('allow', 'block', 'prompt')", name="verified_subscriptions"
    ),
)

# Administrative changes: who did what to which object (never secrets).
change_log = Table(
    "change_log",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("at", Double, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
    Column("detail", Text, nullable=False),  # JSON
    Index("ix_change_log_at", "at"),
    sqlite_autoincrement=True,
)

# Federation decisions (FEDERATION.md §Every decision is explainable), bounded by pruning.
# `sender_bare` / `recipient_bare` are the bare forms the `user` filter matches; indexed
# columns are clipped to sizes a B-tree entry can hold, whatever arrives on the wire.
audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("at", Double, nullable=False),
    Column("direction", String(16), nullable=False),
    Column("domain", String(DOMAIN), nullable=False),
    Column("partner", String(PARTNER_NAME), nullable=True),
    Column("sender", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("sender_bare", String(BARE_JID), nullable=False),
    Column("recipient_bare", String(BARE_JID), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_audit_log_at_id", "at", "id"),
    Index("ix_audit_log_domain_at", "domain", "at"),
    Index("ix_audit_log_partner_at", "partner", "at"),
    Index("ix_audit_log_sender_bare_at", "sender_bare", "at"),
    Index("ix_audit_log_recipient_bare_at", "recipient_bare", "at"),
    Index("ix_audit_log_reason_at", "reason", "at"),
    sqlite_autoincrement=True,
)

# --- corporate directory (FEDERATION.md §Words: peer server, directory), revision 0003 ------

peer_servers = Table(
    "peer_servers",
    metadata,
    # SQLite: AUTOINCREMENT, so the id of a removed peer server (and so the partner origin
    # `peer-server:<id>`) never names a new one.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(PARTNER_NAME), nullable=False),
    Column("name_key", String(PARTNER_NAME), nullable=False, unique=True),  # strip+casefold
    Column("edge_address", Text, nullable=True),
    Column("ldap_url", Text, nullable=False),
    Column("start_tls", Boolean, nullable=False),
    Column("bind_dn", Text, nullable=False),
    # AES-GCM sealed (store/sql/secrets.py); NULL for an anonymous bind.
    Column("bind_password", LargeBinary, nullable=True),
    Column("base_dn", Text, nullable=False),
    Column("ldap_filter", Text, nullable=False),
    Column("page_size", Integer, nullable=False),
    Column("timeout", Double, nullable=False),
    Column("mapping", Text, nullable=False),  # JSON object: AttributeMapping's fields
    Column("schedule_minutes", Integer, nullable=True),
    Column("enabled", Boolean, nullable=False),
    # PEM CA file the LDAP server's certificate is checked against; NULL: system CAs (0004).
    Column("ca_file", Text, nullable=True),
    sqlite_autoincrement=True,
)

# A domain belongs to one peer server only: two would fight over its partner row.
peer_server_domains = Table(
    "peer_server_domains",
    metadata,
    Column(
        "peer_server_id",
        Integer,
        ForeignKey("peer_servers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True),
    Column("domain", String(DOMAIN_PATTERN), nullable=False, unique=True),
)

# `search_key` is the casefolded name, IM address, e-mail and department, one per line:
# a substring search is then one LIKE that folds case the same way on both engines.
directory_entries = Table(
    "directory_entries",
    metadata,
    Column(
        "peer_server_id",
        Integer,
        ForeignKey("peer_servers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("im_address", String(BARE_JID), primary_key=True),
    Column("dn", Text, nullable=False),
    Column("display_name", Text, nullable=True),
    Column("email", Text, nullable=True),
    Column("phone", Text, nullable=True),
    Column("department", Text, nullable=True),
    Column("title", Text, nullable=True),
    Column("search_key", Text, nullable=False),
    Index("ix_directory_entries_im_address", "im_address"),
)

sync_reports = Table(
    "sync_reports",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column(
        "peer_server_id",
        Integer,
        ForeignKey("peer_servers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("started", Double, nullable=False),
    Column("finished", Double, nullable=False),
    Column("status", String(16), nullable=False),
    Column("added", Integer, nullable=False),
    Column("changed", Integer, nullable=False),
    Column("removed", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("issue_count", Integer, nullable=False),
    Column("issues", Text, nullable=False),  # JSON array of {kind, dn, detail}, bounded
    Column("error", Text, nullable=True),
    CheckConstraint("status IN ('ok', 'failed', 'interrupted')", name="status"),
    Index("ix_sync_reports_peer_server_id_id", "peer_server_id", "id"),
    sqlite_autoincrement=True,
)
