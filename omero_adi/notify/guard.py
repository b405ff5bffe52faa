"""The in-place guard: are the files OMERO links to still there, unchanged?

At import, :meth:`Guard.record` stores size, modification time and inode of
every original file of each new fileset (``adi_guard_files``). A check
(:meth:`Guard.check`; periodic in :meth:`Guard.run`, on demand by
``omero-adi verify``) costs one ``stat`` per file, in batches spread evenly
over ``guard_interval``; one daemon at a time runs the periodic pass, under
a lease it renews between batches (``adi_leases``). A missing file costs one listing of its folder, to
tell a rename from a deletion. A file that turns missing, moved or changed
gets its state recorded and, in the same transaction, a message in the
outbox. The guard only reads the files; it never touches them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from omero_adi.importing.results import ImportedFileset
from omero_adi.notify.message import Finding
from omero_adi.notify.outbox import Outbox, order_people
from omero_adi.orders import Order
from omero_adi.settings import Settings
from omero_adi.store.lease import Lease
from omero_adi.store.queries import run
from omero_adi.store.queue import new_owner_id
from omero_adi.store.retry import retry_transient

log = logging.getLogger(__name__)

OK, MISSING, MOVED, CHANGED, UNREADABLE = "ok", "missing", "moved", "changed", "unreadable"
#: Files per batch: one query, ``BATCH`` stats, one transaction.
BATCH = 200
#: Seconds a pass's lease lasts unless renewed: a daemon that died or hangs this
#: long in one batch (a hung share) lets another take the pass over.
LEASE = 600.0
#: Longest wait between two renewals of the lease while a pass paces itself.
RENEW_EVERY = LEASE / 4


@dataclass(frozen=True)
class Problem:
    uuid: str
    finding: Finding


def inspect(path: str, size: int, mtime_ns: int, inode: int) -> tuple[str, str | None]:
    """(state, detail) of one recorded file, by one ``stat`` (a listing of its
    folder when it is gone, to find it under another name)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        folder = Path(path).parent
        if not folder.is_dir():
            return MISSING, f"its folder {folder} is gone (moved, renamed or deleted)"
        renamed = _renamed(folder, inode, size)
        if renamed:
            return MOVED, f"renamed or moved to {renamed}"
        return MISSING, "deleted, or moved out of its folder"
    except OSError as exc:
        return UNREADABLE, f"cannot be read: {exc.strerror}"
    if (now.st_size, now.st_mtime_ns) != (size, mtime_ns):
        return CHANGED, (f"changed since its import: size {size} → {now.st_size} bytes, "
                         f"modified {_moment(mtime_ns)} → {_moment(now.st_mtime_ns)}")
    return OK, None


