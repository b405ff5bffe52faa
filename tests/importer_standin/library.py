"""Importing the candidates: the session, the fileset threads, one server import each.

Modelled on ome/omero-blitz:
- ``OMEROMetadataStoreClient.initialize(server, port, sessionKey, ...)``: a
  new ``omero.client`` joins the session given with ``-k`` (here over real
  Ice, with omero-py), then ``getEventContext``; ``logout`` closes that client's
  session (``ownsSession``), one reference of the joined session;
- ``ImportLibrary.importCandidates``: one thread pool of
  ``min(candidates, --parallel-fileset)`` threads; results are taken in the
  order they finish, and the first failure without ``-c`` returns at once and
  ``shutdownNow`` interrupts the rest (filesets not started never start; the
  process then exits, whatever the others were doing). With ``-c`` a failed
  fileset counts as done, so the run ends successful;
- ``ImportLibrary.importImage``/``createImport``: FILESET_UPLOAD_PREPARATION,
  FILESET_UPLOAD_START, one FILE_UPLOAD_STARTED/COMPLETE per used file, then
  FILESET_UPLOAD_END, IMPORT_STARTED, the five steps, IMPORT_DONE; an error is
  logged as ``Error on import[: message]`` then ``Exiting on error`` or
  ``Continuing after error``. A failure response of the server's import is an
  ``INTERNAL_EXCEPTION`` (counted); an exception from ``importFileset`` is not.
  A failed server-side import leaves its Fileset and links, without images.
The server side of one fileset (``ManagedRepositoryI.importFileset`` and the
import process) is the double's ``POST /import`` (tests/omero_double/README.md).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from tests.importer_standin.candidates import Container
from tests.importer_standin.monitor import LIBRARY, STORE, Imported, Monitor
from tests.importer_standin.paths import client_path

#: How often a waiting fileset looks at its gate and at the shutdown flag.
POLL = 0.05


class Abandoned(BaseException):
    """``shutdownNow`` interrupted a waiting fileset thread; nobody reads its result."""


class FilesetFailed(Exception):
    """One fileset's import failed: ``Error on import[: message]``, then ``exception``."""

    def __init__(self, message: str, *, exception: str):
        super().__init__(message)
        self.exception = exception


@dataclass
class Target:
    kind: str  # "Dataset" | "Screen"
    id: int


class Session:
    """The importer's own client on the session named by ``-k``."""

    def __init__(self, host: str, port: int, key: str, monitor: Monitor):
        import omero.clients  # noqa: F401  (registers the model classes)

        monitor.info(STORE, f"Attempting initial SSL connection to {host}:{port}")
        self.client = omero.client(host, port)
        self.client.setAgent("OMERO.importer")
        self.key = key
        try:
            self.client.joinSession(key)
            context = self.client.getSession().getAdminService().getEventContext()
        except Exception:
            self.close()
            raise
        monitor.info(STORE, f"Joined session as {context.userName} in group {context.groupName}")

    def close(self) -> None:
        """``logout``: ``closeSession`` then ``__del__``."""
        try:
            self.client.closeSession()
        finally:
            self.client.__del__()


def control_url() -> str:
    """The double's control API: ``OMERO_DOUBLE_CONTROL``, else from its ``double.json``."""
    url = os.environ.get("OMERO_DOUBLE_CONTROL")
    if url:
        return url
    state = os.environ["OMERO_DOUBLE_STATE"]
    with open(os.path.join(state, "double.json")) as handle:
        return str(json.load(handle)["control_url"])


