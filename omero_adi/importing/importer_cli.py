"""The OMERO command-line importer: its command line, one run, its YAML report."""

from __future__ import annotations

import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import yaml

from omero_adi.importing.jars import missing_jars_note
from omero_adi.orders import DestinationType
from omero_adi.process import Finished, run_process
from omero_adi.progress import ErrsProgress, ImportProgress
from omero_adi.settings import Settings

#: Lines of the importer's error output quoted in a failure description.
TAIL_LINES = 15


class ImporterOutputError(ValueError):
    """The importer's ``--output yaml`` report cannot be read."""


class ImporterNotStarted(OSError):
    """The ``omero`` command could not be started (missing, not executable, no
    room for its temporary folder); nothing of the run happened."""


@dataclass(frozen=True)
class ImporterFiles:
    """Where one order's importer run writes: ``logs/cli.<UUID>.logs`` and ``.errs``."""

    out: Path
    errs: Path

    @classmethod
    def for_order(cls, log_dir: Path, uuid: str) -> ImporterFiles:
        return cls(log_dir / f"cli.{uuid}.logs", log_dir / f"cli.{uuid}.errs")


@dataclass(frozen=True)
class ImporterRun:
    finished: Finished
    #: The ids of the filesets the importer reported; what they hold is looked up
    #: on the server, which knows better than the report.
    fileset_ids: tuple[int, ...]
    #: The last lines of the importer's error output (and of the CLI wrapper's own).
    errors_tail: str
    #: Everything the importer and the wrapper said: ``--errs``, then their own
    #: standard output and error (for :mod:`.importer_says`).
    said: str = ""
    #: Whether the importer wrote its ``--errs`` file at all.
    errs_written: bool = True


def build_command(
    settings: Settings,
    *,
    session_key: str,
    destination_type: DestinationType,
    destination_id: int,
    paths: Sequence[Path],
    files: ImporterFiles,
) -> list[str]:
    """The ``omero import`` arguments for all of an order's paths (contracts §4)."""
    target = "-d" if destination_type == "Dataset" else "-r"
    return [
        settings.omero_cli, "import",
        "-k", session_key,
        "-s", settings.omero_host,
        "-p", str(settings.omero_port),
        "--transfer=ln_s",
        "--no-upgrade",
        "--file", str(files.out),
        "--errs", str(files.errs),
        "--output", "yaml",
        "--parallel-upload", str(settings.parallel_upload_per_worker),
        "--parallel-fileset", str(settings.parallel_filesets_per_worker),
        *settings.skip_flags(),
        "--depth", str(settings.import_depth),
        target, str(destination_id),
        *(str(p) for p in paths),
    ]


def parse_yaml_report(text: str) -> tuple[int, ...]:
    """Fileset ids from ``--output yaml``: one document per fileset, each a list of
    ``{Fileset: id, Image: [...], Plate: [...]}``."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ImporterOutputError(f"the importer's YAML report is not valid YAML: {exc}") from exc
    found: list[int] = []
    for document in documents:
        if document is None:
            continue
        for entry in document if isinstance(document, list) else [document]:
            if not isinstance(entry, dict) or not isinstance(entry.get("Fileset"), int):
                raise ImporterOutputError(
                    f"unexpected entry in the importer's YAML report: {entry!r}")
            found.append(entry["Fileset"])
    return tuple(found)


def run_importer(
    command: Sequence[str], files: ImporterFiles, *, timeout: float, cancelled: threading.Event,
    on_progress: Callable[[ImportProgress], None] | None = None,
) -> ImporterRun:
    """Run the importer once; read its report and the tail of its errors.

    The ``omero`` wrapper's own output (login errors, Python tracebacks) does
    not reach ``--errs``; it is captured and added to the tail, and so is a note
    when a run that failed finds the importer's jars missing. While it runs, ``on_progress`` gets the
    progress read from ``--errs`` (many times a second: the receiver decides what
    to keep).
    """
    files.out.parent.mkdir(parents=True, exist_ok=True)
    for path in (files.out, files.errs):
        path.unlink(missing_ok=True)  # a retried order must not read the last run's report
    errs_progress = ErrsProgress(files.errs)

    def tick() -> None:
        progress = errs_progress.read()
        if progress is not None and on_progress is not None:
            on_progress(progress)

    try:
        with private_omero_dirs() as env:
            finished = run_process(command, timeout=timeout, cancelled=cancelled, on_tick=tick,
                                   env=env)
    except OSError as exc:  # Popen (no such file, not executable) or mkdtemp (no room)
        where = f" ({exc.filename})" if exc.filename else ""
        raise ImporterNotStarted(
            f"the importer could not be started: {exc.strerror or exc}{where}; set omero_cli "
            "to the `omero` executable and check that the daemon's temporary directory is "
            "writable (`omero-adi check` tells)") from exc
    tick()
    report = files.out.read_text("utf-8", "replace") if files.out.exists() else ""
    errs = files.errs.read_text("utf-8", "replace") if files.errs.exists() else ""
    said = "\n".join((errs, finished.stdout, finished.stderr))
    # only a failed run is described with its tail: no look at the jars after a good one
    note = missing_jars_note() if finished.returncode != 0 else None
    return ImporterRun(
        finished=finished,
        fileset_ids=parse_yaml_report(report),
        errors_tail=_tail(said) + (f"\n{note}" if note else ""),
        said=said,
        errs_written=files.errs.exists(),
    )


@contextmanager
def private_omero_dirs() -> Iterator[dict[str, str]]:
    """A session store and a temporary folder of its own for one ``omero`` run,
    as the environment that points the wrapper at them; removed afterwards.

    omero-py creates its shared ones check-then-make (``SessionsStore.__init__``
    and ``add`` in omero/util/sessions.py, ``TempFileManager.create`` in
    omero/util/temp_files.py): two wrappers starting together on a fresh
    ``$OMERO_USERDIR`` can both find a folder missing, and the slower one's
    ``makedirs`` fails. The wrapper reports that as "Bad session key" or
    "Could not access session dir" and never starts the importer. A store per
    run also leaves no ``<host>/<user>/<key>`` file behind for each import.
    """
    folder = Path(tempfile.mkdtemp(prefix="adi-omero-"))
    try:
        yield {"OMERO_SESSIONDIR": str(folder / "sessions"), "OMERO_TMPDIR": str(folder / "tmp")}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])
