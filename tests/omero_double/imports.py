"""The server half of an import, in the steps the importer takes them (ome/omero-blitz):

1. ``create_fileset`` — ``ManagedRepositoryI.importFileset``: ``internalImport``
   makes the fileset's folders (``suggestImportPaths``: ``makeDirs``) and
   ``createUploadProcess`` saves the Fileset with all its entries
   (``repositoryDao.saveFileset``) *before any file is transferred*;
2. ``transfer`` — one used file of an ``ln_s`` import: the link
   (``transfers/SymlinkFileTransfer.exec``; the client makes it, the double does
   here as it owns the repository) and ``AbstractExecFileTransfer.checkTarget``,
   the server reading the file's size through the link
   (``ManagedImportProcessI.getUploader`` in mode ``r``). A link whose original
   is gone fails, and stays;
3. ``run_import`` — ``verifyUpload`` and the import process
   (``ManagedImportProcessI``, ``ManagedImportRequestI``): the target, the
   originals read through their links, the Images (and a Plate), linked to the
   target when the kinds match. A failure leaves the Fileset without images.

``import_fileset`` does all three in one call (``POST /import`` without
``fileset``), refusing a bad target before the Fileset is made.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tests.omero_double.convert import Caller
from tests.omero_double.world import DoubleError, World


def _caller(world: World, uuid: str) -> Caller:
    """The session's user and group; the call counts as one of its requests."""
    session = world.data["sessions"].get(uuid)
    if session is None or session["closed"]:
        raise DoubleError("omero.RemovedSessionException", f"No session with uuid: {uuid}")
    reason = world.expired_reason(session)
    if reason:
        raise DoubleError("omero.SessionTimeoutException", reason)
    world.count_request(session["uuid"])
    return Caller(world, session, world.user(session["user"]), session["group"])


def _fileset(world: World, caller: Caller, fileset_id: Any) -> dict[str, Any]:
    fileset = world.get("filesets", int(fileset_id))
    if fileset is None or fileset["session"] != caller.session["uuid"]:
        raise DoubleError("omero.ApiUsageException",
                          f"no import process for Fileset {fileset_id} in this session")
    return fileset


def create_fileset(world: World, body: dict[str, Any]) -> dict[str, Any]:
    """Step 1: ``{"fileset", "template_prefix"}``."""
    with world.lock:
        caller = _caller(world, body.get("session", ""))
        answer = _new_fileset(world, caller, body)
        world.save()
        return answer


def transfer(world: World, body: dict[str, Any]) -> dict[str, Any]:
    """Step 2 for entry ``index`` of ``fileset``."""
    with world.lock:
        fileset = _fileset(world, _caller(world, body.get("session", "")), body["fileset"])
        link = _make_link(world, fileset, int(body["index"]))
        world.save()
        try:  # checkTarget: the server opens the file for its size
            with open(link, "rb"):
                pass
        except OSError as exc:
            raise DoubleError("omero.ResourceError", f"{link} ({exc.strerror})") from exc
        return {"ok": True}


def run_import(world: World, body: dict[str, Any]) -> dict[str, Any]:
    """Step 3: ``{"fileset", "images", "plates", "template_prefix"}``."""
    with world.lock:
        caller = _caller(world, body.get("session", ""))
        fileset = _fileset(world, caller, body["fileset"])
        return _import_process(world, caller, fileset, _target(world, caller, body), body)


def import_fileset(world: World, body: dict[str, Any]) -> dict[str, Any]:
    """All three steps at once (a refused target makes no Fileset)."""
    with world.lock:
        caller = _caller(world, body.get("session", ""))
        target = _target(world, caller, body)
        made = _new_fileset(world, caller, body)
        fileset = world.get("filesets", made["fileset"])
        assert fileset is not None
        for index in range(len(fileset["entries"])):
            _make_link(world, fileset, index)
        return _import_process(world, caller, fileset, target, body)


