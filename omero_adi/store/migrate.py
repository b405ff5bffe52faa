"""Run ADI's Alembic migrations safely on a database shared with others.

Several daemons (and the web plugin) may start at once: on PostgreSQL the
whole run holds a session-level advisory lock, so one migrates and the others
wait, then find the database at head.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

log = logging.getLogger(__name__)

VERSION_TABLE = "alembic_version_omeroadi"
#: Arbitrary, fixed key of the advisory lock held while migrating.
ADVISORY_LOCK_KEY = 7_352_026_111
#: The earlier ADI's only revision; a database it made may carry it.
LEGACY_REVISION = "78d3d6d84aec"


class MigrationError(RuntimeError):
    """The database cannot be brought to the schema this version needs."""


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("omero_adi.migrations")))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """SQLite has no advisory locks: migrators of one file take turns on a
    lock file beside it (two CLI commands, or the daemon and a client, may
    start together on the embedded database)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    import fcntl

    path = Path(database)
    with open(path.with_name(f"{path.name}.migrate-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    with _sqlite_file_lock(engine), engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
            connection.commit()
        try:
            yield connection
        finally:
            if postgres:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
                connection.commit()


def upgrade(engine: Engine, allow_auto_stamp: bool = False, target: str = "head") -> str:
    """Bring the database to ``target``; return the revision it ends at.

    A database whose ``imports`` table exists without a version table (the
    earlier ADI, or a client's ``create_all``) is adopted only with
    ``allow_auto_stamp``; the first revision then fills in what is missing.
    """
    with _migration_lock(engine) as connection:
        before = current_revision(connection)
        connection.commit()
        if before is None and inspect(connection).has_table("imports") and not allow_auto_stamp:
            raise MigrationError(
                "the database has an 'imports' table but no "
                f"{VERSION_TABLE} table, so its schema version is unknown; "
                "set ADI_ALLOW_AUTO_STAMP=1 to adopt it (its rows are kept)"
            )
        command.upgrade(_config(connection), target)
        after = current_revision(connection)
        connection.commit()
    if before != after:
        log.info("database migrated from %s to %s", before or "empty", after)
    return after or "base"


def downgrade(engine: Engine, target: str) -> str:
    """Step back to ``target`` (a revision id, or ``base``)."""
    with _migration_lock(engine) as connection:
        command.downgrade(_config(connection), target)
        after = current_revision(connection)
        connection.commit()
    return after or "base"


def is_at_head(engine: Engine) -> bool:
    with engine.connect() as connection:
        return current_revision(connection) == head_revision()
