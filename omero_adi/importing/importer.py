"""DataPackageImporter: an order's files into OMERO, in place, in one importer run.

Flow (contracts §4): a session as the order's user in its group → check the
destination → one ``omero import --transfer=ln_s`` for all paths → match the
filesets it reports to the order's paths → one MapAnnotation per new Image
(Dataset target) or Plate (Screen target). Nothing is imported when the user,
group or destination is wrong, and the original files are only ever read.

With ``use_register_zarr`` on, the order's ``.zarr`` paths are registered in
the same session before that run (:mod:`~omero_adi.importing.zarr_register`)
and annotated alike; the run then imports only the other paths, if any.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

from omero_adi.importing.annotations import NAMESPACE, import_annotation, metadata_for
from omero_adi.importing.importer_cli import (
    ImporterFiles,
    ImporterOutputError,
    ImporterRun,
    build_command,
    run_importer,
)
from omero_adi.importing.preprocess import import_preprocessed
from omero_adi.importing.results import (
    ImportedFileset,
    ImportFailed,
    ImportItem,
    ImportResult,
    RegisteredZarr,
    describe_registered,
)
from omero_adi.omero.blitz import BlitzServer
from omero_adi.omero.boundary import (
    AnnotatedType,
    FilesetInfo,
    OmeroError,
    OmeroServer,
    OmeroUnreachable,
    UserSession,
)
from omero_adi.omero.retry import retry_unreachable
from omero_adi.pipeline import OrderContext, OrderFailed, OrderInterrupted
from omero_adi.settings import Settings

ZARR_HINT = "install the zarr extra into the daemon's Python: pip install 'omero-adi[zarr]'"


class _Origin(NamedTuple):
    """New objects to annotate, and the order's path they came from."""

    filepath: str
    keyvalues: Mapping[str, str]
    object_ids: tuple[int, ...]


