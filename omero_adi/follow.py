"""Following an order as it goes (``omero-adi submit --wait``, ``tests/system_check.py``)."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from omero_adi.progress import ImportProgress
from omero_adi.settings import mask_url
from omero_adi.store import admin
from omero_adi.store.models import FINAL_STAGES, STAGE_IMPORTED, STAGE_NEW_ORDER

#: Seconds an order may wait unclaimed before we say that no daemon works on it
#: (a daemon with a free worker claims within milliseconds of a NOTIFY).
NO_DAEMON_AFTER = 10.0
#: Seconds between looks at the order.
INTERVAL = 0.2


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))  # SQLite returns text
    except ValueError:
        return None


def follow(
    engine: Engine, uuid: str, timeout: float, *, no_daemon_after: float = NO_DAEMON_AFTER
) -> int:
    """Print each stage as it is recorded (time since the order, time since the
    previous stage) and the import's progress while it runs. 0 when the order
    completes, 1 on failure or timeout, 130 on Ctrl-C (the order goes on)."""
    try:
        return _follow(engine, uuid, timeout, no_daemon_after)
    except KeyboardInterrupt:
        print(f"stopped following order {uuid}; it goes on "
              f"(`omero-adi status --uuid {uuid}` shows it)", file=sys.stderr)
        return 130


def _follow(engine: Engine, uuid: str, timeout: float, no_daemon_after: float) -> int:
    started = time.monotonic()
    deadline = started + timeout
    seen = 0
    first: datetime | None = None
    previous: datetime | None = None
    shown: ImportProgress | None = None
    warned = False
    while time.monotonic() < deadline:
        events = admin.history(engine, uuid)
        for event in events[seen:]:
            moment = _moment(event.timestamp)
            first = first or moment
            total = f"{(moment - first).total_seconds():8.2f}s" if moment and first else "       ?"
            step = (f"(+{(moment - previous).total_seconds():.2f}s)"
                    if moment and previous else "")
            note = f"  {event.description}" if event.description else ""
            print(f"{total} {step:>12}  {event.stage}{note}", flush=True)
            previous = moment
        seen = len(events)
        if events and events[-1].stage in FINAL_STAGES:
            return 0 if events[-1].stage == STAGE_IMPORTED else 1
        progress = admin.progress_of(engine, uuid)
        if progress is not None and progress != shown:
            print(f"{'':22}  {progress.describe()}", flush=True)
            shown = progress
        if (not warned and events and events[-1].stage == STAGE_NEW_ORDER
                and time.monotonic() - started > no_daemon_after
                and not admin.daemons_busy(engine)):
            print(f"no daemon has picked up order {uuid} in {no_daemon_after:.0f}s, and none is "
                  f"running any order: is `omero-adi run` running against {mask_url(str(engine.url))}? "
                  "Still waiting (Ctrl-C stops following; the order stays queued).",
                  file=sys.stderr, flush=True)
            warned = True
        time.sleep(INTERVAL)
    print(f"order {uuid} did not finish within {timeout:.0f}s; is the daemon running? "
          f"(follow it with `omero-adi status --uuid {uuid}`)", file=sys.stderr)
    return 1
