"""The double's test-only control API (HTTP+JSON on 127.0.0.1), as
tests/omero_double/README.md describes it: state, faults, clock, world, refusing
connections, and ``POST /import``, the server half of one fileset import."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from tests.omero_double.convert import Caller
from tests.omero_double.dispatch import Faults
from tests.omero_double.world import DoubleError, World

#: Aliases a fault's "call" may use for the double's own names.
CALL_ALIASES = {"createSession": "Router.createSession", "joinSession": "Router.createSession"}


def import_fileset(world: World, body: dict[str, Any]) -> dict[str, Any]:
    """What ManagedRepositoryI.importFileset and the import process create for one
    fileset (ome/omero-blitz: ome/services/blitz/repo/ManagedRepositoryI.java,
    ManagedImportProcessI.java; the path template is omero.fs.repo.path's
    default): a Fileset with its entries, links in the ManagedRepository,
    Images (and a Plate), linked to the target when the kinds match."""
    with world.lock:
        session = world.data["sessions"].get(body.get("session", ""))
        if session is None or session["closed"]:
            raise DoubleError("omero.RemovedSessionException",
                              f"No session with uuid: {body.get('session')}")
        reason = world.expired_reason(session)
        if reason:
            raise DoubleError("omero.SessionTimeoutException", reason)
        caller = Caller(world, session, world.user(session["user"]), session["group"])
        world.count_request(session["uuid"])
        target = _target(world, caller, body.get("target"))
        files = body["files"]
        if not files:
            raise DoubleError("omero.ApiUsageException", "an import needs at least one file")
        prefix = _template_prefix(world, caller.user)
        fileset = {"id": world.new_id(), "owner": caller.user["id"], "group": caller.group,
                   "template_prefix": prefix, "name": body.get("name", ""),
                   "session": session["uuid"],  # its creationEvent's session
                   "entries": [{"client_path": f["client_path"], "original": f["path"]}
                               for f in files]}
        world.table("filesets")[str(fileset["id"])] = fileset
        _link_files(world.state_dir / "ManagedRepository" / prefix, files)
        # The server reads the pixels through the new links (ManagedImportRequestI's
        # Bio-Formats reader), so a missing or unreadable original fails the import
        # after the fileset exists: it stays, with no images.
        unreadable = [f["path"] for f in files if not os.access(f["path"], os.R_OK)]
        if body.get("fail") or unreadable:
            world.save()
            raise DoubleError("omero.grid.ImportFailed", str(
                body.get("fail") or f"cannot read {', '.join(unreadable)} through its link"))
        images = []
        for n in range(int(body.get("images", 1))):
            image = {"id": world.new_id(), "owner": caller.user["id"], "group": caller.group,
                     "name": f"{body.get('name') or Path(files[0]['path']).name} [{n}]",
                     "fileset": fileset["id"], "pixels": None}
            world.table("images")[str(image["id"])] = image
            images.append(image["id"])
        plates = []
        if body.get("kind") == "plate":
            plate = {"id": world.new_id(), "owner": caller.user["id"], "group": caller.group,
                     "name": body.get("name") or Path(files[0]["path"]).name, "rows": 1,
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
                "template_prefix": prefix}


def _target(world: World, caller: Any, target: dict[str, Any] | None) -> Any:
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


def _link_files(root: Path, files: list[dict[str, Any]]) -> None:
    """Symbolic links under the fileset's directory, by client path below their common root."""
    parts = [Path(f["client_path"].lstrip("/")).parts for f in files]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    for f, p in zip(files, parts):
        link = root.joinpath(*p[common:])
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f["path"], link)


def _refuse(kind: str, message: str) -> None:
    raise DoubleError(kind, message)


class Control:
    """The HTTP server; ``refuse`` is the Ice side's :meth:`DoubleServer.refuse`."""

    def __init__(self, world: World, port: int, refuse: Callable[[float], None]):
        self.world, self.refuse = world, refuse
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        control = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/state":
                    self._reply(200, control.world.dump())
                else:
                    self._reply(404, {"error": "NotFound", "message": self.path})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    self._reply(200, control.post(self.path, body))
                except DoubleError as exc:
                    status = (403 if "Security" in exc.kind or "Session" in exc.kind
                              else 500 if exc.kind == "omero.grid.ImportFailed" else 400)
                    self._reply(status, {"error": exc.kind, "message": exc.message})
                except (KeyError, ValueError, TypeError) as exc:
                    self._reply(400, {"error": "BadRequest", "message": repr(exc)})

        return Handler

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        world = self.world
        if path == "/import":
            Faults(world).apply("import", _refuse)
            return import_fileset(world, body)
        if path == "/refuse":  # not under the world's lock: closing connections takes it
            self.refuse(float(body["seconds"]))
            return {"ok": True}
        with world.lock:
            if path == "/faults":
                fault = dict(body)
                fault["call"] = CALL_ALIASES.get(fault["call"], fault["call"])
                fault.setdefault("times", 1)
                world.data["faults"].append(fault)
            elif path == "/clock":
                world.data["clock_offset_ms"] += int(float(body["advance_seconds"]) * 1000)
            elif path == "/world":
                world.extend(body)
            else:
                raise DoubleError("NotFound", path)
            world.save()
        return {"ok": True}

    def close(self) -> None:
        self.httpd.shutdown()
