"""Throughput: 2,000 orders inserted at once by plain SQL, 4 workers, zero-cost importer.

Run: python -m bench.throughput [ORDERS]
Target: >= 50 orders/s sustained (first Started row to last Completed row).
"""

from __future__ import annotations

import sys

import sqlalchemy as sa

from bench.common import daemon, sample_file, scratch_database, table, verdict
from tests.helpers import insert_order, wait_for


def completed(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text(
            "SELECT count(*) FROM imports WHERE stage = 'Import Completed'")).scalar_one())


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with scratch_database() as (url, engine), sample_file() as path:
        with daemon(url, path.parent, workers=4):
            with engine.begin() as connection:  # all at once: one transaction
                for n in range(count):
                    insert_order(connection, f"bulk-{n}", [str(path)])
            wait_for(lambda: completed(engine) >= count, timeout=600, what=f"{count} orders")
        with engine.connect() as connection:
            row = connection.execute(sa.text(
                "SELECT extract(epoch FROM max(timestamp) FILTER (WHERE stage = 'Import Completed')"
                " - min(timestamp) FILTER (WHERE stage = 'Import Started')) AS seconds, "
                "count(*) FILTER (WHERE stage = 'Import Completed') AS completed, "
                "count(*) FILTER (WHERE stage = 'Import Started') AS started FROM imports")).one()
    rate = row.completed / float(row.seconds)
    table(f"throughput, {count} orders, 4 workers (database timestamps)", [
        ("orders completed", str(row.completed), str(count), verdict(row.completed == count)),
        ("Started events", str(row.started), f"{count} (once each)", verdict(row.started == count)),
        ("elapsed", f"{float(row.seconds):.1f} s", "", ""),
        ("throughput", f"{rate:.0f} orders/s", ">= 50 orders/s", verdict(rate >= 50)),
    ])


if __name__ == "__main__":
    main()
