"""The OMERO command-line importer: its command line, one run, its YAML report."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from omero_adi.orders import DestinationType
from omero_adi.process import Finished, run_process
from omero_adi.settings import Settings

#: Lines of the importer's error output quoted in a failure description.
TAIL_LINES = 15


class ImporterOutputError(ValueError):
    """The importer's ``--output yaml`` report cannot be read."""


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
    command: Sequence[str], files: ImporterFiles, *, timeout: float, cancelled: threading.Event
) -> ImporterRun:
    """Run the importer once; read its report and the tail of its errors.

    The ``omero`` wrapper's own output (login errors, Python tracebacks) does
    not reach ``--errs``; it is captured and added to the tail.
    """
    files.out.parent.mkdir(parents=True, exist_ok=True)
    for path in (files.out, files.errs):
        path.unlink(missing_ok=True)  # a retried order must not read the last run's report
    finished = run_process(command, timeout=timeout, cancelled=cancelled)
    report = files.out.read_text("utf-8", "replace") if files.out.exists() else ""
    errs = files.errs.read_text("utf-8", "replace") if files.errs.exists() else ""
    return ImporterRun(
        finished=finished,
        fileset_ids=parse_yaml_report(report),
        errors_tail=_tail("\n".join((errs, finished.stdout, finished.stderr))),
    )


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])
