"""Daemon processes watching one folder on one PostgreSQL database: each file
becomes one order and runs once, through restarts and kills."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from omero_adi.settings import build_settings
from omero_adi.store.session import open_store
from tests.helpers import wait_for
from tests.test_daemon_processes import Daemons
from tests.watch_helpers import write


@pytest.fixture
def daemons(make_pg_database: Any, tmp_path: Path) -> Iterator[tuple[sa.Engine, Path, Daemons]]:
    url = make_pg_database()
    base = tmp_path / "data"
    (base / "incoming").mkdir(parents=True)
    engine = open_store(build_settings({"ingest_tracking_db": url}, {}))
    running = Daemons(url, base, tmp_path / "runs.txt", tmp_path)
    yield engine, base / "incoming", running
    running.stop_all()
    engine.dispose()


def _events(engine: sa.Engine, stage: str) -> list[tuple[str, str]]:
    """(file, uuid) of every event of ``stage``."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT files, uuid FROM imports WHERE stage = :s"),
                                  {"s": stage})
        return [(json.loads(files)[0], uuid) for files, uuid in rows]


def _scanned_by(engine: sa.Engine, pid: int) -> bool:
    """True once the process ``pid`` recorded a scan (owners are ``host:pid:token``)."""
    with engine.connect() as connection:
        return bool(connection.execute(sa.text(
            "SELECT count(*) FROM adi_watch_scans WHERE daemon LIKE :owner"),
            {"owner": f"%:{pid}:%"}).scalar_one())


def test_daemons_watching_one_folder_order_and_run_each_file_once_through_a_kill(
        daemons: tuple[sa.Engine, Path, Daemons]) -> None:
    engine, incoming, running = daemons
    first, second = (running.start("--watch", str(incoming)) for _ in range(2))
    files = [write(incoming / f"d{n % 5}" / f"{n:03d}.tif") for n in range(60)]
    wait_for(lambda: len(_events(engine, "Import Completed")) == 60, timeout=120,
             what="the first 60 files to be imported")
    first.send_signal(signal.SIGKILL)  # no goodbye (nothing was running)
    second.send_signal(signal.SIGTERM)
    for process in (first, second):
        process.wait(timeout=30)
    fresh = running.start("--watch", str(incoming))  # knows the folder only from the database
    wait_for(lambda: _scanned_by(engine, fresh.pid), timeout=60, what="the fresh daemon's scan")
    files += [write(incoming / f"d{n % 5}" / f"{n:03d}.tif") for n in range(60, 120)]
    wait_for(lambda: len(_events(engine, "Import Completed")) == 120, timeout=120,
             what="all 120 files to be imported")
    pending = _events(engine, "Import Pending")
    assert sorted(path for path, _ in pending) == sorted(map(str, files)), "one order per file"
    assert sorted(running.runs().values()) == [1] * 120, "each order ran once"
    with engine.connect() as connection:
        ledger = connection.execute(sa.text(
            "SELECT count(*), count(DISTINCT uuid) FROM adi_watch_units")).one()
    assert tuple(ledger) == (120, 120)
