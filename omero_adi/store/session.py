"""Opening the order store from settings: engine, migrations, sessions."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from omero_adi.settings import Settings, mask_url
from omero_adi.store import migrate
from omero_adi.store.db import make_engine
from omero_adi.store.retry import retry_transient, server_message

log = logging.getLogger(__name__)


class DatabaseUnusable(Exception):
    """The order database cannot be used as configured, and waiting will not
    change that (no such database or role, a refused password, no tables)."""


def describe_error(url: str, exc: BaseException) -> str:
    """``<masked url>: <what the server said>``."""
    return f"{mask_url(url)}: {server_message(exc)}"


def open_store(
    settings: Settings, *, run_migrations: bool | None = None, wait: bool = False
) -> Engine:
    """An engine on the configured database, migrated when the settings say so.

    With ``wait`` (the daemon), a database that is unreachable for now
    (refused, timed out, starting up) is waited for, with backoff: it may
    still be starting. One that refuses us for good raises
    :class:`DatabaseUnusable` at once, with the server's reason.
    """
    if settings.database_is_default:
        log.warning(
            "no database configured: using the embedded SQLite file %s; "
            "set ingest_tracking_db or INGEST_TRACKING_DB_URL for production",
            settings.ingest_tracking_db.removeprefix("sqlite:///"),
        )
    url = settings.ingest_tracking_db
    engine = make_engine(url)
    if settings.run_migrations if run_migrations is None else run_migrations:
        try:
            revision = retry_transient(
                lambda: migrate.upgrade(engine, allow_auto_stamp=settings.allow_auto_stamp),
                attempts=None if wait else 1, max_delay=10.0,
                what=f"reaching the order database {mask_url(url)}",
            )
        except DBAPIError as exc:
            engine.dispose()
            raise DatabaseUnusable(f"cannot use the order database {describe_error(url, exc)}") from exc
        log.info("order store %s at revision %s", mask_url(url), revision)
    return engine


def open_existing_store(settings: Settings) -> Engine:
    """An engine on a database that already holds omero-adi's tables, for the
    commands that read orders: nothing is created (not even an SQLite file)."""
    url = settings.ingest_tracking_db
    if url.startswith("sqlite"):
        path = url.partition(":///")[2]
        if path and path != ":memory:" and not Path(path).exists():
            raise DatabaseUnusable(
                f"no order database at {path}: set ingest_tracking_db or "
                "INGEST_TRACKING_DB_URL to the daemon's database, or create it with "
                "`omero-adi migrate`")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            revision = migrate.current_revision(connection)
    except DBAPIError as exc:
        engine.dispose()
        raise DatabaseUnusable(f"cannot use the order database {describe_error(url, exc)}") from exc
    if revision is None:
        engine.dispose()
        raise DatabaseUnusable(
            f"the order database {mask_url(url)} has no omero-adi tables yet: "
            "run `omero-adi migrate` (or start the daemon, which migrates)")
    return engine
