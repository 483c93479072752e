"""Corporate directory: peer servers, their domains, directory entries, sync reports.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

BARE_JID = 2047
PARTNER_NAME = 255
DOMAIN_PATTERN = 1025


def _serial() -> sa.types.TypeEngine[int]:
    # BIGINT on PostgreSQL; INTEGER PRIMARY KEY AUTOINCREMENT on SQLite (ids never reused).
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _peer_server_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["peer_server_id"],
        ["peer_servers.id"],
        name=f"fk_{table}_peer_server_id_peer_servers",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "peer_servers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(PARTNER_NAME), nullable=False),
        sa.Column("name_key", sa.String(PARTNER_NAME), nullable=False),
        sa.Column("edge_address", sa.Text(), nullable=True),
        sa.Column("ldap_url", sa.Text(), nullable=False),
        sa.Column("start_tls", sa.Boolean(), nullable=False),
        sa.Column("bind_dn", sa.Text(), nullable=False),
        sa.Column("bind_password", sa.LargeBinary(), nullable=True),
        sa.Column("base_dn", sa.Text(), nullable=False),
        sa.Column("ldap_filter", sa.Text(), nullable=False),
        sa.Column("page_size", sa.Integer(), nullable=False),
        sa.Column("timeout", sa.Double(), nullable=False),
        sa.Column("mapping", sa.Text(), nullable=False),
        sa.Column("schedule_minutes", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_peer_servers"),
        sa.UniqueConstraint("name_key", name="uq_peer_servers_name_key"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "peer_server_domains",
        sa.Column("peer_server_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(DOMAIN_PATTERN), nullable=False),
        _peer_server_fk("peer_server_domains"),
        sa.PrimaryKeyConstraint("peer_server_id", "position", name="pk_peer_server_domains"),
        sa.UniqueConstraint("domain", name="uq_peer_server_domains_domain"),
    )
    op.create_table(
        "directory_entries",
        sa.Column("peer_server_id", sa.Integer(), nullable=False),
        sa.Column("im_address", sa.String(BARE_JID), nullable=False),
        sa.Column("dn", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("department", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("search_key", sa.Text(), nullable=False),
        _peer_server_fk("directory_entries"),
        sa.PrimaryKeyConstraint("peer_server_id", "im_address", name="pk_directory_entries"),
    )
    op.create_index("ix_directory_entries_im_address", "directory_entries", ["im_address"])
    op.create_table(
        "sync_reports",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("peer_server_id", sa.Integer(), nullable=False),
        sa.Column("started", sa.Double(), nullable=False),
        sa.Column("finished", sa.Double(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("issue_count", sa.Integer(), nullable=False),
        sa.Column("issues", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('ok', 'failed', 'interrupted')", name="ck_sync_reports_status"
        ),
        _peer_server_fk("sync_reports"),
        sa.PrimaryKeyConstraint("id", name="pk_sync_reports"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sync_reports_peer_server_id_id", "sync_reports", ["peer_server_id", "id"])


def downgrade() -> None:
    op.drop_table("sync_reports")
    op.drop_table("directory_entries")
    op.drop_table("peer_server_domains")
    op.drop_table("peer_servers")
