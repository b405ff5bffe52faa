"""ADI's progress table: how far a running import is

One row per order (``uuid``), rewritten while the daemon runs it, at most
once a second: the importer's current step and how many of the order's
filesets it has imported (and how many it found, once known). It belongs to
the daemon alone; the ``imports`` rows that clients read never carry
progress. ``event_id`` is the queue entry of the run the row describes, so a
retried order never shows the previous run's progress.

Revision ID: b3d5f1e8a214
Revises: a7c4e2d90b13
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "b3d5f1e8a214"
down_revision = "a7c4e2d90b13"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adi_progress",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("event_id", sa.Integer, nullable=False),
        sa.Column("step", sa.String, nullable=False),
        sa.Column("filesets_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("filesets_total", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("adi_progress")
