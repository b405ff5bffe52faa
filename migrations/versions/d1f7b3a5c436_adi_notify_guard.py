"""ADI's notification outbox and in-place guard tables

``adi_notify_outbox``: one row per message and channel, written in the same
transaction as the event that causes it; the sender marks it sent or
refused. ``adi_guard_files``: size and modification time of every original
file an order imported in place, and what the guard last found.

Revision ID: d1f7b3a5c436
Revises: c9e6a2f4b325
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "d1f7b3a5c436"
down_revision = "c9e6a2f4b325"
branch_labels = None
depends_on = None

UNSENT = "sent_at IS NULL AND refused_at IS NULL"


MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "adi_notify_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=True),
        sa.Column("event_id", sa.Integer, nullable=True),  # the imports row, for stages
        sa.Column("kind", sa.String, nullable=False),  # a stage, 'guard' or 'watch'
        sa.Column("channel", sa.String, nullable=False),  # 'email' or 'webhook:<name>'
        sa.Column("payload", sa.Text, nullable=True),  # JSON, for guard findings
        sa.Column("created_at", MOMENT, server_default=sa.func.now(), nullable=False),
        sa.Column("due_at", MOMENT, server_default=sa.func.now(), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String, nullable=True),
        sa.Column("lease_until", MOMENT, nullable=True),
        sa.Column("sent_at", MOMENT, nullable=True),
        sa.Column("refused_at", MOMENT, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),  # the last error, or to whom it went
    )
    op.create_index("ix_adi_notify_outbox_unsent", "adi_notify_outbox", ["due_at"],
                    postgresql_where=sa.text(UNSENT), sqlite_where=sa.text(UNSENT))
    op.create_table(
        "adi_guard_files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("fileset_id", sa.BigInteger, nullable=False),
        sa.Column("image_ids", sa.Text, nullable=False),  # JSON lists
        sa.Column("plate_ids", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("inode", sa.BigInteger, nullable=False),
        sa.Column("recorded_at", MOMENT, server_default=sa.func.now(), nullable=False),
        sa.Column("checked_at", MOMENT, nullable=True),
        sa.Column("state", sa.String, nullable=False, server_default="ok"),
        sa.Column("detail", sa.Text, nullable=True),
        sa.UniqueConstraint("fileset_id", "path", name="uq_adi_guard_files_fileset_path"),
    )
    op.create_index("ix_adi_guard_files_uuid", "adi_guard_files", ["uuid"])
    op.create_index("ix_adi_guard_files_problems", "adi_guard_files", ["state"],
                    postgresql_where=sa.text("state <> 'ok'"),
                    sqlite_where=sa.text("state <> 'ok'"))


def downgrade() -> None:
    op.drop_table("adi_guard_files")
    op.drop_table("adi_notify_outbox")
