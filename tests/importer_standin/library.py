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
  fileset counts as done, so the run ends successful. Each fileset's thread
  first loads the target (``targets/ModelImportTarget.load``: ``IQuery.get``);
  a failure is ``Could not load target``, then ``Error on import`` with
  ``Failed to load target``;
- ``ImportLibrary.importImage``: ``Cannot link to target`` before anything
  reaches the server; then ``createImport`` (FILESET_UPLOAD_PREPARATION,
  ``importFileset``: the server saves the Fileset and its entries *before any
  transfer*), FILESET_UPLOAD_START, each used file's transfer
  (``uploadFile``), FILESET_UPLOAD_END, IMPORT_STARTED (``ImportCallback``),
  the five steps, IMPORT_DONE; an error is logged as ``Error on import[:
  message]`` (the message of an ``omero.ServerError`` only) then ``Exiting on
  error`` or ``Continuing after error``. A transfer that fails is a counted
  FILE_EXCEPTION (and FILE_UPLOAD_ERROR) and leaves the Fileset on the server
  without images; so does a failure response of the server's import, an
  ``INTERNAL_EXCEPTION`` (counted, ``ImportCallback.onFinished``).
The server's side is the double's (``server.py``).
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from tests.importer_standin.candidates import Container
from tests.importer_standin.monitor import LIBRARY, MONITOR, STORE, TRANSFER, Monitor
from tests.importer_standin.server import Process, ServerRefused, import_fileset

#: How often a waiting fileset looks at its gate and at the shutdown flag.
POLL = 0.05


class Abandoned(BaseException):
    """``shutdownNow`` interrupted a waiting fileset thread; nobody reads its result."""


class FilesetFailed(Exception):
    """One fileset's import failed: ``Error on import[: message]``, then ``exception``."""

    def __init__(self, message: str, *, exception: str):
        super().__init__(message)
        self.exception = exception

    @classmethod
    def refused(cls, exc: ServerRefused) -> FilesetFailed:
        """A call the server failed, thrown on to ``importCandidates``."""
        return cls(exc.message if exc.server_error else "", exception=str(exc))


@dataclass
class Target:
    kind: str  # "Dataset" | "Screen"
    id: int


def _ice_name(exc: Exception) -> str:
    """An omero-py exception as Java names it (``omero.ValidationException: …``)."""
    name = exc.ice_name().replace("::", ".") if hasattr(exc, "ice_name") else type(exc).__name__
    return f"{name}: {getattr(exc, 'message', '') or exc}"


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

    def can_link(self, target: Target) -> bool:
        """``ModelImportTarget.load``: ``IQuery.get("DatasetI", id)`` (the class name of
        ``omero.model.DatasetI``), then what ``importImage`` asks of it: ``canLink``."""
        found = self.client.getSession().getQueryService().get(f"{target.kind}I", target.id)
        return bool(found.getDetails().getPermissions().canLink())

    def close(self) -> None:
        """``logout``: ``closeSession`` then ``__del__``."""
        try:
            self.client.closeSession()
        finally:
            self.client.__del__()


