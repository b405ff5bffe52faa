"""The daemon: wake on new orders, claim them, run them on a pool of workers.

One loop thread does all the waiting and claiming; ``max_workers`` worker
threads run orders. The loop sleeps in the :class:`DatabasePoller` until an
order may be waiting or a worker finishes, and runs its timers: heartbeat
(only while orders run) and recovery of interrupted orders.

SIGTERM or Ctrl-C stops claiming and lets running orders finish (up to
``shutdown_timeout``); a second one stops them at once. Either way, an order
that did not finish is recorded ``Import Failed`` as interrupted, with the
command that retries it: none is left ``Import Started``.
"""

from __future__ import annotations

import logging
import queue as queuelib
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from omero_adi.logs import order_log
from omero_adi.notify.service import Notifications
from omero_adi.orders import OrderRejected, UploadOrderManager
from omero_adi.pipeline import OrderContext, OrderFailed, OrderHandler
from omero_adi.poller import DatabasePoller
from omero_adi.progress import ImportProgress, ProgressThrottle
from omero_adi.settings import Settings
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED
from omero_adi.store.queue import Claim, OrderQueue

log = logging.getLogger(__name__)

#: Seconds a worker may take to wind up after its order was cancelled.
CANCEL_GRACE = 30.0
#: Seconds workers get to wind up after a second SIGTERM or Ctrl-C.
INTERRUPT_GRACE = 5.0
#: Seconds between looks for a second signal while shutting down.
SIGNAL_CHECK = 0.2
#: Seconds before claiming again after the database refused a claim.
CLAIM_RETRY = 1.0


@dataclass
class _Timer:
    interval: float
    due: float = field(default=0.0)

    def fire(self, now: float) -> bool:
        if now < self.due:
            return False
        self.due = now + self.interval
        return True


