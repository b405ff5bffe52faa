"""The daemon: wake on new orders, claim them, run them on a pool of workers.

One loop thread does all the waiting and claiming; ``max_workers`` worker
threads run orders. The loop sleeps in the :class:`DatabasePoller` until an
order may be waiting or a worker finishes, and runs its timers: heartbeat
(only while orders run) and recovery of interrupted orders.
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
from omero_adi.orders import OrderRejected, UploadOrderManager
from omero_adi.pipeline import OrderContext, OrderFailed, OrderHandler
from omero_adi.poller import DatabasePoller
from omero_adi.settings import Settings
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED
from omero_adi.store.queue import Claim, OrderQueue

log = logging.getLogger(__name__)

#: Seconds a worker may take to wind up after its order was cancelled.
CANCEL_GRACE = 30.0
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
    ):
        self.settings = settings
        self.engine = engine
        self.handler = handler
        self.queue = OrderQueue(engine, owner)
        self.manager = UploadOrderManager(settings)
        self.on_event = on_event
        self.poller = DatabasePoller(engine, settings)
        self.claims: queuelib.Queue[Claim | None] = queuelib.Queue()
        self.running: set[str] = set()
        self.running_lock = threading.Lock()
        #: Notified whenever an order leaves ``running``.
        self.order_done = threading.Condition(self.running_lock)
        self.stopping = threading.Event()
        #: Set once the loop has stopped claiming (a claim under way at stop() ends first).
        self.claiming_stopped = threading.Event()
        self.cancelled = threading.Event()
        self.workers: list[threading.Thread] = []
        #: When the loop last went round (monotonic): its liveness, for /healthz.
        self.loop_seen = time.monotonic()

    # --- public ------------------------------------------------------------
    def stop(self) -> None:
        """Ask the daemon to stop claiming and shut down (signal-safe)."""
        self.stopping.set()
        self.poller.wake()

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())

    def run(self) -> None:
        """Serve orders until :meth:`stop`; then shut down cleanly."""
        log.info("daemon %s starting with %d workers", self.queue.owner, self.settings.max_workers)
        for number in range(self.settings.max_workers):
            worker = threading.Thread(target=self._work, name=f"worker-{number}", daemon=True)
            worker.start()
            self.workers.append(worker)
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
                self.running.add(claim.uuid)
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
                    self.running.discard(claim.uuid)
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

    # --- shutdown ------------------------------------------------------------
    def _shutdown(self) -> None:
        log.info("stopping: no new orders; waiting up to %.0fs for %d running",
                 self.settings.shutdown_timeout, len(self.running))
        with self.order_done:
            self.order_done.wait_for(lambda: not self.running, self.settings.shutdown_timeout)
        if self._busy():
            log.warning("shutdown timeout: stopping the running orders")
            self.cancelled.set()
        for _ in self.workers:
            self.claims.put(None)
        for worker in self.workers:
            worker.join(timeout=CANCEL_GRACE)  # a stuck one is left to recovery
        self.poller.close()
        log.info("daemon %s stopped", self.queue.owner)
