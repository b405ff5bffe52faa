"""What an importer run said, in plain words, and whether trying again may help.

The ``omero import`` wrapper (omero-py ``omero/main.py``,
``omero/plugins/import.py`` and ``sessions.py``, ``omero/java.py``) and the
Java ``CommandLineImporter`` (ome/omero-blitz) report their failures as text
on standard output, standard error or ``--errs``, with exit statuses that do
not tell them apart. :func:`verdict` turns the ones an operator can act on
into a description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omero_adi.importing.importer_cli import ImporterRun

#: Runs of the importer an order gets when a run fails for a transient reason
#: (BIOMERO.importer's rule: 3).
IMPORT_ATTEMPTS = 3
#: Failures that a new run may not meet again (BIOMERO.importer's list), and how
#: to say them: the connection to the server dropped, the session or a service
#: vanished under the importer, or an import failed in a way the importer's
#: ErrorHandler logs as ``INTERNAL_EXCEPTION``.
TRANSIENT_MARKERS = {
    "ConnectionLostException": "the importer lost its connection to OMERO",
    "ObjectNotExistException": "an OMERO object the importer used was gone (the server "
                               "restarted, or the session ended)",
    "INTERNAL_EXCEPTION": "an import failed in the importer or on the server",
}


@dataclass(frozen=True)
class Verdict:
    problem: str
    transient: bool = False


def verdict(run: ImporterRun, paths: Sequence[Path]) -> Verdict | None:
    """The plain reason a run that imported less than asked ended, when the
    importer or the wrapper said one; None when it said nothing known."""
    said, code = run.said, run.finished.returncode
    named = ", ".join(map(str, paths))
    if "FATAL: Running" in said and "as root" in said:  # omero/main.py not_root(), stdout
        return Verdict("the `omero` command refuses to run as root: run omero-adi as an "
                       "ordinary user (the image runs as uid 1000)")
    if "Java could not be found" in said:  # omero/java.py check_java()
        return Verdict("the `omero` command could not start Java: install a Java runtime "
                       "(11 or later) for the daemon's user, or put `java` on its PATH")
    if "No JAR files found under" in said or (
            "Downloading " in said and "OMERO.java.zip" in said and code != 0):
        # plugins/import.py: no jars under --clientdir, or none in the user's cache
        # and the download of OMERO.java.zip failed
        return Verdict("the OMERO.java importer jars are missing: run `omero import "
                       "--fetch-jars latest` as the daemon's user (they go into its "
                       "OMERO_USERDIR cache)")
    if "Bad session key" in said:
        # plugins/sessions.py login(): die(523), so exit 11, after *any* exception
        # while joining (SessionsControl.attach swallows it): tried again, in a new session
        return Verdict("the `omero` command could not join the order's OMERO session "
                       "(\"Bad session key\"; it says so whatever stopped the join: the "
                       "session had ended, or OMERO could not be reached)", transient=True)
    if "No imports due to errors!" in said:  # CommandLineImporter.start(), exit 0
        return Verdict(f"the importer found files in {named} but could not read any of "
                       "them (\"No imports due to errors!\"); its errors are below")
    if "No imports found" in said:  # CommandLineImporter.start(), usage, exit 1
        return Verdict(f"nothing importable was found in {named}: no file there is one "
                       "the importer can read (check the paths and the file formats)")
    for marker, meaning in TRANSIENT_MARKERS.items():
        if marker in said:
            return Verdict(f"{meaning} ({marker})", transient=True)
    if not run.errs_written and not run.finished.timed_out:
        return Verdict("the importer ended without writing its error log (--errs)",
                       transient=True)
    return None


def failed_transfers(said: str) -> list[str]:
    """The files the importer could not transfer, as it names them: a
    ``FILE_EXCEPTION`` for a file after its ``FILE_UPLOAD_STARTED``
    (``ImportLibrary.uploadFile``; a ``FILE_EXCEPTION`` while scanning has none).
    By then the server holds the file's fileset (``importFileset`` comes first),
    which stays without images."""
    started = set(re.findall(r" - FILE_UPLOAD_STARTED: (.+)$", said, re.MULTILINE))
    failed = re.findall(r" - FILE_EXCEPTION: (.+)$", said, re.MULTILINE)
    return [path for path in dict.fromkeys(failed) if path in started]
