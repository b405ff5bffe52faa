"""Alembic environment: always driven by :mod:`omero_adi.store.migrate`.

The runner hands over an open connection (holding the advisory lock) in
``config.attributes["connection"]``; migrations only ever touch ADI's tables.
"""

from alembic import context

from omero_adi.store.migrate import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