def _renamed(folder: Path, inode: int, size: int) -> str | None:
    """The file of ``folder`` that is the same file under another name, if any."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.inode() == inode and entry.is_file(follow_symlinks=False):
                    if entry.stat(follow_symlinks=False).st_size == size:
                        return entry.path
    except OSError:
        return None
    return None


def _moment(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class Guard:
    def __init__(self, settings: Settings, engine: Engine, outbox: Outbox | None,
                 owner: str | None = None):
        self.settings, self.engine, self.outbox = settings, engine, outbox
        #: This daemon, as the holder of the pass's lease.
        self.owner = owner or new_owner_id()

    # --- at import -------------------------------------------------------------
    def record(self, order: Order, imported: Sequence[ImportedFileset]) -> None:
        """Store size and mtime of the originals behind ``imported``.

        Never fails the order: a file that cannot be read now, or a database
        that refuses the rows, is logged.
        """
        rows = []
        for entry in imported:
            for used in entry.fileset.used_files:
                local = next(filter(None, (item.local_file(used)
                                           for item in entry.covers or (entry.item,))), used)
                path = self._original(order, entry, local)
                try:
                    found = os.stat(path)
                except OSError as exc:
                    log.warning("order %s: guard cannot stat %s (%s); not watched", order.uuid,
                                path, exc.strerror)
                    continue
                rows.append({
                    "uuid": order.uuid, "path": str(path), "fileset_id": entry.fileset.id,
                    "images": json.dumps(list(entry.fileset.image_ids)),
                    "plates": json.dumps(list(entry.fileset.plate_ids)),
                    "size": found.st_size, "mtime_ns": found.st_mtime_ns, "inode": found.st_ino,
                })
        if not rows:
            return

        def write() -> None:
            with self.engine.begin() as connection:  # one statement for all
                run(connection, "guard_record", rows=json.dumps(rows))
        try:
            retry_transient(write, what="recording imported files for the guard")
        except SQLAlchemyError as exc:
            log.warning("order %s: the guard could not record its files (%s)", order.uuid,
                        type(exc).__name__)
            return
        log.info("order %s: the guard watches %d file(s)", order.uuid, len(rows))

    def _original(self, order: Order, entry: ImportedFileset, used: Path) -> Path:
        """The file OMERO's link ends at: the used file itself, or for a
        preprocessed order the durable copy in ``processed_data_folder`` beside the original."""
        local = Path(self.settings.inplace_tmp_root) / order.uuid
        if order.preprocessing is None or local not in used.parents:
            return used
        return entry.item.origin.parent / self.settings.processed_data_folder / used.relative_to(local)

    # --- checking ----------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Check every file once per ``guard_interval``, spread evenly, until ``stop``.

        While another daemon's pass holds the lease, look again once its lease
        could have run out (a restarted daemon's predecessor may hold it)."""
        interval = self.settings.guard_interval
        while not stop.is_set():
            started = time.monotonic()
            again = interval
            try:
                if not self._paced_pass(stop, interval):
                    again = min(interval, LEASE)
            except SQLAlchemyError as exc:
                log.warning("guard: the database is away (%s); will try again",
                            type(exc).__name__)
            stop.wait(max(again - (time.monotonic() - started), 1.0))

    def _paced_pass(self, stop: threading.Event, interval: float) -> bool:
        """One pass, unless another daemon's is under way (they share the work's
        result). False when the lease was another's, or was lost midway."""
        lease = Lease(self.engine, "guard", self.owner, LEASE)
        if not lease.take():
            log.info("guard: another daemon is checking the files; skipping this pass")
            return False
        try:
            with self.engine.connect() as connection:
                total = int(run(connection, "guard_count").scalar_one())
            if not total:
                return True
            if not Path(self.settings.base_dir).is_dir():
                log.warning("guard: base_dir %s is not mounted; not checking",
                            self.settings.base_dir)
                return True
            pace = interval / total
            problems = self.check(pause=lambda done: _pause(lease, stop, pace * done))
            if not lease.held:
                log.warning("guard: another daemon took the pass over (this one's lease ran "
                            "out); stopping")
                return False
            log.info("guard: checked %d file(s); %d missing, moved or changed", total,
                     len(problems))
            return True
        finally:
            lease.give_up()

    def check(self, *, uuid: str | None = None, since: datetime | None = None,
              pause: Callable[[int], bool] | None = None) -> list[Problem]:
        """Check the recorded files (of one order, or recorded since a moment);
        return those with a problem. ``pause(n)`` runs after each batch of ``n``
        files; True stops the check."""
        problems: list[Problem] = []
        after = 0
        while True:
            with self.engine.connect() as connection:
                batch = run(connection, "guard_batch", after=after, uuid=uuid, since=since,
                            limit=BATCH).all()
            if not batch:
                return problems
            results = [(row, *inspect(row.path, row.size, row.mtime_ns, row.inode))
                       for row in batch]
            self._store(results)
            problems += [Problem(row.uuid, _finding(row, state, detail))
                         for row, state, detail in results if state != OK]
            after = batch[-1].id
            if pause is not None and pause(len(batch)):
                return problems

    def _store(self, results: Sequence[tuple[Any, str, str | None]]) -> None:
        """Record the batch's states; queue a message per order with new problems."""
        fresh: dict[str, list[Finding]] = {}
        queued = 0
        outbox = self.outbox
        with self.engine.begin() as connection:
            for row, state, detail in results:
                if state != row.state:
                    changed = run(connection, "guard_set_state", id=row.id, state=state,
                                  detail=detail, was=row.state).rowcount
                    if changed and state != OK:
                        fresh.setdefault(row.uuid, []).append(_finding(row, state, detail))
            same = [row.id for row, state, _ in results if state == row.state]
            if same:
                run(connection, "guard_checked", file_ids=same)
            for uuid, findings in fresh.items():
                log.warning("guard: order %s: %s", uuid, "; ".join(
                    f"{f.path} {f.state}" for f in findings))
                if outbox is not None:
                    queued += _queue(outbox, connection, uuid, findings)
        if queued and outbox is not None:
            outbox.wake()

    # --- reporting -------------------------------------------------------------
    def problems(self, uuid: str | None = None, limit: int = 50) -> list[Problem]:
        """Files whose last check found a problem (for ``status``)."""
        with self.engine.connect() as connection:
            rows = run(connection, "guard_problems", uuid=uuid, limit=limit).all()
        return [Problem(row.uuid, _finding(row, row.state, row.detail)) for row in rows]


def _pause(lease: Lease, stop: threading.Event, seconds: float) -> bool:
    """Wait ``seconds`` after a batch, renewing ``lease`` before, every
    :data:`RENEW_EVERY` during, and at the end of the wait; True stops the pass
    (``stop`` is set, or another daemon has the lease)."""
    while lease.take():
        if seconds <= 0:
            return False
        step = min(seconds, RENEW_EVERY)
        if stop.wait(step):
            return True
        seconds -= step
    return True


def state_counts(connection: Connection) -> dict[str, int]:
    """Recorded files by state (for ``/metrics``)."""
    found = {state: 0 for state in (OK, MISSING, MOVED, CHANGED, UNREADABLE)}
    found.update({row.state: int(row.files) for row in run(connection, "guard_state_counts")})
    return found


def _queue(outbox: Outbox, connection: Connection, uuid: str, findings: list[Finding]) -> int:
    """The outbox message about an order's newly broken files."""
    payload = {
        **order_people(connection, uuid),
        "findings": [{"path": f.path, "state": f.state, "detail": f.detail,
                      "images": list(f.images), "plates": list(f.plates)} for f in findings],
    }
    return outbox.add_findings(connection, uuid, payload)


def _finding(row: Any, state: str, detail: str | None) -> Finding:
    return Finding(row.path, state, detail or "", tuple(json.loads(row.image_ids)),
                   tuple(json.loads(row.plate_ids)))