def server_import(key: str, target: Target | None, container: Container,
                  fail: str | None = None) -> Imported:
    """The server's half of one fileset: the double's ``POST /import`` (with ``fail``,
    its import process fails after the fileset and its links were made)."""
    body: dict[str, Any] = {
        "session": key,
        "target": None if target is None else {"type": target.kind, "id": target.id},
        "files": [{"path": path, "client_path": client_path(path)}
                  for path in container.used_files],
        "kind": "plate" if container.is_spw else "image",
        "images": container.sample.count,
        "name": os.path.basename(container.file),
    }
    if fail is not None:
        body["fail"] = fail
    request = urllib.request.Request(
        control_url() + "/import", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        failure = json.load(exc)
        raise FilesetFailed(failure.get("message", ""),
                           exception=f"{failure.get('error')}: {failure.get('message')}") from exc
    except OSError as exc:  # the server went away: Ice would say ConnectionLostException
        raise FilesetFailed("", exception=f"Ice.ConnectionLostException: {exc}") from exc
    return Imported(answer["fileset"], list(answer["images"]), list(answer["plates"]))


def _read(path: str) -> None:
    """The ``ln_s`` transfer of one used file (ome/omero-blitz
    ``transfers/SymlinkFileTransfer.java``, whose ``transfer`` is that of
    ``transfers/AbstractExecFileTransfer.java``): ``exec`` makes the link (which
    needs no target), ``checkTarget`` has the server read the file's size through
    it, and the checksum (``ChecksumProvider.putFile``) reads the file, so a used
    file gone or unreadable since the scan fails its fileset."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise FilesetFailed("", exception=f"java.io.IOException: {exc}") from exc


class Library:
    def __init__(self, session: Session, monitor: Monitor, *, target: Target | None,
                 parallel_fileset: int, continue_on_error: bool):
        self.session, self.monitor, self.target = session, monitor, target
        self.parallel_fileset, self.continue_on_error = parallel_fileset, continue_on_error
        self.shutdown = threading.Event()

    def import_candidates(self, containers: list[Container]) -> bool:
        if not containers:
            return True
        threads = min(len(containers), self.parallel_fileset)
        numbers = itertools.count(1)  # Executors' default thread names
        pool = ThreadPoolExecutor(threads, initializer=lambda: setattr(
            threading.current_thread(), "name", f"pool-2-thread-{next(numbers)}"))
        try:
            pending: set[Future[bool]] = {pool.submit(self._one, c, i)
                                          for i, c in enumerate(containers)}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                # an abandoned fileset (Abandoned) only follows a failure
                if any(f.exception() is not None or not f.result() for f in done):
                    return False
            return True
        finally:  # shutdownNow: nothing queued starts, running filesets are told to stop
            self.shutdown.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _one(self, container: Container, index: int) -> bool:
        try:
            self._import_image(container, index)
            return True
        except FilesetFailed as exc:
            message = "Error on import" + (f": {exc}" if str(exc) else "")
            self.monitor.log("ERROR", LIBRARY, message, exc.exception)
            if not self.continue_on_error:
                self.monitor.info(LIBRARY, "Exiting on error")
                # The main thread takes this result and interrupts the pool at once;
                # setting the flag here, before this thread can start a queued fileset,
                # makes that certain (in Java that fileset's first Ice call, loading the
                # target, would throw OperationInterruptedException).
                self.shutdown.set()
                return False
            self.monitor.info(LIBRARY, "Continuing after error")
            return True

    def _interrupted(self) -> None:
        """An interrupted thread's next Ice call fails: the fileset goes no further."""
        if self.shutdown.is_set():
            raise Abandoned

    def _gate(self, path: str | None) -> None:
        """Wait for ``path`` (``wait=``/``hold=``); a shutdown abandons the fileset."""
        while path is not None and not os.path.exists(path):
            if self.shutdown.wait(POLL):
                raise Abandoned

    def _import_image(self, container: Container, index: int) -> None:
        sample, used = container.sample, container.used_files
        self._gate(sample.wait)
        self._interrupted()
        if self.target is not None:
            self.monitor.info(LIBRARY, f"Import target specifies container: "
                                       f"{self.target.kind}:{self.target.id}")
        self.monitor.event("FILESET_UPLOAD_PREPARATION")
        self.monitor.event("FILESET_UPLOAD_START")
        for path in used:
            self.monitor.event("FILE_UPLOAD_STARTED", f": {path}")
            if sample.on_import == "crash":
                self._crash()
            _read(path)
            self.monitor.file_uploaded(path)
        self.monitor.event("FILESET_UPLOAD_END")
        if sample.on_import == "hang":
            threading.Event().wait()
        self._interrupted()
        if sample.on_import == "fail":
            try:  # the fileset is created, then the server's import process fails
                server_import(self.session.key, self.target, container,
                              fail="stand-in: on-import=fail")
            except FilesetFailed as exc:
                if "ImportFailed" not in exc.exception:
                    raise  # refused before the import began: that is the error
            self.monitor.internal_exception(
                container.file, "java.lang.RuntimeException: Failure response on import!\n"
                                "Category: ::omero::grid::ImportRequest\nName: import-failed\n"
                                "Parameters: {} (stand-in: on-import=fail)")
            raise FilesetFailed("", exception="java.lang.Exception: Import failure")
        done = server_import(self.session.key, self.target, container)
        self.monitor.event("IMPORT_STARTED", " Logfile: null")
        for step, name in enumerate(("METADATA_IMPORTED", "PIXELDATA_PROCESSED",
                                     "THUMBNAILS_GENERATED", "METADATA_PROCESSED",
                                     "OBJECTS_RETURNED"), start=1):
            self.monitor.event(name, f" Step: {step} of 5  Logfile: null")
        self._gate(sample.hold)
        self.monitor.import_done(container.file, done)

    def _crash(self) -> None:
        """A JVM that dies: its fatal-error banner, then SIGABRT."""
        self.monitor.print_err("#\n# A fatal error has been detected by the Java Runtime "
                               "Environment:\n#\n#  SIGSEGV (0xb) (stand-in: on-import=crash)\n#")
        os.abort()
