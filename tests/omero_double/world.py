"""What the OMERO double holds: users, groups, sessions and the objects the
daemon creates, as one JSON document persisted under the state directory.

Pure Python (no Ice): the Ice servants and the control API read and change
it under :attr:`World.lock`, and every change is written to disk at once, so
a restarted double serves the same world.

Permission and visibility rules follow the real server; each rule names the
file of ``ome/omero-server`` it is modelled on.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

#: The AdminPrivilege values a full administrator holds
#: (ome/security/basic/LightAdminPrivileges.java lists them).
ALL_PRIVILEGES = (
    "Chgrp", "Chown", "DeleteFile", "DeleteManagedRepo", "DeleteOwned", "DeleteScriptRepo",
    "ModifyGroup", "ModifyGroupMembership", "ModifyUser", "ReadSession", "Sudo",
    "WriteFile", "WriteManagedRepo", "WriteOwned", "WriteScriptRepo",
)
#: Fixed ids of the system groups (ome/security/SecuritySystem Roles defaults).
SYSTEM_GROUP, USER_GROUP, GUEST_GROUP = 0, 1, 2
#: A Glacier2 login session's idle timeout, omero.sessions.timeout's default
#: (SessionManagerImpl.defaultTimeToIdle, 10 min); its time-to-live is 0 (none).
LOGIN_TIME_TO_IDLE_MS = 600_000


class DoubleError(Exception):
    """A refusal, named by the omero/Ice exception class the servants raise for it."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


def default_world() -> dict[str, Any]:
    """The default world (tests/omero_double/README.md): root, Demo (researcher, other),
    Lab2 (alice)."""
    world: dict[str, Any] = {
        "next_id": 1000, "clock_offset_ms": 0,
        "groups": {}, "users": {}, "datasets": {}, "screens": {}, "plates": {}, "images": {},
        "filesets": {}, "annotations": {}, "sessions": {}, "requests": {}, "faults": [],
    }
    for gid, name, perms in ((SYSTEM_GROUP, "system", "rw----"), (USER_GROUP, "user", "rwr---"),
                             (GUEST_GROUP, "guest", "rw----"), (3, "Demo", "rwra--"),
                             (4, "Lab2", "rwra--")):
        world["groups"][str(gid)] = {"id": gid, "name": name, "perms": perms}
    for uid, name, groups in ((0, "root", [SYSTEM_GROUP, USER_GROUP]),
                              (1, "guest", [GUEST_GROUP]),
                              (2, "researcher", [3, USER_GROUP]), (3, "other", [3, USER_GROUP]),
                              (4, "alice", [4, USER_GROUP])):
        world["users"][str(uid)] = {
            "id": uid, "name": name, "password": "omero", "email": f"{name}@example.org",
            "groups": groups, "leader_of": [],
            "privileges": list(ALL_PRIVILEGES) if name == "root" else [],
        }
    for oid, kind, group, owner in ((151, "datasets", 3, 2), (451, "screens", 3, 2),
                                    (152, "datasets", 4, 4)):
        world[kind][str(oid)] = {"id": oid, "name": f"{kind[:-1]} {oid}", "group": group,
                                 "owner": owner, "children": []}
    return world


