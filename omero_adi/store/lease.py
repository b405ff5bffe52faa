"""Leases in ADI's own table (``adi_leases``): long work that one daemon at a
time may do, such as a pass of the in-place guard.

A lease is a row, not a session's lock: taking and renewing it are short
transactions, so no connection is held while the work goes on, and a dropped
connection, a restarted server or a pooler does not release it. Its expiry is
the database's clock, never a daemon's. A holder that stops renewing (it died,
or hangs) loses it once it expires; a holder that finds it taken stops.
"""

from __future__ import annotations

from sqlalchemy import Engine

from omero_adi.store.queries import run
from omero_adi.store.retry import retry_transient


class Lease:
    def __init__(self, engine: Engine, name: str, holder: str, seconds: float):
        self.engine, self.name, self.holder, self.seconds = engine, name, holder, seconds
        #: Whether the last :meth:`take` got (or kept) the lease.
        self.held = False

    def take(self) -> bool:
        """Take the lease, or renew it for another ``seconds``: True unless
        another holder has it and its time has not run out."""
        def attempt() -> bool:
            with self.engine.begin() as connection:
                return run(connection, "lease_take", lease=self.name, holder=self.holder,
                           seconds=self.seconds).rowcount == 1
        self.held = retry_transient(attempt, what=f"taking the {self.name} lease")
        return self.held

    def give_up(self) -> None:
        """Free the lease at once, if this holder still has it."""
        def attempt() -> None:
            with self.engine.begin() as connection:
                run(connection, "lease_give_up", lease=self.name, holder=self.holder)
        retry_transient(attempt, what=f"giving up the {self.name} lease")
        self.held = False
