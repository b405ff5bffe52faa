"""Shared fixtures: fresh real databases for every test module.

PostgreSQL comes from ``$ADI_TEST_DB_URL`` (an admin URL), else the local
server on 127.0.0.1:5432, else a testcontainers PostgreSQL when Docker runs.
Each database is created for its tests and dropped afterwards, so parallel
runs never collide.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

#: The OMERO double's fixture (``omero_double``), for every test module.
pytest_plugins = ["tests.omero_double.fixture"]

LOCAL_ADMIN_URLS = (
    "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
    "postgresql+psycopg2://root@127.0.0.1:5432/postgres",
)


def _reachable(url: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    explicit = os.environ.get("ADI_TEST_DB_URL")
    if explicit:
        yield explicit
        return
    for url in LOCAL_ADMIN_URLS:
        if _reachable(url):
            yield url
            return
    try:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine") as container:
            yield container.get_connection_url()
    except Exception as exc:  # no Docker either: this is a broken test machine
        pytest.fail(f"no PostgreSQL for the tests (set ADI_TEST_DB_URL): {exc}")


@pytest.fixture(scope="session")
def make_pg_database(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases; all are dropped at the end."""
    # pre-ping: a test may restart the server while this engine idles
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    created: list[str] = []

    def make() -> str:
        name = f"adi_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as connection:
        for name in created:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def pg_url(make_pg_database: Callable[[], str]) -> str:
    """One fresh PostgreSQL database per test module."""
    return make_pg_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'orders.sqlite'}"


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind; tests using it run on both."""
    if request.param == "postgres":
        return request.getfixturevalue("make_pg_database")()
    return f"sqlite:///{tmp_path / 'orders.sqlite'}"


@pytest.fixture(autouse=True)
def _clean_adi_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without the site's settings leaking in from the shell."""
    for name in (
        "INGEST_TRACKING_DB_URL", "ADI_SETTINGS", "ADI_RUN_MIGRATIONS", "ADI_ALLOW_AUTO_STAMP",
        "OMERO_HOST", "OMERO_PORT", "OMERO_USER", "OMERO_PASSWORD", "PODMAN_USERNS_MODE",
        "USE_REGISTER_ZARR", "CONTAINER_HOST", "PROCESSED_DATA_FOLDER", "SQLALCHEMY_URL",
        "PODMAN_BIND_RETRY_ATTEMPTS", "PODMAN_BIND_RETRY_DELAY_SECONDS", "BIOMERO_SHALLOW_ZARR",
    ):
        monkeypatch.delenv(name, raising=False)