class DataPackageImporter:
    """The daemon's :class:`~omero_adi.pipeline.OrderHandler` for in-place imports."""

    def __init__(self, server: OmeroServer, *, retry_delay: float = 1.0):
        self.server = server
        self.retry_delay = retry_delay

    def __call__(self, ctx: OrderContext) -> str:
        order = ctx.order
        if order.preprocessing is not None:
            result = import_preprocessed(ctx, self.import_items)
        else:
            result = self._import_order(ctx)
        return result.describe(order.destination_type, order.destination_id)

    def close(self) -> None:
        """Close the admin session (at daemon shutdown)."""
        self.server.close()

    def import_items(self, ctx: OrderContext, items: Sequence[ImportItem]) -> ImportResult:
        """Import ``items`` for ``ctx.order`` in one importer run and annotate them.

        Raises :class:`OrderFailed` before anything is imported (user, group,
        destination, OMERO unreachable), :class:`ImportFailed` when the run
        imported less than everything, :class:`OrderInterrupted` on shutdown.
        """
        return self._in_session(ctx, lambda session: self._import(ctx, session, items))

    def _import_order(self, ctx: OrderContext) -> ImportResult:
        """The order's own paths: with ``use_register_zarr`` on, its ``.zarr`` ones are
        registered, then the rest imported in one run (when any remain)."""
        to_register, to_import = _split(ctx)
        if not to_register:
            return self.import_items(ctx, [ImportItem.of(path) for path in to_import])
        return self._in_session(
            ctx, lambda session: self._register_then_import(ctx, session, to_register, to_import))

    def _in_session(
        self, ctx: OrderContext, work: Callable[[UserSession], ImportResult]
    ) -> ImportResult:
        """``work`` in a session as the order's user, once the destination is checked."""
        order = ctx.order
        session = self._open_session(ctx)
        try:
            try:
                session.check_destination(order.destination_type, order.destination_id)
            except OmeroError as exc:
                raise OrderFailed(f"{exc}; nothing was imported") from exc
            ctx.check_cancelled()
            return work(session)
        finally:
            try:
                session.close()
            except OmeroError as exc:  # it expires after ttl_for_user_conn anyway
                ctx.log.warning("could not close the OMERO session: %s", exc)

    def _open_session(self, ctx: OrderContext) -> UserSession:
        order, settings = ctx.order, ctx.settings
        try:
            return retry_unreachable(
                lambda: self.server.user_session(order.user, order.group, settings.ttl_for_user_conn),
                attempts=settings.omero_connect_retries,
                cancelled=ctx.cancelled,
                log=ctx.log,
                first_delay=self.retry_delay,
            )
        except OmeroUnreachable as exc:
            ctx.check_cancelled()
            raise OrderFailed(
                f"{exc} (gave up after {settings.omero_connect_retries} attempts); "
                "nothing was imported"
            ) from exc
        except OmeroError as exc:
            raise OrderFailed(f"{exc}; nothing was imported") from exc

    def _register_then_import(
        self, ctx: OrderContext, session: UserSession, uris: Sequence[str], paths: Sequence[Path]
    ) -> ImportResult:
        # needs the zarr library, which _split found
        from omero_adi.importing.zarr_register import register_zarr

        kind = _annotated_kind(ctx)
        try:
            registered = tuple(register_zarr(ctx.order, uris, ctx.settings, session, ctx.log))
        except OmeroError as exc:
            raise OrderFailed(f"registering Zarr failed: {exc}; nothing was imported, and any "
                              "store registered before the failure is named in the log") from exc
        done = f"registered {describe_registered(registered)}"
        self._annotate(
            ctx, session, [_Origin(r.path, {}, _targets(r, kind)) for r in registered], done)
        if not paths:
            return ImportResult((), registered)
        try:
            imported = self._import(ctx, session, [ImportItem.of(path) for path in paths])
        except OrderInterrupted:
            raise
        except OrderFailed as exc:
            raise OrderFailed(f"{exc}\nRegistered (annotated): {describe_registered(registered)}.") from exc
        return ImportResult(imported.filesets, registered)

    def _import(
        self, ctx: OrderContext, session: UserSession, items: Sequence[ImportItem]
    ) -> ImportResult:
        order = ctx.order
        files = ImporterFiles.for_order(ctx.log_dir, order.uuid)
        command = build_command(
            ctx.settings,
            session_key=session.key,
            destination_type=order.destination_type,
            destination_id=order.destination_id,
            paths=[item.path for item in items],
            files=files,
        )
        ctx.log.info("importing %d path(s): %s", len(items), " ".join(_masked(command)))
        try:
            run = run_importer(
                command, files, timeout=ctx.settings.import_timeout, cancelled=ctx.cancelled
            )
        except ImporterOutputError as exc:
            raise OrderFailed(f"{exc} (see {files.out})") from exc
        ctx.emit("importer_exit", "timeout" if run.finished.timed_out else str(run.finished.returncode))
        ctx.check_cancelled()
        ctx.log.info("importer finished: exit %s in %.1fs, %d fileset(s) reported",
                     run.finished.returncode, run.finished.seconds, len(run.fileset_ids))
        imported, strays = self._match(session, items, run)
        problem = _problem(ctx, items, imported, strays, run)
        if problem:
            raise ImportFailed(_failure(problem, items, imported, run, files), imported)
        kind = _annotated_kind(ctx)
        origins = [_Origin(str(e.item.origin), e.item.keyvalues, _targets(e.fileset, kind))
                   for e in imported]
        done = f"imported {'; '.join(e.describe() for e in imported)}"
        self._annotate(ctx, session, origins, done)
        return ImportResult(tuple(imported))

    @staticmethod
    def _match(
        session: UserSession, items: Sequence[ImportItem], run: ImporterRun
    ) -> tuple[list[ImportedFileset], list[FilesetInfo]]:
        """Which order path each reported fileset came from, by the fileset's used
        files as the server records them; filesets matching no path are strays."""
        imported: list[ImportedFileset] = []
        strays: list[FilesetInfo] = []
        for fileset_id in run.fileset_ids:
            try:
                fileset = session.fileset(fileset_id)
            except OmeroError as exc:
                raise OrderFailed(
                    f"the importer reported Fileset {fileset_id}, but looking it up "
                    f"failed: {exc}"
                ) from exc
            owners = [item for item in items if any(item.holds(f) for f in fileset.used_files)]
            if owners:
                # The deepest path wins when an order names a folder and a file in it.
                owner = max(owners, key=lambda item: len(item.path.parts))
                imported.append(ImportedFileset(owner, fileset))
            else:
                strays.append(fileset)
        return imported, strays

    def _annotate(
        self, ctx: OrderContext, session: UserSession, origins: Sequence[_Origin], done: str
    ) -> None:
        """One MapAnnotation per new object; ``done`` says what was created, for a failure."""
        order = ctx.order
        kind = _annotated_kind(ctx)
        timestamp = datetime.now(timezone.utc)
        metadata: dict[str, dict[str, str]] = {}
        for origin in origins:
            if origin.filepath not in metadata:  # none beside an s3:// store
                metadata[origin.filepath] = ({} if "://" in origin.filepath
                                             else metadata_for(Path(origin.filepath), ctx.log))
            values = import_annotation(
                order, origin.filepath, extra=origin.keyvalues,
                metadata=metadata[origin.filepath], timestamp=timestamp,
            )
            for object_id in origin.object_ids:
                try:
                    session.annotate(kind, object_id, NAMESPACE, values)
                except OmeroError as exc:
                    raise OrderFailed(
                        f"{done}, but annotating {kind} {object_id} failed: {exc}"
                    ) from exc
        count = sum(len(origin.object_ids) for origin in origins)
        ctx.log.info("annotated %d %s(s) in namespace %s", count, kind, NAMESPACE)


