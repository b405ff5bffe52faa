"""Ice plumbing of the double: the servant locator every request passes through.

It finds the servant for an identity, checks the Glacier2 session of the
connection and the OMERO session of the call, counts the request, applies
injected faults, and refuses (naming the call) any operation that no servant
of the double implements: the generated ``_Disp`` classes define every
operation as a stub that does nothing, which would answer ``None`` or hang.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

import Ice
import omero

from tests.omero_double.world import DoubleError, World

#: Exception classes a fault or a refusal may name.
_ICE_ERRORS = {name: getattr(Ice, name) for name in (
    "ConnectionLostException", "ConnectionRefusedException", "TimeoutException",
    "ObjectNotExistException", "UnknownException", "SocketException")}


def raise_named(kind: str, message: str) -> None:
    """Raise ``omero.X`` or ``Ice.X`` (or ``Glacier2.X``) named by ``kind``, with ``message``
    in the field the class has for it (``message`` for omero.ServerError, ``reason``
    for Glacier2's and omero.WrappedCreateSessionException, ``unknown`` for Ice's)."""
    module, _, name = kind.rpartition(".")
    if module in ("", "omero"):
        cls = getattr(omero, name, None)
    elif module == "Ice":
        cls = _ICE_ERRORS.get(name)
    elif module == "Glacier2":
        import Glacier2
        cls = getattr(Glacier2, name, None)
    else:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, Ice.Exception)):
        raise omero.InternalException(message=f"omero-double: cannot raise {kind!r}: {message}")
    error = cls()
    for field in ("message", "reason", "unknown"):
        if hasattr(error, field):
            setattr(error, field, message)
            break
    if name == "WrappedCreateSessionException":  # permanent unless a test says otherwise
        error.concurrency, error.backOff, error.type = False, 0, "ome.conditions.InjectedFault"
    raise error


def amd(cls: type) -> type:
    """Give every public method ``op`` of a servant class an ``op_async`` twin, so
    the same code answers whether the Slice declares the operation AMD or not."""
    for name, method in list(vars(cls).items()):
        if name.startswith("_") or not callable(method) or name.endswith("_async"):
            continue
        setattr(cls, f"{name}_async", _async_twin(method))
        cls._implemented = getattr(cls, "_implemented", frozenset()) | {name}  # type: ignore[attr-defined]
    return cls


def _async_twin(method: Callable[..., Any]) -> Callable[..., None]:
    def twin(self: Any, cb: Any, *args: Any, **kwargs: Any) -> None:
        try:
            result = method(self, *args, **kwargs)
        except Ice.Exception as exc:
            cb.ice_exception(exc)
            return
        except DoubleError as exc:
            try:
                raise_named(exc.kind, exc.message)
            except Ice.Exception as named:
                cb.ice_exception(named)
            return
        except Exception as exc:  # a bug in the double: say so on the wire, loudly
            print(f"omero-double: internal error: {exc!r}", file=sys.stderr)
            cb.ice_exception(omero.InternalException(message=f"omero-double bug: {exc!r}"))
            return
        if getattr(method, "void", False):
            cb.ice_response()
        else:
            cb.ice_response(result)  # None included: a null object or an unset optional
    return twin


def void(method: Callable[..., None]) -> Callable[..., None]:
    """Marks an operation that returns nothing (answering it with a value, or a
    valued one with nothing, crashes IcePy)."""
    method.void = True  # type: ignore[attr-defined]
    return method


class WorldServant:
    """A servant of the double: it answers from the world."""

    def __init__(self, world: World):
        self.world = world


class Faults:
    """Injected faults: ``{"call", "raise", "message", "times", "stall_seconds"}``."""

    def __init__(self, world: World):
        self.world = world

    def take(self, call: str) -> dict[str, Any] | None:
        """The first pending fault for ``call`` (``Service.operation``), used up once."""
        with self.world.lock:
            for fault in self.world.data["faults"]:
                if fault["call"] == call and fault.get("times", 1) > 0:
                    fault["times"] = fault.get("times", 1) - 1
                    self.world.save()
                    return dict(fault)
        return None

    def apply(self, call: str,
              raise_: Callable[[str, str], None] = raise_named) -> None:
        """Stall and/or raise as the first pending fault for ``call`` says."""
        fault = self.take(call)
        if fault is None:
            return
        if fault.get("stall_seconds"):
            time.sleep(float(fault["stall_seconds"]))
        if fault.get("raise"):
            raise_(fault["raise"], fault.get("message") or f"injected fault on {call}")


def service_name(current: Any) -> str:
    """``IAdmin.getEventContext`` for a call on a service identity."""
    name = current.id.name
    return f"{name.rsplit('.', 1)[-1]}.{current.operation}"


class Locator(Ice.ServantLocator):
    """Every request of the double goes through :meth:`locate`."""

    def __init__(self, world: World, faults: Faults, router: Any, factory: Any,
                 services: dict[str, Any]):
        self.world, self.faults = world, faults
        self.router, self.factory, self.services = router, factory, services
        #: Glacier2 sessions: connection → session uuid (lost with the process, as
        #: Glacier2's are when it restarts).
        self.connections: dict[str, str] = {}
        #: Connections whose client asked detachOnDestroy: a flag of each client's own
        #: session servant (omero/cmd/SessionI.java ``doClose``), not of the session.
        self.detached: set[str] = set()
        self.lock = threading.Lock()

    def locate(self, current: Any) -> Any:
        ident = current.id
        if (ident.category, ident.name) == ("OMERO.Glacier2", "router"):
            servant, call, uuid = self.router, f"Router.{current.operation}", None
        elif ident.category == "session":
            servant, call, uuid = self.factory, f"ServiceFactory.{current.operation}", ident.name
        elif ident.name in self.services:
            servant, call, uuid = self.services[ident.name], service_name(current), ident.category
        else:
            raise Ice.ObjectNotExistException(id=ident, operation=current.operation)
        self._check_implemented(servant, call, current)
        if uuid is not None:
            self._check_session(uuid, current)
        else:
            with self.world.lock:
                self.world.count_request("(router)")
                self.world.save()
        self.faults.apply(call)
        return servant, None

    def finished(self, current: Any, servant: Any, cookie: Any) -> None:
        pass

    def deactivate(self, category: str) -> None:
        pass

    @staticmethod
    def _check_implemented(servant: Any, call: str, current: Any) -> None:
        operation = current.operation
        if operation.startswith("ice_") or operation in getattr(servant, "_implemented", ()):
            return
        print(f"omero-double: NOT IMPLEMENTED: {call}", file=sys.stderr, flush=True)
        raise Ice.OperationNotExistException(id=current.id, facet=current.facet,
                                             operation=f"{operation} (omero-double does not "
                                                       f"implement {call})")

    def _check_session(self, uuid: str, current: Any) -> None:
        """A call needs this connection's Glacier2 session (zeroc-ice
        cpp/src/Glacier2/SessionRouterI.cpp getRouter: a request on a connection
        without one closes the connection and raises ObjectNotExistException) and a
        live OMERO session (SessionCache: SessionTimeoutException once, then the
        servants are gone: ObjectNotExistException)."""
        con = current.con.toString() if current.con else ""
        with self.lock:
            bound = self.connections.get(con)
        with self.world.lock:
            self.world.count_request(uuid)
            session = self.world.data["sessions"].get(uuid)
            if bound != uuid or session is None:
                self.world.save()
                if bound is None and current.con:
                    current.con.close(True)
                raise Ice.ObjectNotExistException(id=current.id, operation=current.operation)
            reason = self.world.expired_reason(session)
            if reason:
                first = not session["expired"]
                session["expired"] = True
                self.world.save()
                if first and not session["closed"]:
                    raise omero.SessionTimeoutException(message=reason)
                raise Ice.ObjectNotExistException(id=current.id, operation=current.operation)
            self.world.touch(session)
            self.world.save()

    def bind(self, current: Any, uuid: str) -> None:
        with self.lock:
            self.connections[current.con.toString()] = uuid

    def set_detached(self, current: Any, detached: bool) -> None:
        with self.lock:
            (self.detached.add if detached else self.detached.discard)(current.con.toString())

    def session_of(self, current: Any) -> str | None:
        with self.lock:
            return self.connections.get(current.con.toString())
