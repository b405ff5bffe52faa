"""What the watcher tells others: a unit ordered, refused, or changed after its order.

Notifications (and anything else) hook in with :func:`subscribe`; the watcher
calls every listener from its own thread, after the event is in the database.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Literal

log = logging.getLogger(__name__)

EventKind = Literal["ordered", "refused", "changed"]


@dataclass(frozen=True)
class WatchEvent:
    #: ``ordered``: the unit became order ``uuid``; ``refused``: it cannot become
    #: an order (``detail`` says why; it is not tried again); ``changed``: it
    #: changed after order ``uuid`` was written, and is not imported again.
    kind: EventKind
    rule: str
    path: str
    uuid: str | None
    detail: str


Listener = Callable[[WatchEvent], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> None:
    """Call ``listener`` for every watch event of this process."""
    with _lock:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    with _lock:
        _listeners.remove(listener)


def publish(event: WatchEvent) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a listener's bug must not stop the watcher; the event is recorded
            log.exception("watch event listener %r failed on %s", listener, event)
