"""Opening the order store from settings: engine, migrations, sessions."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from omero_adi.settings import Settings, mask_url
from omero_adi.store import migrate
from omero_adi.store.db import make_engine
from omero_adi.store.retry import retry_transient

log = logging.getLogger(__name__)


def open_store(
    settings: Settings, *, run_migrations: bool | None = None, wait: bool = False
) -> Engine:
    """An engine on the configured database, migrated when the settings say so.

    With ``wait`` (the daemon), an unreachable database is waited for, with
    backoff, instead of ending the process: it may still be starting.
    """
    if settings.database_is_default:
        log.warning(
            "no database configured: using the embedded SQLite file %s; "
            "set ingest_tracking_db or INGEST_TRACKING_DB_URL for production",
            settings.ingest_tracking_db.removeprefix("sqlite:///"),
        )
    engine = make_engine(settings.ingest_tracking_db)
    if settings.run_migrations if run_migrations is None else run_migrations:
        revision = retry_transient(
            lambda: migrate.upgrade(engine, allow_auto_stamp=settings.allow_auto_stamp),
            attempts=None if wait else 1, max_delay=10.0, what="reaching the order database",
        )
        log.info("order store %s at revision %s", mask_url(settings.ingest_tracking_db), revision)
    return engine
