"""description column added

The earlier ADI created its tables with ``create_all`` and only then ran this
revision, which added ``description`` a second time on an empty database. Here
the revision creates whatever is missing — tables, column, index — so an empty
database, one made by the earlier ADI without a version table, and one already
at this revision all end in the same schema.

Revision ID: 78d3d6d84aec
Revises:
Create Date: 2024-11-20
"""

import sqlalchemy as sa
from alembic import op

revision = "78d3d6d84aec"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "imports_preprocessing" not in tables:
        op.create_table(
            "imports_preprocessing",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("container", sa.String, nullable=False),
            sa.Column("input_file", sa.String, nullable=False),
            sa.Column("output_folder", sa.String, nullable=False),
            sa.Column("alt_output_folder", sa.String, nullable=True),
            sa.Column("extra_params", sa.JSON, nullable=True),
        )
    if "imports" not in tables:
        op.create_table(
            "imports",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("group_name", sa.String, nullable=False),
            sa.Column("user_name", sa.String, nullable=False),
            sa.Column("destination_id", sa.String, nullable=False),
            sa.Column("destination_type", sa.String, nullable=False),
            sa.Column("stage", sa.String, nullable=False),
            sa.Column("uuid", sa.String(36), nullable=False),
            sa.Column("timestamp", sa.DateTime(timezone=True), server_default=sa.func.now()),
            sa.Column("files", sa.Text, nullable=False),
            sa.Column("file_names", sa.Text, nullable=True),
            sa.Column("description", sa.Text, nullable=True),
            sa.Column(
                "preprocessing_id",
                sa.Integer,
                sa.ForeignKey("imports_preprocessing.id"),
                nullable=True,
            ),
        )
    elif "description" not in {c["name"] for c in inspector.get_columns("imports")}:
        op.add_column("imports", sa.Column("description", sa.Text, nullable=True))
    indexes = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("imports")}
    for name, columns in (
        ("ix_imports_user_name", ["user_name"]),
        ("ix_imports_uuid", ["uuid"]),
        ("imports_ix_uuid_timestamp", ["uuid", "timestamp"]),
    ):
        if name not in indexes:
            op.create_index(name, "imports", columns)


def downgrade() -> None:
    op.drop_column("imports", "description")
