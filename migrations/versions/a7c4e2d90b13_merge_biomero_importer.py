"""merge BIOMERO.importer's revision with ADI's queue

Both branches start at the earlier ADI's ``78d3d6d84aec``: ADI's queue
(``5c2e9a7f1b40``) and BIOMERO.importer's ``import_options`` column
(``92e8f9e637a1``). A database of either generation, or of neither, walks the
branch it lacks and meets here; the merge itself changes nothing. Going back
to ``92e8f9e637a1`` (for BIOMERO.importer) takes the queue branch down too:
see :func:`omero_adi.store.migrate.downgrade`.

Revision ID: a7c4e2d90b13
Revises: (5c2e9a7f1b40, 92e8f9e637a1)
Create Date: 2026-11-21
"""

revision = "a7c4e2d90b13"
down_revision = ("5c2e9a7f1b40", "92e8f9e637a1")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
