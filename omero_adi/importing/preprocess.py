"""The preprocessing step of an order: convert, then (after import) redirect links.

:func:`preprocess` records ``Import Preprocessing``, runs one container per
file and returns a :class:`Preprocessed`: the local copies to import and
their key-values. After the import, :func:`finish` repoints the new
filesets' links to the durable copies in ``.processed/`` and removes the
local folder.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from omero_adi.importing.containers import (
    PROCESSED,
    ContainerRun,
    build_run,
    inplace_dir,
    parse_report,
)
from omero_adi.importing.engines import ContainerEngine, ContainerOutput, connect
from omero_adi.importing.redirect import RedirectReport, redirect_links
from omero_adi.pipeline import OrderContext, OrderFailed

STAGE_PREPROCESSING = "Import Preprocessing"
KEY_PREFIX = "processing_output_"
#: Lines of container output quoted in a failure description.
TAIL_LINES = 15


@dataclass(frozen=True)
class LocalOutput:
    """A local path to import, the order file it came from and its key-values."""

    path: Path
    source: Path
    #: ``processing_output_<key>`` -> value, as the converter reported them.
    keyvalues: Mapping[str, str]


@dataclass(frozen=True)
class Preprocessed:
    tmp_dir: Path
    outputs: tuple[LocalOutput, ...]
    #: Each local file -> the original folder whose ``.processed`` holds its durable copy.
    origins: Mapping[Path, Path]

    @property
    def import_paths(self) -> tuple[Path, ...]:
        """What the importer imports: the reported files, or the whole local folder."""
        paths = [output.path for output in self.outputs]
        if self.tmp_dir in paths:
            return (self.tmp_dir,)
        return tuple(dict.fromkeys(paths))

    def output_for(self, imported: Path) -> LocalOutput | None:
        """The output an imported path belongs to (itself, or a folder holding it)."""
        for output in self.outputs:
            if imported == output.path:
                return output
        for output in self.outputs:
            if imported.is_relative_to(output.path) and output.path != self.tmp_dir:
                return output
        return None

    def keyvalues_for(self, imported: Path) -> dict[str, str]:
        """The ``processing_output_*`` annotations for an imported path."""
        output = self.output_for(imported)
        return dict(output.keyvalues) if output else {}

    def durable_for(self, local: Path) -> Path | None:
        """The durable copy of a local file: same name under ``<origin>/.processed``."""
        origin = self.origins.get(local)
        if origin is None:
            return None
        return origin / PROCESSED / local.relative_to(self.tmp_dir)


def _snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            stat = path.lstat()
            found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def _tail(output: ContainerOutput) -> str:
    lines = (output.stderr + output.stdout).splitlines()[-TAIL_LINES:]
    return " | ".join(line.strip() for line in lines if line.strip())[-2000:]


def _log_output(ctx: OrderContext, run: ContainerRun, output: ContainerOutput) -> None:
    for stream, text in (("stdout", output.stdout), ("stderr", output.stderr)):
        for line in text.splitlines():
            ctx.log.info("[%s %s] %s", run.source.name, stream, line)


def _check(run: ContainerRun, output: ContainerOutput, timeout: float) -> None:
    what = f"preprocessing container {run.image} for {run.source.name}"
    if output.timed_out:
        raise OrderFailed(f"{what} was killed after the time limit of {timeout:g} s: "
                          f"{_tail(output)}")
    if output.cancelled:
        raise OrderFailed(f"{what} was stopped: the daemon is shutting down")
    if output.exit_code != 0:
        raise OrderFailed(f"{what} exited with code {output.exit_code}: {_tail(output)}")


def _outputs(ctx: OrderContext, run: ContainerRun, output: ContainerOutput) -> list[LocalOutput]:
    reported = parse_report(output.stdout, run)
    if reported is None:
        ctx.log.info("%s: no JSON file list on the last output line; importing the whole "
                     "local folder %s", run.source.name, run.local_dir)
        return [LocalOutput(run.local_dir, run.source, {})]
    missing = [str(r.local_path) for r in reported if not r.local_path.exists()]
    if missing:
        raise OrderFailed(f"the container for {run.source.name} reported files it did not "
                          f"write: {', '.join(missing)}")
    return [
        LocalOutput(r.local_path, run.source, {KEY_PREFIX + k: v for k, v in r.keyvalues})
        for r in reported
    ]


def _fresh_dir(ctx: OrderContext, folder: Path) -> None:
    if folder.exists():
        ctx.log.warning("removing %s left over from an earlier attempt of this order", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _processed_dir(source: Path) -> None:
    processed = source.parent / PROCESSED
    if processed.is_symlink():
        raise OrderFailed(f"{processed} is a symbolic link; it must be a real folder")
    try:
        processed.mkdir(exist_ok=True)
    except OSError as exc:
        raise OrderFailed(f"cannot create {processed} for the durable copies: "
                          f"{exc.strerror or exc}") from exc


def preprocess(ctx: OrderContext, engine: ContainerEngine | None = None) -> Preprocessed:
    """Convert every file of the order; OrderFailed (local folder removed) on failure."""
    order, settings = ctx.order, ctx.settings
    runs = [build_run(order, source, settings) for source in order.files]
    tmp_dir = inplace_dir(settings, order)
    ctx.record_stage(STAGE_PREPROCESSING, f"{len(runs)} file(s) with {runs[0].image}")
    engine = engine or connect(settings, ctx.log)
    ctx.log.info("preprocessing with %s into %s", engine.description, tmp_dir)
    _fresh_dir(ctx, tmp_dir)
    outputs: list[LocalOutput] = []
    origins: dict[Path, Path] = {}
    try:
        for run in runs:
            ctx.check_cancelled()
            _processed_dir(run.source)
            before = _snapshot(tmp_dir)
            output = engine.run(run, timeout=settings.preprocessing_timeout,
                                cancelled=ctx.cancelled)
            _log_output(ctx, run, output)
            _check(run, output, settings.preprocessing_timeout)
            outputs += _outputs(ctx, run, output)
            origins.update(
                (path, run.source.parent)
                for path, stamp in _snapshot(tmp_dir).items() if before.get(path) != stamp
            )
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return Preprocessed(tmp_dir, tuple(outputs), origins)


def fileset_dir(managed_repository: Path, template_prefix: str) -> Path:
    """The fileset's folder in ManagedRepository; OrderFailed for a prefix that escapes it."""
    prefix = PurePosixPath(template_prefix.strip("/"))
    if not template_prefix.strip("/") or ".." in prefix.parts:
        raise OrderFailed(f"fileset templatePrefix {template_prefix!r} is not a folder "
                          "inside ManagedRepository")
    return managed_repository.joinpath(*prefix.parts)


def finish(
    ctx: OrderContext, preprocessed: Preprocessed, template_prefixes: Sequence[str]
) -> RedirectReport:
    """Repoint the imported filesets' links to ``.processed/``; remove the local folder.

    Call it after the import with every fileset the import created, also when
    the import failed. OrderFailed when a link could not be switched.
    """
    root = Path(ctx.settings.managed_repository)
    dirs = [fileset_dir(root, prefix) for prefix in template_prefixes]
    report = redirect_links(dirs, preprocessed.tmp_dir, preprocessed.durable_for)
    ctx.log.info("link redirection: %s", report.summary())
    if not report.complete:
        raise OrderFailed(f"imported, but link redirection is incomplete: {report.summary()}")
    return report
