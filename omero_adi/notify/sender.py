"""The sender: delivers the outbox, on its own thread and its own connections.

It claims the due messages a batch at a time (``outbox_claim``: one
statement holds up to :data:`BATCH` of them by a lease), delivers them one
after the other, and records what became of each as soon as it is known
(``outbox_record``): sent, refused (permanently, or after ``max_attempts``),
or due again after a backoff; the messages left when the sender stops or the
batch's time is up are released untried, together. A sender that dies
mid-batch lets its lease run out: only the message it was delivering can go
out twice (with the same idempotency key). Nothing here runs on the daemon's
loop or workers, so a down or slow SMTP server or webhook never delays an
import or a claim.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from omero_adi.notify.config import NotifySettings
from omero_adi.notify.email import send_email
from omero_adi.notify.errors import DeliveryFailed, PermanentFailure, TransientFailure
from omero_adi.notify.message import GUARD, TEST, WATCH, Finding, Notice
from omero_adi.notify.outbox import Outbox
from omero_adi.notify.webhook import post_webhook
from omero_adi.omero.boundary import OmeroError, OmeroServer, OmeroUnreachable
from omero_adi.store.models import json_or_text
from omero_adi.store.queries import run
from omero_adi.store.queue import is_local_and_dead
from omero_adi.store.retry import retry_transient

log = logging.getLogger(__name__)

#: Seconds an address OMERO gave is reused.
ADDRESS_TTL = 3600.0
#: Seconds between purges of old messages (``keep_days``).
PURGE_INTERVAL = 3600.0
#: Messages claimed at once: one statement claims a batch; each outcome is recorded by
#: a statement of its own, the messages not tried together.
BATCH = 50
#: Seconds after its claim in which a batch's deliveries may start; the messages not
#: started by then are released for the next claim. The lease adds this to the time
#: one delivery may take, so each delivery started in time ends within the lease.
BATCH_WINDOW = 10.0


class AddressBook:
    """Users' e-mail addresses as OMERO knows them (``Experimenter.email``), cached."""

    def __init__(self, server: OmeroServer, ttl: float = ADDRESS_TTL,
                 clock: Callable[[], float] = time.monotonic):
        self.server, self.ttl, self.clock = server, ttl, clock
        self._cache: dict[str, tuple[float, str | None]] = {}

    def email(self, user: str) -> str | None:
        cached = self._cache.get(user)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        try:
            address = self.server.user_email(user)
        except OmeroUnreachable as exc:
            raise TransientFailure(f"cannot look up the e-mail address of {user!r}: {exc}") from exc
        except OmeroError as exc:
            log.warning("no e-mail address for OMERO user %r: %s", user, exc)
            address = None
        self._cache[user] = (self.clock() + self.ttl, address)
        return address

    def close(self) -> None:
        self.server.close()


def notice_for(entry: Any) -> Notice:
    """The notice a claimed outbox row stands for (``outbox_claim`` brings all it needs)."""
    key = f"omero-adi-{entry.id}"
    if entry.kind == GUARD:
        payload = json.loads(entry.payload)
        findings = tuple(Finding(f["path"], f["state"], f["detail"], tuple(f["images"]),
                                 tuple(f["plates"])) for f in payload["findings"])
        return Notice(key, GUARD, entry.uuid, payload["user"], payload["group"],
                      findings=findings)
    if entry.kind == WATCH:
        payload = json.loads(entry.payload)
        return Notice(key, WATCH, entry.uuid, payload["user"], payload["group"],
                      files=(payload["path"],), description=payload["detail"],
                      headline=payload["headline"])
    created = sorted(json.loads(entry.created or "[]"))  # [fileset, images, plates]
    files = json_or_text(entry.files)
    return Notice(
        key, entry.kind, entry.uuid, entry.user_name, entry.group_name,
        destination=f"{entry.destination_type} {entry.destination_id}",
        files=tuple(map(str, files)) if isinstance(files, list) else (str(files),),
        description=entry.description or "",
        images=tuple(i for _, images, _ in created for i in images),
        plates=tuple(p for _, _, plates in created for p in plates),
    )


def deliver(settings: NotifySettings, addresses: AddressBook, channel: str,
            notice: Notice) -> str:
    """One delivery attempt; a note for the record, or :class:`DeliveryFailed`."""
    if channel not in settings.channels:
        raise PermanentFailure(f"channel {channel} is no longer configured")
    if channel == "email":
        to = recipients(settings, addresses, notice)
        note = send_email(settings, notice, to)
        return f"to {', '.join(to)}" + (f"; {note}" if note else "")
    post_webhook(settings.webhook(channel), notice, settings)
    return ""


