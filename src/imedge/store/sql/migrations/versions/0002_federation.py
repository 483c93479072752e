"""Federation: partner table, global and per-user settings, change log, audit log, meta.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

BARE_JID = 2047
PARTNER_NAME = 255
DOMAIN_PATTERN = 1025
DOMAIN = 1023


def _serial() -> sa.types.TypeEngine[int]:
    # BIGINT on PostgreSQL; INTEGER PRIMARY KEY AUTOINCREMENT on SQLite (ids never reused).
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )
    op.create_table(
        "partners",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(PARTNER_NAME), nullable=False),
        sa.Column("name_key", sa.String(PARTNER_NAME), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("edge_address", sa.Text(), nullable=True),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("filter", sa.String(16), nullable=False),
        sa.Column("tls", sa.String(16), nullable=False),
        sa.Column("sasl_external", sa.String(16), nullable=False),
        sa.Column("dialback", sa.Boolean(), nullable=False),
        sa.Column("connection_limit", sa.Integer(), nullable=True),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "filter IN ('contacts_only', 'verified', 'all')", name="ck_partners_filter"
        ),
        sa.CheckConstraint("tls IN ('required', 'optional', 'off')", name="ck_partners_tls"),
        sa.CheckConstraint(
            "sasl_external IN ('required', 'optional', 'off')", name="ck_partners_sasl_external"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_partners"),
        sa.UniqueConstraint("name_key", name="uq_partners_name_key"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "partner_domains",
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("pattern", sa.String(DOMAIN_PATTERN), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name="fk_partner_domains_partner_id_partners",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("partner_id", "position", name="pk_partner_domains"),
        sa.UniqueConstraint("pattern", name="uq_partner_domains_pattern"),
    )
    op.create_table(
        "federation_settings",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("federation", sa.Boolean(), nullable=False),
        sa.Column("open_federation", sa.Boolean(), nullable=False),
        sa.Column("open_federation_max_contacts", sa.Integer(), nullable=False),
        sa.Column("open_federation_stanza_rate", sa.Double(), nullable=False),
        sa.Column("blocked_domains", sa.Text(), nullable=False),
        sa.Column("public_im_licences", sa.Integer(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_federation_settings_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_federation_settings"),
    )
    op.create_table(
        "user_federation_settings",
        sa.Column("user_jid", sa.String(BARE_JID), nullable=False),
        sa.Column("federation", sa.Boolean(), nullable=False),
        sa.Column("public_im", sa.Boolean(), nullable=False),
        sa.Column("verified_subscriptions", sa.String(16), nullable=False),
        sa.Column("block_non_allowed_im", sa.Boolean(), nullable=False),
        sa.Column("allow_list", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "verified_subscriptions IN ('allow', 'block', 'prompt')",
            name="ck_user_federation_settings_verified_subscriptions",
        ),
        sa.PrimaryKeyConstraint("user_jid", name="pk_user_federation_settings"),
    )
    op.create_table(
        "change_log",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_change_log"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_change_log_at", "change_log", ["at"])
    op.create_table(
        "audit_log",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("domain", sa.String(DOMAIN), nullable=False),
        sa.Column("partner", sa.String(PARTNER_NAME), nullable=True),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("sender_bare", sa.String(BARE_JID), nullable=False),
        sa.Column("recipient_bare", sa.String(BARE_JID), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        sqlite_autoincrement=True,
    )
    for name, columns in (
        ("ix_audit_log_at_id", ["at", "id"]),
        ("ix_audit_log_domain_at", ["domain", "at"]),
        ("ix_audit_log_partner_at", ["partner", "at"]),
        ("ix_audit_log_sender_bare_at", ["sender_bare", "at"]),
        ("ix_audit_log_recipient_bare_at", ["recipient_bare", "at"]),
        ("ix_audit_log_reason_at", ["reason", "at"]),
    ):
        op.create_index(name, "audit_log", columns)


def downgrade() -> None:
    op.drop_table("audit_log")  # drops its indexes with it
    op.drop_table("change_log")
    op.drop_table("user_federation_settings")
    op.drop_table("federation_settings")
    op.drop_table("partner_domains")
    op.drop_table("partners")
    op.drop_table("meta")
