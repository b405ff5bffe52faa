"""What a /metrics scrape costs with many in-place files recorded for the guard:
an hour of scrapes every 15 s, on a clock of its own (no waiting).

Run: python -m bench.metrics_scrape [FILES]   (default 1000000)
Target: the guard's counts read at most once a minute (60 count queries an
hour, not one per scrape); a scrape that does not count them takes
milliseconds, whatever the number of files.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from bench.common import scratch_database, table, verdict
from omero_adi.metrics import DaemonMetrics

#: Seconds between two scrapes (a common Prometheus scrape_interval).
SCRAPE_EVERY = 15.0
SCRAPES = 240  # an hour
FILL = sa.text(
    "INSERT INTO adi_guard_files (uuid, path, fileset_id, image_ids, plate_ids, size, mtime_ns, "
    "inode, state) SELECT 'order-' || (n / 100), '/data/f' || n || '.tif', n, '[1]', '[]', 1, 1, n, "
    "CASE WHEN n % 1000 = 0 THEN 'missing' ELSE 'ok' END FROM generate_series(1, :files) AS n")


def main() -> None:
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with scratch_database() as (_url, engine):
        with engine.begin() as connection:
            connection.execute(FILL, {"files": files})
            connection.execute(sa.text("ANALYZE adi_guard_files"))
        counted = 0

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            nonlocal counted
            counted += "FROM adi_guard_files" in statement

        sa.event.listen(engine, "before_cursor_execute", count)
        now = 0.0
        daemon = SimpleNamespace(engine=engine, running={}, progress={},
                                 running_lock=threading.Lock())
        metrics = DaemonMetrics(daemon, clock=lambda: now)  # type: ignore[arg-type]
        counting, cached = [], []
        for _ in range(SCRAPES):
            before = counted
            started = time.perf_counter()
            metrics.render()
            seconds = time.perf_counter() - started
            (counting if counted > before else cached).append(seconds * 1000)
            now += SCRAPE_EVERY
    spent = sum(counting) + sum(cached)
    table(f"an hour of /metrics scrapes every {SCRAPE_EVERY:.0f} s, {files} guarded files", [
        ("scrapes", str(SCRAPES), "", ""),
        ("scrapes that counted the guard's files", str(counted), "<= 60",
         verdict(counted <= 60)),
        ("a scrape that counts (median)", f"{statistics.median(counting):.1f} ms", "", ""),
        ("a scrape that does not (median)", f"{statistics.median(cached):.1f} ms", "< 10 ms",
         verdict(statistics.median(cached) < 10)),
        ("time spent scraping in the hour", f"{spent / 1000:.1f} s", "", ""),
    ])
    print(json.dumps({"files": files, "count_queries": counted,
                      "counting_ms": round(statistics.median(counting), 1),
                      "cached_ms": round(statistics.median(cached), 1),
                      "hour_s": round(spent / 1000, 1)}))


if __name__ == "__main__":
    main()
