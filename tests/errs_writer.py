"""A stand-in for the Java importer's progress log, written over time.

Usage: python tests/errs_writer.py --errs FILE --gate DIR --filesets N

Writes to FILE, line by line and flushed, what ``omero import --errs FILE``
receives from the Java importer for N single-file filesets, in its format
(ome/omero-blitz, src/main/java/ome/formats/importer):

- ``ImportCandidates``: ``Depth: … Metadata Level: …`` and ``<n> file(s)
  parsed into <m> group(s) with <k> call(s) to setId in <t>ms. (<t>ms total)
  [<u> unknowns]``;
- ``cli/LoggingImportMonitor.update``, per fileset: ``FILESET_UPLOAD_PREPARATION``,
  ``FILESET_UPLOAD_START``, ``FILE_UPLOAD_STARTED: <file>``,
  ``FILE_UPLOAD_COMPLETE: <file>``, ``FILESET_UPLOAD_END``, ``IMPORT_STARTED
  Logfile: <id>``, the five ``POST_UPLOAD_EVENT``s (``METADATA_IMPORTED Step:
  1 of 5  Logfile: <id>`` … ``OBJECTS_RETURNED Step: 5 of 5  Logfile: <id>``,
  from ``ImportLibrary.ImportCallback.step``), ``IMPORT_DONE Imported file:
  <file>``; then the ``==> Summary`` that ``ImportSummary.report`` prints.

Each log line has the layout of OMERO's ``etc/logback-cli.xml`` (also in
OMERO.java.zip's ``libs/``), ``%d %-10.10r [%10.10t] %-6.6p %40.40c - %m%n``. After fileset i (1-based) it waits until
``DIR/go-<i>`` exists before going on, so a test decides when the import
moves (no sleeping and hoping); after the last one it exits 0.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from typing import IO

STEPS = ("METADATA_IMPORTED", "PIXELDATA_PROCESSED", "THUMBNAILS_GENERATED",
         "METADATA_PROCESSED", "OBJECTS_RETURNED")
STARTED = time.monotonic()


def log(errs: IO[str], logger: str, message: str, thread: str = "main") -> None:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    millis = str(int((time.monotonic() - STARTED) * 1000))
    # logback's %W.Wx: cut from the left, padded to the width
    errs.write(f"{stamp} {millis[-10:]:<10} [{thread[-10:]:>10}] {'INFO':<6} "
               f"{logger[-40:]:>40} - {message}\n")
    errs.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--errs", required=True)
    parser.add_argument("--gate", required=True)
    parser.add_argument("--filesets", type=int, required=True)
    args = parser.parse_args()
    candidates = "ome.formats.importer.ImportCandidates"
    monitor = "ome.formats.importer.cli.LoggingImportMonitor"
    files = [f"/data/plate/well-{n}.tif" for n in range(1, args.filesets + 1)]
    with open(args.errs, "w", encoding="utf-8") as errs:
        log(errs, candidates, "Depth: 10 Metadata Level: MINIMUM")
        log(errs, candidates, f"{len(files)} file(s) parsed into {len(files)} group(s) with "
            f"{len(files)} call(s) to setId in 57ms. (60ms total) [0 unknowns]")
        for number, path in enumerate(files, start=1):
            logfile = 900 + number
            thread = "1-thread-1"
            for line in ("FILESET_UPLOAD_PREPARATION", "FILESET_UPLOAD_START",
                         f"FILE_UPLOAD_STARTED: {path}", f"FILE_UPLOAD_COMPLETE: {path}",
                         "FILESET_UPLOAD_END", f"IMPORT_STARTED Logfile: {logfile}"):
                log(errs, monitor, line, thread)
            for step, name in enumerate(STEPS, start=1):
                log(errs, monitor, f"{name} Step: {step} of 5  Logfile: {logfile}", thread)
            log(errs, monitor, f"IMPORT_DONE Imported file: {path}", thread)
            gate = Path(args.gate) / f"go-{number}"
            while number < len(files) and not gate.exists():
                time.sleep(0.05)
        errs.write(f"\n==> Summary\n{len(files)} files uploaded, {len(files)} filesets created, "
                   f"{len(files)} images imported, 0 errors in 00:00:01.234\n")


if __name__ == "__main__":
    main()
