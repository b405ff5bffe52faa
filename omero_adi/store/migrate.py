"""Run ADI's Alembic migrations safely on a database shared with others.

Several daemons (and the web plugin) may start at once: on PostgreSQL the
whole run holds a session-level advisory lock, so one migrates and the others
wait, then find the database at head.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
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
#: Seconds between tries for the migration lock while another process holds it.
LOCK_RETRY = 0.5
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


def _take_advisory_lock(connection: Connection) -> None:
    """Wait for the migration lock in short tries, not in one blocking call, so
    Ctrl-C ends the wait (a signal cannot interrupt the driver's call)."""
    said = False
    while not connection.execute(
        text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}
    ).scalar_one():
        connection.commit()
        if not said:
            log.warning("another process is migrating the order database; waiting for it")
            said = True
        time.sleep(LOCK_RETRY)
    connection.commit()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    with _sqlite_file_lock(engine), engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            _take_advisory_lock(connection)
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
    return upgrade_report(engine, allow_auto_stamp, target).after


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade_report` did: revisions before (None: no version
    table) and after, and whether existing tables were adopted."""

    before: str | None
    after: str
    adopted: bool

    def describe(self) -> str:
        head = " (head)" if self.after == head_revision() else ""
        if self.before == self.after:
            return f"already at revision {self.after}{head}; nothing to do"
        if self.adopted:
            return f"adopted the existing tables; now at revision {self.after}{head}"
        if self.before is None:
            return f"created omero-adi's tables; now at revision {self.after}{head}"
        return f"upgraded from {self.before}; now at revision {self.after}{head}"


def upgrade_report(
    engine: Engine, allow_auto_stamp: bool = False, target: str = "head"
) -> Upgrade:
    """:func:`upgrade`, saying what it did."""
    with _migration_lock(engine) as connection:
        before = current_revision(connection)
        adopted = before is None and inspect(connection).has_table("imports")
        connection.commit()
        if adopted and not allow_auto_stamp:
            raise MigrationError(
                "the database has an 'imports' table but no "
                f"{VERSION_TABLE} table, so its schema version is unknown; "
                "set ADI_ALLOW_AUTO_STAMP=1 to adopt it (its rows are kept)"
            )
        command.upgrade(_config(connection), target)
        after = current_revision(connection) or "base"
        connection.commit()
    if before != after:
        log.info("database migrated from %s to %s", before or "empty", after)
    return Upgrade(before, after, adopted)


def downgrade(engine: Engine, target: str) -> str:
    """Step back to ``target`` (a revision id, or ``base``): the database ends at
    exactly that revision.

    Alembic alone stops a downgrade at the branch holding ``target``, so going
    from the merge to BIOMERO.importer's ``92e8f9e637a1`` would leave ADI's
    queue branch applied too (two versions, which BIOMERO.importer cannot
    read); such other branches are stepped down until only ``target`` remains.
    """
    with _migration_lock(engine) as connection:
        command.downgrade(_config(connection), target)
        if target != "base":
            script = ScriptDirectory.from_config(_config())
            keep = {r.revision for r in script.iterate_revisions(target, "base")}
            while extra := [h for h in _current_heads(connection) if h not in keep]:
                command.downgrade(_config(connection), f"{extra[0]}@-1")  # that branch only
        after = current_revision(connection)
        connection.commit()
    return after or "base"


def _current_heads(connection: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_heads()


def is_at_head(engine: Engine) -> bool:
    with engine.connect() as connection:
        return current_revision(connection) == head_revision()
