"""Small helpers shared by the daemon tests and the benchmarks (bench/)."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import sqlalchemy as sa

from omero_adi.daemon import Daemon
from omero_adi.pipeline import OrderHandler
from omero_adi.settings import Settings

INSERT = sa.text(
    "INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, "
    "uuid, files, file_names, preprocessing_id) VALUES (:group, :user, :dest, :type, "
    "'Import Pending', :uuid, :files, :file_names, :pre)"
)


def insert_order(
    target: sa.Engine | sa.Connection, uuid: str, files: Any, **fields: Any
) -> None:
    """A Pending order by plain SQL, as scripts and the web plugin write them:
    in a transaction of its own, or in the caller's when given a connection."""
    values = {
        "group": "lab", "user": "alice", "dest": "1", "type": "Dataset", "uuid": uuid,
        "files": files if isinstance(files, str) else json.dumps(files),
        "file_names": None, "pre": None,
    }
    values.update(fields)
    if isinstance(target, sa.Connection):
        target.execute(INSERT, values)
        return
    with target.begin() as connection:
        connection.execute(INSERT, values)


def stages(engine: sa.Engine, uuid: str) -> list[tuple[str, str | None]]:
    with engine.connect() as connection:
        return [
            (r.stage, r.description)
            for r in connection.execute(
                sa.text("SELECT stage, description FROM imports WHERE uuid = :u ORDER BY id"),
                {"u": uuid},
            )
        ]


def legacy_retry(engine: sa.Engine, uuid: str) -> None:
    """The operators' retry recipe of the earlier ADI: every row back to Pending."""
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE imports SET stage = 'Import Pending' WHERE uuid = :u"), {"u": uuid})


def current_stage(engine: sa.Engine, uuid: str) -> str | None:
    history = stages(engine, uuid)
    return history[-1][0] if history else None


def free_port() -> int:
    """A local TCP port nothing listens on once the probe socket closes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class NoWaitStop(threading.Event):
    """A stop event that records how long it is asked to wait, without waiting;
    ``during`` runs in place of each wait (what happens meanwhile; it may set
    the event, which ends the wait as stopped)."""

    def __init__(self, during: Callable[[], object] = lambda: None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.during = during

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        self.during()
        return self.is_set()


@contextmanager
def running_daemon(
    settings: Settings, engine: sa.Engine, handler: OrderHandler, **options: Any
) -> Iterator[Daemon]:
    daemon = Daemon(settings, engine, handler, **options)
    thread = threading.Thread(target=daemon.run, name="daemon-under-test")
    thread.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "daemon did not stop"