def _split(ctx: OrderContext) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    """(``.zarr`` paths to register, paths to import) of the order's own paths."""
    if not ctx.settings.use_register_zarr:
        return (), ctx.order.files
    try:
        from omero_adi.importing.zarr_register import split_paths
    except ImportError as exc:
        raise OrderFailed(f"use_register_zarr is on, but the zarr library is missing ({exc}); "
                          f"{ZARR_HINT}; nothing was imported") from exc
    return split_paths(ctx.order)


def _annotated_kind(ctx: OrderContext) -> AnnotatedType:
    """What gets the annotation: Images in a Dataset, Plates in a Screen."""
    return "Image" if ctx.order.destination_type == "Dataset" else "Plate"


def _targets(found: FilesetInfo | RegisteredZarr, kind: AnnotatedType) -> tuple[int, ...]:
    return found.image_ids if kind == "Image" else found.plate_ids


def _problem(
    ctx: OrderContext,
    items: Sequence[ImportItem],
    imported: Sequence[ImportedFileset],
    strays: Sequence[FilesetInfo],
    run: ImporterRun,
) -> str | None:
    """Why this run does not count as a complete import, or None when it does."""
    finished, order = run.finished, ctx.order
    if finished.timed_out:
        return (f"the importer ran longer than import_timeout "
                f"({ctx.settings.import_timeout:g} s) and was killed")
    if finished.returncode < 0:
        return f"the importer crashed (killed by signal {-finished.returncode})"
    if finished.returncode != 0:
        return f"the importer exited with status {finished.returncode}"
    if not run.fileset_ids:
        return "the importer created no fileset (nothing importable found)"
    if strays:
        return ("the importer reported fileset(s) from files the order does not name: "
                + "; ".join(f"Fileset {f.id} ({', '.join(map(str, f.used_files))})" for f in strays))
    kind = _annotated_kind(ctx)
    empty = [entry for entry in imported if not _targets(entry.fileset, kind)]
    if empty:
        return (f"these filesets hold no {kind}, so they cannot go into "
                f"{order.destination_type} {order.destination_id}: "
                + "; ".join(entry.describe() for entry in empty))
    done = {id(entry.item) for entry in imported}
    if any(id(item) not in done for item in items):
        return "the importer created no fileset for some of the order's paths"
    return None


def _failure(
    problem: str,
    items: Sequence[ImportItem],
    imported: Sequence[ImportedFileset],
    run: ImporterRun,
    files: ImporterFiles,
) -> str:
    """The ``Import Failed`` description: why, what was imported, what was not."""
    done = {id(entry.item) for entry in imported}
    missing = [str(item.origin) for item in items if id(item) not in done]
    parts = [f"Import failed: {problem}."]
    if imported:
        parts.append("Imported (not annotated): " + "; ".join(e.describe() for e in imported) + ".")
    if missing:
        parts.append("Not imported: " + ", ".join(missing) + ".")
    if run.errors_tail:
        parts.append(f"Importer errors (end of {files.errs}):\n{run.errors_tail}")
    return "\n".join(parts)


def _masked(command: Sequence[str]) -> list[str]:
    """The command line with the session key hidden, for the log."""
    return ["***" if i and command[i - 1] == "-k" else arg for i, arg in enumerate(command)]


def build_handler(settings: Settings) -> DataPackageImporter:
    """The in-place import handler the daemon runs orders with.

    omero-py is needed only once an order runs; without it the order fails
    saying so.
    """
    return DataPackageImporter(BlitzServer(settings))
