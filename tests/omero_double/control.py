"""The double's test-only control API (HTTP+JSON on 127.0.0.1), as
tests/omero_double/README.md describes it: state, faults, clock, world, refusing
connections, and the server half of a fileset import (``imports``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from tests.omero_double import imports
from tests.omero_double.dispatch import Faults
from tests.omero_double.world import DoubleError, World

#: Aliases a fault's "call" may use for the double's own names.
CALL_ALIASES = {"createSession": "Router.createSession", "joinSession": "Router.createSession"}


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
        if path == "/fileset" or (path == "/import" and "fileset" not in body):
            Faults(world).apply("import", _refuse)  # where a fileset's import begins
            begin = imports.create_fileset if path == "/fileset" else imports.import_fileset
            return begin(world, body)
        if path == "/transfer":
            return imports.transfer(world, body)
        if path == "/import":
            return imports.run_import(world, body)
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
