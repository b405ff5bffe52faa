"""Logging: ``logs/app.logs`` (rotating) plus stderr, order uuids on every line."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path
from typing import Any, MutableMapping

from omero_adi.settings import Settings, mask_url

FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(order)s] %(message)s"


class _OrderAndSecrets(logging.Filter):
    """Fills ``%(order)s`` for lines outside an order, and masks URL passwords
    in every message as a last line of defence."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "order"):
            record.order = "-"
        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = mask_url(message), None
        return True


class OrderLog(logging.LoggerAdapter[logging.Logger]):
    """A logger whose lines carry the order's uuid."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs.setdefault("extra", {})["order"] = self.extra["order"] if self.extra else "-"
        return msg, kwargs


def order_log(uuid: str, name: str = "omero_adi.order") -> OrderLog:
    return OrderLog(logging.getLogger(name), {"order": uuid})


def configure(settings: Settings, to_file: bool = True) -> None:
    """Send ADI's logs to stderr and, for the daemon, to the rotating log file."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if to_file:
        path = Path(settings.log_file_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                path,
                maxBytes=settings.log_max_bytes,
                backupCount=settings.log_backup_count,
                encoding="utf-8",
            )
        )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(_OrderAndSecrets())
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    for noisy in ("alembic.runtime.plugins", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
