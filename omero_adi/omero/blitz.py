"""The real OMERO server, through omero-py (BlitzGateway) and ezomero: the admin
session, and a sudo session for each order's user (:mod:`.user_session`)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from omero_adi.omero.boundary import OmeroError
from omero_adi.omero.omero_py import translated, unreachable_errors
from omero_adi.omero.user_session import BlitzUserSession
from omero_adi.settings import Settings


class BlitzServer:
    """The admin session, opened on first use and kept alive across orders."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.where = f"{settings.omero_host}:{settings.omero_port}"
        self._admin_conn: Any = None
        self._lock = threading.Lock()

    def _client(self, m: SimpleNamespace) -> Any:
        return m.omero.client(self.settings.omero_host, self.settings.omero_port)

    def _admin(self, m: SimpleNamespace) -> Any:
        """The live admin BlitzGateway; call with the lock held."""
        if self._admin_conn is not None:
            try:
                if self._admin_conn.keepAlive():
                    return self._admin_conn
            except unreachable_errors(m):
                pass
            self._drop_admin()
        user = self.settings.omero_user
        if not self.settings.omero_password:
            raise OmeroError(f"no password for the OMERO admin {user!r}: set OMERO_PASSWORD")
        client = self._client(m)
        try:
            client.createSession(user, self.settings.omero_password)
        except m.Glacier2.PermissionDeniedException as exc:
            client.closeSession()
            raise OmeroError(
                f"OMERO at {self.where} refused the login of {user!r}: "
                "check OMERO_USER and OMERO_PASSWORD"
            ) from exc
        except BaseException:
            client.closeSession()
            raise
        conn = m.omero.gateway.BlitzGateway(client_obj=client)
        context = conn.getEventContext()
        problem = None
        if not context.isAdmin:
            problem = "is not an administrator"
        elif "Sudo" not in (context.adminPrivileges or []):
            # a restricted admin (AdminImpl): isAdmin, but createSessionWithTimeout
            # for another user needs the Sudo privilege
            problem = "is a restricted administrator without the Sudo privilege"
        if problem:
            conn.close(hard=False)
            raise OmeroError(
                f"OMERO user {user!r} {problem}, so it cannot import for other users; "
                "set OMERO_USER to an admin (usually root)"
                + ("" if not context.isAdmin else " or give this one Sudo")
            )
        self._admin_conn = conn
        return conn

    def _drop_admin(self) -> None:
        conn, self._admin_conn = self._admin_conn, None
        if conn is not None:
            try:
                conn.close(hard=False)
            except Exception:  # the session is being abandoned anyway
                pass

    def user_session(self, user: str, group: str, ttl_ms: int) -> BlitzUserSession:
        with self._lock, translated(self.where) as m:
            try:
                admin = self._admin(m)
                group_id = m.ezomero.get_group_id(admin, group)
                if group_id is None:
                    raise OmeroError(f"group {group!r} does not exist in OMERO")
                try:  # one request, not ezomero.get_user_id's listing of a whole group
                    user_id = admin.getAdminService().lookupExperimenter(user).id.val
                except m.omero.ApiUsageException as exc:  # "No such experimenter"
                    raise OmeroError(f"user {user!r} does not exist in OMERO") from exc
                member_of = {g.id.val for g in admin.getAdminService().containedGroups(user_id)}
                if group_id not in member_of:
                    raise OmeroError(f"user {user!r} is not a member of group {group!r}")
                principal = m.omero.sys.Principal()
                principal.name, principal.group, principal.eventType = user, group, "User"
                session = admin.getSessionService().createSessionWithTimeout(principal, ttl_ms)
            except unreachable_errors(m):
                self._drop_admin()
                raise
        key = session.getUuid().val
        with translated(self.where) as m:
            client = self._client(m)
            try:
                client.joinSession(key)
            except BaseException:
                client.__del__()  # the communicator and its threads
                self._close_unjoined(m, session)
                raise
            conn = m.omero.gateway.BlitzGateway(client_obj=client)
        return BlitzUserSession(conn, m, user=user, group=group, key=key, where=self.where)

    def user_email(self, user: str) -> str | None:
        with self._lock, translated(self.where) as m:
            try:
                experimenter = self._admin(m).getAdminService().lookupExperimenter(user)
            except unreachable_errors(m):
                self._drop_admin()
                raise
        return (m.omero.rtypes.unwrap(experimenter.getEmail()) or "").strip() or None

    def _close_unjoined(self, m: SimpleNamespace, session: Any) -> None:
        """End a user session nobody could join, instead of leaving it to its TTL."""
        try:
            with self._lock:
                self._admin(m).getSessionService().closeSession(session)
        except Exception:  # the join already failed; that is the error to report
            pass

    def describe(self) -> str:
        with self._lock, translated(self.where) as m:
            admin = self._admin(m)
            return (f"OMERO {admin.getConfigService().getVersion()} at {self.where}, "
                    f"admin session as {self.settings.omero_user!r}")

    def close(self) -> None:
        with self._lock:
            self._drop_admin()


def check_omero(settings: Settings) -> tuple[bool, str]:
    """For ``omero-adi check``: can the daemon log in to OMERO as admin?"""
    server = BlitzServer(settings)
    try:
        return True, server.describe()
    except OmeroError as exc:
        return False, str(exc)
    finally:
        server.close()
