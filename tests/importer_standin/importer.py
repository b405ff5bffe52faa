"""``ome.formats.importer.cli.CommandLineImporter``: options, the run, the exit status.

Modelled on ome/omero-blitz ``cli/CommandLineImporter.java``:
- GNU getopt with the short options ``cfl:s:u:w:d:r:T:k:x:n:p:h`` and the long
  options below (``--name=value`` or ``--name value``, unique prefixes, options
  after paths too); anything else prints usage and exits 1;
- ``-d N``/``-r N`` become the targets ``Dataset:N``/``Screen:N``;
- the constructor scans the paths *before* logging in; then, with paths and
  without ``-f``, it needs a server and a session key or user and password
  (else usage, exit 1) and joins the session; a failure there is logged as
  ``Error during import process.`` and the exit status is 2;
- ``start``: ``-f`` lists the candidates (exit 0, or 125 with none); no
  candidate and errors while scanning: ``No imports due to errors!``, exit 0;
  no candidate and no error: ``No imports found``, then usage, exit **1**;
  otherwise import, the summary, and exit 0 or 2 (3 is a failed
  ``afterTransfer`` cleanup, which ``ln_s`` never has).
Options the stand-in does not model stop it with exit status 99 and a message
naming them, rather than being ignored.
"""

from __future__ import annotations

import getopt
import os
import sys
from typing import NoReturn

from tests.importer_standin.candidates import Candidates
from tests.importer_standin.formats import SampleError
from tests.importer_standin.library import Library, Session, Target
from tests.importer_standin.monitor import CLI, CONFIG, LEVELS, Monitor

SHORT = "cfl:s:u:w:d:r:T:k:x:n:p:h"
#: Long options with an argument (``=``) and without.
LONG = [
    "debug=", "report", "upload", "logs", "email=", "name=", "description=", "no-thumbnails",
    "agent=", "annotation-ns=", "annotation-text=", "annotation-link=", "advanced-help",
    "transfer=", "checksum-algorithm=", "minutes-wait=", "close-completed", "wait-completed",
    "auto-close", "exclude=", "target=", "qa-baseurl=", "no-stats-info", "no-upgrade-check",
    "output=", "encrypted=", "parallel-upload=", "parallel-fileset=", "readers=", "keep-alive=",
    "minutes_wait=", "close_completed", "wait_completed", "auto_close", "plate_name=",
    "plate_description=", "no_thumbnails", "checksum_algorithm=", "annotation_ns=",
    "annotation_text=", "annotation_link=", "plate-description=", "plate-name=",
]
#: Accepted, and without effect on what the stand-in does.
ACCEPTED = {"--no-thumbnails", "--no_thumbnails", "--no-stats-info", "--no-upgrade-check",
            "--checksum-algorithm", "--checksum_algorithm", "--parallel-upload", "--agent",
            "--encrypted", "--keep-alive", "-n", "-x", "--name", "--description",
            "--plate_name", "--plate-name", "--plate_description", "--plate-description"}
NOT_MODELLED = 99
USAGE = """
 Usage:  importer-cli [OPTION]... [path [path ...]]...
   or:   importer-cli [OPTION]... -

(stand-in) Imports files and folders into OMERO. Session: -s SERVER -p PORT and
either -k KEY or -u USER -w PASSWORD. Targets: -d DATASET_ID, -r SCREEN_ID,
-T TARGET. -f lists the files of each import, -c continues after errors.
"""


def usage() -> NoReturn:
    """Usage on standard error, exit 1 (``CommandLineImporter.usage``)."""
    sys.stderr.write(USAGE)
    sys.stderr.flush()
    raise SystemExit(1)


def not_modelled(what: str) -> NoReturn:
    sys.stderr.write(f"importer stand-in: {what} is not modelled; see tests/importer_standin/\n")
    raise SystemExit(NOT_MODELLED)


