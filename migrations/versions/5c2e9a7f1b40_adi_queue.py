"""ADI's order queue, filled by a trigger on Pending events

Every insert of an ``Import Pending`` row, and every update that sets a row
back to Pending (the operators' retry recipe), adds an entry to ``adi_queue``
in the same transaction. On PostgreSQL the trigger also sends
``NOTIFY omero_adi_orders`` so that daemons wake at once.

Revision ID: 5c2e9a7f1b40
Revises: 78d3d6d84aec
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "5c2e9a7f1b40"
down_revision = "78d3d6d84aec"
branch_labels = None
depends_on = None

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION adi_enqueue_pending() RETURNS trigger AS $$
BEGIN
    INSERT INTO adi_queue (event_id, uuid) VALUES (NEW.id, NEW.uuid)
    ON CONFLICT (event_id) DO NOTHING;
    PERFORM pg_notify('omero_adi_orders', NEW.uuid);
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""
PG_TRIGGER = """
CREATE TRIGGER adi_imports_pending
AFTER INSERT OR UPDATE OF stage ON imports
FOR EACH ROW WHEN (NEW.stage = 'Import Pending')
EXECUTE FUNCTION adi_enqueue_pending()
"""
SQLITE_TRIGGERS = {
    "adi_imports_pending_insert": "AFTER INSERT ON imports",
    "adi_imports_pending_update": "AFTER UPDATE OF stage ON imports",
}


def upgrade() -> None:
    op.create_table(
        "adi_queue",
        sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("claimed_by", sa.String, nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String, nullable=True),
    )
    op.create_index("ix_adi_queue_uuid", "adi_queue", ["uuid"])
    # Small partial indexes: waiting entries, and entries being worked on.
    for name, column, where in (
        ("ix_adi_queue_waiting", "event_id", "claimed_by IS NULL AND finished_at IS NULL"),
        ("ix_adi_queue_running", "claimed_by", "claimed_by IS NOT NULL AND finished_at IS NULL"),
    ):
        op.create_index(name, "adi_queue", [column], postgresql_where=sa.text(where),
                        sqlite_where=sa.text(where))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        for name, when in SQLITE_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {name} {when} WHEN NEW.stage = 'Import Pending' "
                "BEGIN INSERT OR IGNORE INTO adi_queue (event_id, uuid) "
                "VALUES (NEW.id, NEW.uuid); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS adi_imports_pending ON imports")
        op.execute("DROP FUNCTION IF EXISTS adi_enqueue_pending()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("adi_queue")
