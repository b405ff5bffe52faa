"""ADI's leases: work that one daemon at a time may do, held without a connection

``adi_leases``: one row per lease (``name``; the in-place guard's pass is
``guard``), with the daemon holding it and until when, by the database's
clock. A holder renews it while it works and deletes it when done; another
daemon may take it once ``expires_at`` has passed. Unlike a session's
advisory lock, it survives a dropped connection, a server restart and a
connection pooler.

Revision ID: 4752d1cfa05f
Revises: d1f7b3a5c436
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "4752d1cfa05f"
down_revision = "d1f7b3a5c436"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adi_leases",
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("holder", sa.String, nullable=False),  # host:pid:token of the daemon
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("adi_leases")
