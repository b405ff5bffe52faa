"""The real OMERO server, through omero-py (BlitzGateway) and ezomero.

omero-py is imported only when something here talks to OMERO, so the daemon
installs and runs without it; an order that needs it then fails with
:class:`OmeroNotInstalled`, which says how to install it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from omero_adi.omero.boundary import (
    AnnotatedType,
    FilesetInfo,
    OmeroError,
    OmeroNotInstalled,
    OmeroUnreachable,
)
from omero_adi.orders import DestinationType
from omero_adi.settings import Settings

if TYPE_CHECKING:
    from omero_adi.importing.zarr_meta import ZarrImage, ZarrPlate

INSTALL_HINT = (
    "install the OMERO extra into the daemon's Python: scripts/build-ice.sh <python> "
    "(zeroc-ice 3.6.5), then pip install 'omero-adi[omero]'"
)
#: Service context that searches every group the session may read.
ALL_GROUPS = {"omero.group": "-1"}
#: The ExternalInfo that makes omero-zarr-pixel-buffer serve an Image's pixels
#: from the OME-Zarr multiscales at its ``lsid``.
NGFF_ENTITY_TYPE = "com.glencoesoftware.ngff:multiscales"
NGFF_ENTITY_ID = 3


def _omero() -> SimpleNamespace:
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


def _unreachable_errors(m: SimpleNamespace) -> tuple[type[BaseException], ...]:
    """Ice/Glacier2 errors that mean "no server answering right now"."""
    return (
        m.Ice.SocketException,  # refused, lost, reset
        m.Ice.TimeoutException,
        m.Ice.DNSException,
        m.Ice.CommunicatorDestroyedException,
        m.Ice.ObjectNotExistException,  # server restarted under a session
        m.Glacier2.CannotCreateSessionException,  # server still starting
    )


@contextmanager
def _translated(where: str) -> Iterator[SimpleNamespace]:
    """Turn omero-py's exceptions into the boundary's, naming ``where``."""
    m = _omero()
    try:
        yield m
    except _unreachable_errors(m) as exc:
        raise OmeroUnreachable(f"OMERO unreachable at {where} ({type(exc).__name__})") from exc
    except m.omero.ServerError as exc:
        message = getattr(exc, "message", "") or type(exc).__name__
        raise OmeroError(f"OMERO at {where} refused: {message}") from exc
    except m.omero.ClientError as exc:
        raise OmeroError(f"talking to OMERO at {where} failed: {exc}") from exc


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
            except _unreachable_errors(m):
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
        if not conn.isAdmin():
            conn.close(hard=False)
            raise OmeroError(
                f"OMERO user {user!r} is not an administrator, so it cannot import "
                "for other users; set OMERO_USER to an admin (usually root)"
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
        with self._lock, _translated(self.where) as m:
            try:
                admin = self._admin(m)
                group_id = m.ezomero.get_group_id(admin, group)
                if group_id is None:
                    raise OmeroError(f"group {group!r} does not exist in OMERO")
                user_id = m.ezomero.get_user_id(admin, user)
                if user_id is None:
                    raise OmeroError(f"user {user!r} does not exist in OMERO")
                member_of = {g.id.val for g in admin.getAdminService().containedGroups(user_id)}
                if group_id not in member_of:
                    raise OmeroError(f"user {user!r} is not a member of group {group!r}")
                principal = m.omero.sys.Principal()
                principal.name, principal.group, principal.eventType = user, group, "User"
                session = admin.getSessionService().createSessionWithTimeout(principal, ttl_ms)
            except _unreachable_errors(m):
                self._drop_admin()
                raise
        key = session.getUuid().val
        with _translated(self.where) as m:
            client = self._client(m)
            client.joinSession(key)
            conn = m.omero.gateway.BlitzGateway(client_obj=client)
        return BlitzUserSession(conn, m, user=user, group=group, key=key, where=self.where)

    def describe(self) -> str:
        with self._lock, _translated(self.where) as m:
            admin = self._admin(m)
            return (f"OMERO {admin.getServerVersion()} at {self.where}, "
                    f"admin session as {self.settings.omero_user!r}")

    def close(self) -> None:
        with self._lock:
            self._drop_admin()


class BlitzUserSession:
    """A sudo session as the order's user in the order's group."""

    def __init__(self, conn: Any, m: SimpleNamespace, *, user: str, group: str, key: str,
                 where: str):
        self._conn, self._m = conn, m
        self.user, self.group, self.key, self.where = user, group, key, where

    def check_destination(self, kind: DestinationType, object_id: int) -> None:
        with _translated(self.where):
            found = self._conn.getObject(kind, object_id)  # looks in the session's group
            if found is None:
                groups = self._project(
                    f"select o.details.group.name from {kind} o where o.id = :id", object_id)
                if not groups:
                    raise OmeroError(
                        f"{kind} {object_id} does not exist (or user {self.user!r} cannot see it)"
                    )
                raise OmeroError(f"{kind} {object_id} is in group {groups[0]!r}, not in the "
                                 f"order's group {self.group!r}")
            if not found.canLink():
                raise OmeroError(
                    f"user {self.user!r} may not add data to {kind} {object_id} "
                    f"(owned by {found.getOwnerOmeName()!r})"
                )

    def _project(self, hql: str, object_id: int) -> list[Any]:
        """The first column of an HQL projection with ``:id``, across the user's groups."""
        params = self._m.omero.sys.ParametersI()
        params.addId(object_id)
        rows = self._conn.getQueryService().projection(hql, params, ALL_GROUPS)
        return [self._m.omero.rtypes.unwrap(row[0]) for row in rows]

    def fileset(self, fileset_id: int) -> FilesetInfo:
        with _translated(self.where):
            prefix = self._project("select f.templatePrefix from Fileset f where f.id = :id",
                                   fileset_id)
            if not prefix:
                raise OmeroError(f"Fileset {fileset_id} does not exist")
            used = self._project(
                "select e.clientPath from FilesetEntry e where e.fileset.id = :id", fileset_id)
            images = self._project(
                "select i.id from Image i where i.fileset.id = :id order by i.id", fileset_id)
            plates = self._project(
                "select distinct ws.well.plate.id from WellSample ws "
                "where ws.image.fileset.id = :id", fileset_id)
        return FilesetInfo(
            id=fileset_id,
            template_prefix=prefix[0],
            used_files=tuple(Path("/" + p.lstrip("/")) for p in used),
            image_ids=tuple(images),
            plate_ids=tuple(sorted(plates)),
        )

    def annotate(
        self, kind: AnnotatedType, object_id: int, namespace: str, values: Mapping[str, str]
    ) -> int:
        with _translated(self.where) as m:
            annotation_id = m.ezomero.post_map_annotation(
                self._conn, kind, object_id, dict(values), namespace)
        if annotation_id is None:  # ezomero's answer when the object is not found
            raise OmeroError(f"{kind} {object_id} was not found to annotate")
        return int(annotation_id)

    def register_zarr_image(self, image: ZarrImage, dataset_id: int) -> int:
        with _translated(self.where) as m:
            model = m.omero.model
            image_id = self._zarr_image(m, image)
            link = model.DatasetImageLinkI()
            link.parent = model.DatasetI(dataset_id, False)
            link.child = model.ImageI(image_id, False)
            self._conn.getUpdateService().saveObject(link, self._conn.SERVICE_OPTS)
        return image_id

    def register_zarr_plate(self, plate: ZarrPlate, screen_id: int) -> int:
        with _translated(self.where) as m:
            model, rtypes = m.omero.model, m.omero.rtypes
            update, options = self._conn.getUpdateService(), self._conn.SERVICE_OPTS
            new = model.PlateI()
            new.name = rtypes.rstring(plate.name)
            new.rows, new.columns = rtypes.rint(len(plate.rows)), rtypes.rint(len(plate.columns))
            link = model.ScreenPlateLinkI()
            link.parent, link.child = model.ScreenI(screen_id, False), new
            plate_id = int(update.saveAndReturnObject(link, options).child.id.val)
            for zarr_well in plate.wells:
                well = model.WellI()
                well.plate = model.PlateI(plate_id, False)
                well.row, well.column = rtypes.rint(zarr_well.row), rtypes.rint(zarr_well.column)
                for field in zarr_well.fields:
                    sample = model.WellSampleI()
                    sample.image = model.ImageI(self._zarr_image(m, field), False)
                    well.addWellSample(sample)
                update.saveObject(well, options)
        return plate_id

    def _zarr_image(self, m: SimpleNamespace, image: ZarrImage) -> int:
        """A new Image (with Pixels and Channels) reading its pixels from ``image.uri``."""
        model, rtypes = m.omero.model, m.omero.rtypes
        conn, options = self._conn, self._conn.SERVICE_OPTS
        params = m.omero.sys.ParametersI()
        params.add("value", rtypes.rstring(image.pixel_type))
        pixels_type = conn.getQueryService().findByQuery(
            "from PixelsType p where p.value = :value", params, options)
        image_id = int(conn.getPixelsService().createImage(
            image.size_x, image.size_y, image.size_z, image.size_t, list(range(image.size_c)),
            pixels_type, image.name, "", options).val)
        if image.channel_names:
            conn.setChannelNames("Image", [image_id], dict(enumerate(image.channel_names, 1)))
        created = conn.getQueryService().get("Image", image_id, options)
        info = model.ExternalInfoI()
        info.entityType = rtypes.rstring(NGFF_ENTITY_TYPE)
        info.entityId = rtypes.rlong(NGFF_ENTITY_ID)
        info.lsid = rtypes.rstring(image.uri)
        created.details.externalInfo = info
        conn.getUpdateService().saveObject(created, options)
        return image_id

    def close(self) -> None:
        with _translated(self.where):
            self._conn.close(hard=True)


def check_omero(settings: Settings) -> tuple[bool, str]:
    """For ``omero-adi check``: can the daemon log in to OMERO as admin?"""
    server = BlitzServer(settings)
    try:
        return True, server.describe()
    except OmeroError as exc:
        return False, str(exc)
    finally:
        server.close()