def _new_fileset(world: World, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    files = body["files"]
    if not files:  # ManagedRepositoryI.internalImport
        raise DoubleError("omero.ApiUsageException", "No paths provided")
    prefix = _template_prefix(world, caller.user)
    fileset = {"id": world.new_id(), "owner": caller.user["id"], "group": caller.group,
               "template_prefix": prefix, "name": body.get("name", ""),
               "session": caller.session["uuid"],  # its creationEvent's session
               "entries": [{"client_path": f["client_path"], "original": f["path"]}
                           for f in files]}
    world.table("filesets")[str(fileset["id"])] = fileset
    for link in _links(world, fileset):
        link.parent.mkdir(parents=True, exist_ok=True)
    return {"fileset": fileset["id"], "template_prefix": prefix}


def _make_link(world: World, fileset: dict[str, Any], index: int) -> Path:
    """The link for one entry (made whether its original exists or not)."""
    link = _links(world, fileset)[index]
    if link.is_symlink():  # AbstractExecFileTransfer.checkLocation: "<location> exists!"
        raise DoubleError("omero.ApiUsageException", f"{link} exists!")
    os.symlink(fileset["entries"][index]["original"], link)
    return link


def _import_process(world: World, caller: Caller, fileset: dict[str, Any],
                    target: tuple[str, dict[str, Any]] | None,
                    body: dict[str, Any]) -> dict[str, Any]:
    # The server reads the pixels through the links (ManagedImportRequestI's
    # Bio-Formats reader): a missing or unreadable original fails the import after
    # the fileset exists; it stays, with no images.
    unreadable = [entry["original"] for entry, link in zip(fileset["entries"],
                                                           _links(world, fileset))
                  if not os.access(link, os.R_OK)]
    if body.get("fail") or unreadable:
        world.save()
        raise DoubleError("omero.grid.ImportFailed", str(
            body.get("fail") or f"cannot read {', '.join(unreadable)} through its link"))
    first = Path(fileset["entries"][0]["original"]).name
    images = []
    for n in range(int(body.get("images", 1))):
        image = {"id": world.new_id(), "owner": caller.user["id"], "group": caller.group,
                 "name": f"{body.get('name') or first} [{n}]",
                 "fileset": fileset["id"], "pixels": None}
        world.table("images")[str(image["id"])] = image
        images.append(image["id"])
    plates = []
    if body.get("kind") == "plate":
        plate = {"id": world.new_id(), "owner": caller.user["id"], "group": caller.group,
                 "name": body.get("name") or first, "rows": 1,
                 "columns": len(images), "children": [],
                 "wells": [{"id": world.new_id(), "row": 0, "column": n,
                            "samples": [{"id": world.new_id(), "image": i}]}
                           for n, i in enumerate(images)]}
        world.table("plates")[str(plate["id"])] = plate
        plates.append(plate["id"])
        if target is not None and target[0] == "screens":
            target[1]["children"].append(plate["id"])
    elif target is not None and target[0] == "datasets":
        target[1]["children"].extend(images)
    world.save()
    return {"fileset": fileset["id"], "images": images, "plates": plates,
            "template_prefix": fileset["template_prefix"]}


def _target(world: World, caller: Caller,
            body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    target = body.get("target")
    if target is None:
        return None
    table = {"Dataset": "datasets", "Screen": "screens"}.get(target.get("type", ""))
    if table is None:
        raise DoubleError("omero.ApiUsageException", f"unknown target type in {target}")
    record = world.get(table, int(target["id"]))
    if record is None or not caller.sees(record):
        raise DoubleError("omero.SecurityViolation",
                          f"Cannot read {target['type']}:{target['id']} in group "
                          f"{world.group(caller.group)['name']}")
    if not world.may_link(caller.user, record):
        raise DoubleError("omero.SecurityViolation",
                          f"{caller.user['name']} may not link to {target['type']}:{target['id']}")
    return table, record


def _template_prefix(world: World, user: dict[str, Any]) -> str:
    """``%user%_%userId%/%year%-%month%/%day%/%time%``, unique per fileset."""
    ms = world.now_ms()
    while True:
        t = time.gmtime(ms / 1000)
        prefix = (f"{user['name']}_{user['id']}/{t.tm_year:04d}-{t.tm_mon:02d}/{t.tm_mday:02d}/"
                  f"{t.tm_hour:02d}-{t.tm_min:02d}-{t.tm_sec:02d}.{ms % 1000:03d}")
        if not any(f["template_prefix"] == prefix for f in world.table("filesets").values()):
            return prefix
        ms += 1


def _links(world: World, fileset: dict[str, Any]) -> list[Path]:
    """Where each entry's link goes: its client path below the entries' common folder,
    under the fileset's folder in the ManagedRepository."""
    root = world.state_dir / "ManagedRepository" / fileset["template_prefix"]
    parts = [Path(e["client_path"].lstrip("/")).parts for e in fileset["entries"]]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return [root.joinpath(*p[common:]) for p in parts]
