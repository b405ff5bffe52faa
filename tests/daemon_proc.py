"""A daemon process for the multi-process tests, with a recording handler.

Usage: python tests/daemon_proc.py DB_URL BASE_DIR RECORD_FILE [--workers N]
       [--block-on PATH] [--stale-after S] [--poll S] [--shutdown-timeout S] [--stuck]
       [--watch FOLDER] [--settings JSON]

The handler appends ``<pid> <uuid>`` to RECORD_FILE (O_APPEND, one write per
line, so concurrent processes never interleave) and, with --block-on, waits
until PATH exists before completing. With --stuck it does not look at the
cancellation flag while it waits (work that cannot be interrupted, like a
call that hangs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

from omero_adi.cli import run_daemon
from omero_adi.daemon import Daemon
from omero_adi.pipeline import OrderContext
from omero_adi.settings import build_settings
from omero_adi.store.session import open_store
from omero_adi.watch.runner import WatchRunner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_url")
    parser.add_argument("base_dir")
    parser.add_argument("record")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block-on")
    parser.add_argument("--stale-after", type=float, default=60.0)
    parser.add_argument("--poll", type=float, default=30.0)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument("--stuck", action="store_true")
    parser.add_argument("--watch", metavar="FOLDER",
                        help="also watch FOLDER (settle 0.3 s, a scan every 0.3 s)")
    parser.add_argument("--settings", default="{}", help="more settings, as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {os.getpid()} %(name)s %(message)s")
    settings = build_settings(
        {
            "ingest_tracking_db": args.db_url, "base_dir": args.base_dir,
            "max_workers": args.workers, "stale_after": args.stale_after,
            "poll_interval": args.poll, "heartbeat_interval": 1.0, "recovery_interval": 1.0,
            "shutdown_timeout": args.shutdown_timeout,
            "watch": [{"name": "proc", "folder": args.watch, "group": "lab", "user": "alice",
                       "dataset_id": 7, "settle_seconds": 0.3, "scan_interval": 0.3}]
            if args.watch else [],
            **json.loads(args.settings),
        },
        {},
    )

    def handler(ctx: OrderContext) -> str:
        fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.getpid()} {ctx.order.uuid}\n".encode())
        os.close(fd)
        while args.block_on and not os.path.exists(args.block_on):
            if not args.stuck:
                ctx.check_cancelled()
            time.sleep(0.05)
        return f"done by {os.getpid()}"

    engine = open_store(settings, wait=True)
    daemon = Daemon(settings, engine, handler)
    run_daemon(daemon, WatchRunner(settings, engine, None))  # as `omero-adi run` does


if __name__ == "__main__":
    main()
