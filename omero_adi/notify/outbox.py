"""ADI's outbox: messages written in the same transaction as their cause.

The daemon's queue calls :meth:`Outbox.add_event` inside the transaction
that records an order's final event, and the guard calls
:meth:`Outbox.add_findings` inside the one that records what it found; so a
message exists exactly when its cause does, whatever happens to the process
next. Watch-folder events (:meth:`Outbox.add_watch`) are the exception: the
watcher publishes them just after its own commit, so a daemon killed in
between loses that one message (the unit's state is kept, and shown by
``omero-adi status``). The :class:`~omero_adi.notify.sender.Sender` delivers them.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy import Connection

from omero_adi.notify.config import NotifySettings
from omero_adi.notify.message import GUARD, WATCH
from omero_adi.store.queries import run


class Outbox:
    def __init__(self, settings: NotifySettings):
        self.settings = settings
        #: Set after a commit that added messages: wakes the sender at once.
        self.posted = threading.Event()

    def add_event(self, connection: Connection, event_id: int, stage: str) -> int:
        """Queue the messages an order's event calls for; return how many."""
        if stage not in self.settings.stages:
            return 0
        for channel in self.settings.channels:
            run(connection, "outbox_add_event", event_id=event_id, channel=channel)
        return len(self.settings.channels)

    def add_findings(self, connection: Connection, uuid: str, payload: dict[str, Any]) -> int:
        """Queue a message about an order's files the guard found broken."""
        return self._add(connection, GUARD, uuid, payload) if self.settings.guard else 0

    def add_watch(self, connection: Connection, uuid: str | None,
                  payload: dict[str, Any]) -> int:
        """Queue a message about a watch-folder unit (changed after its order, or refused)."""
        return self._add(connection, WATCH, uuid, payload) if self.settings.watch else 0

    def _add(self, connection: Connection, kind: str, uuid: str | None,
             payload: dict[str, Any]) -> int:
        body = json.dumps(payload, ensure_ascii=False)
        for channel in self.settings.channels:
            run(connection, "outbox_add", uuid=uuid, kind=kind, channel=channel, payload=body)
        return len(self.settings.channels)

    def wake(self) -> None:
        """Call after committing the transaction that added messages."""
        self.posted.set()


def order_people(connection: Connection, uuid: str | None) -> dict[str, str]:
    """The order's user and group for a message's payload (empty when there is no order)."""
    row = run(connection, "order_people", uuid=uuid).first() if uuid else None
    return {"user": row.user_name if row else "", "group": row.group_name if row else ""}


def outbox_for(settings: NotifySettings) -> Outbox | None:
    """An outbox when some channel is configured, else None (nothing is written)."""
    return Outbox(settings) if settings.channels else None
