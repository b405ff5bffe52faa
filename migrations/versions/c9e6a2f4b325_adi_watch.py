"""ADI's watch-folder tables

``adi_watch_units`` records every unit (a file or an acquisition folder) a
watch rule turned into an order, or refused, under a unique key: the row and
the order's Pending event are written in one transaction, so a unit is
ordered once however many daemons watch it. ``adi_watch_scans`` holds each
rule's latest scan, for ``omero-adi status``.

Revision ID: c9e6a2f4b325
Revises: b3d5f1e8a214
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "c9e6a2f4b325"
down_revision = "b3d5f1e8a214"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adi_watch_units",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("unit_key", sa.String(64), nullable=False),
        sa.Column("rule", sa.String, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("reported_fingerprint", sa.Text, nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("daemon", sa.String, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ux_adi_watch_units_key", "adi_watch_units", ["unit_key"], unique=True)
    op.create_index("ix_adi_watch_units_rule", "adi_watch_units", ["rule"])
    # Refused units are few, and looked up on every scan while there are any.
    op.create_index("ix_adi_watch_units_refused", "adi_watch_units", ["rule"],
                    postgresql_where=sa.text("state = 'refused'"),
                    sqlite_where=sa.text("state = 'refused'"))
    op.create_table(
        "adi_watch_scans",
        sa.Column("rule", sa.String, primary_key=True),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("waiting", sa.Integer, nullable=False),
        sa.Column("problems", sa.Text, nullable=True),
        sa.Column("daemon", sa.String, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("adi_watch_scans")
    op.drop_index("ix_adi_watch_units_refused", "adi_watch_units")
    op.drop_index("ix_adi_watch_units_rule", "adi_watch_units")
    op.drop_index("ux_adi_watch_units_key", "adi_watch_units")
    op.drop_table("adi_watch_units")
