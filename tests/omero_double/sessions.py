"""Glacier2 router, ServiceFactory, ISession, IAdmin and IConfig of the double.

Modelled on ome/omero-blitz: fire/SessionManagerI.java (Glacier2 sessions),
fire/PermissionsVerifierI.java (password or session-key logins),
impl/ServiceFactoryI.java; and ome/omero-server: services/sessions/SessionBean.java
and SessionManagerImpl.java (sudo sessions, reference counts), logic/AdminImpl.java.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any, Callable

import Glacier2
import Glacier2_Router_ice  # noqa: F401  (defines Glacier2.Router, which omero-py never imports)
import Ice
import omero
import omero.api
import omero.all  # noqa: F401  (every generated class: clients may send any of them)

from tests.omero_double import convert
from tests.omero_double.dispatch import Locator, WorldServant, amd, void
from tests.omero_double.world import LOGIN_TIME_TO_IDLE_MS, DoubleError, World

SERVER_VERSION = "5.6.14-ice36-double"


def _caller(world: World, current: Any) -> convert.Caller:
    return convert.Caller.of(world, current.id.category, current.ctx)


@amd
class Router(WorldServant, Glacier2.Router):
    """``OMERO.Glacier2/router``: the client proxy is this adapter itself."""

    locator: Locator  # set by DoubleServer once the locator exists

    def getClientProxy(self, current: Any = None) -> Any:
        return current.adapter.createProxy(Ice.stringToIdentity("OMERO.Glacier2/router"))

    def getServerProxy(self, current: Any = None) -> Any:
        return current.adapter.createProxy(Ice.stringToIdentity("OMERO.Glacier2/router"))

    def addProxies(self, proxies: Any, current: Any = None) -> list[Any]:
        return []

    def getCategoryForClient(self, current: Any = None) -> str:
        return "client-" + current.con.toString().split("remote address = ")[-1]

    def getSessionTimeout(self, current: Any = None) -> int:
        return LOGIN_TIME_TO_IDLE_MS // 1000

    def getACMTimeout(self, current: Any = None) -> int:
        return 0

    @void
    def refreshSession(self, current: Any = None) -> None:
        if self.locator.session_of(current) is None:
            raise Glacier2.SessionNotExistException()

    def createSession(self, user_id: str, password: str, current: Any = None) -> Any:
        """A password login opens a new session (idle timeout, no time-to-live);
        a session key as both name and password joins that session
        (PermissionsVerifierI.checkPermissions); anything else is refused."""
        world = self.world
        with world.lock:
            if self.locator.session_of(current) is not None:
                raise Glacier2.CannotCreateSessionException(reason="Session already exists")
            session = world.data["sessions"].get(password)
            if session is not None:
                if user_id != password:
                    raise Glacier2.PermissionDeniedException(
                        reason="username and password must be equal; use joinSession")
                if world.expired_reason(session):
                    raise Glacier2.PermissionDeniedException(reason="Password check failed")
                session["refs"] += 1
                world.touch(session)
            else:
                user = world.user_named(user_id)
                if user is None or user["password"] != password or not world.is_active(user):
                    raise Glacier2.PermissionDeniedException(reason="Password check failed")
                group = current.ctx.get("omero.group")
                gid = (world.group_named(group) or {}).get("id") if group else None
                if gid is None or gid not in user["groups"]:
                    gid = world.default_group(user)
                session = world.open_session(str(uuidlib.uuid4()), user, gid, ttl_ms=0,
                                             tti_ms=LOGIN_TIME_TO_IDLE_MS, sudoer=None, refs=1)
            world.save()
        self.locator.bind(current, session["uuid"])
        current.con.setCallback(_ConnectionGone(self))
        prx = current.adapter.createProxy(Ice.Identity(session["uuid"], "session"))
        return Glacier2.SessionPrx.uncheckedCast(prx)

    @void
    def destroySession(self, current: Any = None) -> None:
        if not self.end_session(current.con):
            raise Glacier2.SessionNotExistException()

    def end_session(self, con: Any) -> bool:
        """Glacier2 destroys the ServiceFactory (destroySession, or the client's
        connection closed): one reference fewer, and the session closes when none
        is left unless the client asked detachOnDestroy (omero/cmd/SessionI.java
        doDestroy)."""
        with self.locator.lock:
            key = self.locator.connections.pop(con.toString(), None)
            detached = con.toString() in self.locator.detached
            self.locator.detached.discard(con.toString())
        if key is None:
            return False
        with self.world.lock:
            session = self.world.data["sessions"].get(key)
            if session is not None:
                session["refs"] -= 1
                if session["refs"] < 1 and not detached:
                    session["closed"] = True
                self.world.save()
        return True


class _ConnectionGone(Ice.ConnectionCallback):
    def __init__(self, router: Router):
        self.router = router

    def heartbeat(self, con: Any) -> None:
        pass

    def closed(self, con: Any) -> None:
        self.router.end_session(con)


def _close_reference(world: World, session: dict[str, Any]) -> int:
    """SessionManagerImpl.close: one reference fewer; at none, the session is gone."""
    session["refs"] -= 1
    if session["refs"] < 1:
        session["closed"] = True
        return -2
    return int(session["refs"])


@amd
class ServiceFactory(WorldServant, omero.api.ServiceFactory):
    locator: Locator  # set by DoubleServer once the locator exists

    def _service(self, name: str, current: Any) -> Any:
        return current.adapter.createProxy(Ice.Identity(f"omero.api.{name}", current.id.name))

    def getAdminService(self, current: Any = None) -> Any:
        return omero.api.IAdminPrx.uncheckedCast(self._service("IAdmin", current))

    def getConfigService(self, current: Any = None) -> Any:
        return omero.api.IConfigPrx.uncheckedCast(self._service("IConfig", current))

    def getQueryService(self, current: Any = None) -> Any:
        return omero.api.IQueryPrx.uncheckedCast(self._service("IQuery", current))

    def getUpdateService(self, current: Any = None) -> Any:
        return omero.api.IUpdatePrx.uncheckedCast(self._service("IUpdate", current))

    def getSessionService(self, current: Any = None) -> Any:
        return omero.api.ISessionPrx.uncheckedCast(self._service("ISession", current))

    def getPixelsService(self, current: Any = None) -> Any:
        return omero.api.IPixelsPrx.uncheckedCast(self._service("IPixels", current))

    def keepAlive(self, proxy: Any, current: Any = None) -> bool:
        """ServiceFactoryI.keepAlive: (the locator has already refused a dead session)
        false for a null proxy, else whether it names one of this session's services
        (BlitzGateway.keepAlive passes its IAdmin proxy; omero-py's keep-alive thread
        passes null and ignores the answer)."""
        if proxy is None:
            return False
        ident = proxy.ice_getIdentity()
        return ident.category == current.id.name and ident.name in self.locator.services

    @void
    def setCallback(self, callback: Any, current: Any = None) -> None:
        pass

    @void
    def detachOnDestroy(self, current: Any = None) -> None:
        self.locator.set_detached(current, True)

    @void
    def closeOnDestroy(self, current: Any = None) -> None:
        self.locator.set_detached(current, False)


@amd
class SessionService(WorldServant, omero.api.ISession):
    def createSessionWithTimeout(self, principal: Any, ttl_ms: int, current: Any = None) -> Any:
        """A sudo session (SessionBean.createSessionWithTimeouts, timeToIdle 0): only an
        admin with the Sudo privilege may open one for any user; anyone else only in
        groups they lead, even for themselves (SessionManagerImpl.validateSessionInputs:
        "Group sudo is not permitted"). It starts with one reference, as every new
        session does (SessionManagerImpl.createSession: count().increment())."""
        world = self.world
        with world.lock:
            caller = _caller(world, current)
            me = caller.user
            user = world.user_named(principal.name)
            if user is None:
                raise DoubleError("omero.ApiUsageException",
                                  f"No such user: {principal.name}")
            gid = (world.group_named(principal.group) or {}).get("id")
            if gid is None:
                raise DoubleError("omero.ApiUsageException", f"No group: {principal.group}")
            sudo = world.is_admin(me) and "Sudo" in world.privileges(me)
            if not sudo and gid not in me["leader_of"]:
                raise DoubleError("omero.SecurityViolation",
                                  f"Group sudo is not permitted for group {principal.group} "
                                  f"(gid={gid})")
            if gid not in user["groups"]:
                raise DoubleError("omero.SecurityViolation",
                                  f"{principal.name} is not a member of {principal.group}")
            if not world.is_active(user):
                raise DoubleError("omero.SecurityViolation", f"{principal.name} is inactive")
            session = world.open_session(str(uuidlib.uuid4()), user, gid, ttl_ms=int(ttl_ms),
                                         tti_ms=0, sudoer=me["id"], refs=1)
            return convert.session_object(world, session)

    def _live(self, uuid: str) -> dict[str, Any]:
        session = self.world.live_session(uuid)
        if session is None:
            raise DoubleError("omero.RemovedSessionException", f"No session with uuid: {uuid}")
        return session

    def getSession(self, uuid: str, current: Any = None) -> Any:
        with self.world.lock:
            return convert.session_object(self.world, self._live(uuid))

    def closeSession(self, session: Any, current: Any = None) -> int:
        with self.world.lock:
            record = self.world.data["sessions"].get(session.uuid.val)
            if record is None or self.world.expired_reason(record):
                return -1
            result = _close_reference(self.world, record)
            self.world.save()
            return result


@amd
class ConfigService(WorldServant, omero.api.IConfig):
    def getVersion(self, current: Any = None) -> str:
        return SERVER_VERSION


@amd
class AdminService(WorldServant, omero.api.IAdmin):
    """The IAdmin calls BlitzGateway and ezomero make (ome/logic/AdminImpl.java)."""

    def getEventContext(self, current: Any = None) -> Any:
        with self.world.lock:
            caller = _caller(self.world, current)
            return convert.event_context(self.world, caller.session)

    def getCurrentAdminPrivileges(self, current: Any = None) -> list[Any]:
        with self.world.lock:
            caller = _caller(self.world, current)
            return [_privilege(p) for p in self.world.privileges(caller.user)]

    def _found(self, record: dict[str, Any] | None, what: str) -> int:
        if record is None:  # AdminImpl: ApiUsageException for an unknown name or id
            raise DoubleError("omero.ApiUsageException", f"No such {what}")
        return int(record["id"])

    def _answer(self, find: Callable[[], dict[str, Any] | None], what: str,
                make: Callable[[World, int], Any]) -> Any:
        with self.world.lock:
            return make(self.world, self._found(find(), what))

    def lookupGroup(self, name: str, current: Any = None) -> Any:
        return self._answer(lambda: self.world.group_named(name), f"group: {name}",
                            convert.group)

    def getGroup(self, gid: int, current: Any = None) -> Any:
        return self._answer(lambda: self.world.get("groups", gid), f"group: {gid}",
                            convert.group)

    def lookupExperimenter(self, name: str, current: Any = None) -> Any:
        return self._answer(lambda: self.world.user_named(name), f"experimenter: {name}",
                            convert.experimenter)

    def getExperimenter(self, uid: int, current: Any = None) -> Any:
        return self._answer(lambda: self.world.get("users", uid), f"experimenter: {uid}",
                            convert.experimenter)

    def containedExperimenters(self, gid: int, current: Any = None) -> list[Any]:
        with self.world.lock:
            return [convert.experimenter(self.world, u["id"])
                    for u in self.world.table("users").values() if gid in u["groups"]]

    def containedGroups(self, uid: int, current: Any = None) -> list[Any]:
        with self.world.lock:
            user = self.world.user(self._found(self.world.get("users", uid),
                                               f"experimenter: {uid}"))
            return [convert.group(self.world, g) for g in self.world.member_groups(user)]

    def getAdminPrivileges(self, user: Any, current: Any = None) -> list[Any]:
        with self.world.lock:
            uid = self._found(self.world.get("users", user.id.val), f"experimenter: {user}")
            return [_privilege(p) for p in self.world.privileges(self.world.user(uid))]


def _privilege(name: str) -> Any:
    p = omero.model.AdminPrivilegeI()
    p.value = omero.rtypes.rstring(name)
    return p
