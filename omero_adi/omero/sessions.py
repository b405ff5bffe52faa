"""A valid user session for every step of an order, however long its import runs.

The server's ``ISession.createSessionWithTimeout`` gives a session a
time-to-live, not an idle timeout: activity and ``keepAlive`` do not extend
it (ome/openmicroscopy ``SessionManagerImpl``/``SessionBean``). So an order
asks :class:`SessionKeeper` for a session before each step, saying how long
the step may take; the keeper reuses the open session when it will outlive
the step, and otherwise closes it and opens one that will (its TTL at least
``ttl_for_user_conn``). A step that finds its session ended anyway (the
server's clock, a restart) gets a new one through :meth:`SessionKeeper.run`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from omero_adi.omero.boundary import OmeroError, SessionLost, UserSession

T = TypeVar("T")
#: Seconds of a session's lifetime kept in reserve beyond a step's own length.
MARGIN = 60.0
#: How long one lookup or annotation step may take.
STEP_SECONDS = 600.0


class SessionKeeper:
    """The order's user sessions, opened with ``open_session(ttl_ms)``."""

    def __init__(
        self,
        open_session: Callable[[int], UserSession],
        *,
        ttl_ms: int,
        log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._open_session, self.ttl_ms, self.log, self.clock = open_session, ttl_ms, log, clock
        self._session: UserSession | None = None
        self._expires = 0.0
        #: How many sessions were opened (the first, then each renewal).
        self.opened = 0

    def for_step(self, seconds: float = STEP_SECONDS) -> UserSession:
        """A session that lives at least ``seconds`` from now: the open one if it
        will, else a new one living ``seconds`` plus :data:`MARGIN` (at least
        ``ttl_ms``)."""
        now = self.clock()
        if self._session is not None and now + seconds <= self._expires:
            return self._session
        if self._session is not None:
            self.log.info("the OMERO session ends in %.0f s, before this step may; "
                          "opening a new one", max(0.0, self._expires - now))
        self.close()
        ttl_ms = max(self.ttl_ms, int((seconds + MARGIN) * 1000))
        self._session = self._open_session(ttl_ms)
        self._expires = now + ttl_ms / 1000  # measured from before the request
        self.opened += 1
        return self._session

    def run(self, step: Callable[[UserSession], T], seconds: float = STEP_SECONDS) -> T:
        """``step`` in a session; once more in a new session when the server says
        the session ended (so ``step`` must do nothing when it fails)."""
        try:
            return step(self.for_step(seconds))
        except SessionLost as exc:
            self.log.warning("%s; opening a new session and trying again", exc)
            self.renew()
            return step(self.for_step(seconds))

    def renew(self) -> None:
        """The next step gets a new session, whatever the local clock thinks."""
        self._expires = 0.0

    def close(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.close()
        except OmeroError as exc:  # it expires after its TTL anyway
            self.log.warning("could not close the OMERO session: %s", exc)
