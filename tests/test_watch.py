"""Watch folders on the local disk with a real PostgreSQL: complete units become
one ordinary Pending order each, once, whatever restarts and races happen.

Time is driven by a clock the test moves and by explicit scan passes, never
by sleeping.

Every test that makes the watcher ask OMERO something (whether a user and a
group named by the path exist, a Dataset found or created by name, OMERO not
answering) runs the real :class:`BlitzServer`, omero-py and ezomero against
the Ice double (fixtures ``omero_double`` and ``blitz``). The others (settling,
scanning, ignoring, the ledger, restarts and races, preprocessing on orders)
use no OMERO at all: their rules name a fixed group, user and destination, so
the watcher never asks (it is given no server), and no stand-in is needed.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from omero_adi.settings import build_settings
from omero_adi.store.session import open_store
from omero_adi.watch import events
from omero_adi.watch.events import WatchEvent
from omero_adi.watch.runner import WatchRunner
from tests.helpers import wait_for
from tests.omero_double.fixture import OmeroDouble
from tests.watch_helpers import (
    Clock,
    CountingBlitz,
    blitz,  # noqa: F401  (fixture)
    group_named,
    ledger_rows,
    orders_for,
    runner,
    scan_all,
    user_named,
    watch_settings,
    write,
)


@pytest.fixture(scope="module")
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = open_store(build_settings({"ingest_tracking_db": pg_url}, {}))
    yield engine
    engine.dispose()


@pytest.fixture
def seen() -> Iterator[list[WatchEvent]]:
    """Every watch event published during the test."""
    caught: list[WatchEvent] = []
    events.subscribe(caught.append)
    yield caught
    events.unsubscribe(caught.append)


def rule(folder: Path, **values: object) -> dict[str, object]:
    return {"name": folder.name, "folder": str(folder), "group": "lab", "user": "alice",
            "dataset_id": 7, "settle_seconds": 5, **values}


def test_a_file_written_in_slow_chunks_is_ordered_once_after_it_stops_growing(
        pg_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    clock = Clock()
    watcher = runner(watch_settings(pg_url, tmp_path, rule(tmp_path / "slow")), engine, clock)
    image = write(tmp_path / "slow" / "plate.tif", b"a" * 1000)
    for _ in range(4):  # a chunk every 3 s: never 5 s unchanged
        scan_all(watcher)
        assert orders_for(engine, image) == []
        clock.advance(3)
        with image.open("ab") as growing:
            growing.write(b"b" * 1000)
    scan_all(watcher)
    clock.advance(4.9)
    scan_all(watcher)
    assert orders_for(engine, image) == [], "ordered before settle_seconds had passed"
    clock.advance(0.2)
    scan_all(watcher)
    clock.advance(60)
    scan_all(watcher)
    [order] = orders_for(engine, image)
    assert (order.stage, order.group_name, order.user_name, order.destination_type,
            order.destination_id) == ("Import Pending", "lab", "alice", "Dataset", "7")
    assert order.description == "ordered by watch rule 'slow'"
    [row] = ledger_rows(engine, "slow")
    assert (row.path, row.state, row.uuid) == (str(image), "ordered", order.uuid)


def test_the_runner_wakes_when_a_waiting_unit_is_due_not_a_whole_interval_later(
        pg_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    clock = Clock()
    watcher = runner(watch_settings(pg_url, tmp_path, rule(tmp_path / "due",
                                                            scan_interval=30)), engine, clock)
    image = write(tmp_path / "due" / "a.tif")
    assert watcher.step() == pytest.approx(5)  # first scan saw it: due when it settles
    clock.advance(5)
    watcher.step()
    assert len(orders_for(engine, image)) == 1


def test_a_ready_marker_completes_a_unit_however_recent(
        pg_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    clock = Clock()
    watcher = runner(watch_settings(pg_url, tmp_path, rule(
        tmp_path / "marked", settle_seconds=3600, ready_marker=".done")), engine, clock)
    image = write(tmp_path / "marked" / "scan.czi")
    scan_all(watcher)
    clock.advance(7200)
    scan_all(watcher)
    assert orders_for(engine, image) == [], "ordered without its marker"
    marker = write(tmp_path / "marked" / "scan.czi.done", b"")
    scan_all(watcher)
    assert len(orders_for(engine, image)) == 1
    assert orders_for(engine, marker) == [], "the marker itself became an order"


def test_an_acquisition_folder_is_one_order_once_nothing_in_it_changes(
        pg_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    clock = Clock()
    watcher = runner(watch_settings(pg_url, tmp_path, rule(tmp_path / "acq", unit="folder")),
                     engine, clock)
    run = tmp_path / "acq" / "run-01"
    for name in ("a/1.tif", "a/2.tif", "b/1.tif"):
        write(run / name)
    write(tmp_path / "acq" / "loose.tif")  # not in an acquisition folder: no unit
    scan_all(watcher)
    clock.advance(4)
    write(run / "c" / "1.tif")  # a new entry deep inside restarts the wait
    scan_all(watcher)
    clock.advance(4)
    scan_all(watcher)
    assert orders_for(engine, run) == []
    clock.advance(1.5)
    scan_all(watcher)
    [order] = orders_for(engine, run)
    assert json.loads(order.files) == [str(run)]
    [row] = ledger_rows(engine, "acq")
    assert row.path == str(run)


def test_an_acquisition_folder_with_a_file_still_being_copied_waits_for_it(
        pg_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    clock = Clock()
    watcher = runner(watch_settings(pg_url, tmp_path, rule(tmp_path / "acq", unit="folder")),
                     engine, clock)
    run = tmp_path / "acq" / "run-01"
    write(run / "1.tif")
    write(run / "2.tif.part")  # a copy under way: its name ends in .part until it is done
    for _ in range(3):  # long past settle_seconds, unchanged: still not complete
        scan_all(watcher)
        clock.advance(10)
    assert orders_for(engine, run) == []
    (run / "2.tif.part").rename(run / "2.tif")
    scan_all(watcher)
    clock.advance(10)
    scan_all(watcher)
    [order] = orders_for(engine, run)
    assert json.loads(order.files) == [str(run)]


def test_a_restarted_watcher_does_not_order_again(
        pg_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    clock = Clock()
    settings = watch_settings(pg_url, tmp_path, rule(tmp_path / "restart", settle_seconds=0))
    images = [write(tmp_path / "restart" / f"{n}.tif") for n in range(5)]
    scan_all(runner(settings, engine, clock))
    for _ in range(2):  # two restarts, each with no memory but the database
        again = runner(settings, engine, clock)
        scan_all(again)
        clock.advance(10)
        scan_all(again)
        assert sum(state.ordered for state in again.rules.values()) == 0
    assert [len(orders_for(engine, image)) for image in images] == [1] * 5


def test_two_watchers_racing_on_separate_connections_order_each_unit_once(
        pg_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    settings = watch_settings(pg_url, tmp_path, rule(tmp_path / "race", settle_seconds=0))
    images = [write(tmp_path / "race" / f"d{n % 10}" / f"{n}.tif") for n in range(200)]
    engines = [open_store(settings, run_migrations=False) for _ in range(2)]
    watchers = [runner(settings, own, Clock()) for own in engines]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def race(watcher: object) -> None:
        try:
            start.wait()
            scan_all(watcher)  # type: ignore[arg-type]
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(w,)) for w in watchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for own in engines:
        own.dispose()
    assert errors == []
    assert [len(orders_for(engine, image)) for image in images] == [1] * 200
    assert len(ledger_rows(engine, "race")) == 200
    assert sum(s.ordered for w in watchers for s in w.rules.values()) == 200
    with engine.connect() as connection:
        queued = connection.execute(sa.text(
            "SELECT count(*) FROM adi_queue q JOIN adi_watch_units u ON u.uuid = q.uuid "
            "WHERE u.rule = 'race'")).scalar_one()
    assert queued == 200, "each order reached the daemon's queue once"


def test_owner_from_path_segments_and_unknown_users_are_refused_once(
        pg_url: str, engine: sa.Engine, tmp_path: Path, omero_double: OmeroDouble,
        blitz: CountingBlitz, seen: list[WatchEvent]) -> None:
    clock = Clock()
    folder = tmp_path / "users"
    users = {"name": "users", "folder": str(folder), "pattern": "{group}/{user}",
             "dataset_id": 152, "settle_seconds": 0}
    watcher = runner(watch_settings(pg_url, tmp_path, users), engine, clock, blitz)
    good = write(folder / "Lab2" / "alice" / "day1" / "a.tif")
    stranger = write(folder / "Lab2" / "mallory" / "b.tif")
    nogroup = write(folder / "nolab" / "alice" / "c.tif")
    outsider = write(folder / "Demo" / "alice" / "d.tif")  # both exist; not a member
    scan_all(watcher)
    [order] = orders_for(engine, good)
    assert (order.group_name, order.user_name) == ("Lab2", "alice")
    assert orders_for(engine, stranger) == orders_for(engine, nogroup) == []
    assert orders_for(engine, outsider) == []
    refused = {row.path: row.description for row in ledger_rows(engine, "users")
               if row.state == "refused"}
    assert refused == {str(stranger): "user 'mallory' does not exist in OMERO",
                       str(nogroup): "group 'nolab' does not exist in OMERO",
                       str(outsider): "user 'alice' is not a member of group 'Demo'"}
    assert sorted(e.path for e in seen if e.kind == "refused") == sorted(refused)
    logins, served = blitz.sessions_asked, omero_double.requests()
    clock.advance(100)
    scan_all(runner(watch_settings(pg_url, tmp_path, users), engine, clock, blitz))  # a restart
    scan_all(watcher)
    assert (blitz.sessions_asked, omero_double.requests()) == (logins, served), \
        "a refused unit was tried again"


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_while_omero_does_not_answer_units_wait_and_omero_is_asked_once_per_pass(
        pg_url: str, engine: sa.Engine, tmp_path: Path, omero_double: OmeroDouble,
        blitz: CountingBlitz) -> None:
    folder = tmp_path / "away"
    watcher = runner(watch_settings(pg_url, tmp_path, {
        "name": "away", "folder": str(folder), "pattern": "{user}", "group": "Lab2",
        "dataset_name": "inbox", "settle_seconds": 0}), engine, Clock(), blitz)
    images = [write(folder / "alice" / f"{n}.tif") for n in range(3)]
    blitz.describe()  # the admin is logged in; then the server stops answering
    omero_double.refuse(5)
    scan_all(watcher)
    assert blitz.sessions_asked == 1
    assert [orders_for(engine, p) for p in images] == [[], [], []]
    assert ledger_rows(engine, "away") == [], "an unanswered unit is not refused"
    wait_for(lambda: _listening(omero_double.port), timeout=30, what="the double answering")
    scan_all(watcher)
    assert [len(orders_for(engine, p)) for p in images] == [1, 1, 1]
    [inbox] = [d for d in omero_double.state()["datasets"].values() if d["name"] == "inbox"]
    assert {orders_for(engine, p)[0].destination_id for p in images} == {str(inbox["id"])}


def test_a_dataset_named_from_a_segment_is_found_or_created_before_the_order(
        pg_url: str, engine: sa.Engine, tmp_path: Path, omero_double: OmeroDouble,
        blitz: CountingBlitz) -> None:
    omero_double.world({"datasets": [{"name": "week-1", "group": "Lab2", "owner": "alice"}]})
    [existing] = [d["id"] for d in omero_double.state()["datasets"].values()
                  if d["name"] == "week-1"]
    folder = tmp_path / "named"
    watcher = runner(watch_settings(pg_url, tmp_path, {
        "name": "named", "folder": str(folder), "pattern": "{user}/{dataset}", "group": "Lab2",
        "dataset_name": "{dataset}", "settle_seconds": 0}), engine, Clock(), blitz)
    old = [write(folder / "alice" / "week-1" / f"{n}.tif") for n in range(2)]
    new = [write(folder / "alice" / "week-2" / f"{n}.tif") for n in range(3)]
    scan_all(watcher)
    created = [d for d in omero_double.state()["datasets"].values() if d["name"] == "week-2"]
    assert len(created) == 1, "one Dataset per name"
    assert (created[0]["owner"], created[0]["group"]) == (
        user_named(omero_double, "alice")["id"], group_named(omero_double, "Lab2")["id"])
    assert {orders_for(engine, p)[0].destination_id for p in old} == {str(existing)}
    assert {orders_for(engine, p)[0].destination_id for p in new} == {str(created[0]["id"])}


def test_pattern_levels_may_be_fixed_names_and_wildcards_and_files_above_them_wait(
        pg_url: str, engine: sa.Engine, tmp_path: Path, blitz: CountingBlitz) -> None:
    folder = tmp_path / "levels"
    watcher = runner(watch_settings(pg_url, tmp_path, {
        "name": "levels", "folder": str(folder), "pattern": f"{folder}/*/{{user}}/raw",
        "group": "Demo", "dataset_id": 151, "settle_seconds": 0}), engine, Clock(), blitz)
    wanted = write(folder / "scope-1" / "researcher" / "raw" / "day" / "a.tif")
    elsewhere = [write(folder / p) for p in (
        "scope-1/researcher/processed/b.tif", "scope-1/c.tif", "d.tif", "scope-1/researcher/e.tif")]
    scan_all(watcher)
    [order] = orders_for(engine, wanted)
    assert (order.group_name, order.user_name) == ("Demo", "researcher")
    assert [p for p in elsewhere if orders_for(engine, p)] == []


def test_ignored_and_excluded_names_never_become_orders(
        pg_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    folder = tmp_path / "ignore"
    watcher = runner(watch_settings(pg_url, tmp_path, rule(
        folder, settle_seconds=0, include=["*.tif", "*.czi"], ignore=["*_thumb.*", "trash"])),
        engine, Clock())
    wanted = [write(folder / "a.tif"), write(folder / "sub" / "b.czi")]
    unwanted = [write(folder / n) for n in (
        ".hidden.tif", ".processed/a.ome.tif", "c.tif.part", "d.tif.tmp", "~lock.tif",
        "e_thumb.tif", "notes.txt", "trash/f.tif", "sub/.g.tif", "h.tif~")]
    scan_all(watcher)
    assert [len(orders_for(engine, p)) for p in wanted] == [1, 1]
    assert [p for p in unwanted if orders_for(engine, p)] == []
    assert len(ledger_rows(engine, "ignore")) == 2


@pytest.mark.parametrize("unit", ["file", "folder"])
def test_the_converted_copies_folder_is_never_ordered_whatever_its_name(
        pg_url: str, engine: sa.Engine, tmp_path: Path, seen: list[WatchEvent],
        unit: str) -> None:
    """``processed_data_folder`` need not begin with a dot (PROCESSED_DATA_FOLDER=processed):
    the copies a preprocessing order leaves beside its originals are not new units."""
    folder = tmp_path / f"copies-{unit}"
    watcher = runner(watch_settings(pg_url, tmp_path, rule(folder, settle_seconds=0, unit=unit),
                                    processed_data_folder="processed"), engine, Clock())
    run = folder / "run-01"
    originals = [write(run / "a.tif"), write(run / "sub" / "b.tif")]
    copies = [write(folder / "processed" / "run-01" / "a.ome.tif"),
              write(run / "processed" / "a.ome.tif"),
              write(run / "sub" / "processed" / "b.ome.tif")]
    scan_all(watcher)
    wanted = [run] if unit == "folder" else originals
    assert [len(orders_for(engine, p)) for p in wanted] == [1] * len(wanted)
    assert [p for p in [*copies, folder / "processed"] if orders_for(engine, p)] == []
    later = write(run / "processed" / "c.ome.tif")  # a later conversion beside the originals
    scan_all(watcher)
    assert orders_for(engine, later) == []
    assert {row.path for row in ledger_rows(engine, folder.name)} == set(map(str, wanted))
    assert [e.path for e in seen if e.kind == "changed"] == [], "a copy changed the unit"


def test_a_unit_changed_after_its_order_is_reported_once_and_not_ordered_again(
        pg_url: str, engine: sa.Engine, tmp_path: Path, seen: list[WatchEvent]) -> None:
    clock = Clock()
    settings = watch_settings(pg_url, tmp_path, rule(tmp_path / "changed", settle_seconds=0))
    image = write(tmp_path / "changed" / "a.tif")
    watcher = runner(settings, engine, clock)
    scan_all(watcher)
    [order] = orders_for(engine, image)
    replacement = write(tmp_path / "changed" / ".a.tif.new", b"other pixels")
    os.replace(replacement, image)  # rewritten the usual way: new file, renamed over
    for _ in range(3):
        clock.advance(10)
        scan_all(watcher)
    assert orders_for(engine, image) == [order]
    [change] = [e for e in seen if e.kind == "changed"]
    assert (change.path, change.uuid) == (str(image), order.uuid)
    assert "not imported again" in change.detail
    assert ledger_rows(engine, "changed")[0].reported_fingerprint is not None
    assert watcher.rules["changed"].changed == 1
    with image.open("ab") as appended:  # in place: seen by the next daemon's first scan
        appended.write(b"more")
    scan_all(runner(settings, engine, clock))
    assert [e.kind for e in seen].count("changed") == 2
    assert orders_for(engine, image) == [order]


def test_preprocessing_of_a_rule_goes_on_its_orders(
        pg_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    watcher = runner(watch_settings(pg_url, tmp_path, rule(
        tmp_path / "pre", settle_seconds=0, screen_id=9, dataset_id=None,
        preprocessing={"container": "cellularimagingcf/cimagexpresstoometiff:v0.7",
                       "extra_params": {"saveoption": "single"}})), engine, Clock())
    image = write(tmp_path / "pre" / "plate.tif")
    scan_all(watcher)
    [order] = orders_for(engine, image)
    assert order.destination_type == "Screen"
    with engine.connect() as connection:
        pre = connection.execute(sa.text(
            "SELECT container, input_file, output_folder, alt_output_folder, extra_params "
            "FROM imports_preprocessing WHERE id = :id"), {"id": order.preprocessing_id}).one()
    assert tuple(pre[:4]) == ("cellularimagingcf/cimagexpresstoometiff:v0.7", "{Files}",
                              "/data", "/out")
    assert pre.extra_params == {"saveoption": "single"}


def test_the_watcher_thread_orders_by_itself_on_either_database(
        db_url: str, tmp_path: Path) -> None:
    settings = watch_settings(db_url, tmp_path, rule(tmp_path / "thread", settle_seconds=0.2,
                                                     scan_interval=0.2))
    own = open_store(settings)
    watcher = WatchRunner(settings, own, None)
    image = write(tmp_path / "thread" / "a.tif")
    watcher.start()
    try:
        wait_for(lambda: orders_for(own, image), timeout=20, what="the watcher's order")
        wait_for(lambda: watcher.rules["thread"].last_scan, what="a scan after the order")
    finally:
        watcher.stop()
    [row] = ledger_rows(own, "thread")
    assert row.uuid == orders_for(own, image)[0].uuid
    own.dispose()
