"""One guard pass at a time across daemons, under a lease in ADI's own table
(``adi_leases``) rather than a connection's lock: one daemon takes it, renews
it between batches holding no connection, and gives it up; another takes it
over only once it has expired; a pass that lost it stops."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa

from omero_adi.notify import guard as guard_module
from omero_adi.notify.guard import LEASE, Guard
from omero_adi.settings import Settings, build_settings
from omero_adi.store.db import make_engine
from omero_adi.store.lease import Lease
from omero_adi.store.session import open_store
from tests.helpers import NoWaitStop, wait_for

FILES = 5
RECORD = sa.text(
    "INSERT INTO adi_guard_files (uuid, path, fileset_id, image_ids, plate_ids, size, "
    "mtime_ns, inode) VALUES ('order-1', :path, :fileset_id, '[1]', '[]', :size, :mtime_ns, "
    ":inode)")


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """A migrated database whose guard watches ``FILES`` files of the share."""
    share = tmp_path / "share"
    share.mkdir()
    settings = build_settings({"ingest_tracking_db": db_url, "base_dir": str(share)}, {})
    engine = open_store(settings)
    rows = []
    for number in range(FILES):
        path = share / f"image-{number}.tif"
        path.write_bytes(b"pixels")
        found = path.stat()
        rows.append({"path": str(path), "fileset_id": number, "size": found.st_size,
                     "mtime_ns": found.st_mtime_ns, "inode": found.st_ino})
    with engine.begin() as connection:
        connection.execute(RECORD, rows)
    engine.dispose()
    return settings


@pytest.fixture
def engines(settings: Settings) -> Iterator[Callable[[], sa.Engine]]:
    """Engines of their own, one per daemon, disposed at the end."""
    made: list[sa.Engine] = []

    def make() -> sa.Engine:
        made.append(make_engine(settings.ingest_tracking_db))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


def daemon(settings: Settings, engines: Callable[[], sa.Engine], name: str) -> Guard:
    return Guard(settings, engines(), None, owner=name)


def holder(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return connection.execute(sa.text(
            "SELECT holder FROM adi_leases WHERE name = 'guard'")).scalar_one_or_none()


def checked(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text(
            "SELECT count(*) FROM adi_guard_files WHERE checked_at IS NOT NULL")).scalar_one())


def expire_in(engine: sa.Engine, seconds: int) -> None:
    """Move the lease's expiry to ``seconds`` from now, as if time had passed
    (negative: its holder's time ran out; it died, or hangs)."""
    later = (f"CURRENT_TIMESTAMP + make_interval(secs => {seconds})"
             if engine.dialect.name == "postgresql" else f"datetime('now', '{seconds} seconds')")
    with engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE adi_leases SET expires_at = {later}"))


def seconds_left(engine: sa.Engine) -> float:
    """Until the lease expires, by the database's clock."""
    left = ("extract(epoch FROM expires_at - CURRENT_TIMESTAMP)"
            if engine.dialect.name == "postgresql"
            else "(julianday(expires_at) - julianday('now')) * 86400")
    with engine.connect() as connection:
        return float(connection.execute(sa.text(f"SELECT {left} FROM adi_leases")).scalar_one())


def test_racing_daemons_get_the_lease_once_and_its_expiry_once(
    engines: Callable[[], sa.Engine],
) -> None:
    def race(names: list[str]) -> list[str]:
        leases = [Lease(engines(), "guard", name, LEASE) for name in names]
        start = threading.Barrier(len(leases))
        won: list[str] = []

        def take(lease: Lease) -> None:
            start.wait()
            if lease.take():
                won.append(lease.holder)

        threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return won

    [first] = race([f"daemon-{n}" for n in range(8)])
    assert holder(engines()) == first
    assert race([f"late-{n}" for n in range(8)]) == []  # held, not expired
    expire_in(engines(), -3600)
    [second] = race([f"late-{n}" for n in range(8)])
    assert holder(engines()) == second


def test_a_second_daemon_skips_while_a_pass_is_under_way_holding_no_connection(
    settings: Settings, engines: Callable[[], sa.Engine], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guard_module, "BATCH", 2)
    first, second = daemon(settings, engines, "daemon-a"), daemon(settings, engines, "daemon-b")
    meanwhile: list[tuple[int, bool, list[float]]] = []

    def between_batches() -> None:
        other = NoWaitStop()
        meanwhile.append((first.engine.pool.checkedout(),  # type: ignore[attr-defined]
                          second._paced_pass(other, interval=10.0), other.waits))

    stop = NoWaitStop(between_batches)
    assert first._paced_pass(stop, interval=10.0)
    assert stop.waits == [4.0, 4.0, 2.0]
    # Between batches: not one connection out of the pool, and the other skipped.
    assert meanwhile == [(0, False, [])] * 3
    assert holder(first.engine) is None  # given up at the end
    later = NoWaitStop()
    assert second._paced_pass(later, interval=10.0) and later.waits == [4.0, 4.0, 2.0]


def test_an_expired_lease_is_taken_over(
    settings: Settings, engines: Callable[[], sa.Engine],
) -> None:
    guard = daemon(settings, engines, "daemon-a")
    assert Lease(engines(), "guard", "gone-daemon", LEASE).take()
    stop = NoWaitStop()
    assert not guard._paced_pass(stop, interval=10.0)
    assert stop.waits == [] and checked(guard.engine) == 0
    expire_in(guard.engine, -3600)
    assert guard._paced_pass(stop, interval=10.0)
    assert stop.waits == [10.0] and checked(guard.engine) == FILES


def test_a_pass_that_lost_its_lease_stops_at_once(
    settings: Settings, engines: Callable[[], sa.Engine], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guard_module, "BATCH", 2)
    stuck = daemon(settings, engines, "daemon-a")

    def taken_over() -> None:
        expire_in(stuck.engine, -3600)
        assert Lease(engines(), "guard", "daemon-b", LEASE).take()

    stop = NoWaitStop(taken_over)
    assert not stuck._paced_pass(stop, interval=10.0)
    assert stop.waits == [4.0]  # the first batch, then its renewal failed
    assert checked(stuck.engine) == 2
    assert holder(stuck.engine) == "daemon-b"  # giving up did not take it from b


def test_a_long_wait_renews_the_lease_on_the_way(
    settings: Settings, engines: Callable[[], sa.Engine],
) -> None:
    guard = daemon(settings, engines, "daemon-a")
    left: list[float] = []

    def time_passes() -> None:
        left.append(seconds_left(guard.engine))
        expire_in(guard.engine, 60)  # most of the lease used up by this slice of the wait

    stop = NoWaitStop(time_passes)
    every = guard_module.RENEW_EVERY
    assert guard._paced_pass(stop, interval=2.5 * every)  # one batch: a single long wait
    assert stop.waits == [every, every, 0.5 * every]
    assert left == [pytest.approx(LEASE, abs=5)] * 3  # renewed to a whole lease each time


def test_a_skipped_daemon_looks_again_when_the_lease_could_have_run_out(
    settings: Settings, engines: Callable[[], sa.Engine],
) -> None:
    assert Lease(engines(), "guard", "restarted-daemons-predecessor", LEASE).take()
    guard = Guard(settings, engines(), None)
    stop = NoWaitStop()
    stop.during = stop.set
    guard.run(stop)
    assert stop.waits == [pytest.approx(LEASE, abs=5)]  # not a whole guard_interval


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # the server drops them
def test_the_lease_outlives_connections_the_server_dropped(
    settings: Settings, engines: Callable[[], sa.Engine], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a server restart, a pooler or an idle-session timeout would: a
    session's advisory lock would go with them, and a second pass could start."""
    monkeypatch.setattr(guard_module, "BATCH", 2)
    first, second = daemon(settings, engines, "daemon-a"), daemon(settings, engines, "daemon-b")
    admin = engines()

    def others(select: str) -> int:
        """``select`` over the other clients of this database (a fresh statistics
        snapshot each time)."""
        with admin.connect() as connection:
            return int(connection.execute(sa.text(
                f"SELECT {select} FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")).scalar_one())

    meanwhile: list[tuple[int, bool]] = []

    def connections_dropped() -> None:
        dropped = others("count(pg_terminate_backend(pid))")
        wait_for(lambda: others("count(*)") == 0, what="the dropped connections to end")
        meanwhile.append((dropped, second._paced_pass(NoWaitStop(), interval=10.0)))

    stop = NoWaitStop(connections_dropped)
    assert first._paced_pass(stop, interval=10.0)
    assert stop.waits == [4.0, 4.0, 2.0] and checked(first.engine) == FILES
    assert [skipped for _, skipped in meanwhile] == [False] * 3
    assert all(dropped >= 1 for dropped, _ in meanwhile)  # first's pooled one, at least
