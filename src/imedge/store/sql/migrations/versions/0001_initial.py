"""Initial schema: accounts, credentials, rosters, subscription requests, offline, blocklist.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

BARE_JID = 2047
FULL_JID = 3071


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("jid", sa.String(BARE_JID), nullable=False),
        sa.Column("domain", sa.String(1023), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("jid", name="pk_accounts"),
    )
    op.create_index("ix_accounts_domain", "accounts", ["domain"])
    op.create_table(
        "credentials",
        sa.Column("jid", sa.String(BARE_JID), nullable=False),
        sa.Column("mechanism", sa.String(64), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("iterations", sa.Integer(), nullable=False),
        sa.Column("stored_key", sa.LargeBinary(), nullable=False),
        sa.Column("server_key", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["jid"],
            ["accounts.jid"],
            name="fk_credentials_jid_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("jid", "mechanism", name="pk_credentials"),
    )
    op.create_table(
        "roster_versions",
        sa.Column("user_jid", sa.String(BARE_JID), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_jid", name="pk_roster_versions"),
    )
    op.create_table(
        "roster_items",
        sa.Column("user_jid", sa.String(BARE_JID), nullable=False),
        sa.Column("contact_jid", sa.String(BARE_JID), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("subscription", sa.String(4), nullable=False),
        sa.Column("pending_out", sa.Boolean(), nullable=False),
        sa.Column("pending_in", sa.Boolean(), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("listed", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "subscription IN ('none', 'to', 'from', 'both')",
            name="ck_roster_items_subscription",
        ),
        sa.PrimaryKeyConstraint("user_jid", "contact_jid", name="pk_roster_items"),
    )
    op.create_table(
        "subscription_requests",
        sa.Column("user_jid", sa.String(BARE_JID), nullable=False),
        sa.Column("contact_jid", sa.String(BARE_JID), nullable=False),
        sa.Column("stanza", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("user_jid", "contact_jid", name="pk_subscription_requests"),
    )
    op.create_table(
        "offline_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_jid", sa.String(BARE_JID), nullable=False),
        sa.Column("stanza", sa.LargeBinary(), nullable=False),
        sa.Column("stored_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_offline_messages"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_offline_messages_user_jid_id", "offline_messages", ["user_jid", "id"])
    op.create_table(
        "blocklist",
        sa.Column("user_jid", sa.String(BARE_JID), nullable=False),
        sa.Column("blocked_jid", sa.String(FULL_JID), nullable=False),
        sa.PrimaryKeyConstraint("user_jid", "blocked_jid", name="pk_blocklist"),
    )


def downgrade() -> None:
    op.drop_table("blocklist")
    op.drop_index("ix_offline_messages_user_jid_id", table_name="offline_messages")
    op.drop_table("offline_messages")
    op.drop_table("subscription_requests")
    op.drop_table("roster_items")
    op.drop_table("roster_versions")
    op.drop_table("credentials")
    op.drop_index("ix_accounts_domain", table_name="accounts")
    op.drop_table("accounts")
