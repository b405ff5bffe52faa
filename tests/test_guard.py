"""The in-place guard: it records what an import read, then finds a deleted,
a moved and a changed file, tells people once, shows them in ``status``,
``verify`` and ``/metrics``, and spreads its work over its interval."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
import sqlalchemy as sa

from omero_adi.cli import main as cli_main
from omero_adi.notify import guard as guard_module
from omero_adi.notify.guard import Guard, state_counts
from omero_adi.notify.outbox import Outbox
from omero_adi.notify.service import Notifications
from omero_adi.store.models import STAGE_IMPORTED
from tests.helpers import NoWaitStop, running_daemon, wait_for
from tests.importer_standin.fixture import ImporterSite, importer_site  # noqa: F401
from tests.notify_fixtures import WebhookReceiver, webhook  # noqa: F401
from tests.notify_site import Site


@pytest.fixture
def site(db_url: str, importer_site: ImporterSite, tmp_path: Path,  # noqa: F811
         webhook: WebhookReceiver) -> Iterator[Site]:  # noqa: F811
    site = Site(db_url, tmp_path, {
        "webhooks": [{"url": webhook.url, "format": "signed", "secret_env": "HOOK_SECRET"}],
        "retry_delay": 0.2,
    }, importer_site)
    yield site
    site.close()


def imported(site: Site, count: int = 3) -> tuple[str, list[Path]]:
    """An order of ``count`` images, imported in place into the OMERO double
    (the real ``omero import`` wrapper and the importer stand-in)."""
    with site.daemon():
        uuid, files = site.order(count=count, failing=False)
        assert site.wait(uuid) == STAGE_IMPORTED, site.description(uuid)
    return uuid, [Path(f) for f in files]


def backing(site: Site) -> dict[Path, tuple[int, list[int]]]:
    """Each imported file -> (its Fileset, the Images of that fileset) in the double."""
    assert site.omero is not None
    return {Path(entry["original"]): (fileset_id, site.omero.images_of(fileset_id))
            for fileset_id, fileset in site.omero.filesets().items()
            for entry in fileset["entries"]}


def guard_rows(site: Site) -> Sequence[Any]:
    with site.engine.connect() as connection:
        return connection.execute(sa.text("SELECT * FROM adi_guard_files ORDER BY id")).fetchall()


def break_files(files: list[Path]) -> tuple[Path, Path, Path]:
    """Delete the first, rename the second, append to the third."""
    deleted, moved, changed = files[:3]
    deleted.unlink()
    moved.rename(moved.with_name("renamed by someone.tif"))
    with changed.open("ab") as stream:
        stream.write(b" and more")
    return deleted, moved, changed


def test_import_records_size_and_mtime_of_each_file(site: Site) -> None:
    uuid, files = imported(site)
    rows = guard_rows(site)
    assert [Path(r.path) for r in rows] == files
    backs = backing(site)
    assert len({fileset for fileset, _ in backs.values()}) == len(files)  # one per file
    for row, path in zip(rows, files):
        found = path.stat()
        assert (row.uuid, row.size, row.mtime_ns, row.inode) == (
            uuid, found.st_size, found.st_mtime_ns, found.st_ino)
        fileset, images = backs[path]
        assert images and (row.fileset_id, json.loads(row.image_ids), row.state) == (
            fileset, images, "ok")


def test_an_orders_files_are_recorded_in_one_statement(site: Site, tmp_path: Path) -> None:
    from omero_adi.importing.results import ImportedFileset, ImportItem
    from omero_adi.omero.boundary import FilesetInfo
    from omero_adi.orders import Order

    files = [tmp_path / f"{n}.tif" for n in range(50)]
    for path in files:
        path.write_bytes(b"pixels")
    imported = [ImportedFileset(ImportItem.of(path), FilesetInfo(100 + n, "p/", (path,), (n,), ()))
                for n, path in enumerate(files)]
    order = Order(event_id=1, uuid="one-statement", group="lab", user="alice",
                  destination_id=1, destination_type="Dataset", files=tuple(files),
                  file_names=tuple(p.name for p in files))
    inserts: list[bool] = []  # executemany: psycopg2 then sends one statement per row
    sa.event.listen(site.engine, "before_cursor_execute", lambda conn, cursor, statement,
                    params, context, many: inserts.append(many) if "INSERT" in statement else None)
    Guard(site.settings, site.engine, None).record(order, imported)
    assert inserts == [False]
    assert len(guard_rows(site)) == 50


def test_verify_finds_a_deleted_a_moved_and_a_changed_file_and_tells_once(
    site: Site, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path, webhook: WebhookReceiver,  # noqa: F811
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "x")
    uuid, files = imported(site, count=4)
    images = {path: images for path, (_, images) in backing(site).items()}
    backs = {path: ", ".join(f"Image {i}" for i in images[path]) for path in files}
    size = files[2].stat().st_size
    deleted, moved, changed = break_files(files)
    before = {p: p.stat() for p in site.data.rglob("*") if p.is_file()}
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"ingest_tracking_db": site.settings.ingest_tracking_db,
                                  "base_dir": str(site.data), "notify": {"webhooks": [
                                      {"url": webhook.url, "format": "signed",
                                       "secret_env": "HOOK_SECRET"}]}}))
    assert cli_main(["--config", str(config), "verify", "--uuid", uuid]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"MISSING    {deleted} (order {uuid}; backs {backs[deleted]}): "
        "deleted, or moved out of its folder",
        f"MOVED      {moved} (order {uuid}; backs {backs[moved]}): renamed or moved to "
        f"{moved.with_name('renamed by someone.tif')}",
        f"CHANGED    {changed} (order {uuid}; backs {backs[changed]}): changed since its "
        f"import: size {size} → {size + 9} bytes, " + out[2].split("bytes, ", 1)[1],
    ]
    assert [r.state for r in guard_rows(site)] == ["missing", "moved", "changed", "ok"]
    # It only read: every file is as the user left it.
    assert {p: p.stat() for p in site.data.rglob("*") if p.is_file()} == before
    # One message for the order, however often it is checked.
    assert cli_main(["--config", str(config), "verify", "--since", "2000-01-01"]) == 1
    with site.engine.connect() as connection:
        [message] = connection.execute(sa.text("SELECT * FROM adi_notify_outbox")).all()
        counts = state_counts(connection)
    assert (message.kind, message.uuid) == ("guard", uuid)
    payload = json.loads(message.payload)
    assert (payload["user"], payload["group"]) == ("alice", "lab")
    assert [(f["path"], f["state"], f["images"]) for f in payload["findings"]] == [
        (str(deleted), "missing", images[deleted]), (str(moved), "moved", images[moved]),
        (str(changed), "changed", images[changed])]
    assert counts == {"ok": 1, "missing": 1, "moved": 1, "changed": 1, "unreadable": 0}
    capsys.readouterr()
    assert cli_main(["--config", str(config), "status"]) == 0
    status = capsys.readouterr().out
    assert "In-place files missing, moved or changed since import (3 shown" in status
    assert f"MOVED      {moved} (order {uuid}" in status
    assert cli_main(["--config", str(config), "status", "--uuid", uuid]) == 0
    assert f"MOVED      {moved} (order {uuid}" in capsys.readouterr().out  # one order's too


def test_two_checks_of_a_file_at_once_tell_of_its_change_once(site: Site) -> None:
    """A pass that lost its lease and the one that took it over (or `verify`) may
    check a file at once: only the first records the change and queues a message."""
    _, files = imported(site, count=1)
    files[0].unlink()
    results = [(row, "missing", "deleted") for row in guard_rows(site)]  # both saw "ok"
    guard = Guard(site.settings, site.engine, Outbox(site.settings.notify))
    guard._store(results)
    guard._store(results)
    with site.engine.connect() as connection:
        assert connection.execute(sa.text(
            "SELECT count(*) FROM adi_notify_outbox WHERE kind = 'guard'")).scalar() == 1
    assert [r.state for r in guard_rows(site)] == ["missing"]


def test_a_restored_file_is_ok_again(site: Site) -> None:
    _, files = imported(site, count=1)
    hidden = files[0].rename(files[0].with_name("away.tif"))
    guard = Guard(site.settings, site.engine, None)
    assert [p.finding.state for p in guard.check()] == ["moved"]
    hidden.rename(files[0])
    assert guard.check() == [] and guard_rows(site)[0].state == "ok"


def test_the_daemon_guard_tells_the_facility_within_its_interval(
    site: Site, monkeypatch: pytest.MonkeyPatch, webhook: WebhookReceiver,  # noqa: F811
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "x")
    _, files = imported(site)
    files[1].unlink()
    settings = replace(site.settings, guard_interval=1.0)
    notifications = Notifications(settings, server=site.server)
    assert site.importer is not None
    with running_daemon(settings, site.engine, site.importer, notifications=notifications):
        wait_for(lambda: webhook.requests, timeout=15, what="the guard's message")
    notice = webhook.requests[0].json()
    assert notice["kind"] == "guard" and notice["findings"][0]["path"] == str(files[1])
    assert notice["findings"][0]["state"] == "missing"


def test_a_pass_spreads_one_stat_per_file_over_the_interval(
    site: Site, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, files = imported(site, count=5)
    monkeypatch.setattr(guard_module, "BATCH", 2)
    stats: list[str] = []
    real_stat = os.stat

    def counted_stat(path: Any, *args: Any, **options: Any) -> os.stat_result:
        stats.append(str(path))
        return real_stat(path, *args, **options)

    monkeypatch.setattr(guard_module.os, "stat", counted_stat)
    clock = NoWaitStop()
    Guard(site.settings, site.engine, None)._paced_pass(clock, interval=100.0)
    assert clock.waits == [40.0, 40.0, 20.0]  # 2, 2 and 1 of 5 files per 100 s
    # Is the share mounted? Then one stat per file, nothing else.
    assert stats == [str(site.data)] + [str(f) for f in files]


def test_no_check_while_the_share_is_not_mounted(site: Site) -> None:
    imported(site, count=1)
    gone = replace(site.settings, base_dir=str(site.data / "unmounted"))
    clock = NoWaitStop()
    Guard(gone, site.engine, None)._paced_pass(clock, interval=10.0)
    assert clock.waits == [] and guard_rows(site)[0].checked_at is None


def test_status_works_before_the_guards_migration(
    make_pg_database: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"ingest_tracking_db": make_pg_database()}))
    assert cli_main(["--config", str(config), "migrate"]) == 0
    assert cli_main(["--config", str(config), "migrate", "--downgrade", "c9e6a2f4b325"]) == 0
    capsys.readouterr()
    assert cli_main(["--config", str(config), "status"]) == 0
    assert capsys.readouterr().out.startswith("UUID")
