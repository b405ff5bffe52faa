"""An order with preprocessing: convert, import the local copies, redirect links.

:func:`import_preprocessed` is the whole step for the importer:
:func:`preprocess` records ``Import Preprocessing`` and runs one container
per file into the order's local folder; the local copies are imported in
one run; then :func:`redirect_filesets` repoints the new filesets' links to
the durable copies in ``.processed/`` and removes the local folder.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

from omero_adi.importing.containers import (
    ContainerRun,
    build_run,
    inplace_dir,
    parse_report,
)
from omero_adi.importing.engines import (
    ContainerEngine,
    ContainerOutput,
    connect,
    run_retrying_busy_mounts,
)
from omero_adi.importing.redirect import RedirectReport, redirect_links
from omero_adi.importing.results import (
    ImportedFileset,
    ImportFailed,
    ImportItem,
    ImportResult,
)
from omero_adi.pipeline import OrderContext, OrderFailed, OrderInterrupted
from omero_adi.store.models import STAGE_PREPROCESSING

KEY_PREFIX = "processing_output_"
#: Lines of container output quoted in a failure description.
TAIL_LINES = 15
#: ``DataPackageImporter.import_items``: one importer run for the given items.
ImportItems = Callable[[OrderContext, Sequence[ImportItem]], ImportResult]


@dataclass(frozen=True)
class Preprocessed:
    tmp_dir: Path
    #: The local copies to import, as the containers reported them, each standing for
    #: its order file (``origin``) with its ``processing_output_<key>`` values.
    outputs: tuple[ImportItem, ...]
    #: Each local file -> the order file whose conversion wrote it.
    sources: Mapping[Path, Path]
    #: The durable copies' folder beside each order file (``processed_data_folder``).
    processed: str

    @property
    def to_import(self) -> tuple[ImportItem, ...]:
        """One output per local path (the first reported); the whole local folder
        alone when a container reported none (its origin is the first such file)."""
        unique: dict[Path, ImportItem] = {}
        for output in self.outputs:
            unique.setdefault(output.path, output)
        if self.tmp_dir in unique:
            return (unique[self.tmp_dir],)
        return tuple(unique.values())

    def durable_for(self, local: Path) -> Path | None:
        """The durable copy of a local file: same name under ``<source dir>/<processed>``."""
        source = self.sources.get(local)
        if source is None:
            return None
        return source.parent / self.processed / local.relative_to(self.tmp_dir)


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


def _check(run: ContainerRun, output: ContainerOutput, timeout: float, uuid: str) -> None:
    what = f"preprocessing container {run.image} for {run.source.name}"
    if output.timed_out:
        raise OrderFailed(f"{what} was killed after the time limit of {timeout:g} s: "
                          f"{_tail(output)}")
    if output.cancelled:
        raise OrderInterrupted(f"{what} was stopped: the daemon is shutting down; retry with "
                               f"`omero-adi retry {uuid}`")
    if output.exit_code != 0:
        raise OrderFailed(f"{what} exited with code {output.exit_code}: {_tail(output)}")


def _outputs(ctx: OrderContext, run: ContainerRun, output: ContainerOutput) -> list[ImportItem]:
    reported = parse_report(output.stdout, run)
    if reported is None:
        ctx.log.info("%s: no JSON file list on the last output line; importing the whole "
                     "local folder %s", run.source.name, run.local_dir)
        return [ImportItem(run.local_dir, run.source)]
    missing = [str(r.local_path) for r in reported if not r.local_path.exists()]
    if missing:
        raise OrderFailed(f"the container for {run.source.name} reported files it did not "
                          f"write: {', '.join(missing)}")
    return [
        ImportItem(r.local_path, run.source, {KEY_PREFIX + k: v for k, v in r.keyvalues})
        for r in reported
    ]


def _check_clash(run: ContainerRun, changed: Sequence[Path], reported: Sequence[ImportItem],
                 sources: Mapping[Path, Path]) -> None:
    """OrderFailed when this run replaced, in the order's one local folder, a file to
    import that an earlier run wrote for a file in another folder (a/img.tif and
    b/img.tif both become img.converted.tif): that conversion would be lost and the
    link would point at the wrong folder's ``.processed``."""
    clashes = [
        path for path in changed
        if path in sources and sources[path].parent != run.source.parent
        and any(path == o.path or o.path in path.parents for o in reported)
    ]
    if clashes:
        names = ", ".join(sorted(str(p.relative_to(run.local_dir)) for p in clashes))
        raise OrderFailed(
            f"the converted files of {sources[clashes[0]]} and {run.source} have the same "
            f"name: {names}; import files whose converted copies have the same name in "
            "separate orders")


