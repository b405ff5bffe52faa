"""DataPackageImporter: an order's files into OMERO, in place, in one importer run
(more only to try again what a transient failure left out: :mod:`.runs`).

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

from omero_adi.importing.annotations import import_annotation, metadata_for
from omero_adi.importing.preprocess import import_preprocessed
from omero_adi.importing.results import (
    ImportFailed,
    ImportItem,
    ImportResult,
    describe_registered,
)
from omero_adi.importing.runs import annotated_kind, run_with_retries, targets
from omero_adi.omero.blitz import BlitzServer
from omero_adi.omero.boundary import (
    OmeroError,
    OmeroServer,
    OmeroUnreachable,
    UserSession,
)
from omero_adi.omero.retry import retry_unreachable
from omero_adi.omero.sessions import SessionKeeper
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
        try:
            if order.preprocessing is not None:
                result = import_preprocessed(ctx, self.import_items)
            else:
                result = self._import_order(ctx)
        except ImportFailed as exc:  # what it did import is in OMERO all the same
            ctx.record_imported(exc.imported)
            raise
        ctx.record_imported(result.filesets)
        return result.describe(order.destination_type, order.destination_id)

    def close(self) -> None:
        """Close the admin session (at daemon shutdown)."""
        self.server.close()

    def import_items(self, ctx: OrderContext, items: Sequence[ImportItem]) -> ImportResult:
        """Import ``items`` for ``ctx.order`` (:func:`~.runs.run_with_retries`) and annotate them.

        Raises :class:`OrderFailed` before anything is imported (user, group,
        destination, OMERO unreachable), :class:`ImportFailed` once the importer
        has started and less than everything was imported and annotated,
        :class:`OrderInterrupted` on shutdown.
        """
        return self._in_session(ctx, lambda sessions: self._import(ctx, sessions, items))

    def _import_order(self, ctx: OrderContext) -> ImportResult:
        """The order's own paths: with ``use_register_zarr`` on, its ``.zarr`` ones are
        registered, then the rest imported in one run (when any remain)."""
        to_register, to_import = _split(ctx)
        if not to_register:
            return self.import_items(ctx, [ImportItem.of(path) for path in to_import])
        return self._in_session(
            ctx, lambda sessions: self._register_then_import(ctx, sessions, to_register, to_import))

    def _in_session(
        self, ctx: OrderContext, work: Callable[[SessionKeeper], ImportResult]
    ) -> ImportResult:
        """``work`` with sessions as the order's user, once the destination is checked.

        The first session is opened to outlive an importer run (see
        :mod:`omero_adi.omero.sessions`); later steps renew it when needed.
        """
        order, settings = ctx.order, ctx.settings
        sessions = SessionKeeper(lambda ttl_ms: self._open_session(ctx, ttl_ms),
                                 ttl_ms=settings.ttl_for_user_conn, log=ctx.log)
        try:
            try:
                session = sessions.for_step(settings.import_timeout)
            except OmeroUnreachable as exc:
                ctx.check_cancelled()
                raise OrderFailed(f"{exc} (gave up after {settings.omero_connect_retries} "
                                  "attempts); nothing was imported") from exc
            except OmeroError as exc:
                raise OrderFailed(f"{exc}; nothing was imported") from exc
            try:
                session.check_destination(order.destination_type, order.destination_id)
            except OmeroError as exc:
                raise OrderFailed(f"{exc}; nothing was imported") from exc
            ctx.check_cancelled()
            return work(sessions)
        finally:
            sessions.close()

    def _open_session(self, ctx: OrderContext, ttl_ms: int) -> UserSession:
        """A session as the order's user; retried while OMERO does not answer."""
        order = ctx.order
        return retry_unreachable(
            lambda: self.server.user_session(order.user, order.group, ttl_ms),
            attempts=ctx.settings.omero_connect_retries,
            cancelled=ctx.cancelled,
            log=ctx.log,
            first_delay=self.retry_delay,
        )

    def _register_then_import(
        self, ctx: OrderContext, sessions: SessionKeeper, uris: Sequence[str],
        paths: Sequence[Path],
    ) -> ImportResult:
        # needs the zarr library, which _split found
        from omero_adi.importing.zarr_register import register_zarr

        kind = annotated_kind(ctx)
        registered = tuple(register_zarr(ctx.order, uris, ctx.settings, sessions, ctx.log))
        done = f"Registered (not annotated): {describe_registered(registered)}."
        try:
            self._annotate(ctx, sessions,
                           [_Origin(r.path, {}, targets(r, kind)) for r in registered])
        except OmeroError as exc:
            raise OrderFailed(f"Annotating the registered Zarr objects failed: {exc}.\n{done}"
                              ) from exc
        if not paths:
            return ImportResult((), registered)
        try:
            imported = self._import(ctx, sessions, [ImportItem.of(path) for path in paths])
        except OrderInterrupted:
            raise
        except OrderFailed as exc:
            note = f"Registered (annotated): {describe_registered(registered)}."
            raise (exc.with_note(note) if isinstance(exc, ImportFailed)
                   else OrderFailed(f"{exc}\n{note}")) from exc
        return ImportResult(imported.filesets, registered, imported.notes)

    def _import(
        self, ctx: OrderContext, sessions: SessionKeeper, items: Sequence[ImportItem]
    ) -> ImportResult:
        imported, notes = run_with_retries(ctx, sessions, items)
        kind = annotated_kind(ctx)
        origins = [_Origin(str(e.item.origin), e.item.keyvalues, targets(e.fileset, kind))
                   for e in imported]
        try:
            self._annotate(ctx, sessions, origins)
        except OmeroError as exc:
            raise ImportFailed(
                f"Import failed: annotating the new {kind}s failed: {exc}.\n"
                f"Imported (not annotated): {'; '.join(e.describe() for e in imported)}.\n"
                "Annotate them by hand, or delete them in OMERO and retry the order.",
                imported) from exc
        return ImportResult(tuple(imported), notes=notes)

    def _annotate(
        self, ctx: OrderContext, sessions: SessionKeeper, origins: Sequence[_Origin]
    ) -> None:
        """One MapAnnotation per new object, all saved together (OmeroError if refused)."""
        order = ctx.order
        kind = annotated_kind(ctx)
        namespace = ctx.settings.annotation_namespace
        timestamp = datetime.now(timezone.utc)
        metadata: dict[str, dict[str, str]] = {}
        values: dict[int, dict[str, str]] = {}
        for origin in origins:
            if origin.filepath not in metadata:  # none beside an s3:// store
                metadata[origin.filepath] = ({} if "://" in origin.filepath
                                             else metadata_for(Path(origin.filepath), ctx.log,
                                                               ctx.settings.processed_data_folder))
            annotation = import_annotation(
                order, origin.filepath, extra=origin.keyvalues,
                metadata=metadata[origin.filepath], timestamp=timestamp,
            )
            values.update((object_id, annotation) for object_id in origin.object_ids)
        if values:
            sessions.run(lambda session: session.annotate(kind, namespace, values))
        ctx.log.info("annotated %d %s(s) in namespace %s", len(values), kind, namespace)


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


def build_handler(settings: Settings) -> DataPackageImporter:
    """The in-place import handler the daemon runs orders with.

    omero-py is needed only once an order runs; without it the order fails
    saying so.
    """
    return DataPackageImporter(BlitzServer(settings))
