"""DatabasePoller: tells the daemon loop when orders may be waiting.

On PostgreSQL it sleeps on a ``LISTEN omero_adi_orders`` connection (the
queue trigger notifies on every Pending event) and keeps a slow safety poll;
on SQLite, which cannot notify, it polls. A worker finishing, or a stop
request, wakes it through a pipe.
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from typing import Any

from sqlalchemy import Engine

from omero_adi.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "omero_adi_orders"
#: While the listening connection is down, look again this often (seconds).
RECONNECT_CHECK = 1.0


class Listener:
    """A dedicated PostgreSQL connection that LISTENs for new orders,
    reconnecting with backoff after the database went away."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.connection: Any = None
        self.retry_at = 0.0
        self.backoff = 0.5

    def connect(self) -> bool:
        """True when a new connection was just made (notifications may have been missed)."""
        if time.monotonic() < self.retry_at:
            return False
        try:
            pooled = self.engine.raw_connection()
            connection: Any = pooled.driver_connection
            pooled.detach()  # ours alone, never returned to the pool
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:  # psycopg2 errors of every kind mean "not now"
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, 30.0)
            log.warning("cannot listen for orders (%s); retrying in %.0fs", exc, self.backoff)
            return False
        self.connection, self.backoff = connection, 0.5
        log.info("listening for new orders")
        return True

    def fileno(self) -> int:
        return int(self.connection.fileno())

    def drain(self) -> bool:
        """Consume notifications; False when the connection is lost."""
        try:
            self.connection.poll()
            self.connection.notifies.clear()
            return True
        except Exception as exc:
            log.warning("lost the listening connection (%s)", exc)
            self.close()
            return False

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:
                pass
        self.connection = None


class DatabasePoller:
    def __init__(self, engine: Engine, settings: Settings):
        postgres = engine.dialect.name == "postgresql"
        self.listener = Listener(engine) if postgres else None
        self.poll_interval = settings.poll_interval if postgres else settings.sqlite_poll_interval
        # The daemon claims once at start; the first poll is due an interval later.
        self.next_poll = time.monotonic() + self.poll_interval
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")

    def wake(self) -> None:
        """Make :meth:`wait` return now (safe from any thread or signal handler)."""
        if self._wake_w < 0:
            return  # closed: a worker that outlived the shutdown
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already
        except OSError:
            pass  # closed between the check and the write

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True when orders may be waiting
        (a notification, a reconnect, the safety poll, or a wake-up)."""
        if self.listener is not None and self.listener.connection is None:
            if self.listener.connect():
                self.selector.register(self.listener.fileno(), selectors.EVENT_READ, "notify")
                return True  # catch up on anything sent while away
            timeout = min(timeout, RECONNECT_CHECK)
        now = time.monotonic()
        if now >= self.next_poll:
            self.next_poll = now + self.poll_interval
            return True
        wanted = False
        for key, _ in self.selector.select(max(0.0, min(timeout, self.next_poll - now))):
            if key.data == "wake":
                os.read(self._wake_r, 4096)
                wanted = True
            elif self.listener is not None:
                if not self.listener.drain():
                    self.selector.unregister(key.fd)
                wanted = wanted or self.listener.connection is not None
        return wanted

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self.selector.close()
        # -1 first: a late wake() must not write to a number that may soon name another file
        read, write, self._wake_r, self._wake_w = self._wake_r, self._wake_w, -1, -1
        os.close(read)
        os.close(write)
