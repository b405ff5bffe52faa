"""What the daemon runs beside its orders: the outbox sender and the guard
(and the messages about watch-folder units).

Both run on their own threads with their own database engine, so neither a
slow SMTP server nor a large share ever holds up the loop that claims
orders or the workers that run them.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from sqlalchemy import Engine

from omero_adi.notify.guard import Guard
from omero_adi.notify.outbox import order_people, outbox_for
from omero_adi.notify.sender import AddressBook, Sender
from omero_adi.omero.boundary import OmeroServer
from omero_adi.settings import Settings
from omero_adi.store.db import make_engine
from omero_adi.store.queue import new_owner_id
from omero_adi.watch import events as watch_events

log = logging.getLogger(__name__)

#: Seconds a stopping sender or guard may take to finish what it is doing.
STOP_GRACE = 10.0


def blitz_server(settings: Settings) -> OmeroServer:
    from omero_adi.omero.blitz import BlitzServer

    return BlitzServer(settings)


class Notifications:
    def __init__(self, settings: Settings, *, engine: Engine | None = None,
                 server: Callable[[Settings], OmeroServer] = blitz_server):
        self.settings = settings
        self._own_engine = engine is None
        self.engine = engine or make_engine(settings.ingest_tracking_db)
        self.outbox = outbox_for(settings.notify)
        self.guard = Guard(settings, self.engine, self.outbox)
        self.sender = None if self.outbox is None else Sender(
            settings.notify, self.engine, self.outbox, AddressBook(server(settings)),
            new_owner_id())
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        jobs = {"notify-sender": self.sender.run if self.sender else None,
                "guard": self.guard.run if self.settings.guard_interval > 0 else None}
        for name, job in jobs.items():
            if job is not None:
                thread = threading.Thread(target=job, args=(self._stop,), name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
        if self.outbox is not None:
            watch_events.subscribe(self.tell_watch_event)
            log.info("notifications by %s", ", ".join(self.settings.notify.channels))

    def stop(self) -> None:
        self._stop.set()
        if self.outbox is not None:
            watch_events.unsubscribe(self.tell_watch_event)
            self.outbox.wake()
        for thread in self._threads:
            thread.join(timeout=STOP_GRACE)
        if self.sender is not None:
            self.sender.addresses.close()
        if self._own_engine:
            self.engine.dispose()

    def tell_watch_event(self, event: watch_events.WatchEvent) -> None:
        """Queue a message about a unit that changed after its order or was refused
        (the order's user, when there is an order, and the facility)."""
        if event.kind == "ordered" or self.outbox is None:
            return
        if event.kind == "changed":
            headline = (f"OMERO watch folder: {event.path} changed after order {event.uuid}; "
                        "it is not imported again")
        else:
            headline = f"OMERO watch folder: {event.path} cannot become an order"
        with self.engine.begin() as connection:
            added = self.outbox.add_watch(connection, event.uuid, {
                **order_people(connection, event.uuid),
                "path": event.path, "detail": f"Watch rule {event.rule!r}: {event.detail}",
                "headline": headline,
            })
        if added:
            self.outbox.wake()