def _fresh_dir(ctx: OrderContext, folder: Path) -> None:
    if folder.exists():
        ctx.log.warning("removing %s left over from an earlier attempt of this order", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _processed_dir(source: Path, name: str) -> None:
    processed = source.parent / name
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
    outputs: list[ImportItem] = []
    sources: dict[Path, Path] = {}
    before: dict[Path, tuple[int, int]] = {}  # the local folder is new and empty
    try:
        for run in runs:
            ctx.check_cancelled()
            _processed_dir(run.source, settings.processed_data_folder)
            output = run_retrying_busy_mounts(engine, run, settings, ctx.cancelled, ctx.log)
            _log_output(ctx, run, output)
            _check(run, output, settings.preprocessing_timeout, order.uuid)
            reported = _outputs(ctx, run, output)
            after = _snapshot(tmp_dir)
            changed = [path for path, stamp in after.items() if before.get(path) != stamp]
            before = after
            _check_clash(run, changed, reported, sources)
            outputs += reported
            sources.update((path, run.source) for path in changed)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return Preprocessed(tmp_dir, tuple(outputs), sources, settings.processed_data_folder)


def fileset_dir(managed_repository: Path, template_prefix: str) -> Path:
    """The fileset's folder in ManagedRepository; OrderFailed for a prefix that escapes it."""
    prefix = PurePosixPath(template_prefix.strip("/"))
    if not template_prefix.strip("/") or ".." in prefix.parts:
        raise OrderFailed(f"fileset templatePrefix {template_prefix!r} is not a folder "
                          "inside ManagedRepository")
    return managed_repository.joinpath(*prefix.parts)


def redirect_filesets(
    ctx: OrderContext, preprocessed: Preprocessed, template_prefixes: Sequence[str], *,
    remove_tmp: bool = True,
) -> RedirectReport:
    """Repoint the filesets' links to ``.processed/``; the local folder goes when all
    did (and ``remove_tmp``)."""
    root = Path(ctx.settings.managed_repository)
    dirs = [fileset_dir(root, prefix) for prefix in template_prefixes]
    report = redirect_links(dirs, preprocessed.tmp_dir, preprocessed.durable_for,
                            remove_tmp=remove_tmp)
    ctx.log.info("link redirection: %s", report.summary())
    return report


def _prefixes(imported: Sequence[ImportedFileset]) -> list[str]:
    return [entry.fileset.template_prefix for entry in imported]


def import_preprocessed(
    ctx: OrderContext, import_items: ImportItems, engine: ContainerEngine | None = None
) -> ImportResult:
    """Preprocess the order, import the local copies with ``import_items``, redirect.

    The local folder is removed once every link points at the durable copies,
    or at once when the importer never started. After it started, the folder
    stays as long as any fileset may link into it: a link that could not be
    switched, or a failure that left filesets unaccounted for, fails the order
    saying what was switched and what was kept.
    """
    preprocessed = preprocess(ctx, engine)
    try:
        result = import_items(ctx, preprocessed.to_import)
    except ImportFailed as exc:
        report = redirect_filesets(ctx, preprocessed, _prefixes(exc.imported + exc.empty),
                                   remove_tmp=not exc.unaccounted)
        if report.complete and not exc.unaccounted:
            raise
        kept = ""
        if exc.unaccounted:
            kept = (f"\nThe converted copies in {preprocessed.tmp_dir} were kept: filesets "
                    "not listed here may link to them. Remove that folder only once no "
                    "fileset of this order links into it (or they were deleted in OMERO).")
        raise exc.with_note(f"Links: {report.summary()}.{kept}") from exc
    except OrderInterrupted:
        ctx.log.warning("interrupted; keeping %s for links of a partial import",
                        preprocessed.tmp_dir)
        raise
    except OrderFailed:  # raised before the importer started: nothing links there
        shutil.rmtree(preprocessed.tmp_dir, ignore_errors=True)
        raise
    report = redirect_filesets(ctx, preprocessed, _prefixes(result.filesets))
    if not report.complete:
        raise OrderFailed(f"{result.describe(ctx.order.destination_type, ctx.order.destination_id)}"
                          f", but link redirection is incomplete: {report.summary()}")
    return result
