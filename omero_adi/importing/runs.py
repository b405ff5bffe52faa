"""Importer runs for one order's paths: run, look up, match, and try again what
a transient failure left out, without importing anything twice.

A run that ends for a transient reason (:mod:`.importer_says`) is followed by
another for the paths still missing only, up to
:data:`~omero_adi.importing.importer_says.IMPORT_ATTEMPTS` runs in all; the
filesets an earlier run created are kept and counted. Each run and each
lookup gets a session that outlives it (:class:`SessionKeeper`).
"""

from __future__ import annotations

from typing import Sequence

from omero_adi.importing.importer_cli import (
    ImporterFiles,
    ImporterNotStarted,
    ImporterOutputError,
    ImporterRun,
    build_command,
    run_importer,
)
from omero_adi.importing.importer_says import (
    IMPORT_ATTEMPTS,
    Verdict,
    failed_transfers,
    verdict,
)
from omero_adi.importing.matching import match, missing
from omero_adi.importing.results import ImportedFileset, ImportFailed, ImportItem, RegisteredZarr
from omero_adi.omero.boundary import AnnotatedType, FilesetInfo, OmeroError, UserSession
from omero_adi.omero.sessions import SessionKeeper
from omero_adi.pipeline import OrderContext

#: What to do after a failure that left filesets in OMERO.
WHAT_TO_DO = ("To finish: delete the filesets named here in OMERO and retry the order "
              "(`omero-adi retry {uuid}`), or keep them and order the rest anew.")


def annotated_kind(ctx: OrderContext) -> AnnotatedType:
    """What gets the annotation: Images in a Dataset, Plates in a Screen."""
    return "Image" if ctx.order.destination_type == "Dataset" else "Plate"


def targets(found: FilesetInfo | RegisteredZarr, kind: AnnotatedType) -> tuple[int, ...]:
    return found.image_ids if kind == "Image" else found.plate_ids


def run_with_retries(
    ctx: OrderContext, sessions: SessionKeeper, items: Sequence[ImportItem]
) -> tuple[list[ImportedFileset], tuple[str, ...]]:
    """Import ``items``: (their filesets, notes on runs tried again); ImportFailed
    with what was imported when less than everything was."""
    files = ImporterFiles.for_order(ctx.log_dir, ctx.order.uuid)
    imported: list[ImportedFileset] = []
    notes: list[str] = []
    runs: list[ImporterRun] = []  # a later run overwrites --errs: keep what each said
    remaining = list(items)
    for attempt in range(1, IMPORT_ATTEMPTS + 1):
        run, session = _run(ctx, sessions, remaining, files, imported)
        runs.append(run)
        made = _created(ctx, sessions, session, run, imported)
        found, strays = _lookup(ctx, sessions, remaining, made, imported)
        imported += found
        remaining = missing(remaining, found)
        said = verdict(run, [item.path for item in remaining])
        if not (remaining and not strays and attempt < IMPORT_ATTEMPTS and _retry(run, said)):
            break
        assert said is not None  # _retry checked it
        note = (f"Importer run {attempt} ended early ({said.problem}) after importing "
                f"{len(found)} fileset(s); run {attempt + 1} imported only the "
                f"{len(remaining)} path(s) still missing: "
                + ", ".join(str(item.origin) for item in remaining) + ".")
        ctx.log.warning("%s", note)
        notes.append(note)
        ctx.check_cancelled()
        sessions.renew()  # the failure may have been the session's end
    problem = _problem(ctx, items, imported, strays, runs, said)
    if problem:
        done, empty = _partition(ctx, imported)
        raise ImportFailed(_failure(ctx, problem, items, imported, runs, files, notes),
                           done, empty=empty)
    return imported, tuple(notes)


def _partition(
    ctx: OrderContext, imported: Sequence[ImportedFileset]
) -> tuple[list[ImportedFileset], list[ImportedFileset]]:
    """(the filesets holding what gets annotated, those holding none of it)."""
    kind = annotated_kind(ctx)
    done = [e for e in imported if targets(e.fileset, kind)]
    return done, [e for e in imported if not targets(e.fileset, kind)]


