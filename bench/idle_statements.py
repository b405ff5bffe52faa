"""Statements an idle daemon sends per minute: every cursor execute of the daemon's
engine is counted in the daemon itself (the LISTEN connection sends one
statement when it connects, and nothing after).

Run: python -m bench.idle_statements [SECONDS]   (default 180)
Target: <= 4 statements per minute with the default settings.
"""

from __future__ import annotations

import json
import sys
import time

from bench.common import daemon, sample_file, scratch_database, table, verdict
from bench.pickup_latency import wait_completed
from tests.helpers import insert_order

#: Seconds the daemon may take to go back to sleep after the warm-up order.
IDLE_TIMEOUT = 30.0


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 180.0
    with scratch_database() as (url, engine), sample_file() as path:
        with daemon(url, path.parent) as running:
            insert_order(engine, "warm-up", [str(path)])  # one order, then silence
            wait_completed(engine, "warm-up")
            # The window opens once the daemon sleeps with the order's statements all sent.
            running.expect(lambda line: line.startswith("idle ") and int(line.split()[1]) >= 1,
                           IDLE_TIMEOUT, "the daemon going idle after the warm-up order")
            window_start = time.time()
            time.sleep(seconds)  # the window measured
            window_end = time.time()
        statements = [s for t, s in json.loads(running.counts.read_text())["statements"]
                      if window_start <= t <= window_end]
    per_minute = len(statements) * 60 / seconds
    table(f"idle daemon over {seconds:.0f} s (default settings)", [
        ("statements sent", str(len(statements)), "", ""),
        ("statements per minute", f"{per_minute:.1f}", "<= 4", verdict(per_minute <= 4)),
    ])
    for statement in sorted(set(statements)):
        print(f"  {statements.count(statement)} x {statement}")


if __name__ == "__main__":
    main()
