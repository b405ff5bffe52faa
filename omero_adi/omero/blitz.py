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
    PartlyCreated,
    SessionLost,
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
#: The description of Datasets that watch rules create.
DATASET_DESCRIPTION = "Created by omero-adi for a watched folder"


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


def _session_lost_errors(m: SimpleNamespace) -> tuple[type[BaseException], ...]:
    """The session is gone: its time-to-live ran out (``SessionTimeoutException``),
    it was closed (``RemovedSessionException``), or the server forgot it."""
    return (m.omero.SessionException, m.Ice.ObjectNotExistException)


@contextmanager
def _translated(where: str) -> Iterator[SimpleNamespace]:
    """Turn omero-py's exceptions into the boundary's, naming ``where``."""
    m = _omero()
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
    except _session_lost_errors(m) as exc:
        said = getattr(exc, "message", "") or ""
        raise SessionLost(f"the OMERO session at {where} ended ({type(exc).__name__}"
                          + (f": {said})" if said else ")")) from exc
    except _unreachable_errors(m) as exc:
        raise OmeroUnreachable(f"OMERO unreachable at {where} ({type(exc).__name__})") from exc
    except m.omero.ServerError as exc:
        message = getattr(exc, "message", "") or type(exc).__name__
        raise OmeroError(f"OMERO at {where} refused: {message}") from exc
    except m.omero.ClientError as exc:
        raise OmeroError(f"talking to OMERO at {where} failed: {exc}") from exc


@contextmanager
def _naming(created: list[str]) -> Iterator[None]:
    """Add to a failure what had been ``created`` before it (:class:`PartlyCreated`)."""
    try:
        yield
    except OmeroError as exc:
        if not created:
            raise
        raise PartlyCreated(str(exc), tuple(created)) from exc


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
        with self._lock, _translated(self.where) as m:
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
            except _unreachable_errors(m):
                self._drop_admin()
                raise
        key = session.getUuid().val
        with _translated(self.where) as m:
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
        with self._lock, _translated(self.where) as m:
            try:
                experimenter = self._admin(m).getAdminService().lookupExperimenter(user)
            except _unreachable_errors(m):
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
        with self._lock, _translated(self.where) as m:
            admin = self._admin(m)
            return (f"OMERO {admin.getConfigService().getVersion()} at {self.where}, "
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

    def find_or_create_dataset(self, name: str) -> int:
        with _translated(self.where) as m:
            owner = self._conn.getUserId()
            found = sorted(dataset.getId() for dataset in  # in the session's group only
                           self._conn.getObjects("Dataset", attributes={"name": name})
                           if dataset.getDetails().getOwner().getId() == owner)
            if found:
                return int(found[0])
            created = m.ezomero.post_dataset(self._conn, name, description=DATASET_DESCRIPTION,
                                             across_groups=False)
        if created is None:
            raise OmeroError(f"Dataset {name!r} could not be created in group {self.group!r}")
        return int(created)

    def created_filesets(self) -> tuple[int, ...]:
        with _translated(self.where) as m:
            params = m.omero.sys.ParametersI()
            params.add("uuid", m.omero.rtypes.rstring(self.key))
            rows = self._conn.getQueryService().projection(
                "select f.id from Fileset f where f.details.creationEvent.session.uuid = :uuid "
                "order by f.id", params, self._conn.SERVICE_OPTS)
            return tuple(int(m.omero.rtypes.unwrap(row[0])) for row in rows)

    def annotate(
        self, kind: AnnotatedType, namespace: str, values: Mapping[int, Mapping[str, str]]
    ) -> tuple[int, ...]:
        # One request: the links, each carrying its new MapAnnotation, saved together
        # (all or none). ezomero.post_map_annotation took several per object
        # (getObject, getGroup, save, link) and printed to standard output.
        if not values:
            return ()
        with _translated(self.where) as m:
            model, rtypes = m.omero.model, m.omero.rtypes
            links = []
            for object_id, pairs in values.items():
                annotation = model.MapAnnotationI()
                annotation.setNs(rtypes.rstring(namespace))
                annotation.setMapValue([model.NamedValue(k, v) for k, v in pairs.items()])
                link = getattr(model, f"{kind}AnnotationLinkI")()
                link.parent = getattr(model, f"{kind}I")(object_id, False)
                link.child = annotation
                links.append(link)
            saved = self._conn.getUpdateService().saveAndReturnArray(
                links, self._conn.SERVICE_OPTS)
        return tuple(int(link.child.id.val) for link in saved)

    def register_zarr_image(self, image: ZarrImage, dataset_id: int) -> int:
        created: list[str] = []
        with _naming(created), _translated(self.where) as m:
            model = m.omero.model
            image_id = self._zarr_image(m, image, created)
            link = model.DatasetImageLinkI()
            link.parent = model.DatasetI(dataset_id, False)
            link.child = model.ImageI(image_id, False)
            self._conn.getUpdateService().saveObject(link, self._conn.SERVICE_OPTS)
        return image_id

    def register_zarr_plate(self, plate: ZarrPlate, screen_id: int) -> int:
        created: list[str] = []
        with _naming(created), _translated(self.where) as m:
            model, rtypes = m.omero.model, m.omero.rtypes
            update, options = self._conn.getUpdateService(), self._conn.SERVICE_OPTS
            new = model.PlateI()
            new.name = rtypes.rstring(plate.name)
            new.rows, new.columns = rtypes.rint(len(plate.rows)), rtypes.rint(len(plate.columns))
            link = model.ScreenPlateLinkI()
            link.parent, link.child = model.ScreenI(screen_id, False), new
            plate_id = int(update.saveAndReturnObject(link, options).child.id.val)
            created.append(f"Plate {plate_id}")
            for zarr_well in plate.wells:
                well = model.WellI()
                well.plate = model.PlateI(plate_id, False)
                well.row, well.column = rtypes.rint(zarr_well.row), rtypes.rint(zarr_well.column)
                for field in zarr_well.fields:
                    sample = model.WellSampleI()
                    sample.image = model.ImageI(self._zarr_image(m, field, created), False)
                    well.addWellSample(sample)
                update.saveObject(well, options)
        return plate_id

    def _zarr_image(self, m: SimpleNamespace, image: ZarrImage, created: list[str]) -> int:
        """A new Image (with Pixels and Channels) reading its pixels from ``image.uri``;
        named in ``created`` as soon as it exists."""
        model, rtypes = m.omero.model, m.omero.rtypes
        conn, options = self._conn, self._conn.SERVICE_OPTS
        params = m.omero.sys.ParametersI()
        params.add("value", rtypes.rstring(image.pixel_type))
        pixels_type = conn.getQueryService().findByQuery(
            "from PixelsType p where p.value = :value", params, options)
        image_id = int(conn.getPixelsService().createImage(
            image.size_x, image.size_y, image.size_z, image.size_t, list(range(image.size_c)),
            pixels_type, image.name, "", options).val)
        created.append(f"Image {image_id}")
        if image.channel_names:
            conn.setChannelNames("Image", [image_id], dict(enumerate(image.channel_names, 1)))
        saved = conn.getQueryService().get("Image", image_id, options)
        info = model.ExternalInfoI()
        info.entityType = rtypes.rstring(NGFF_ENTITY_TYPE)
        info.entityId = rtypes.rlong(NGFF_ENTITY_ID)
        info.lsid = rtypes.rstring(image.uri)
        saved.details.externalInfo = info
        conn.getUpdateService().saveObject(saved, options)
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
