"""omero-py, imported on first use, and its exceptions in the boundary's terms.

omero-py is imported only when something talks to OMERO, so the daemon
installs and runs without it; an order that needs it then fails with
:class:`OmeroNotInstalled`, which says how to install it.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace
from typing import Iterator

from omero_adi.omero.boundary import (
    OmeroError,
    OmeroNotInstalled,
    OmeroUnreachable,
    PartlyCreated,
    SessionLost,
)

INSTALL_HINT = (
    "install the OMERO extra into the daemon's Python: scripts/build-ice.sh <python> "
    "(zeroc-ice 3.6.5), then pip install 'omero-adi[omero]'"
)


def modules() -> SimpleNamespace:
    """omero-py's modules, imported on first use."""
    try:
        import ezomero
        import Glacier2
        import Ice
        import omero
        import omero.clients
        import omero.gateway
        import omero.model
        import omero.rtypes
        import omero.sys
    except ImportError as exc:
        raise OmeroNotInstalled(f"omero-py is not installed ({exc}); {INSTALL_HINT}") from exc
    return SimpleNamespace(omero=omero, Ice=Ice, Glacier2=Glacier2, ezomero=ezomero)


def unreachable_errors(m: SimpleNamespace) -> tuple[type[BaseException], ...]:
    """Ice/Glacier2 errors that mean "no server answering right now"."""
    return (
        m.Ice.SocketException,  # refused, lost, reset
        m.Ice.TimeoutException,
        m.Ice.DNSException,
        m.Ice.CommunicatorDestroyedException,
        m.Ice.ObjectNotExistException,  # server restarted under a session
        m.Glacier2.CannotCreateSessionException,  # server still starting
    )


def session_lost_errors(m: SimpleNamespace) -> tuple[type[BaseException], ...]:
    """The session is gone: its time-to-live ran out (``SessionTimeoutException``),
    it was closed (``RemovedSessionException``), or the server forgot it."""
    return (m.omero.SessionException, m.Ice.ObjectNotExistException)


@contextmanager
def translated(where: str) -> Iterator[SimpleNamespace]:
    """Turn omero-py's exceptions into the boundary's, naming ``where``."""
    m = modules()
    try:
        yield m
    except m.omero.WrappedCreateSessionException as exc:
        # omero-py already retried it when the server said "concurrency"
        # (omero/clients.py createSession); anything else is the server's answer.
        if exc.concurrency:
            raise OmeroUnreachable(f"OMERO at {where} is busy creating sessions "
                                   f"({exc.type}: {exc.reason})") from exc
        raise OmeroError(f"OMERO at {where} refused the session: {exc.type}: {exc.reason}") from exc
    except m.Glacier2.PermissionDeniedException as exc:  # a login or a join refused
        raise OmeroError(f"OMERO at {where} refused the session: {exc.reason}") from exc
    except session_lost_errors(m) as exc:
        said = getattr(exc, "message", "") or ""
        raise SessionLost(f"the OMERO session at {where} ended ({type(exc).__name__}"
                          + (f": {said})" if said else ")")) from exc
    except unreachable_errors(m) as exc:
        raise OmeroUnreachable(f"OMERO unreachable at {where} ({type(exc).__name__})") from exc
    except m.omero.ServerError as exc:
        message = getattr(exc, "message", "") or type(exc).__name__
        raise OmeroError(f"OMERO at {where} refused: {message}") from exc
    except m.omero.ClientError as exc:
        raise OmeroError(f"talking to OMERO at {where} failed: {exc}") from exc


@contextmanager
def naming(created: list[str]) -> Iterator[None]:
    """Add to a failure what had been ``created`` before it (:class:`PartlyCreated`)."""
    try:
        yield
    except OmeroError as exc:
        if not created:
            raise
        raise PartlyCreated(str(exc), tuple(created)) from exc
