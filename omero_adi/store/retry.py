"""Retrying database work through transient failures, decided by error codes."""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: SQLSTATEs worth another try: the server is going away, starting up,
#: overloaded, or the transaction lost a race.
TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})
SQLITE_BUSY, SQLITE_LOCKED = 5, 6


def is_transient(exc: BaseException) -> bool:
    """True when the same work may well succeed if tried again shortly."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    original = exc.orig
    code = getattr(original, "pgcode", None)
    if code is not None:
        return code.startswith("08") or code in TRANSIENT_SQLSTATES
    if type(original).__module__.startswith("psycopg2"):
        # psycopg2 gives no SQLSTATE when it cannot reach the server at all.
        return type(original).__name__ == "OperationalError"
    return getattr(original, "sqlite_errorcode", None) in (SQLITE_BUSY, SQLITE_LOCKED)


def retry_transient(
    work: Callable[[], T],
    *,
    attempts: int | None = 6,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    what: str = "database work",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``work``; on a transient error wait (exponential, jittered) and retry.

    ``attempts=None`` retries for as long as it takes (the daemon's stage
    events must reach the database once it is back).
    """
    attempt = 0
    delay = first_delay
    while True:
        attempt += 1
        try:
            return work()
        except DBAPIError as exc:
            if not is_transient(exc) or (attempts is not None and attempt >= attempts):
                raise
            log.warning(
                "%s failed (%s); retrying in %.1fs (attempt %d)",
                what, type(exc.orig).__name__, delay, attempt,
            )
            sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, max_delay)
