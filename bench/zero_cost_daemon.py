"""A real daemon whose importer does nothing, counting every SQL statement it sends.

Arguments: DB_URL BASE_DIR WORKERS COUNT_FILE SETTINGS_JSON. Prints ``ready`` on
stderr once it listens for new orders; on SIGTERM writes
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

    def zero_cost(ctx: OrderContext) -> str:
        return "imported (zero-cost stand-in)"

    daemon = Daemon(settings, engine, zero_cost)
    daemon.install_signal_handlers()
    loop = threading.Thread(target=daemon.run, name="daemon")
    loop.start()
    listener = daemon.poller.listener
    while listener is not None and listener.connection is None and loop.is_alive():
        time.sleep(0.01)  # until the LISTEN connection is up (PostgreSQL)
    print("ready", file=sys.stderr, flush=True)
    while loop.is_alive():
        loop.join(0.5)  # the main thread stays free for the SIGTERM handler
    with open(count_file, "w") as out:
        json.dump({"statements": statements}, out)


if __name__ == "__main__":
    main()
