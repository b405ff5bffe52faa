"""Pickup latency with 1,000 vs 1,000,000 historical rows in ``imports``.

Run: python -m bench.history_latency [ORDERS]
History: finished orders of four rows each (Pending, Started, Preprocessing,
Completed), half of them with finished queue entries (processed by this ADI)
and half without (processed by the earlier ADI).
Target: p50 with 1,000,000 rows within 2x of p50 with 1,000.
"""

from __future__ import annotations

import sys

import sqlalchemy as sa

from bench.common import percentile, scratch_database, table, verdict
from bench.pickup_latency import measure

HISTORY = sa.text("""
INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid,
                     timestamp, files, file_names)
SELECT 'lab', 'user' || (n % 50), (n % 900)::text, 'Dataset',
       (ARRAY['Import Pending', 'Import Started', 'Import Preprocessing',
              'Import Completed'])[s], 'hist-' || n, now() - interval '400 days' + n * interval '1 second',
       '["/data/history/' || n || '.tif"]', '["' || n || '.tif"]'
FROM generate_series(1, :orders) AS n, generate_series(1, 4) AS s
ORDER BY n, s
""")
QUEUE_HISTORY = sa.text("""
INSERT INTO adi_queue (event_id, uuid, claimed_by, claimed_at, heartbeat_at, finished_at, outcome)
SELECT id, uuid, 'old-host:1:x', timestamp, timestamp, timestamp, 'completed'
FROM imports WHERE stage = 'Import Pending' AND substr(uuid, 6)::int % 2 = 0
ON CONFLICT (event_id) DO UPDATE SET claimed_by = EXCLUDED.claimed_by,
    finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome
""")


def p50_with_history(rows: int, orders: int) -> float:
    with scratch_database() as (url, engine):
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE imports DISABLE TRIGGER adi_imports_pending"))
            connection.execute(HISTORY, {"orders": rows // 4})
            connection.execute(QUEUE_HISTORY)
            connection.execute(sa.text("ALTER TABLE imports ENABLE TRIGGER adi_imports_pending"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE"))
        latencies = measure(engine, url, orders, f"h{rows}")
    return percentile(latencies, 50)


def main() -> None:
    orders = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    small = p50_with_history(1_000, orders)
    large = p50_with_history(1_000_000, orders)
    ratio = large / small
    table("pickup latency against history size (p50, database timestamps)", [
        ("1,000 rows", f"{small:.2f} ms", "", ""),
        ("1,000,000 rows", f"{large:.2f} ms", "", ""),
        ("ratio", f"{ratio:.2f}x", "<= 2x", verdict(ratio <= 2)),
    ])


if __name__ == "__main__":
    main()
