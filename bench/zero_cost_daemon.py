"""A real daemon whose importer does nothing, counting every SQL statement it sends.

Arguments: DB_URL BASE_DIR WORKERS COUNT_FILE SETTINGS_JSON. Prints ``ready`` on
stderr once it listens for new orders (or ``failed: …`` and exits 1 when it does
not within :data:`LISTEN_TIMEOUT` seconds), and ``idle N`` each time its loop goes
to sleep with no order running and nothing to wake it, N orders done; on SIGTERM writes
``{"statements": [[t, sql], ...]}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from sqlalchemy import event

from omero_adi.daemon import Daemon
from omero_adi.pipeline import OrderContext
from omero_adi.settings import build_settings
from omero_adi.store.session import open_store

#: Seconds the daemon's LISTEN connection may take to come up.
LISTEN_TIMEOUT = 30.0


def main() -> None:
    url, base_dir, workers, count_file, extra = sys.argv[1:6]
    settings = build_settings(
        {"ingest_tracking_db": url, "base_dir": base_dir, "max_workers": int(workers),
         **json.loads(extra)}, {})
    engine = open_store(settings)
    statements: list[tuple[float, str]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append((time.time(), " ".join(statement.split())[:70]))

    done = 0

    def zero_cost(ctx: OrderContext) -> str:
        nonlocal done
        done += 1
        return "imported (zero-cost stand-in)"

    daemon = Daemon(settings, engine, zero_cost)
    sleep = daemon.poller.wait

    def wait(timeout: float) -> bool:
        # No order running and nothing to wake the loop (a finished worker, a
        # notification): it goes to sleep, every statement of the orders sent.
        if not daemon.running and not daemon.poller.selector.select(0):
            print(f"idle {done}", file=sys.stderr, flush=True)
        return sleep(timeout)

    daemon.poller.wait = wait  # type: ignore[method-assign]
    daemon.install_signal_handlers()
    loop = threading.Thread(target=daemon.run, name="daemon")
    loop.start()
    listener = daemon.poller.listener
    deadline = time.monotonic() + LISTEN_TIMEOUT
    while listener is not None and listener.connection is None and loop.is_alive():
        if time.monotonic() > deadline:
            print(f"failed: the LISTEN connection was not up within {LISTEN_TIMEOUT:.0f} s",
                  file=sys.stderr, flush=True)
            daemon.stop()
            loop.join(LISTEN_TIMEOUT)
            sys.exit(1)
        time.sleep(0.01)  # until the LISTEN connection is up (PostgreSQL)
    if not loop.is_alive():
        print("failed: the daemon's loop ended before it listened", file=sys.stderr, flush=True)
        sys.exit(1)
    print("ready", file=sys.stderr, flush=True)
    while loop.is_alive():
        loop.join(0.5)  # the main thread stays free for the SIGTERM handler
    with open(count_file, "w") as out:
        json.dump({"statements": statements}, out)


if __name__ == "__main__":
    main()
