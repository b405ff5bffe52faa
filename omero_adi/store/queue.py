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

from omero_adi.notify.outbox import Outbox
from omero_adi.orders import EventRow, PreprocessingRow, default_file_names
from omero_adi.progress import ImportProgress
from omero_adi.store.models import (
    STAGE_INGEST_FAILED,
    STAGE_INGEST_STARTED,
    STAGE_NEW_ORDER,
    json_or_text,
)
from omero_adi.store.queries import run
from omero_adi.store.retry import retry_transient

log = logging.getLogger(__name__)


def new_owner_id() -> str:
    """``host:pid:token``: tells a dead daemon on this host from a live one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuidlib.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Claim:
    """A Pending event this daemon holds."""

    row: EventRow
    owner: str
    #: ``file_names`` for this order's events, when the client left it empty.
    file_names_json: str | None

    @property
    def uuid(self) -> str:
        return self.row.uuid


def _event_row(record: Any) -> EventRow:
    preprocessing = None
    if record.preprocessing_id is not None and record.container is not None:
        preprocessing = PreprocessingRow(
            id=record.preprocessing_id,
            container=record.container,
            input_file=record.input_file,
            output_folder=record.output_folder,
            alt_output_folder=record.alt_output_folder,
            extra_params=json_or_text(record.extra_params),
        )
    return EventRow(
        event_id=record.id,
        uuid=record.uuid,
        group_name=record.group_name,
        user_name=record.user_name,
        destination_id=record.destination_id,
        destination_type=record.destination_type,
        files=json_or_text(record.files),
        file_names=json_or_text(record.file_names),
        preprocessing=preprocessing,
        import_options=json_or_text(record.import_options),
    )


def _file_names_json(row: EventRow) -> str | None:
    """Names for the ``file_names`` column when the client left it empty."""
    if row.file_names or not isinstance(row.files, list):
        return None
    return json.dumps(default_file_names(row.files))  # as models.JSONList encodes the column


def is_local_and_dead(owner: str) -> bool:
    """True for a claim of an earlier daemon on this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
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


def latest_event(connection: Connection, uuid: str) -> Any:
    """The order's newest row (with ``running``), or None; locks the order for
    the rest of the transaction so decisions about it do not race."""
    run(connection, "lock_order", uuid=uuid)
    return run(connection, "latest_event", uuid=uuid).first()


def copy_event(
    connection: Connection, source_id: int, stage: str, description: str | None,
    file_names: str | None = None,
) -> int:
    """Append an event to an order: the fields of row ``source_id``, a new stage."""
    if description is not None:
        description = description.replace("\x00", "\\0")  # text columns refuse NUL
    return int(run(connection, "copy_event", source_id=source_id, stage=stage,
                   description=description, file_names=file_names).scalar_one())


