"""Shared parts of the watch-folder tests: settings with rules, a clock the
test moves, what the order store holds for a path, and the real
:class:`BlitzServer` talking to the OMERO double."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from omero_adi.omero.blitz import BlitzServer
from omero_adi.omero.user_session import BlitzUserSession
from omero_adi.omero.boundary import OmeroServer
from omero_adi.settings import Settings, build_settings
from omero_adi.watch.runner import WatchRunner
from tests.omero_double.fixture import OmeroDouble


@dataclass
class Clock:
    """The watcher's clock, moved by the test instead of sleeping."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def watch_settings(url: str, root: Path, *rules: dict[str, Any], **extra: Any) -> Settings:
    return build_settings({"ingest_tracking_db": url, "base_dir": str(root),
                           "watch": list(rules), **extra}, {})


def runner(settings: Settings, engine: sa.Engine, clock: Clock,
           server: OmeroServer | None = None) -> WatchRunner:
    return WatchRunner(settings, engine, server, clock=clock)


def scan_all(watcher: WatchRunner) -> None:
    for state in watcher.rules.values():
        watcher.scan(state)


def orders_for(engine: sa.Engine, path: Path | str) -> list[Any]:
    """Every ``imports`` row whose files are exactly ``[path]``."""
    with engine.connect() as connection:
        return list(connection.execute(
            sa.text("SELECT uuid, stage, group_name, user_name, destination_id, "
                    "destination_type, files, description, preprocessing_id FROM imports "
                    "WHERE files = :files ORDER BY id"),
            {"files": json.dumps([str(path)], ensure_ascii=False)}))


def ledger_rows(engine: sa.Engine, rule: str) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(
            sa.text("SELECT path, state, uuid, description, reported_fingerprint "
                    "FROM adi_watch_units WHERE rule = :rule ORDER BY path"), {"rule": rule}))


def write(path: Path, data: bytes = b"pixels") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class CountingBlitz(BlitzServer):
    """The real BlitzServer (omero-py and ezomero over Ice), counting the user
    sessions the watcher asks for: each is a login attempt on a real server."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.sessions_asked = 0

    def user_session(self, user: str, group: str, ttl_ms: int) -> BlitzUserSession:
        self.sessions_asked += 1
        return super().user_session(user, group, ttl_ms)


def omero_settings(double: OmeroDouble) -> dict[str, Any]:
    """The settings keys that point the daemon at the double, as it printed them."""
    env = double.env
    return {"omero_host": env["OMERO_HOST"], "omero_port": int(env["OMERO_PORT"]),
            "omero_user": env["OMERO_USER"], "omero_password": env["OMERO_PASSWORD"]}


@pytest.fixture
def blitz(omero_double: OmeroDouble) -> Iterator[CountingBlitz]:
    """The watcher's OMERO: BlitzServer against a fresh double (its default world)."""
    server = CountingBlitz(build_settings(omero_settings(omero_double), {}))
    try:
        yield server
    finally:
        server.close()


def user_named(double: OmeroDouble, name: str) -> dict[str, Any]:
    return next(u for u in double.state()["users"].values() if u["name"] == name)


def group_named(double: OmeroDouble, name: str) -> dict[str, Any]:
    return next(g for g in double.state()["groups"].values() if g["name"] == name)
