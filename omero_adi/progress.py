"""How far a running import is, read from the importer's ``--errs`` log.

The Java importer logs its progress on standard error, which ``omero import
--errs`` sends to ``logs/cli.<UUID>.errs``. The lines come from OMERO.blitz
(ome/omero-blitz, ``src/main/java/ome/formats/importer``):

- ``ImportCandidates``: ``<n> file(s) parsed into <m> group(s) with …`` once
  the paths are scanned; each group is one fileset to import, so ``m`` is the
  total.
- ``cli/LoggingImportMonitor.update`` logs each ``ImportEvent``'s ``toLog()``:
  the class name (``FILESET_UPLOAD_PREPARATION``, ``FILESET_UPLOAD_START``,
  ``FILESET_UPLOAD_END``), for the server-side steps that
  ``ImportLibrary.ImportCallback.step`` reports ``METADATA_IMPORTED``,
  ``PIXELDATA_PROCESSED``, ``THUMBNAILS_GENERATED``, ``METADATA_PROCESSED``,
  ``OBJECTS_RETURNED`` followed by ``Step: <k> of <n>  Logfile: <id>``
  (``POST_UPLOAD_EVENT.toLog``), and ``IMPORT_DONE Imported file: <path>``
  once per fileset.

Each line is prefixed by logback's timestamp, thread, level and logger; the
parser looks for these words wherever they are on the line.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

#: The ImportEvent names that mark a step of a fileset's import, in order.
STEPS = (
    "FILESET_UPLOAD_PREPARATION", "FILESET_UPLOAD_START", "FILESET_UPLOAD_END",
    "IMPORT_STARTED", "METADATA_IMPORTED", "PIXELDATA_PROCESSED", "THUMBNAILS_GENERATED",
    "METADATA_PROCESSED", "OBJECTS_RETURNED", "IMPORT_DONE",
)
_EVENT = re.compile(r"\b(" + "|".join(STEPS) + r")\b(?:\s+Step: (\d+) of (\d+))?")
_CANDIDATES = re.compile(r"\b(\d+) file\(s\) parsed into (\d+) group\(s\)")
#: Seconds between two writes of one order's progress.
WRITE_INTERVAL = 1.0


@dataclass(frozen=True)
class ImportProgress:
    """The importer's latest step and how many filesets it has imported
    (``filesets_total`` once it has scanned the paths)."""

    step: str
    filesets_done: int = 0
    filesets_total: int | None = None

    def describe(self) -> str:
        """``2 of 5 filesets imported (PIXELDATA_PROCESSED, step 2 of 5)``."""
        of = f" of {self.filesets_total}" if self.filesets_total is not None else ""
        return f"{self.filesets_done}{of} filesets imported ({self.step})"

    def after(self, earlier: int) -> ImportProgress:
        """This run's progress counted on from ``earlier`` filesets that earlier
        runs of the order imported (a retried run imports only the rest)."""
        total = None if self.filesets_total is None else self.filesets_total + earlier
        return replace(self, filesets_done=self.filesets_done + earlier, filesets_total=total)


class ErrsProgress:
    """Follows a growing ``--errs`` file; :meth:`read` returns the progress so
    far, or None while nothing of it has been logged yet."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.progress: ImportProgress | None = None

    def read(self) -> ImportProgress | None:
        try:
            with open(self.path, "rb") as errs:
                errs.seek(self.offset)
                data = errs.read()
        except FileNotFoundError:
            return self.progress
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            self.feed(line.decode("utf-8", "replace"))
        return self.progress

    def feed(self, line: str) -> None:
        """Take one line of the importer's log into account."""
        current = self.progress or ImportProgress("scanning")
        found = _CANDIDATES.search(line)
        if found:
            self.progress = replace(current, step="scanned", filesets_total=int(found[2]))
            return
        event = _EVENT.search(line)
        if event is None:
            return
        step = event[1] if event[2] is None else f"{event[1]}, step {event[2]} of {event[3]}"
        done = current.filesets_done + (event[1] == "IMPORT_DONE")
        self.progress = replace(current, step=step, filesets_done=done)


class ProgressThrottle:
    """Passes progress on to ``write`` when it changed, at most once every
    ``interval`` seconds (a burst of small filesets must not become a burst of
    database writes); :meth:`flush` writes what the last calls held back."""

    def __init__(
        self, write: Callable[[ImportProgress], None] = lambda progress: None,
        interval: float = WRITE_INTERVAL, clock: Callable[[], float] = time.monotonic,
    ):
        self.write, self.interval, self.clock = write, interval, clock
        self.latest: ImportProgress | None = None
        self.written: ImportProgress | None = None
        self.written_at = float("-inf")

    def __call__(self, progress: ImportProgress) -> None:
        self.latest = progress
        if self.clock() - self.written_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.latest is not None and self.latest != self.written:
            self.written, self.written_at = self.latest, self.clock()
            self.write(self.latest)
