"""Retrying OMERO work while the server is unreachable: bounded, with backoff."""

from __future__ import annotations

import logging
import threading
from typing import Callable, TypeVar

from omero_adi.omero.boundary import OmeroUnreachable

T = TypeVar("T")


def retry_unreachable(
    work: Callable[[], T],
    *,
    attempts: int,
    cancelled: threading.Event,
    log: logging.LoggerAdapter[logging.Logger] | logging.Logger,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> T:
    """Run ``work``; while it raises :class:`OmeroUnreachable`, wait (doubling,
    up to ``max_delay``) and try again, ``attempts`` times in all.

    The last :class:`OmeroUnreachable` is raised when every attempt failed or
    ``cancelled`` was set while waiting. Other errors are never retried.
    """
    delay = first_delay
    attempt = 1
    while True:
        try:
            return work()
        except OmeroUnreachable as exc:
            if attempt >= attempts:
                raise
            log.warning("%s; retrying in %.1fs (attempt %d of %d)", exc, delay, attempt, attempts)
            if cancelled.wait(delay):
                raise
            delay = min(delay * 2, max_delay)
            attempt += 1
