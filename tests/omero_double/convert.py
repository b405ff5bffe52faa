"""The double's records as omero-py model objects, as the server would send them.

Every data object carries loaded ``details`` (owner with name, group with
permissions) and a Permissions object whose restrictions are computed for the
caller, as the server's ``BasicACLVoter.postProcess`` does
(ome/security/basic/BasicACLVoter.java): the client's ``canLink()`` and
``canAnnotate()`` read them.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

import omero
import omero.model
import omero.sys
from omero.rtypes import rint, rlong, rstring, rtime

from tests.omero_double.world import DoubleError, World

#: Model classes by the table of the world that holds them.
CLASSES = {"datasets": "Dataset", "screens": "Screen", "plates": "Plate", "images": "Image",
           "filesets": "Fileset", "annotations": "MapAnnotation"}
TABLES = {cls: table for table, cls in CLASSES.items()}


@dataclass
class Caller:
    """Who makes a call: the session's user, in the call's group context."""

    world: World
    session: dict[str, Any]
    user: dict[str, Any]
    #: The group of the call: the session's, or ``omero.group`` of the call's
    #: context; -1 means all the user's groups.
    group: int

    @classmethod
    def of(cls, world: World, uuid: str, ctx: dict[str, str]) -> Caller:
        session = world.data["sessions"][uuid]
        user = world.user(session["user"])
        raw = ctx.get("omero.group") or str(session["group"])
        try:
            group = int(raw)
        except ValueError:  # the server reads omero.group as a number (BasicEventContext)
            raise DoubleError("omero.ApiUsageException", f"omero.group={raw!r} is not a group id")
        if group != -1 and group not in user["groups"] and not world.is_admin(user):
            raise DoubleError("omero.SecurityViolation",
                              f"user {user['name']} is not a member of group {group}")
        return cls(world, session, user, group)

    def sees(self, obj: dict[str, Any]) -> bool:
        return self.world.may_read(self.user, obj, self.group)


def permissions(perms: str, *, link: bool = False, annotate: bool = False,
                edit: bool = False, delete: bool = False) -> Any:
    p = omero.model.PermissionsI(perms)
    # restriction order: LINK, EDIT, DELETE, ANNOTATE, CHGRP, CHOWN (omero/model/Permissions.ice)
    p._restrictions = [not link, not edit, not delete, not annotate, True, True]
    return p


def _loaded(obj: Any, **fields: Any) -> Any:
    """Fill a loaded system object: strings wrapped, ``ldap`` false."""
    if obj.isLoaded():
        for name, value in fields.items():
            setattr(obj, name, None if value is None else rstring(value))
        obj.ldap = omero.rtypes.rbool(False)
    return obj


def experimenter(world: World, uid: int, loaded: bool = True) -> Any:
    user = world.user(uid)
    return _loaded(omero.model.ExperimenterI(uid, loaded), omeName=user["name"],
                   firstName=user["name"].capitalize(), lastName="Double", email=user["email"])


def group(world: World, gid: int, loaded: bool = True) -> Any:
    g = world.group(gid)
    obj = _loaded(omero.model.ExperimenterGroupI(gid, loaded), name=g["name"])
    if loaded:
        obj.details.permissions = permissions(g["perms"])
    return obj


def membership(world: World, uid: int, gid: int, *, member_loaded: str) -> Any:
    """A GroupExperimenterMap; ``member_loaded`` says which end is loaded."""
    m = omero.model.GroupExperimenterMapI(uid * 10_000 + gid, True)
    m.parent = group(world, gid, loaded=member_loaded == "parent")
    m.child = experimenter(world, uid, loaded=member_loaded == "child")
    m.owner = omero.rtypes.rbool(gid in world.user(uid)["leader_of"])
    return m


def experimenter_with_groups(world: World, uid: int) -> Any:
    e = experimenter(world, uid)
    e._groupExperimenterMapSeq = [membership(world, uid, g, member_loaded="parent")
                                  for g in world.member_groups(world.user(uid))]
    e._groupExperimenterMapLoaded = True
    return e


def group_with_members(world: World, gid: int) -> Any:
    g = group(world, gid)
    g._groupExperimenterMapSeq = [membership(world, u["id"], gid, member_loaded="child")
                                  for u in world.table("users").values() if gid in u["groups"]]
    g._groupExperimenterMapLoaded = True
    return g


def with_details(caller: Caller, obj: Any, record: dict[str, Any]) -> Any:
    world = caller.world
    obj.details.owner = experimenter(world, record["owner"])
    obj.details.group = group(world, record["group"])
    link = world.may_link(caller.user, record)
    obj.details.permissions = permissions(
        world.group(record["group"])["perms"], link=link, edit=link,
        annotate=world.may_link(caller.user, record, "a"))
    obj.details.creationEvent = omero.model.EventI(1, False)
    return obj


def model_object(caller: Caller, table: str, record: dict[str, Any]) -> Any:
    """A loaded model object of ``table`` for the caller."""
    cls = getattr(omero.model, CLASSES[table] + "I")
    obj = cls(record["id"], True)
    if table in ("datasets", "screens", "plates", "images"):
        obj.name = rstring(record["name"])
    if table == "plates":
        obj.rows, obj.columns = rint(record.get("rows", 0)), rint(record.get("columns", 0))
    if table == "images" and record.get("fileset"):
        obj.fileset = omero.model.FilesetI(record["fileset"], False)
    if table == "images":
        obj.acquisitionDate = rtime(0)
    if table == "filesets":
        obj.templatePrefix = rstring(record["template_prefix"])
    if table == "annotations":
        obj.ns = rstring(record["ns"])
        obj.setMapValue([omero.model.NamedValue(k, v) for k, v in record["values"]])
    return with_details(caller, obj, record)


def event_context(world: World, session: dict[str, Any]) -> Any:
    user = world.user(session["user"])
    gid = session["group"]
    ec = omero.sys.EventContext()
    ec.shareId, ec.sessionId, ec.sessionUuid = -1, session_id(session), session["uuid"]
    ec.userId, ec.userName = user["id"], user["name"]
    sudoer = session.get("sudoer")
    ec.sudoerId = rlong(sudoer) if sudoer is not None else None
    ec.sudoerName = rstring(world.user(sudoer)["name"]) if sudoer is not None else None
    ec.groupId, ec.groupName = gid, world.group(gid)["name"]
    ec.isAdmin = world.is_admin(user)
    ec.adminPrivileges = world.privileges(user)
    ec.eventId, ec.eventType = -1, "User"
    ec.memberOfGroups = [g for g in world.member_groups(user)]
    ec.leaderOfGroups = list(user["leader_of"])
    ec.groupPermissions = permissions(world.group(gid)["perms"])
    return ec


def session_id(session: dict[str, Any]) -> int:
    """A stable id for the session (the same after a restart)."""
    return uuidlib.UUID(session["uuid"]).int % 10**9


def session_object(world: World, session: dict[str, Any]) -> Any:
    s = omero.model.SessionI(session_id(session), True)
    s.uuid = rstring(session["uuid"])
    s.started = rtime(session["started"])
    s.timeToLive = rlong(session["ttl_ms"])
    s.timeToIdle = rlong(session["tti_ms"])
    s.owner = experimenter(world, session["user"], loaded=False)
    s.closed = rtime(world.now_ms()) if session["closed"] else None
    return s

