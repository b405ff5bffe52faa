"""Progress of a long import: read from the importer's --errs log while it
runs, kept in adi_progress (never in imports), shown by status, submit
--wait and /metrics.

The importer is tests/errs_writer.py, which writes the Java importer's log
lines (format cited there) and moves on only when the test opens a gate.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from omero_adi import cli
from omero_adi.daemon import Daemon
from omero_adi.follow import follow
from omero_adi.importing.importer_cli import ImporterFiles, run_importer
from omero_adi.metrics import DaemonMetrics
from omero_adi.pipeline import OrderContext
from omero_adi.process import run_process
from omero_adi.progress import ErrsProgress, ImportProgress, ProgressThrottle
from omero_adi.store import admin
from omero_adi.store.session import open_store
from tests.helpers import insert_order, running_daemon, stages, wait_for
from tests.test_daemon import make_settings

WRITER = Path(__file__).with_name("errs_writer.py")

# Lines as the Java importer logs them (LoggingImportMonitor, ImportCandidates),
# two filesets importing in parallel (--parallel-fileset 2).
TRANSCRIPT = """\
2026-11-21 10:00:00,001 512        [      main] INFO      ome.formats.importer.ImportCandidates - Depth: 10 Metadata Level: MINIMUM
2026-11-21 10:00:00,101 612        [      main] INFO      ome.formats.importer.ImportCandidates - 4 file(s) parsed into 2 group(s) with 2 call(s) to setId in 80ms. (95ms total) [0 unknowns]
2026-11-21 10:00:00,201 712        [1-thread-1] INFO   ormats.importer.cli.LoggingImportMonitor - FILESET_UPLOAD_PREPARATION
2026-11-21 10:00:00,202 713        [1-thread-2] INFO   ormats.importer.cli.LoggingImportMonitor - FILESET_UPLOAD_START
2026-11-21 10:00:00,301 812        [1-thread-1] INFO   ormats.importer.cli.LoggingImportMonitor - FILE_UPLOAD_STARTED: /data/a.tif
2026-11-21 10:00:01,001 1512       [1-thread-2] INFO   ormats.importer.cli.LoggingImportMonitor - METADATA_IMPORTED Step: 1 of 5  Logfile: 901
2026-11-21 10:00:02,001 2512       [1-thread-2] INFO   ormats.importer.cli.LoggingImportMonitor - IMPORT_DONE Imported file: /data/b.tif
2026-11-21 10:00:03,001 3512       [1-thread-1] INFO   ormats.importer.cli.LoggingImportMonitor - PIXELDATA_PROCESSED Step: 2 of 5  Logfile: 902
"""


def test_the_importer_log_gives_step_and_filesets() -> None:
    progress = ErrsProgress(Path("/nonexistent"))
    seen = []
    for line in TRANSCRIPT.splitlines():
        progress.feed(line)
        seen.append(progress.progress)
    assert seen[0] is None  # "Depth: …" says nothing of progress yet
    assert seen[1] == ImportProgress("scanned", 0, 2)
    assert seen[3] == ImportProgress("FILESET_UPLOAD_START", 0, 2)
    assert seen[4] == seen[3]  # FILE_UPLOAD_STARTED is not a step of its own
    assert seen[5] == ImportProgress("METADATA_IMPORTED, step 1 of 5", 0, 2)
    assert seen[6] == ImportProgress("IMPORT_DONE", 1, 2)
    assert seen[7] == ImportProgress("PIXELDATA_PROCESSED, step 2 of 5", 1, 2)
    assert seen[7].describe() == "1 of 2 filesets imported (PIXELDATA_PROCESSED, step 2 of 5)"
    assert ImportProgress("IMPORT_DONE", 3).describe() == "3 filesets imported (IMPORT_DONE)"


def test_the_log_is_read_as_it_grows_whole_lines_only(tmp_path: Path) -> None:
    errs = tmp_path / "cli.x.errs"
    progress = ErrsProgress(errs)
    assert progress.read() is None  # not there yet
    lines = TRANSCRIPT.splitlines(keepends=True)
    errs.write_text(lines[1] + lines[6][:40])  # the importer is half-way through a line
    assert progress.read() == ImportProgress("scanned", 0, 2)
    with errs.open("a") as more:
        more.write(lines[6][40:])
    assert progress.read() == ImportProgress("IMPORT_DONE", 1, 2)


def test_progress_is_written_at_most_once_a_second() -> None:
    now = [100.0]
    written: list[ImportProgress] = []
    throttle = ProgressThrottle(written.append, clock=lambda: now[0])
    for done in range(50):  # a burst of small filesets within half a second
        throttle(ImportProgress("IMPORT_DONE", done, 50))
        now[0] += 0.01
    assert written == [ImportProgress("IMPORT_DONE", 0, 50)]
    now[0] += 0.6
    throttle(ImportProgress("IMPORT_DONE", 49, 50))
    throttle(ImportProgress("IMPORT_DONE", 49, 50))
    assert written[1:] == [ImportProgress("IMPORT_DONE", 49, 50)]
    now[0] += 5
    throttle(ImportProgress("IMPORT_DONE", 49, 50))  # unchanged: nothing to write
    assert len(written) == 2


def test_the_last_progress_held_back_is_written_when_the_run_ends() -> None:
    now = [100.0]
    written: list[ImportProgress] = []
    throttle = ProgressThrottle(written.append, clock=lambda: now[0])
    throttle(ImportProgress("IMPORT_DONE", 1, 2))
    now[0] += 0.1
    throttle(ImportProgress("IMPORT_DONE", 2, 2))  # held back: too soon
    assert written == [ImportProgress("IMPORT_DONE", 1, 2)]
    throttle.flush()
    assert written[-1] == ImportProgress("IMPORT_DONE", 2, 2)
    throttle.flush()  # nothing new
    assert len(written) == 2


def test_a_retried_run_counts_on_from_the_filesets_already_imported() -> None:
    assert ImportProgress("IMPORT_DONE", 1, 2).after(3) == ImportProgress("IMPORT_DONE", 4, 5)
    assert ImportProgress("scanning").after(3) == ImportProgress("scanning", 3, None)


@pytest.fixture
def importing(make_pg_database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        tuple[sa.Engine, Path, Daemon]]:
    """A daemon whose handler runs the errs writer as its importer (3 filesets)."""
    url = make_pg_database()
    monkeypatch.setenv("INGEST_TRACKING_DB_URL", url)
    monkeypatch.chdir(tmp_path)
    base, gate = tmp_path / "data", tmp_path / "gate"
    base.mkdir()
    gate.mkdir()
    (base / "plate").mkdir()
    settings = make_settings(url, base, log_file_path=str(tmp_path / "logs" / "app.logs"))
    engine = open_store(settings)

    def handler(ctx: OrderContext) -> str:
        files = ImporterFiles.for_order(ctx.log_dir, ctx.order.uuid)
        command = [sys.executable, str(WRITER), "--errs", str(files.errs), "--gate", str(gate),
                   "--filesets", "3"]
        run = run_importer(command, files, timeout=120, cancelled=ctx.cancelled,
                           on_progress=ctx.progress)
        return f"importer exit {run.finished.returncode}"

    with running_daemon(settings, engine, handler) as daemon:
        insert_order(engine, "plate-1", [str(base / "plate")])
        yield engine, gate, daemon
    engine.dispose()


def test_status_shows_a_running_orders_progress_kept_out_of_imports(importing, capsys) -> None:
    engine, gate, daemon = importing
    first = ImportProgress("IMPORT_DONE", 1, 3)
    wait_for(lambda: admin.progress_of(engine, "plate-1") == first, what="the first fileset")

    assert cli.main(["status"]) == 0
    [row] = capsys.readouterr().out.splitlines()[1:]
    assert row.startswith("plate-1  Import Started") and row.endswith(first.describe())
    assert cli.main(["status", "--uuid", "plate-1"]) == 0
    assert f"progress:    {first.describe()}" in capsys.readouterr().out.splitlines()
    assert cli.main(["status", "--json"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["progress"] == {"step": "IMPORT_DONE", "filesets_done": 1, "filesets_total": 3}
    # Clients read imports: it holds the stage events only, untouched by progress.
    assert stages(engine, "plate-1") == [("Import Pending", None), ("Import Started", None)]

    page = DaemonMetrics(daemon).render().decode()
    assert 'omero_adi_import_filesets{count="imported",uuid="plate-1"} 1.0' in page
    assert 'omero_adi_import_filesets{count="total",uuid="plate-1"} 3.0' in page

    (gate / "go-1").touch()
    (gate / "go-2").touch()
    wait_for(lambda: stages(engine, "plate-1")[-1][0] == "Import Completed", what="completion")
    assert admin.progress_of(engine, "plate-1") is None  # the run is over
    with engine.connect() as connection:  # and its row is gone with its claim
        assert connection.execute(sa.text("SELECT count(*) FROM adi_progress")).scalar() == 0
    assert 'omero_adi_import_filesets{' not in DaemonMetrics(daemon).render().decode()
    assert cli.main(["status"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("importer exit 0")


def test_submit_wait_shows_a_live_progress_line(importing) -> None:
    engine, gate, daemon = importing
    shown = io.StringIO()

    def operator() -> None:
        """Lets the import go on once the follower has shown each fileset's progress."""
        for number in (1, 2):
            wait_for(lambda: f"{number} of 3 filesets imported" in shown.getvalue(),
                     timeout=60, what=f"fileset {number} shown")
            (gate / f"go-{number}").touch()

    thread = threading.Thread(target=operator)
    thread.start()
    with contextlib.redirect_stdout(shown):
        code = follow(engine, "plate-1", timeout=120)
    thread.join()
    assert code == 0
    lines = shown.getvalue().splitlines()

    def first(text: str) -> int:
        return next(n for n, line in enumerate(lines) if text in line)

    assert (first("Import Started") < first("1 of 3 filesets imported (IMPORT_DONE)")
            < first("2 of 3 filesets imported (IMPORT_DONE)") < first("Import Completed"))


def test_a_failing_progress_reader_does_not_leave_the_importer_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    long_import = [sys.executable, "-c", "import os, sys, time; "
                   "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)",
                   str(pid_file)]

    def tick() -> None:
        if pid_file.exists() and pid_file.read_text():
            raise PermissionError("the errs file cannot be read")

    with pytest.raises(PermissionError):
        run_process(long_import, timeout=120, cancelled=threading.Event(), on_tick=tick)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # killed and reaped