class Daemon:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        handler: OrderHandler,
        *,
        owner: str | None = None,
        on_event: Callable[[str, Claim, str], None] | None = None,
        notifications: Notifications | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.handler = handler
        #: The outbox sender and the in-place guard, on their own threads.
        self.notifications = notifications or Notifications(settings)
        self.queue = OrderQueue(engine, owner, outbox=self.notifications.outbox)
        self.manager = UploadOrderManager(settings)
        self.on_event = on_event
        self.poller = DatabasePoller(engine, settings)
        self.claims: queuelib.Queue[Claim | None] = queuelib.Queue()
        #: The orders the workers hold, by uuid.
        self.running: dict[str, Claim] = {}
        #: How far the running orders' imports are (as last recorded), by uuid.
        self.progress: dict[str, ImportProgress] = {}
        self.running_lock = threading.Lock()
        #: Notified whenever an order leaves ``running``.
        self.order_done = threading.Condition(self.running_lock)
        self.stopping = threading.Event()
        #: Set once the loop has stopped claiming (a claim under way at stop() ends first).
        self.claiming_stopped = threading.Event()
        self.cancelled = threading.Event()
        #: When a second stop request came (monotonic): running orders are stopped at once.
        self.interrupted_at: float | None = None
        self.workers: list[threading.Thread] = []
        #: When the loop last went round (monotonic): its liveness, for /healthz.
        self.loop_seen = time.monotonic()

    # --- public ------------------------------------------------------------
    def stop(self) -> None:
        """Ask the daemon to stop claiming and shut down (signal-safe)."""
        self.stopping.set()
        self.poller.wake()

    def interrupt(self) -> None:
        """Stop now: cancel running orders instead of waiting for them (signal-safe)."""
        if self.interrupted_at is None:
            self.interrupted_at = time.monotonic()
        self.cancelled.set()
        self.stop()

    def install_signal_handlers(self) -> None:
        """The first SIGTERM or SIGINT stops the daemon; the second interrupts it."""
        def handle(signum: int, frame: Any) -> None:
            (self.interrupt if self.stopping.is_set() else self.stop)()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handle)

    def run(self) -> None:
        """Serve orders until :meth:`stop`; then shut down cleanly."""
        log.info("daemon %s starting with %d workers", self.queue.owner, self.settings.max_workers)
        for number in range(self.settings.max_workers):
            worker = threading.Thread(target=self._work, name=f"worker-{number}", daemon=True)
            worker.start()
            self.workers.append(worker)
        self.notifications.start()
        self._loop()
        self.claiming_stopped.set()
        self._shutdown()

    # --- the loop ----------------------------------------------------------
    def _loop(self) -> None:
        heartbeat = _Timer(self.settings.heartbeat_interval)
        recovery = _Timer(self.settings.recovery_interval)  # due at once: recover on start
        # Queue orders that arrived while no trigger or daemon ran, then claim.
        self._guarded(self.queue.reconcile, "queueing waiting orders")
        wanted = True
        while not self.stopping.is_set():
            self.loop_seen = now = time.monotonic()
            if heartbeat.fire(now) and self._busy():
                self._guarded(self.queue.heartbeat, "heartbeat")
            if recovery.fire(now):
                self._recover()
            if wanted:
                wanted = self._claim_while_free()
            timeout = min(heartbeat.due, recovery.due) - time.monotonic()
            if wanted and self._free_slots() > 0:
                timeout = min(timeout, CLAIM_RETRY)  # claiming failed: try again soon
            # With the pool full, a finishing worker wakes the poller.
            wanted = self.poller.wait(timeout) or wanted

    def _busy(self) -> bool:
        with self.running_lock:
            return bool(self.running)

    def _free_slots(self) -> int:
        with self.running_lock:
            return self.settings.max_workers - len(self.running)

    def _claim_while_free(self) -> bool:
        """Claim until the pool is full or the queue empty; True if more may wait."""
        while self._free_slots() > 0 and not self.stopping.is_set():
            try:
                claim = self.queue.claim_next()
            except SQLAlchemyError as exc:
                log.warning("cannot claim orders now (%s); will try again", type(exc).__name__)
                return True
            if claim is None:
                return False
            with self.running_lock:
                self.running[claim.uuid] = claim
            self._emit("claimed", claim, "")
            self.claims.put(claim)
        return self._free_slots() == 0

    def _recover(self) -> None:
        self._guarded(
            lambda: self.queue.recover(self.settings.stale_after, self.settings.requeue_interrupted),
            "looking for interrupted orders",
        )

    def _guarded(self, work: Callable[[], Any], what: str) -> None:
        """Housekeeping must not stop the daemon when the database is away."""
        try:
            work()
        except SQLAlchemyError as exc:
            log.warning("%s failed (%s); will try again", what, exc.__class__.__name__)

    def _emit(self, what: str, claim: Claim, detail: str) -> None:
        """Tell ``on_event`` (metrics): ``claimed``, ``stage`` and ``finished``
        with a stage as detail, or a handler's own observation."""
        if self.on_event is not None:
            self.on_event(what, claim, detail)

    # --- workers -----------------------------------------------------------
    def _work(self) -> None:
        while True:
            claim = self.claims.get()
            if claim is None:
                return
            try:
                stage, description = self._run_order(claim)
                self._finish(claim, stage, description)
            finally:
                with self.order_done:
                    self.running.pop(claim.uuid, None)
                    self.progress.pop(claim.uuid, None)
                    self.order_done.notify_all()
                self.poller.wake()

    def _finish(self, claim: Claim, stage: str, description: str | None) -> None:
        """Record the outcome. Transient errors are retried inside ``finish``;
        if the database refuses the event itself, record a plain failure so the
        order does not stay ``Import Started`` (its heartbeats would keep it there)."""
        try:
            self.queue.finish(claim, stage, description)
        except SQLAlchemyError as exc:
            log.exception("order %s: could not record %r", claim.uuid, stage)
            try:
                self.queue.finish(claim, STAGE_INGEST_FAILED, (
                    f"the outcome ({stage}) could not be recorded: {type(exc).__name__}; "
                    "see logs/app.logs"))
            except SQLAlchemyError:
                log.critical("order %s: no outcome recorded; recovery will finalise it once "
                             "this daemon stops", claim.uuid)
                return
            stage = STAGE_INGEST_FAILED
        self._emit("finished", claim, stage)

    def _run_order(self, claim: Claim) -> tuple[str, str | None]:
        order_logger = order_log(claim.uuid)
        try:
            order = self.manager.validate(claim.row)
            context = OrderContext(
                order=order,
                settings=self.settings,
                log=order_logger,
                record_stage=lambda stage, text: self._record(claim, stage, text),
                cancelled=self.cancelled,
                emit=lambda what, detail: self._emit(what, claim, detail),
                record_imported=lambda imported: self.notifications.guard.record(order, imported),
                progress=ProgressThrottle(lambda progress: self._progress(claim, progress)),
            )
            order_logger.info("running order of %s/%s: %d path(s) into %s %s", order.group,
                              order.user, len(order.files), order.destination_type,
                              order.destination_id)
            description = self.handler(context)
        except OrderRejected as exc:
            order_logger.warning("rejected: %s", exc)
            return STAGE_INGEST_FAILED, f"invalid order: {exc}"
        except OrderFailed as exc:
            order_logger.warning("failed: %s", exc)
            return STAGE_INGEST_FAILED, str(exc)
        except Exception as exc:  # the daemon outlives any bug in one order's handling
            order_logger.exception("unexpected error")
            return STAGE_INGEST_FAILED, (
                f"internal error ({type(exc).__name__}: {exc}); see logs/app.logs and "
                f"retry with `omero-adi retry {claim.uuid}`"
            )
        order_logger.info("completed")
        return STAGE_IMPORTED, description

    def _record(self, claim: Claim, stage: str, description: str | None) -> None:
        self.queue.record_stage(claim, stage, description)
        self._emit("stage", claim, stage)

    def _progress(self, claim: Claim, progress: ImportProgress) -> None:
        """Keep the latest progress for /metrics and write it to ``adi_progress``;
        a database that is away only costs this write."""
        with self.running_lock:
            self.progress[claim.uuid] = progress
        try:
            self.queue.record_progress(claim, progress)
        except SQLAlchemyError as exc:
            log.warning("order %s: could not record progress (%s)", claim.uuid,
                        type(exc).__name__)

    # --- shutdown ------------------------------------------------------------
    def _shutdown(self) -> None:
        log.info("stopping: no new orders; waiting up to %.0fs for %d running "
                 "(a second SIGTERM or Ctrl-C stops them at once)",
                 self.settings.shutdown_timeout, len(self.running))
        deadline = time.monotonic() + self.settings.shutdown_timeout
        with self.order_done:
            while self.running and self._until(deadline) > 0:
                self.order_done.wait(min(self._until(deadline), SIGNAL_CHECK))
        if self._busy():
            log.warning("%s: stopping the running orders", "second stop request"
                        if self.interrupted_at is not None else "shutdown timeout")
            self.cancelled.set()
        for _ in self.workers:
            self.claims.put(None)
        deadline = time.monotonic() + CANCEL_GRACE
        for worker in self.workers:  # a stuck one is given up on: its order is recorded below
            while worker.is_alive() and self._until(deadline) > 0:
                worker.join(min(self._until(deadline), SIGNAL_CHECK))
        self._record_interrupted()
        self.poller.close()
        self.notifications.stop()
        log.info("daemon %s stopped", self.queue.owner)

    def _until(self, deadline: float) -> float:
        """Seconds left before ``deadline``, which a second stop request brings
        forward to :data:`INTERRUPT_GRACE` after it."""
        if self.interrupted_at is not None:
            deadline = min(deadline, self.interrupted_at + INTERRUPT_GRACE)
        return deadline - time.monotonic()

    def _record_interrupted(self) -> None:
        """Fail the orders whose workers did not wind up, so none stays
        ``Import Started`` (a worker that finishes later records nothing)."""
        with self.running_lock:
            left = list(self.running.values())
        for claim in left:
            description = ("interrupted: the daemon was stopped before the order finished; "
                           f"retry with `omero-adi retry {claim.uuid}`")
            try:
                if self.queue.interrupt(claim, description):
                    log.warning("order %s: %s", claim.uuid, description)
            except SQLAlchemyError as exc:
                log.error("order %s: could not record the interruption (%s); recovery "
                          "will finalise it", claim.uuid, type(exc).__name__)
