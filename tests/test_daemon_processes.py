"""Several daemon processes on one PostgreSQL database: real races, real kills."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from omero_adi.settings import build_settings
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED, STAGE_INGEST_STARTED
from omero_adi.store.session import open_store
from tests.helpers import current_stage, insert_order, stages, wait_for

ROOT = Path(__file__).resolve().parent.parent


class Daemons:
    """Starts tests/daemon_proc.py processes and stops whatever is left."""

    def __init__(self, url: str, base: Path, record: Path, log_dir: Path):
        self.url, self.base, self.record, self.log_dir = url, base, record, log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"daemon-{len(self.processes)}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "daemon_proc.py"), self.url, str(self.base),
             str(self.record), *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    def start_blocked_order(self, engine: sa.Engine, uuid: str) -> subprocess.Popen[bytes]:
        """A daemon whose handler never finishes, busy with order ``uuid``."""
        process = self.start("--block-on", str(self.log_dir / "never"))
        insert_order(engine, uuid, [str(self.base / "image.tif")])
        wait_for(lambda: self.runs()[uuid] == 1, what="the order to start")
        return process

    def runs(self) -> collections.Counter[str]:
        """How often the handler ran each order, across all processes."""
        if not self.record.exists():
            return collections.Counter()
        return collections.Counter(line.split()[1] for line in self.record.read_text().splitlines())


@pytest.fixture
def setup(make_pg_database, tmp_path: Path) -> Iterator[tuple[sa.Engine, Path, Daemons]]:
    url = make_pg_database()
    base = tmp_path / "data"
    base.mkdir()
    (base / "image.tif").write_bytes(b"pixels")
    engine = open_store(build_settings({"ingest_tracking_db": url}, {}))
    daemons = Daemons(url, base, tmp_path / "runs.txt", tmp_path)
    yield engine, base, daemons
    daemons.stop_all()
    engine.dispose()


def _count(engine: sa.Engine, stage: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT count(*) FROM imports WHERE stage = :s"), {"s": stage}).scalar_one()


def test_four_daemons_run_each_of_300_orders_exactly_once(setup) -> None:
    engine, base, daemons = setup
    for _ in range(4):
        daemons.start("--workers", "3")
    orders = [f"race-{n:03d}" for n in range(300)]
    for uuid in orders:
        insert_order(engine, uuid, [str(base / "image.tif")])
    wait_for(lambda: _count(engine, STAGE_IMPORTED) == 300, timeout=120, what="300 completions")
    runs = daemons.runs()
    assert set(runs) == set(orders)
    assert max(runs.values()) == 1, [u for u, n in runs.items() if n > 1]
    assert _count(engine, STAGE_INGEST_STARTED) == 300
    pids = {line.split()[0] for line in daemons.record.read_text().splitlines()}
    assert len(pids) > 1, "the race needs more than one daemon taking part"


def test_kill_9_mid_order_then_restart_finalises_it_without_running_it_again(setup) -> None:
    engine, base, daemons = setup
    first = daemons.start_blocked_order(engine, "victim")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert current_stage(engine, "victim") == STAGE_INGEST_STARTED
    daemons.start()  # same host, new process: sees the dead pid at once
    wait_for(lambda: current_stage(engine, "victim") == STAGE_INGEST_FAILED, what="recovery")
    description = stages(engine, "victim")[-1][1] or ""
    assert description.startswith("interrupted") and "retry" in description
    insert_order(engine, "next", [str(base / "image.tif")])
    wait_for(lambda: current_stage(engine, "next") == STAGE_IMPORTED, what="service resumed")
    assert daemons.runs()["victim"] == 1


def test_sigterm_during_a_long_order_records_interrupted_by_shutdown(setup) -> None:
    engine, base, daemons = setup
    daemon = daemons.start_blocked_order(engine, "long")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    stage, description = stages(engine, "long")[-1]
    assert stage == STAGE_INGEST_FAILED and (description or "").startswith("interrupted by shutdown")


@pytest.mark.parametrize(("stuck", "first", "second"), [
    (False, signal.SIGTERM, signal.SIGTERM),
    (True, signal.SIGINT, signal.SIGINT),
    (True, signal.SIGTERM, signal.SIGINT),
])
def test_a_second_signal_stops_running_orders_at_once(setup, stuck, first, second) -> None:
    """shutdown_timeout is two minutes: only the second signal can end it sooner.
    A stuck handler never winds up; the daemon records its order itself."""
    engine, base, daemons = setup
    log = daemons.log_dir / "daemon-0.log"
    daemon = daemons.start("--block-on", str(daemons.log_dir / "never"), "--workers", "2",
                           "--shutdown-timeout", "120", *(["--stuck"] if stuck else []))
    for uuid in ("first", "second"):
        insert_order(engine, uuid, [str(base / "image.tif")])
    wait_for(lambda: set(daemons.runs()) == {"first", "second"}, what="both orders to run")
    daemon.send_signal(first)
    wait_for(lambda: "stopping: no new orders" in log.read_text(), what="the first signal")
    daemon.send_signal(second)
    assert daemon.wait(timeout=30) == 0
    for uuid in ("first", "second"):
        stage, description = stages(engine, uuid)[-1]
        assert stage == STAGE_INGEST_FAILED
        assert description is not None and description.startswith("interrupted")
        assert description.endswith(f"retry with `omero-adi retry {uuid}`")
    with engine.connect() as connection:
        open_claims = connection.execute(
            sa.text("SELECT count(*) FROM adi_queue WHERE finished_at IS NULL")).scalar_one()
    assert open_claims == 0
