"""Corporate directory: the CA file an LDAP source's certificate is validated against.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable: existing peer servers keep validating against the system's trusted CAs.
    with op.batch_alter_table("peer_servers") as batch:
        batch.add_column(sa.Column("ca_file", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("peer_servers") as batch:
        batch.drop_column("ca_file")
