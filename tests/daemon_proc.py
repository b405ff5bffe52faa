"""A daemon process for the multi-process tests, with a recording handler.

Usage: python tests/daemon_proc.py DB_URL BASE_DIR RECORD_FILE [--workers N]
       [--block-on PATH] [--stale-after S] [--poll S]

The handler appends ``<pid> <uuid>`` to RECORD_FILE (O_APPEND, one write per
line, so concurrent processes never interleave) and, with --block-on, waits
until PATH exists before completing.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from omero_adi.daemon import Daemon
from omero_adi.pipeline import OrderContext
from omero_adi.settings import build_settings
from omero_adi.store.session import open_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_url")
    parser.add_argument("base_dir")
    parser.add_argument("record")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block-on")
    parser.add_argument("--stale-after", type=float, default=60.0)
    parser.add_argument("--poll", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {os.getpid()} %(name)s %(message)s")
    settings = build_settings(
        {
            "ingest_tracking_db": args.db_url, "base_dir": args.base_dir,
            "max_workers": args.workers, "stale_after": args.stale_after,
            "poll_interval": args.poll, "heartbeat_interval": 1.0, "recovery_interval": 1.0,
            "shutdown_timeout": 5.0,
        },
        {},
    )

    def handler(ctx: OrderContext) -> str:
        fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.getpid()} {ctx.order.uuid}\n".encode())
        os.close(fd)
        while args.block_on and not os.path.exists(args.block_on):
            ctx.check_cancelled()
            time.sleep(0.05)
        return f"done by {os.getpid()}"

    daemon = Daemon(settings, open_store(settings, wait=True), handler)
    daemon.install_signal_handlers()
    daemon.run()


if __name__ == "__main__":
    main()