def _retry(run: ImporterRun, said: Verdict | None) -> bool:
    finished = run.finished
    return (said is not None and said.transient and not finished.timed_out
            and not finished.cancelled and finished.returncode >= 0)


def _run(
    ctx: OrderContext,
    sessions: SessionKeeper,
    items: Sequence[ImportItem],
    files: ImporterFiles,
    imported: Sequence[ImportedFileset],
) -> tuple[ImporterRun, UserSession]:
    """One importer run in a session that outlives ``import_timeout``, and that session."""
    settings = ctx.settings
    session = _session(ctx, sessions, settings.import_timeout, imported)
    command = build_command(
        settings,
        session_key=session.key,
        destination_type=ctx.order.destination_type,
        destination_id=ctx.order.destination_id,
        paths=[item.path for item in items],
        files=files,
    )
    ctx.log.info("importing %d path(s): %s", len(items), " ".join(_masked(command)))
    try:
        run = run_importer(command, files, timeout=settings.import_timeout,
                           cancelled=ctx.cancelled,
                           on_progress=lambda progress: ctx.progress(progress.after(len(imported))))
    except ImporterNotStarted as exc:
        if not imported:
            raise ImportFailed(f"Import failed: {exc}.", ()) from exc
        raise ImportFailed(_after_start(ctx, str(exc), imported), imported) from exc
    except ImporterOutputError as exc:
        raise ImportFailed(_after_start(ctx, f"{exc} (see {files.out})", imported),
                           imported, unaccounted=True) from exc
    finally:
        ctx.progress.flush()
    finished = run.finished
    ctx.emit("importer_exit", "timeout" if finished.timed_out else str(finished.returncode))
    ctx.check_cancelled()
    ctx.log.info("importer finished: exit %s in %.1fs, %d fileset(s) reported",
                 finished.returncode, finished.seconds, len(run.fileset_ids))
    return run, session


def _created(ctx: OrderContext, sessions: SessionKeeper, session: UserSession,
             run: ImporterRun, imported: Sequence[ImportedFileset]) -> tuple[int, ...]:
    """The filesets this run created: those it reported, and after a failure also
    those the server holds from its session (an importer that stops, or loses its
    connection, may not report a fileset the server has already made)."""
    finished = run.finished
    if finished.returncode == 0 and not finished.timed_out:
        return run.fileset_ids
    try:
        made = sessions.run(lambda live: live.created_filesets(session.key))
    except OmeroError as exc:
        raise ImportFailed(_after_start(
            ctx, f"the importer failed, and asking OMERO which filesets it had created "
            f"failed: {exc}", imported), imported, unaccounted=True) from exc
    known = {entry.fileset.id for entry in imported}
    unreported = [i for i in made if i not in known and i not in run.fileset_ids]
    if unreported:
        ctx.log.warning("the importer did not report Fileset %s, which it created",
                        ", ".join(map(str, unreported)))
    return (*run.fileset_ids, *unreported)


def _session(ctx: OrderContext, sessions: SessionKeeper, seconds: float,
             imported: Sequence[ImportedFileset]) -> UserSession:
    try:
        return sessions.for_step(seconds)
    except OmeroError as exc:
        raise ImportFailed(_after_start(ctx, f"opening a new OMERO session failed: {exc}",
                                        imported), imported) from exc


def _lookup(
    ctx: OrderContext,
    sessions: SessionKeeper,
    items: Sequence[ImportItem],
    fileset_ids: Sequence[int],
    imported: Sequence[ImportedFileset],
) -> tuple[list[ImportedFileset], list[FilesetInfo]]:
    """The filesets as the server records them, matched to ``items``."""
    try:
        filesets = sessions.run(lambda session: session.filesets(fileset_ids)) \
            if fileset_ids else []
    except OmeroError as exc:
        raise ImportFailed(_after_start(
            ctx, f"the importer reported {_filesets(fileset_ids)}, but looking them up "
            f"failed: {exc}", imported), list(imported), unaccounted=True) from exc
    gone = [fid for fid in fileset_ids if fid not in {f.id for f in filesets}]
    if gone:
        done = list(imported) + match(items, filesets)[0]
        raise ImportFailed(_after_start(
            ctx, f"the importer reported {_filesets(gone)}, which OMERO does not hold (or "
            f"user {ctx.order.user!r} cannot see)", done), done, unaccounted=True)
    return match(items, filesets)