class World:
    """The double's state, with the lookups and rules the servants share."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.path = state_dir / "state.json"
        self.lock = threading.RLock()
        if self.path.exists():
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        else:
            self.data = default_world()
            self.save()

    # --- persistence and the clock -------------------------------------------
    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def now_ms(self) -> int:
        """The double's clock: real time plus what tests advanced it by."""
        return int(time.time() * 1000) + int(self.data["clock_offset_ms"])

    def new_id(self) -> int:
        self.data["next_id"] += 1
        return int(self.data["next_id"])

    def dump(self) -> dict[str, Any]:
        with self.lock:
            out = copy.deepcopy(self.data)
        for user in out["users"].values():
            user.pop("password", None)
        for fileset in out["filesets"].values():  # what the import made, at a glance
            fid = fileset["id"]
            fileset["images"] = sorted(i["id"] for i in out["images"].values()
                                       if i.get("fileset") == fid)
            fileset["plates"] = sorted(
                p["id"] for p in out["plates"].values()
                if any(out["images"][str(s["image"])].get("fileset") == fid
                       for w in p["wells"] for s in w["samples"]))
        return out

    # --- lookups -----------------------------------------------------------
    def table(self, kind: str) -> dict[str, Any]:
        return self.data[kind]

    def get(self, kind: str, oid: int) -> dict[str, Any] | None:
        return self.data[kind].get(str(oid))

    def user_named(self, name: str) -> dict[str, Any] | None:
        return next((u for u in self.data["users"].values() if u["name"] == name), None)

    def group_named(self, name: str) -> dict[str, Any] | None:
        return next((g for g in self.data["groups"].values() if g["name"] == name), None)

    def group(self, gid: int) -> dict[str, Any]:
        return self.data["groups"][str(gid)]

    def user(self, uid: int) -> dict[str, Any]:
        return self.data["users"][str(uid)]

    # --- users and rights ----------------------------------------------------
    @staticmethod
    def is_active(user: dict[str, Any]) -> bool:
        """A user is active while in the ``user`` group: deactivating a user removes
        them from it (AdminImpl.java), and an inactive user cannot log in."""
        return USER_GROUP in user["groups"]

    @staticmethod
    def is_admin(user: dict[str, Any]) -> bool:
        """Member of ``system``: a full or a restricted ("light") administrator."""
        return SYSTEM_GROUP in user["groups"]

    def privileges(self, user: dict[str, Any]) -> list[str]:
        return list(user["privileges"]) if self.is_admin(user) else []

    def member_groups(self, user: dict[str, Any]) -> list[int]:
        return [g for g in user["groups"] if str(g) in self.data["groups"]]

    def default_group(self, user: dict[str, Any]) -> int:
        """The first group that is not ``user`` (the server keeps it first in the
        user's GroupExperimenterMap list, AdminImpl.setDefaultGroup)."""
        groups = [g for g in user["groups"] if g != USER_GROUP]
        return groups[0] if groups else USER_GROUP

    def may_read(self, user: dict[str, Any], obj: dict[str, Any], group_ctx: int) -> bool:
        """Visibility of a data object: only in its own group's context (or -1,
        all the user's groups); in a private group only the owner's objects, unless
        admin or leader (ome/security/basic/OneGroupSecurityFilter.java,
        AllGroupsSecurityFilter.java)."""
        gid = obj["group"]
        if group_ctx != -1 and group_ctx != gid:
            return False
        if not (self.is_admin(user) or gid in user["groups"]):
            return False
        perms = self.group(gid)["perms"]
        if perms[2] == "r" or perms[4] == "r" or obj["owner"] == user["id"]:
            return True
        return self.is_admin(user) or gid in user["leader_of"]

    def may_link(self, user: dict[str, Any], obj: dict[str, Any], right: str = "w") -> bool:
        """canLink ("w") and canAnnotate ("a") as BasicACLVoter.allowUpdateOrDelete
        computes them (ome/security/basic/BasicACLVoter.java): in a private group an
        admin or leader may link only to their own objects (CurrentDetails.isGraphCritical);
        a full admin, a restricted admin with WriteOwned, or the group's leader may;
        otherwise the group's permissions decide for owner, member and world."""
        gid, owner = obj["group"], obj["owner"] == user["id"]
        perms = self.group(gid)["perms"]
        leader = gid in user["leader_of"]
        private = perms[2] == "-" and perms[4] == "-"
        if private and (self.is_admin(user) or leader) and not owner:
            return False
        privileges = set(self.privileges(user))
        if privileges == set(ALL_PRIVILEGES) or "WriteOwned" in privileges or leader:
            return True

        def granted(flags: str) -> bool:  # "rw" / "ra" / "r-" for one role
            return flags[1] == "w" or (right == "a" and flags[1] == "a")

        return (granted(perms[4:6]) or (owner and granted(perms[0:2]))
                or (gid in user["groups"] and granted(perms[2:4])))

    # --- sessions ------------------------------------------------------------
    def open_session(self, uuid: str, user: dict[str, Any], group: int, *, ttl_ms: int,
                     tti_ms: int, sudoer: int | None, refs: int) -> dict[str, Any]:
        session = {"uuid": uuid, "user": user["id"], "group": group, "started": self.now_ms(),
                   "last_access": self.now_ms(), "ttl_ms": ttl_ms, "tti_ms": tti_ms,
                   "sudoer": sudoer, "refs": refs, "closed": False, "expired": False}
        self.data["sessions"][uuid] = session
        self.save()
        return session

    def expired_reason(self, session: dict[str, Any]) -> str | None:
        """Why a session is over, as SessionCache.getDataNullOrThrowOnTimeout decides
        (ome/services/sessions/state/SessionCache.java): its time-to-live counts from
        its start and nothing extends it; its time-to-idle from its last access."""
        now = self.now_ms()
        if session["closed"]:
            return f"session {session['uuid']} was closed"
        if 0 < session["ttl_ms"] < now - session["started"]:
            return f"session {session['uuid']} expired: timeToLive={session['ttl_ms']}"
        if 0 < session["tti_ms"] < now - session["last_access"]:
            return f"session {session['uuid']} expired: timeToIdle={session['tti_ms']}"
        return None

    def live_session(self, uuid: str) -> dict[str, Any] | None:
        session = self.data["sessions"].get(uuid)
        if session is None or self.expired_reason(session):
            return None
        return session

    def touch(self, session: dict[str, Any]) -> None:
        session["last_access"] = self.now_ms()

    def count_request(self, key: str) -> None:
        self.data["requests"][key] = self.data["requests"].get(key, 0) + 1

    # --- extending the world -------------------------------------------------
    def extend(self, spec: dict[str, Any]) -> None:
        """Add groups, users, datasets and screens (the world file's shape):
        ``{"groups": [{"name", "perms"}], "users": [{"name", "groups": [names],
        "leader_of": [names], "admin": "full"|"restricted", "privileges": [...],
        "active": bool, "email", "password"}], "datasets"/"screens": [{"id"?, "name",
        "group", "owner"}]}``. A user named again is replaced, which changes their
        memberships, rights or activity."""
        with self.lock:
            for g in spec.get("groups", []):
                if self.group_named(g["name"]) is None:
                    gid = g.get("id") or self.new_id()
                    self.data["groups"][str(gid)] = {"id": gid, "name": g["name"],
                                                     "perms": g.get("perms", "rwra--")}
            for u in spec.get("users", []):
                self._add_user(u)
            for kind in ("datasets", "screens"):
                for d in spec.get(kind, []):
                    oid = d.get("id") or self.new_id()
                    group = self.group_named(d["group"])
                    owner = self.user_named(d["owner"])
                    if group is None or owner is None:
                        raise DoubleError("omero.ApiUsageException",
                                          f"world: unknown group or owner in {d}")
                    self.data[kind][str(oid)] = {"id": oid, "name": d.get("name", str(oid)),
                                                 "group": group["id"], "owner": owner["id"],
                                                 "children": []}
            self.save()

    def _add_user(self, u: dict[str, Any]) -> None:
        groups = [self.group_named(n)["id"] for n in u.get("groups", [])]  # type: ignore[index]
        if u.get("active", True):
            groups.append(USER_GROUP)
        admin = u.get("admin")
        if admin:
            groups.append(SYSTEM_GROUP)
        privileges = (list(ALL_PRIVILEGES) if admin == "full"
                      else list(u.get("privileges", [])) if admin == "restricted" else [])
        existing = self.user_named(u["name"])
        uid = existing["id"] if existing else (u.get("id") or self.new_id())
        self.data["users"][str(uid)] = {
            "id": uid, "name": u["name"], "password": u.get("password", "omero"),
            "email": u.get("email", f"{u['name']}@example.org"),  # may be null or ""
            "groups": groups,
            "leader_of": [self.group_named(n)["id"] for n in u.get("leader_of", [])],  # type: ignore[index]
            "privileges": privileges,
        }
