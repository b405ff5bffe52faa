"""Claiming orders and recording their stages: the daemon's side of the store.

Exactly-once: a claim is a conditional UPDATE of the order's queue entry,
committed in the same transaction as its ``Import Started`` event. Any number
of daemons may share a database; each Pending event is run by one of them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from omero_adi.orders import EventRow, PreprocessingRow
from omero_adi.store.models import STAGE_INGEST_FAILED, STAGE_INGEST_STARTED, STAGE_NEW_ORDER
from omero_adi.store.queries import query
from omero_adi.store.retry import retry_transient

log = logging.getLogger(__name__)


def new_owner_id() -> str:
    """``host:pid:token``: tells a dead daemon on this host from a live one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuidlib.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Claim:
    """A Pending event this daemon holds, and the Started event it wrote."""

    row: EventRow
    owner: str
    started_event_id: int
    file_names_json: str | None

    @property
    def uuid(self) -> str:
        return self.row.uuid


@dataclass(frozen=True)
class Takeover:
    uuid: str
    previous_owner: str
    new_stage: str


def _decode(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _event_row(record: Any) -> EventRow:
    preprocessing = None
    if record.preprocessing_id is not None and record.container is not None:
        preprocessing = PreprocessingRow(
            id=record.preprocessing_id,
            container=record.container,
            input_file=record.input_file,
            output_folder=record.output_folder,
            alt_output_folder=record.alt_output_folder,
            extra_params=_decode(record.extra_params),
        )
    return EventRow(
        event_id=record.id,
        uuid=record.uuid,
        group_name=record.group_name,
        user_name=record.user_name,
        destination_id=record.destination_id,
        destination_type=record.destination_type,
        files=_decode(record.files),
        file_names=_decode(record.file_names),
        description=record.description,
        preprocessing_id=record.preprocessing_id,
        preprocessing=preprocessing,
    )


def _file_names_json(row: EventRow) -> str | None:
    """Names for the ``file_names`` column when the client left it empty."""
    if row.file_names or not isinstance(row.files, list):
        return None
    names = [os.path.basename(str(p).rstrip("/")) for p in row.files]
    return json.dumps(names, ensure_ascii=False)


def _is_local_and_dead(owner: str) -> bool:
    """True for a claim of an earlier daemon on this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    if int(pid_text) == os.getpid():
        return False  # same pid: ours or a previous incarnation in a container; heartbeats tell
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class OrderQueue:
    """The queries a daemon needs, as methods (SQL in ``queries.sql``)."""

    def __init__(self, engine: Engine, owner: str | None = None):
        self.engine = engine
        self.owner = owner or new_owner_id()
        self.dialect = engine.dialect.name

    def _q(self, name: str) -> Any:
        return query(name, self.dialect)

    # --- claiming ------------------------------------------------------
    def reconcile(self) -> int:
        """Queue Pending orders the trigger did not see; return how many."""
        with self.engine.begin() as connection:
            return connection.execute(self._q("reconcile_queue")).rowcount or 0

    def claim_next(self) -> Claim | None:
        """Claim the oldest waiting order and record ``Import Started``, or None."""
        while True:
            with self.engine.begin() as connection:
                entry = connection.execute(self._q("next_waiting")).first()
                if entry is None:
                    return None
                claim = self._try_claim(connection, entry.event_id, entry.uuid)
            if claim is not None:
                return claim

    def _try_claim(self, connection: Connection, event_id: int, uuid: str) -> Claim | None:
        if self.dialect == "postgresql":
            connection.execute(self._q("lock_order"), {"uuid": uuid})
        latest = connection.execute(self._q("latest_event"), {"uuid": uuid}).first()
        if latest is None or latest.id != event_id or latest.stage != STAGE_NEW_ORDER:
            connection.execute(self._q("drop_entry"), {"event_id": event_id})
            return None
        if connection.execute(self._q("order_is_running"), {"uuid": uuid}).scalar():
            # Set back to Pending while it still runs: it is superseded by what the
            # running import records next.
            connection.execute(self._q("drop_entry"), {"event_id": event_id})
            return None
        won = connection.execute(self._q("claim"), {"event_id": event_id, "owner": self.owner})
        if won.rowcount != 1:
            return None
        row = _event_row(latest)
        names = _file_names_json(row)
        started = self._copy_event(connection, event_id, STAGE_INGEST_STARTED, None, names)
        return Claim(row=row, owner=self.owner, started_event_id=started, file_names_json=names)

    def _copy_event(
        self, connection: Connection, source_id: int, stage: str,
        description: str | None, file_names: str | None,
    ) -> int:
        if description is not None:
            description = description.replace("\x00", "\\0")  # text columns refuse NUL
        result = connection.execute(
            self._q("copy_event"),
            {"source_id": source_id, "stage": stage, "description": description,
             "file_names": file_names},
        )
        return int(result.scalar_one())

    # --- while running ---------------------------------------------------
    def record_stage(self, claim: Claim, stage: str, description: str | None = None) -> int:
        """An intermediate event (e.g. ``Import Preprocessing``), retried until written."""
        def write() -> int:
            with self.engine.begin() as connection:
                return self._copy_event(
                    connection, claim.row.event_id, stage, description, claim.file_names_json
                )
        return retry_transient(write, attempts=None, what=f"recording {stage!r}")

    def finish(self, claim: Claim, stage: str, description: str | None) -> bool:
        """Release the claim and record the final event in one transaction.

        Retries through database outages; False when recovery had already
        finalised the order (this daemon was presumed dead), in which case
        nothing is written.
        """
        outcome = "completed" if stage != STAGE_INGEST_FAILED else "failed"

        def write() -> bool:
            with self.engine.begin() as connection:
                released = connection.execute(
                    self._q("finish_claim"),
                    {"event_id": claim.row.event_id, "owner": claim.owner, "outcome": outcome},
                )
                if released.rowcount != 1:
                    return False
                self._copy_event(
                    connection, claim.row.event_id, stage, description, claim.file_names_json
                )
                return True

        return retry_transient(write, attempts=None, what=f"recording {stage!r}")

    def heartbeat(self) -> None:
        with self.engine.begin() as connection:
            connection.execute(self._q("heartbeat"), {"owner": self.owner})

    # --- recovery ----------------------------------------------------------
    def recover(self, stale_after: float, requeue: bool) -> list[Takeover]:
        """Finalise (or re-queue) orders whose daemon stopped sending heartbeats."""
        with self.engine.begin() as connection:
            claims = connection.execute(
                self._q("running_claims"), {"stale_after": stale_after}
            ).all()
        done = []
        for claim in claims:
            if claim.claimed_by == self.owner:
                continue
            if not (claim.expired or _is_local_and_dead(claim.claimed_by)):
                continue
            takeover = self._take_over(claim.event_id, claim.uuid, claim.claimed_by, requeue)
            if takeover is not None:
                done.append(takeover)
        return done

    def _take_over(
        self, event_id: int, uuid: str, owner: str, requeue: bool
    ) -> Takeover | None:
        with self.engine.begin() as connection:
            taken = connection.execute(
                self._q("take_over_claim"), {"event_id": event_id, "owner": owner}
            )
            if taken.rowcount != 1:
                return None  # its owner finished after all, or another daemon took it
            if requeue:
                stage = STAGE_NEW_ORDER
                description = f"re-queued: the daemon running it ({owner}) stopped"
            else:
                stage = STAGE_INGEST_FAILED
                description = (
                    f"interrupted: the daemon running it ({owner}) stopped before it "
                    f"finished; retry with `omero-adi retry {uuid}`"
                )
            self._copy_event(connection, event_id, stage, description, None)
        log.warning("order %s: %s", uuid, description)
        return Takeover(uuid=uuid, previous_owner=owner, new_stage=stage)
