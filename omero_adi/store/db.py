"""Engines for the order store: PostgreSQL in production, SQLite embedded."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg2, as it always did for ADI's users
    (SQLAlchemy 2.1 would otherwise pick psycopg 3, which is not installed)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def make_engine(url: str, **options: Any) -> Engine:
    """An engine tuned for ADI: no ping per checkout (errors are retried
    instead, which keeps an idle daemon quiet), SQLite in WAL mode."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **options
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=10, **options)