class OrderQueue:
    """The queries a daemon needs, as methods (SQL in ``queries.sql``)."""

    def __init__(self, engine: Engine, owner: str | None = None, outbox: Outbox | None = None):
        self.engine = engine
        self.owner = owner or new_owner_id()
        #: Receives the messages a final event calls for, in the event's transaction.
        self.outbox = outbox

    # --- claiming ------------------------------------------------------
    def reconcile(self) -> int:
        """Queue Pending orders the trigger did not see; return how many."""
        with self.engine.begin() as connection:
            return run(connection, "reconcile_queue").rowcount or 0

    def claim_next(self) -> Claim | None:
        """Claim the oldest waiting order and record ``Import Started``, or None."""
        while True:
            with self.engine.begin() as connection:
                entry = run(connection, "next_waiting").first()
                if entry is None:
                    return None
                claim = self._try_claim(connection, entry.event_id, entry.uuid)
            if claim is not None:
                return claim

    def _try_claim(self, connection: Connection, event_id: int, uuid: str) -> Claim | None:
        latest = latest_event(connection, uuid)
        superseded = latest is None or latest.id != event_id or latest.stage != STAGE_NEW_ORDER
        # Set back to Pending while it still runs: what the running import
        # records next supersedes it.
        if superseded or latest.running:
            run(connection, "drop_entry", event_id=event_id)
            return None
        if run(connection, "claim", event_id=event_id, owner=self.owner).rowcount != 1:
            return None
        row = _event_row(latest)
        names = _file_names_json(row)
        copy_event(connection, event_id, STAGE_INGEST_STARTED, None, names)
        return Claim(row=row, owner=self.owner, file_names_json=names)

    # --- while running ---------------------------------------------------
    def record_stage(self, claim: Claim, stage: str, description: str | None = None) -> None:
        """An intermediate event (e.g. ``Import Preprocessing``), retried until written."""
        def write() -> None:
            with self.engine.begin() as connection:
                copy_event(connection, claim.row.event_id, stage, description,
                           claim.file_names_json)
        retry_transient(write, attempts=None, what=f"recording {stage!r}")

    def finish(self, claim: Claim, stage: str, description: str | None) -> bool:
        """Release the claim and record the final event in one transaction.

        Retries through database outages; False when recovery had already
        finalised the order (this daemon was presumed dead), in which case
        nothing is written.
        """
        outcome = "completed" if stage != STAGE_INGEST_FAILED else "failed"
        return retry_transient(
            lambda: self._close(claim.row.event_id, claim.owner, outcome, stage, description,
                                claim.file_names_json),
            attempts=None, what=f"recording {stage!r}",
        )

    def interrupt(self, claim: Claim, description: str) -> bool:
        """Fail a claimed order the daemon stops without waiting for it (one
        attempt: the daemon is on its way out); False when it had finished."""
        return self._close(claim.row.event_id, claim.owner, "interrupted", STAGE_INGEST_FAILED,
                           description, claim.file_names_json)

    def _close(
        self, event_id: int, owner: str, outcome: str, stage: str, description: str | None,
        file_names: str | None = None,
    ) -> bool:
        """Close ``owner``'s claim and append the order's event, or do nothing
        when the claim was already closed."""
        with self.engine.begin() as connection:
            closed = run(connection, "finish_claim", event_id=event_id, owner=owner,
                         outcome=outcome)
            if closed.rowcount != 1:
                return False
            new_id = copy_event(connection, event_id, stage, description, file_names)
            run(connection, "forget_progress", event_id=event_id)
            queued = self.outbox.add_event(connection, new_id, stage) if self.outbox else 0
        if queued and self.outbox is not None:
            self.outbox.wake()
        return True

    def record_progress(self, claim: Claim, progress: ImportProgress) -> None:
        """Replace the order's row in ``adi_progress`` (never an ``imports`` row)."""
        with self.engine.begin() as connection:
            run(connection, "record_progress", uuid=claim.uuid, event_id=claim.row.event_id,
                step=progress.step, filesets_done=progress.filesets_done,
                filesets_total=progress.filesets_total)

    def heartbeat(self) -> None:
        with self.engine.begin() as connection:
            run(connection, "heartbeat", owner=self.owner)

    # --- recovery ----------------------------------------------------------
    def recover(self, stale_after: float, requeue: bool) -> list[str]:
        """Finalise (or re-queue) orders whose daemon stopped sending heartbeats;
        return their uuids."""
        with self.engine.begin() as connection:
            claims = run(connection, "running_claims", stale_after=stale_after).all()
        taken = []
        for claim in claims:
            gone = claim.expired or is_local_and_dead(claim.claimed_by)
            if claim.claimed_by == self.owner or not gone:
                continue
            if requeue:
                stage, description = STAGE_NEW_ORDER, (
                    f"re-queued: the daemon running it ({claim.claimed_by}) stopped")
            else:
                stage, description = STAGE_INGEST_FAILED, (
                    f"interrupted: the daemon running it ({claim.claimed_by}) stopped before "
                    f"it finished; retry with `omero-adi retry {claim.uuid}`")
            if self._close(claim.event_id, claim.claimed_by, "interrupted", stage, description):
                log.warning("order %s: %s", claim.uuid, description)
                taken.append(claim.uuid)
        return taken
