"""What the daemon hands to the code that runs an order, and what it expects back.

The daemon claims and validates an order, then calls an :data:`OrderHandler`
with an :class:`OrderContext`. The handler returns a description for the
``Import Completed`` event, or raises :class:`OrderFailed` (or lets
:class:`~omero_adi.orders.OrderRejected` escape) for ``Import Failed``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from omero_adi.orders import Order
from omero_adi.progress import ProgressThrottle
from omero_adi.settings import Settings

if TYPE_CHECKING:
    from omero_adi.importing.results import ImportedFileset


class OrderFailed(Exception):
    """Ends the order with ``Import Failed``; the message is the description."""


class OrderInterrupted(OrderFailed):
    """The daemon is shutting down and stopped this order's work."""


@dataclass
class OrderContext:
    order: Order
    settings: Settings
    log: logging.LoggerAdapter[logging.Logger]
    #: Record an intermediate stage event (e.g. ``Import Preprocessing``).
    record_stage: Callable[[str, str | None], None]
    #: Set when running work must stop (shutdown timeout): kill subprocesses.
    cancelled: threading.Event
    #: Report an observation (e.g. ``importer_exit``, ``"0"``) to the daemon's metrics.
    emit: Callable[[str, str], None] = field(default=lambda what, detail: None)
    #: Report the filesets an import created in place (the in-place guard records them).
    record_imported: Callable[[Sequence[ImportedFileset]], None] = field(
        default=lambda imported: None)
    #: Report how far the import is (as often as you like: it is throttled).
    progress: ProgressThrottle = field(default_factory=ProgressThrottle)

    @property
    def log_dir(self) -> Path:
        return Path(self.settings.log_file_path).parent

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise OrderInterrupted("interrupted by shutdown; retry with `omero-adi retry "
                                   f"{self.order.uuid}`")


class OrderHandler(Protocol):
    def __call__(self, ctx: OrderContext) -> str | None: ...
