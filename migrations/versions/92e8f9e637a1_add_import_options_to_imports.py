"""add import options to imports

BIOMERO.importer's revision: ``imports.import_options``, JSON text of an
order's ``ImportOptions`` (NULL when it has none). A database that
BIOMERO.importer migrated is already here; one whose tables were made with
the column but carry no version table (adopted with auto stamp) keeps it.

Revision ID: 92e8f9e637a1
Revises: 78d3d6d84aec
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "92e8f9e637a1"
down_revision = "78d3d6d84aec"
branch_labels = None
depends_on = None


def _has_column() -> bool:
    columns = sa.inspect(op.get_bind()).get_columns("imports")
    return "import_options" in {c["name"] for c in columns}


def upgrade() -> None:
    if not _has_column():
        op.add_column("imports", sa.Column("import_options", sa.Text, nullable=True))


def downgrade() -> None:
    if _has_column():
        op.drop_column("imports", "import_options")