def _checksum(path: str) -> None:
    """``ChecksumProviderImpl.putFile`` (ome/omero-common): the importer reads the whole
    file; an ``IOException`` is thrown on wrapped in a ``RuntimeException``."""
    try:
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass
    except OSError as exc:
        raise FilesetFailed("", exception=f"java.lang.RuntimeException: "
                                          f"java.io.FileNotFoundException: {path} "
                                          f"({exc.strerror})") from exc


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
        sample = container.sample
        self._gate(sample.wait)
        self._interrupted()
        can_link = self._load_target()
        if not can_link:  # importImage: "stop this import before file upload commences"
            self.monitor.log("ERROR", LIBRARY, "Cannot link to target")
            raise FilesetFailed("", exception="java.lang.IllegalArgumentException: "
                                              "Cannot link to target")
        self.monitor.event("FILESET_UPLOAD_PREPARATION")
        try:
            process = import_fileset(self.session.key, container)
        except ServerRefused as exc:
            raise FilesetFailed.refused(exc) from exc
        self.monitor.event("FILESET_UPLOAD_START")
        for file_index, path in enumerate(container.used_files):
            self._upload_file(process, file_index, path, crash=sample.on_import == "crash")
        self.monitor.event("FILESET_UPLOAD_END")
        if sample.on_import == "hang":
            threading.Event().wait()
        self._interrupted()
        target = None if self.target is None else {"type": self.target.kind,
                                                   "id": self.target.id}
        fail = "stand-in: on-import=fail" if sample.on_import == "fail" else None
        try:
            done = process.verify_and_import(target, container, fail)
        except ServerRefused as exc:
            if exc.kind != "omero.grid.ImportFailed":
                raise FilesetFailed.refused(exc) from exc  # verifyUpload refused
            self.monitor.event("IMPORT_STARTED", " Logfile: null")
            self.monitor.internal_exception(
                container.file, "java.lang.RuntimeException: Failure response on import!\n"
                                "Category: ::omero::grid::ImportRequest\nName: import-failed\n"
                                f"Parameters: {{}} ({exc.message})")
            raise FilesetFailed("", exception="java.lang.Exception: Import failure") from exc
        self.monitor.event("IMPORT_STARTED", " Logfile: null")
        for step, name in enumerate(("METADATA_IMPORTED", "PIXELDATA_PROCESSED",
                                     "THUMBNAILS_GENERATED", "METADATA_PROCESSED",
                                     "OBJECTS_RETURNED"), start=1):
            self.monitor.event(name, f" Step: {step} of 5  Logfile: null")
        self._gate(sample.hold)
        self.monitor.import_done(container.file, done)

    def _load_target(self) -> bool:
        """``importCandidates``' fileset thread: ``target.load`` (whether the user may
        link to it), or ``Failed to load target``. True without a target."""
        if self.target is None:
            return True
        try:
            can_link = self.session.can_link(self.target)
        except Exception as exc:  # noqa: BLE001  (Java catches Exception)
            # the ImportTarget has no toString: Object's, class@hash
            self.monitor.log("ERROR", LIBRARY, "Could not load target: ome.formats.importer."
                                               f"targets.ModelImportTarget@{id(self.target):x}")
            raise FilesetFailed("", exception="java.lang.RuntimeException: Failed to load "
                                              f"target\nCaused by: {_ice_name(exc)}") from exc
        self.monitor.info(LIBRARY, f"Import target specifies container: "
                                   f"{self.target.kind}:{self.target.id}")
        return can_link

    def _upload_file(self, process: Process, index: int, path: str, *, crash: bool) -> None:
        """``ImportLibrary.uploadFile`` of one used file with the ``ln_s`` transfer
        (``transfers/AbstractExecFileTransfer.transfer``): the server's link and its
        ``checkTarget`` read (``omero.ResourceError`` for a file gone since the scan),
        then the checksum, which reads the file as the importer. A failure is a
        counted FILE_EXCEPTION and FILE_UPLOAD_ERROR, and ends the fileset."""
        self.monitor.info(TRANSFER, f"Transferring {path}...")  # AbstractFileTransfer.start
        self.monitor.event("FILE_UPLOAD_STARTED", f": {path}")
        if crash:
            self._crash()
        try:
            try:
                process.transfer(index)
            except ServerRefused as exc:
                if exc.kind != "omero.ResourceError":
                    raise FilesetFailed.refused(exc) from exc
                raise FilesetFailed("", exception=(  # checkTarget
                    f"java.lang.RuntimeException: {exc.kind} : {exc.message}\n"
                    "The server could not check the size of the file (stand-in)")) from exc
            _checksum(path)
        except FilesetFailed as exc:
            self.monitor.file_exception(path, exc.exception)
            self.monitor.log("DEBUG", MONITOR, "FILE_UPLOAD_ERROR")
            raise
        self.monitor.file_uploaded(path)

    def _crash(self) -> None:
        """A JVM that dies: its fatal-error banner, then SIGABRT."""
        self.monitor.print_err("#\n# A fatal error has been detected by the Java Runtime "
                               "Environment:\n#\n#  SIGSEGV (0xb) (stand-in: on-import=crash)\n#")
        os.abort()