def _filesets(ids: Sequence[int]) -> str:
    return "Fileset " + ", ".join(map(str, ids))


def _after_start(ctx: OrderContext, problem: str, imported: Sequence[ImportedFileset]) -> str:
    """A failure description once the importer has started."""
    parts = [f"Import failed: {problem}."]
    if imported:
        parts.append("Imported (not annotated): "
                     + "; ".join(e.describe() for e in imported) + ".")
    parts.append("The importer may have created more filesets than listed here; "
                 + WHAT_TO_DO.format(uuid=ctx.order.uuid))
    return "\n".join(parts)


def _problem(
    ctx: OrderContext,
    items: Sequence[ImportItem],
    imported: Sequence[ImportedFileset],
    strays: Sequence[FilesetInfo],
    runs: Sequence[ImporterRun],
    said: Verdict | None,
) -> str | None:
    """Why these runs do not count as a complete import, or None when they do."""
    finished, order = runs[-1].finished, ctx.order
    if finished.timed_out:
        return (f"the importer ran longer than import_timeout "
                f"({ctx.settings.import_timeout:g} s) and was killed")
    if finished.returncode < 0:
        return f"the importer crashed (killed by signal {-finished.returncode})"
    if strays:
        return ("the importer reported fileset(s) from files the order does not name: "
                + "; ".join(f"Fileset {f.id} ({', '.join(map(str, f.used_files))})"
                            for f in strays))
    kind = annotated_kind(ctx)
    empty = "; ".join(entry.describe() for entry in _partition(ctx, imported)[1])
    everything_said = "\n".join(run.said for run in runs)
    unread = failed_transfers(everything_said) if empty else []
    if unread:  # the most specific: the file and its fileset are named
        return (f"the importer could not read {', '.join(unread)} as it linked it into OMERO "
                "(it was moved, deleted or made unreadable after the importer had found it: "
                f"put it back, or leave it out of the order), which left {empty}")
    if empty and ("INTERNAL_EXCEPTION" in everything_said or finished.returncode == 0):
        return (f"these filesets hold no {kind} (the server's import of them failed, or they "
                f"cannot go into {order.destination_type} {order.destination_id}): {empty}")
    if missing(items, imported) or finished.returncode != 0:
        if said is not None:
            return said.problem
        if finished.returncode != 0:
            return f"the importer exited with status {finished.returncode}"
        if not imported:
            return "the importer created no fileset"
        return "the importer created no fileset for some of the order's paths"
    return None


def _failure(
    ctx: OrderContext,
    problem: str,
    items: Sequence[ImportItem],
    imported: Sequence[ImportedFileset],
    runs: Sequence[ImporterRun],
    files: ImporterFiles,
    notes: Sequence[str],
) -> str:
    """The ``Import Failed`` description: why, what was imported, what was not,
    what to do."""
    kind = annotated_kind(ctx)
    done, empty = _partition(ctx, imported)
    parts = [f"Import failed: {problem}.", *notes]
    if done:
        parts.append("Imported (not annotated): " + "; ".join(e.describe() for e in done) + ".")
    left = missing(items, done)
    if left:
        parts.append("Not imported: " + ", ".join(str(item.origin) for item in left) + ".")
    if empty:
        parts.append(f"Filesets without any {kind}: "
                     + "; ".join(f"Fileset {e.fileset.id} ({e.item.origin})" for e in empty) + ".")
    if imported:
        parts.append(WHAT_TO_DO.format(uuid=ctx.order.uuid))
    for number, run in enumerate(runs, 1):
        if run.errors_tail and (run.finished.returncode != 0 or number == len(runs)):
            which = f" in run {number}" if len(runs) > 1 else ""
            parts.append(f"Importer errors{which} (end of {files.errs} and of the `omero` "
                         f"command's output):\n{run.errors_tail}")
    return "\n".join(parts)


def _masked(command: Sequence[str]) -> list[str]:
    """The command line with the session key hidden, for the log."""
    return ["***" if i and command[i - 1] == "-k" else arg for i, arg in enumerate(command)]
