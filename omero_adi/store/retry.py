"""Retrying database work through transient failures, decided by error codes."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: SQLSTATEs worth another try: the server is going away, starting up,
#: overloaded, or the transaction lost a race.
TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})
SQLITE_BUSY, SQLITE_LOCKED = 5, 6
#: SQLSTATEs no retry will change: no such database (3D000), no such role or no
#: pg_hba.conf entry (28000), a refused password (28P01).
PERMANENT_SQLSTATES = frozenset({"3D000", "28000", "28P01"})
#: The same, as libpq words them when it fails to connect: psycopg2 then has
#: no SQLSTATE, only the server's message (PostgreSQL's postinit.c, auth.c).
PERMANENT_MESSAGES = re.compile(
    r'database ".*" does not exist|role ".*" does not exist|password authentication failed'
    r"|authentication failed for user|no password supplied|no pg_hba\.conf entry"
)


def server_message(exc: BaseException) -> str:
    """What the database (or the driver) said, on one line, without SQLAlchemy's
    wrapping: ``database "x" does not exist``, ``... failed: Connection refused``."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip()
    if "FATAL:" in text:  # libpq: 'connection to server at ... failed: FATAL:  <message>'
        text = text.rsplit("FATAL:", 1)[1]
    line = text.strip().splitlines()[0].strip() if text.strip() else type(original).__name__
    return re.sub(r"\s+", " ", line)


def is_permanent(exc: BaseException) -> bool:
    """True for connection errors that waiting will not cure (wrong database,
    role or password)."""
    if not isinstance(exc, DBAPIError):
        return False
    code = getattr(exc.orig, "pgcode", None)
    if code is not None:
        return code in PERMANENT_SQLSTATES
    return bool(PERMANENT_MESSAGES.search(str(exc.orig)))


def is_transient(exc: BaseException) -> bool:
    """True when the same work may well succeed if tried again shortly."""
    if not isinstance(exc, DBAPIError):
        return False
    if is_permanent(exc):
        return False
    if exc.connection_invalidated:
        return True
    original = exc.orig
    code = getattr(original, "pgcode", None)
    if code is not None:
        return code.startswith("08") or code in TRANSIENT_SQLSTATES
    if type(original).__module__.startswith("psycopg2"):
        # psycopg2 gives no SQLSTATE when it cannot connect (refused, timed out,
        # starting up); the permanent reasons were ruled out above.
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
                "%s failed (%s: %s); retrying in %.1fs (attempt %d)",
                what, type(exc.orig).__name__, server_message(exc), delay, attempt,
            )
            sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, max_delay)
