"""Engines for the order store: PostgreSQL in production, SQLite embedded."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from omero_adi.settings import SettingsError, mask_url

#: URL schemes omero-adi runs on; ``postgres://`` is the spelling of Heroku-style
#: platforms and many tools, the same database as ``postgresql://``.
SUPPORTED_SCHEMES = ("postgresql", "postgresql+psycopg2", "postgres", "sqlite", "sqlite+pysqlite")
#: Seconds a PostgreSQL connection attempt may take (a firewall that drops
#: packets would otherwise hang it for minutes), unless the URL says otherwise.
CONNECT_TIMEOUT = 10


class UnsupportedDatabase(SettingsError):
    """The database URL names a database or driver omero-adi does not run on."""


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg2, as they always did for
    ADI's users (SQLAlchemy 2.1 would otherwise pick psycopg 3, which is not
    installed); any other scheme than :data:`SUPPORTED_SCHEMES` is refused."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UnsupportedDatabase(
            f"{mask_url(url)!r} is not a database URL; write it as "
            "postgresql://user:password@host:5432/database or sqlite:///path/file.sqlite"
        ) from None
    if parsed.drivername not in SUPPORTED_SCHEMES:
        raise UnsupportedDatabase(
            f"database URL scheme '{parsed.drivername}://' is not supported; "
            "use postgresql:// (or postgres://) or sqlite:///"
        )
    if parsed.drivername in ("postgresql", "postgres"):
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
    connect_args = {} if "connect_timeout" in make_url(url).query else {
        "connect_timeout": CONNECT_TIMEOUT}
    return create_engine(url, pool_size=10, max_overflow=10, connect_args=connect_args,
                         **options)
