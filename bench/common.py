"""Shared parts of the benchmarks: a scratch database, a daemon process, tables.

Every figure comes from the database's own timestamps (``imports.timestamp``
is ``now()`` of the transaction that wrote the row). Orders are written and
waited for with the tests' helpers (``tests.helpers.insert_order``,
``wait_for``, ``current_stage``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from omero_adi.settings import build_settings
from omero_adi.store.session import open_store

ADMIN_URL = os.environ.get("ADI_BENCH_DB_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent
#: Seconds a daemon process may take to start listening, and to stop after SIGTERM.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


@contextmanager
def scratch_database() -> Iterator[tuple[str, sa.Engine]]:
    """A fresh, migrated database, dropped afterwards."""
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"adi_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = open_store(build_settings({"ingest_tracking_db": url}, {}))
    try:
        yield url, engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def sample_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="adi-bench-") as folder:
        path = Path(folder) / "image.tif"
        path.write_bytes(b"pixels")
        yield path


class DaemonProcess:
    """A daemon process (``bench.zero_cost_daemon``) and the lines it writes on
    stderr, read by a thread: the pipe never fills, and every wait has a deadline."""

    def __init__(self, process: subprocess.Popen[bytes], counts: Path):
        self.process, self.counts = process, counts
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.said: list[str] = []  # the lines read so far, for error messages
        threading.Thread(target=self._read, name="daemon-stderr", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)  # the daemon closed stderr: it has ended

    def expect(self, wanted: Callable[[str], bool], timeout: float, what: str) -> str:
        """The next line ``wanted`` accepts; RuntimeError naming ``what`` if the
        daemon ends or ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no sign of {what} within {timeout:.0f} s; "
                                   f"the daemon said: {self.said[-10:]!r}") from None
            if line is None:
                raise RuntimeError(f"no sign of {what}: the daemon ended (status "
                                   f"{self.process.wait()}); it said: {self.said[-10:]!r}")
            self.said.append(line)
            if wanted(line):
                return line

    def stop(self) -> None:
        """SIGTERM, then wait for the daemon to write its counts and end."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"the daemon did not stop within {STOP_TIMEOUT:.0f} s of "
                               f"SIGTERM (killed); it said: {self.said[-10:]!r}") from None


@contextmanager
def daemon(url: str, base_dir: Path, workers: int = 4,
           **settings: object) -> Iterator[DaemonProcess]:
    """A daemon process with a zero-cost importer, once it listens for orders."""
    counts = base_dir / f"statements-{uuid.uuid4().hex[:6]}.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.zero_cost_daemon", url, str(base_dir), str(workers),
         str(counts), json.dumps(settings)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    running = DaemonProcess(process, counts)
    try:
        running.expect(lambda line: line == "ready", START_TIMEOUT,
                       "the daemon listening for orders")
        yield running
    finally:
        running.stop()


def pickup_latencies(engine: sa.Engine, uuids: Sequence[str]) -> list[float]:
    """Milliseconds from each order's Pending row to its Started row."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT extract(epoch FROM s.timestamp - p.timestamp) * 1000 AS ms "
            "FROM imports p JOIN imports s ON s.uuid = p.uuid AND s.stage = 'Import Started' "
            "WHERE p.stage = 'Import Pending' AND p.uuid = ANY(:u)"), {"u": list(uuids)}).all()
    return [float(r.ms) for r in rows]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1] if len(ordered) > 1 else ordered[0]


def table(title: str, rows: Sequence[tuple[str, str, str, str]]) -> None:
    """Print results as: measure | value | target | verdict."""
    header = ("measure", "value", "target", "result")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    print(f"\n{title}")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
