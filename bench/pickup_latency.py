"""Pickup latency: Pending row -> Started row, orders inserted one by one by plain SQL.

Run: python -m bench.pickup_latency [ORDERS]
Target: p50 <= 20 ms, p99 <= 100 ms (the earlier ADI: p50 ~2.1 s, worst ~4.9 s).
"""

from __future__ import annotations

import sys

import sqlalchemy as sa

from bench.common import (
    daemon, percentile, pickup_latencies, sample_file, scratch_database, table, verdict,
)
from omero_adi.store.models import STAGE_IMPORTED
from tests.helpers import current_stage, insert_order, wait_for


def wait_completed(engine: sa.Engine, uuid: str, timeout: float = 30) -> None:
    wait_for(lambda: current_stage(engine, uuid) == STAGE_IMPORTED, timeout,
             what=f"order {uuid} to complete")


def measure(engine: sa.Engine, url: str, count: int, prefix: str) -> list[float]:
    """Insert ``count`` orders one at a time (each after the previous one completed)."""
    with sample_file() as path, daemon(url, path.parent):
        uuids = []
        for n in range(count + 1):
            uuid = f"{prefix}-{n}"
            insert_order(engine, uuid, [str(path)])
            wait_completed(engine, uuid)
            if n:  # the first order only proves the daemon is listening
                uuids.append(uuid)
        return pickup_latencies(engine, uuids)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with scratch_database() as (url, engine):
        latencies = measure(engine, url, count, "pickup")
    p50, p99, worst = percentile(latencies, 50), percentile(latencies, 99), max(latencies)
    table(f"pickup latency, {len(latencies)} orders (database timestamps)", [
        ("p50", f"{p50:.1f} ms", "<= 20 ms", verdict(p50 <= 20)),
        ("p99", f"{p99:.1f} ms", "<= 100 ms", verdict(p99 <= 100)),
        ("worst", f"{worst:.1f} ms", "(earlier ADI: ~4900 ms)", ""),
    ])


if __name__ == "__main__":
    main()
