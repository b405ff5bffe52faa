"""What the importer writes: its log on standard error, its report on standard output.

Modelled on ome/omero-blitz (the log layout on ome/openmicroscopy):
- log lines in the layout of OMERO's ``etc/logback-cli.xml`` (also shipped in
  OMERO.java.zip's ``libs/``, which ``omero import`` uses after
  ``--fetch-jars``): ``%d %-10.10r [%10.10t] %-6.6p %40.40c - %m%n`` on the
  console, which is standard error; INFO unless ``--debug`` asks for more;
- ``cli/LoggingImportMonitor``: the FILESET_UPLOAD_*, FILE_UPLOAD_*, step and
  IMPORT_DONE lines; per IMPORT_DONE the ``--output`` report on standard
  output (yaml: ``---`` / ``- Fileset: N`` / ``  Image: [..]`` /
  ``  Plate: [..]``, keys in the order of Guava's hash map, which puts Image
  before Plate; ids: ``Image:1,2`` or ``Plate:3``); the ``==> Summary`` at the
  end (plain ``System.err``);
- ``cli/ErrorHandler`` and ``util/ErrorHandler``: which events count as errors
  (``FILE_EXCEPTION`` and ``INTERNAL_EXCEPTION``; ``UNREADABLE_FILE`` is logged
  but not counted; ``UNKNOWN_FORMAT`` from scanning is neither), and
  ``Number of errors: N`` after each IMPORT_DONE (INFO when N > 0).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

CANDIDATES = "ome.formats.importer.ImportCandidates"
LIBRARY = "ome.formats.importer.ImportLibrary"
MONITOR = "ome.formats.importer.cli.LoggingImportMonitor"
HANDLER = "ome.formats.importer.cli.ErrorHandler"
CLI = "ome.formats.importer.cli.CommandLineImporter"
CONFIG = "ome.formats.importer.ImportConfig"
STORE = "ome.formats.OMEROMetadataStoreClient"
#: ``AbstractFileTransfer.log`` is ``getLogger(getClass())``: the ``ln_s`` transfer's class.
TRANSFER = "ome.formats.importer.transfers.SymlinkFileTransfer"
LEVELS = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4}


def _fit(text: str, width: int) -> str:
    """logback's ``%W.Wx``: truncated from the left, padded on the left."""
    return text[-width:].rjust(width)


@dataclass
class Imported:
    """What the server answered for one fileset (``ImportResponse`` as IMPORT_DONE sees it)."""

    fileset: int
    images: list[int]
    plates: list[int]


@dataclass
class Monitor:
    """The observers of one importer run, writing to ``out`` (stdout) and ``err`` (stderr)."""

    output: str = "ids"
    level: int = LEVELS["INFO"]
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    started: float = field(default_factory=time.monotonic)
    errors: int = 0
    filesets: int = 0
    plates: int = 0
    images: int = 0
    uploaded: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # --- logback --------------------------------------------------------------
    def log(self, level: str, logger: str, message: str, exception: str | None = None) -> None:
        if LEVELS[level] < self.level:
            return
        now = datetime.now()
        elapsed = int((time.monotonic() - self.started) * 1000)
        thread = threading.current_thread().name
        line = (f"{now:%Y-%m-%d %H:%M:%S},{now.microsecond // 1000:03d} {str(elapsed):<10.10} "
                f"[{_fit(thread, 10)}] {level:<6.6} {_fit(logger, 40)} - {message}\n")
        with self._lock:
            self.err.write(line)
            if exception:  # log.error(message, throwable) prints the throwable after the line
                self.err.write(exception + "\n")
            self.err.flush()

    def info(self, logger: str, message: str) -> None:
        self.log("INFO", logger, message)

    def print_err(self, text: str) -> None:
        """``System.err.println``."""
        with self._lock:
            self.err.write(text + "\n")
            self.err.flush()

    # --- ErrorHandler -----------------------------------------------------------
    def file_exception(self, path: str, exception: str) -> None:
        """``FILE_EXCEPTION``: logged and counted (util/ErrorHandler.update)."""
        with self._lock:
            self.errors += 1
            self.log("ERROR", HANDLER, f"FILE_EXCEPTION: {path}", exception)

    def internal_exception(self, path: str, exception: str) -> None:
        """``INTERNAL_EXCEPTION``: logged and counted."""
        with self._lock:
            self.errors += 1
            self.log("ERROR", HANDLER, f"INTERNAL_EXCEPTION: {path}", exception)

    def unreadable(self, path: str) -> None:
        """``UNREADABLE_FILE``: an EXCEPTION_EVENT that is logged, never counted."""
        self.log("ERROR", HANDLER, f"UNREADABLE_FILE: {path}",
                 f"java.io.FileNotFoundException: {path}")

    def unknown_format(self, path: str) -> None:
        """``UNKNOWN_FORMAT`` from ImportCandidates: debug only, not an error."""
        self.log("DEBUG", HANDLER, f"UNKNOWN_FORMAT: {path}")

    # --- LoggingImportMonitor ------------------------------------------------
    def event(self, name: str, detail: str = "") -> None:
        self.info(MONITOR, name + detail)

    def file_uploaded(self, path: str) -> None:
        with self._lock:
            self.uploaded += 1
            self.event("FILE_UPLOAD_COMPLETE", f": {path}")

    def import_done(self, main_file: str, done: Imported) -> None:
        """IMPORT_DONE: the log line, the report, the count, then the error count."""
        with self._lock:
            self.event("IMPORT_DONE", f" Imported file: {main_file}")
            if self.output == "yaml":
                self.print_err("Imported objects:")
                lines = ["---", f"- Fileset: {done.fileset}"]
                for kind, ids in (("Image", done.images), ("Plate", done.plates)):
                    if ids:
                        lines.append(f"  {kind}: [{','.join(map(str, ids))}]")
                self.out.write("\n".join(lines) + "\n")
            else:
                kind, ids = ("Plate", done.plates) if done.plates else ("Image", done.images)
                self.out.write(f"{kind}:{','.join(map(str, ids))}\n")
                self.print_err("Other imported objects:")
                self.print_err(f"Fileset:{done.fileset}")
                if kind == "Plate":
                    for image in done.images:
                        self.print_err(f"Image:{image}")
            self.out.flush()
            self.filesets += 1
            self.images += len(done.images)
            self.plates += len(done.plates)
            self.log("INFO" if self.errors else "DEBUG", HANDLER, f"Number of errors: {self.errors}")

    def summary(self) -> None:
        """IMPORT_SUMMARY: ``LoggingImportMonitor.ImportSummary.report`` (System.err.print)."""
        def count(name: str, n: int) -> str:
            return f"{n} {name}{'' if n == 1 else 's'}"

        millis = int((time.monotonic() - self.started) * 1000)
        hours, rest = divmod(millis, 3_600_000)
        minutes, rest = divmod(rest, 60_000)
        seconds, millis = divmod(rest, 1000)
        created = count("fileset", self.filesets)
        if self.plates:
            created += ", " + count("plate", self.plates)
        with self._lock:
            self.err.write(
                f"\n==> Summary\n{count('file', self.uploaded)} uploaded, {created} created, "
                f"{count('image', self.images)} imported, {count('error', self.errors)} in "
                f"{hours}:{minutes:02d}:{seconds:02d}.{millis:03d}\n")
            self.err.flush()