def recipients(settings: NotifySettings, addresses: AddressBook, notice: Notice) -> list[str]:
    """The ordering user (as OMERO knows them) and the facility; a test goes to
    every facility address."""
    if notice.kind == TEST:
        to = settings.facility(None)
    else:
        user_address = (addresses.email(notice.user)
                        if settings.notify_user and notice.user else None)
        to = [user_address] if user_address else []
        to += [a for a in settings.facility(notice.group) if a not in to]
    if not to:
        raise PermanentFailure(
            f"no recipient: OMERO has no e-mail address for {notice.user!r} and no "
            f"facility address is configured for group {notice.group!r}")
    return to


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed message (a row of ``outbox_record``'s list)."""

    id: int
    #: ``sent``, ``refused``, ``later`` or ``released`` (not attempted).
    outcome: str
    note: str | None = None
    #: Seconds until a ``later`` message is due again.
    delay: float | None = None


class Sender:
    def __init__(self, settings: NotifySettings, engine: Engine, outbox: Outbox,
                 addresses: AddressBook, owner: str, batch: int = BATCH):
        self.settings, self.engine, self.outbox = settings, engine, outbox
        self.addresses, self.owner, self.batch = addresses, owner, batch
        # Long enough for the slowest delivery started within the batch's window;
        # a dead sender's messages wait this long.
        slowest = max([settings.smtp_timeout] + [w.timeout for w in settings.webhooks])
        self.lease = 2 * slowest + 30 + BATCH_WINDOW

    # --- the loop ------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; wake when the outbox says so."""
        try:
            self.release_dead()
        except SQLAlchemyError as exc:  # their leases run out in any case
            log.warning("notifications: cannot look for dead senders (%s)", type(exc).__name__)
        purged = 0.0
        while not stop.is_set():
            self.outbox.posted.clear()
            wait = self.settings.poll_interval
            try:
                if time.monotonic() - purged > PURGE_INTERVAL:
                    self.purge()
                    purged = time.monotonic()
                self.deliver_due(stop)
                wait = min(wait, self._seconds_to_next())
            except SQLAlchemyError as exc:
                log.warning("notifications: the database is away (%s); will try again",
                            type(exc).__name__)
            self.outbox.posted.wait(max(wait, 0.01))

    def purge(self) -> None:
        """Forget messages sent or refused more than ``keep_days`` ago."""
        if self.settings.keep_days:
            with self.engine.begin() as connection:
                run(connection, "outbox_purge", days=self.settings.keep_days)

    def release_dead(self) -> None:
        """Free messages held by senders of this host that no longer run (a
        daemon killed mid-delivery), instead of waiting for their leases."""
        with self.engine.begin() as connection:
            for (holder,) in run(connection, "outbox_lease_holders").all():
                if holder != self.owner and is_local_and_dead(holder):
                    run(connection, "outbox_release", owner=holder)
                    log.info("notifications: freed the messages of %s, which stopped", holder)

    def deliver_due(self, stop: threading.Event | None = None) -> int:
        """Deliver every message that is due, a batch at a time; return how many
        were attempted."""
        count = 0
        while stop is None or not stop.is_set():
            window_ends = time.monotonic() + BATCH_WINDOW  # the lease starts at the claim
            held = self._claim()
            released = []
            for n, entry in enumerate(held):
                # the first always, so that claims slower than the window (a database
                # under load) cannot starve the outbox; the lease leaves it 40 s
                # beyond the slowest delivery. The rest only within the window.
                in_time = n == 0 or time.monotonic() < window_ends
                if in_time and (stop is None or not stop.is_set()):
                    self._record([self._attempt(entry)])  # at once: never delivered twice
                    count += 1
                else:
                    released.append(Outcome(entry.id, "released"))
            if released:
                self._record(released)
            if len(held) < self.batch:
                return count
        return count

    def _seconds_to_next(self) -> float:
        with self.engine.connect() as connection:
            seconds = run(connection, "outbox_seconds_to_next").scalar()
        return self.settings.poll_interval if seconds is None else float(seconds)

    def _claim(self) -> Sequence[Any]:
        with self.engine.begin() as connection:
            return run(connection, "outbox_claim", limit=self.batch, owner=self.owner,
                       lease=self.lease).all()

    def _attempt(self, entry: Any) -> Outcome:
        try:
            note = deliver(self.settings, self.addresses, entry.channel, notice_for(entry))
        except PermanentFailure as exc:
            log.warning("notification %s (%s, %s) refused: %s", entry.id, entry.kind,
                        entry.channel, exc)
            return Outcome(entry.id, "refused", str(exc))
        except DeliveryFailed as exc:
            return self._later(entry, str(exc))
        except Exception as exc:  # a bug in one message must not stop the others
            log.exception("notification %s: unexpected error", entry.id)
            return self._later(entry, f"internal error: {type(exc).__name__}: {exc}")
        log.info("notification %s (%s of %s) sent by %s %s", entry.id, entry.kind,
                 entry.uuid, entry.channel, note)
        return Outcome(entry.id, "sent", note or None)

    def _later(self, entry: Any, error: str) -> Outcome:
        if entry.attempts >= self.settings.max_attempts:
            log.warning("notification %s (%s): gave up: %s", entry.id, entry.channel, error)
            return Outcome(entry.id, "refused", f"gave up after {entry.attempts} attempts: {error}")
        delay = min(self.settings.retry_delay * 2 ** min(entry.attempts - 1, 30),
                    self.settings.max_retry_delay)
        log.info("notification %s (%s) not delivered (%s); next try in %.0fs", entry.id,
                 entry.channel, error, delay)
        return Outcome(entry.id, "later", error, delay)

    def _record(self, outcomes: list[Outcome]) -> None:
        """Write outcomes, through short database outages: unrecorded, a
        delivered message would go out again once the lease ran out."""
        payload = json.dumps([asdict(o) for o in outcomes])

        def write() -> None:
            with self.engine.begin() as connection:
                run(connection, "outbox_record", outcomes=payload, owner=self.owner)
        retry_transient(write, what="recording what became of notifications")