class Options:
    def __init__(self, argv: list[str]):
        try:  # the Java long option --debug takes an optional argument
            options, self.paths = getopt.gnu_getopt(
                ["--debug=ALL" if a == "--debug" else a for a in argv], SHORT, LONG)
        except getopt.GetoptError as exc:
            sys.stderr.write(f"importer-cli: {exc}\n")
            usage()
        self.host: str | None = None
        self.key: str | None = None
        self.user: str | None = None
        self.password: str | None = None
        self.port = 4064
        self.target: Target | None = None
        self.continue_on_error = self.used_files = False
        self.output, self.parallel_fileset, self.debug = "ids", 1, "INFO"
        self.transfer = "upload"
        for name, value in options:
            self._set(name, value)

    def _set(self, name: str, value: str) -> None:  # noqa: C901  (one switch, as in Java)
        if name == "-h":
            usage()
        elif name in ("-s", "-k", "-u", "-w"):
            setattr(self, {"-s": "host", "-k": "key", "-u": "user", "-w": "password"}[name], value)
        elif name == "-p":
            self.port = int(value)
        elif name in ("-d", "-r"):
            kind = "Dataset" if name == "-d" else "Screen"
            self.target = _target(value if value.startswith(f"{kind}:") else f"{kind}:{int(value)}")
        elif name in ("-T", "--target"):
            self.target = _target(value)
        elif name == "-c":
            self.continue_on_error = True
        elif name == "-f":
            self.used_files = True
        elif name == "--transfer":
            if value != "ln_s":
                not_modelled(f"--transfer={value} (only ln_s)")
            self.transfer = value
        elif name == "--output":
            if value not in ("ids", "yaml"):  # ImportOutput.valueOf: legacy is not modelled
                not_modelled(f"--output={value}")
            self.output = value
        elif name == "--parallel-fileset":
            self.parallel_fileset = int(value)
        elif name == "--debug":
            self.debug = {"ALL": "TRACE", "FATAL": "ERROR"}.get(value, value or "TRACE")
        elif name not in ACCEPTED:
            not_modelled(f"the option {name}")


def _target(spec: str) -> Target:
    """``ImportTarget`` for ``Dataset:N`` / ``Screen:N`` (other forms are not modelled)."""
    kind, _, number = spec.partition(":")
    if kind not in ("Dataset", "Screen") or not number.isdigit():
        not_modelled(f"the target {spec!r}")
    return Target(kind, int(number))


def main(argv: list[str], depth: int) -> int:
    options = Options(argv)
    monitor = Monitor(output=options.output, level=LEVELS[options.debug])
    monitor.info(CONFIG, "OMERO Version: stand-in (tests/importer_standin)")
    monitor.info(CLI, f"Log levels -- Bio-Formats: ERROR OMERO.importer: {options.debug}")
    paths = options.paths
    if paths == ["-"]:
        paths = [line.strip() for line in sys.stdin if line.strip()]
    session: Session | None = None
    try:
        candidates = Candidates(paths, depth, monitor)
        if paths and not options.used_files:
            if options.host is None or (options.key is None and options.user is None):
                usage()  # checkLogin
            if options.transfer != "ln_s":
                not_modelled("an import without --transfer=ln_s (the default upload)")
            if options.key is None:
                not_modelled("logging in with -u/-w")
            session = Session(options.host, options.port, options.key, monitor)
        return start(options, candidates, monitor, session)
    except SampleError as exc:
        sys.stderr.write(f"importer stand-in: {exc}\n")
        return NOT_MODELLED
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001  (main's catch Throwable)
        monitor.log("ERROR", CLI, "Error during import process.", f"{type(exc).__name__}: {exc}")
        return 2
    finally:
        if session is not None:
            session.close()


def start(options: Options, candidates: Candidates, monitor: Monitor,
          session: Session | None) -> int:
    containers = candidates.containers
    if options.used_files:
        for container in containers:
            print("#======================================")
            # ImportCandidates.print: String.format of a Boolean, "true"/"false"
            spw = str(container.is_spw).lower()
            print(f"# Group: {container.file} SPW: {spw} Reader: stand-in")
            print("\n".join(container.used_files))
        return 0 if containers else 125
    if not containers:
        if monitor.errors:
            monitor.print_err("No imports due to errors!")
            return 0
        monitor.print_err("No imports found")
        usage()
    assert session is not None
    library = Library(session, monitor, target=options.target,
                      parallel_fileset=options.parallel_fileset,
                      continue_on_error=options.continue_on_error)
    successful = library.import_candidates(containers)
    monitor.summary()
    return 0 if successful else 2


def flush_and_exit(status: int) -> None:
    """``System.exit``: the process ends even while fileset threads still run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
