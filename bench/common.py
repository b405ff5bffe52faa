"""Shared parts of the benchmarks: a scratch database, a daemon process, tables.

Every figure comes from the database's own timestamps (``imports.timestamp``
is ``now()`` of the transaction that wrote the row). Orders are written and
waited for with the tests' helpers (``tests.helpers.insert_order``,
``wait_for``, ``current_stage``).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from omero_adi.settings import build_settings
from omero_adi.store.session import open_store

ADMIN_URL = os.environ.get("ADI_BENCH_DB_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent


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


@contextmanager
def daemon(url: str, base_dir: Path, workers: int = 4, **settings: object) -> Iterator[Path]:
    """A daemon process with a zero-cost importer; yields its statement-count file."""
    counts = base_dir / f"statements-{uuid.uuid4().hex[:6]}.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.zero_cost_daemon", url, str(base_dir), str(workers),
         str(counts), json.dumps(settings)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        ready = process.stderr.readline()  # the daemon says when it listens
        if b"ready" not in ready:
            raise RuntimeError(f"daemon did not start: {ready!r}")
        yield counts
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


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
