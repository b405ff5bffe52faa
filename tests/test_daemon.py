"""The daemon on a real PostgreSQL (and SQLite): pickup, claims, recovery, shutdown."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import sqlalchemy as sa

from omero_adi.pipeline import OrderContext, OrderFailed
from omero_adi.settings import Settings, build_settings
from omero_adi.store.models import (
    STAGE_IMPORTED,
    STAGE_INGEST_FAILED,
    STAGE_INGEST_STARTED,
    STAGE_NEW_ORDER,
    STAGE_PREPROCESSING,
)
from omero_adi.store.queue import OrderQueue
from omero_adi.store.session import open_store
from tests.helpers import (
    current_stage, insert_order, legacy_retry, running_daemon, stages, wait_for,
)


def make_settings(url: str, base: Path, **values: Any) -> Settings:
    return build_settings(
        {"ingest_tracking_db": url, "base_dir": str(base), "max_workers": 2,
         "heartbeat_interval": 0.5, "recovery_interval": 0.5, "shutdown_timeout": 5, **values},
        {},
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    base = tmp_path / "data"
    base.mkdir()
    (base / "image.tif").write_bytes(b"pixels")
    return base


@pytest.fixture
def store(make_pg_database: Callable[[], str], data: Path) -> tuple[Settings, sa.Engine]:
    settings = make_settings(make_pg_database(), data)
    return settings, open_store(settings)


def ok_handler(ctx: OrderContext) -> str:
    return f"imported {len(ctx.order.files)} file(s)"


def test_plain_sql_order_runs_and_every_event_copies_the_order(store, data) -> None:
    settings, engine = store
    with running_daemon(settings, engine, ok_handler):
        insert_order(engine, "order-1", [str(data / "image.tif")], dest="42", type="Screen",
                     user="bob", group="facility")
        wait_for(lambda: current_stage(engine, "order-1") == STAGE_IMPORTED, what="completion")
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT stage, group_name, user_name, destination_id, destination_type, files, "
            "file_names, description FROM imports WHERE uuid = 'order-1' ORDER BY id")).all()
    assert [r.stage for r in rows] == [STAGE_NEW_ORDER, STAGE_INGEST_STARTED, STAGE_IMPORTED]
    for row in rows:
        assert (row.group_name, row.user_name, row.destination_id, row.destination_type) == (
            "facility", "bob", "42", "Screen")
        assert row.files == f'["{data / "image.tif"}"]'
    assert [r.file_names for r in rows[1:]] == ['["image.tif"]'] * 2
    assert rows[-1].description == "imported 1 file(s)"


def test_orders_queued_while_no_daemon_ran_are_processed_not_failed(store, data) -> None:
    settings, engine = store
    for n in range(5):
        insert_order(engine, f"queued-{n}", [str(data / "image.tif")])
    with running_daemon(settings, engine, ok_handler):
        wait_for(lambda: all(current_stage(engine, f"queued-{n}") == STAGE_IMPORTED
                             for n in range(5)), what="queued orders")


def test_orders_written_before_the_trigger_existed_are_picked_up(make_pg_database, data) -> None:
    url = make_pg_database()
    settings = make_settings(url, data)
    engine = open_store(settings)
    with engine.begin() as connection:  # as if the rows predate ADI's migration
        connection.execute(sa.text("ALTER TABLE imports DISABLE TRIGGER adi_imports_pending"))
    insert_order(engine, "old-1", [str(data / "image.tif")])
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE imports ENABLE TRIGGER adi_imports_pending"))
    with running_daemon(settings, engine, ok_handler):
        wait_for(lambda: current_stage(engine, "old-1") == STAGE_IMPORTED, what="old order")


def test_legacy_update_retry_is_picked_up_by_a_running_daemon(store, data) -> None:
    settings, engine = store
    attempts: list[str] = []

    def flaky(ctx: OrderContext) -> str:
        attempts.append(ctx.order.uuid)
        if len(attempts) == 1:
            raise OrderFailed("OMERO unreachable (test)")
        return "second time lucky"

    with running_daemon(settings, engine, flaky):
        insert_order(engine, "retry-me", [str(data / "image.tif")])
        wait_for(lambda: current_stage(engine, "retry-me") == STAGE_INGEST_FAILED, what="failure")
        legacy_retry(engine, "retry-me")
        wait_for(lambda: current_stage(engine, "retry-me") == STAGE_IMPORTED, what="retry")
    assert attempts == ["retry-me", "retry-me"]
    assert stages(engine, "retry-me")[-1] == (STAGE_IMPORTED, "second time lucky")


def test_intermediate_stage_events_are_recorded(store, data) -> None:
    settings, engine = store

    def preprocessing(ctx: OrderContext) -> str:
        ctx.record_stage(STAGE_PREPROCESSING, None)
        return "converted"

    with running_daemon(settings, engine, preprocessing):
        insert_order(engine, "pre-1", [str(data / "image.tif")])
        wait_for(lambda: current_stage(engine, "pre-1") == STAGE_IMPORTED, what="completion")
    assert [s for s, _ in stages(engine, "pre-1")] == [
        STAGE_NEW_ORDER, STAGE_INGEST_STARTED, STAGE_PREPROCESSING, STAGE_IMPORTED]


def test_a_crashing_handler_fails_the_order_and_the_daemon_goes_on(store, data) -> None:
    settings, engine = store

    def buggy(ctx: OrderContext) -> str:
        if ctx.order.uuid == "bug":
            raise KeyError("oops")
        return "fine"

    with running_daemon(settings, engine, buggy):
        insert_order(engine, "bug", [str(data / "image.tif")])
        insert_order(engine, "fine", [str(data / "image.tif")])
        wait_for(lambda: current_stage(engine, "fine") == STAGE_IMPORTED, what="good order")
        wait_for(lambda: current_stage(engine, "bug") == STAGE_INGEST_FAILED, what="bad order")
    assert "internal error (KeyError" in stages(engine, "bug")[-1][1]


def test_shutdown_lets_running_orders_finish(store, data) -> None:
    settings, engine = store
    release = threading.Event()
    entered = threading.Event()

    def slow(ctx: OrderContext) -> str:
        entered.set()
        release.wait(10)
        return "finished during shutdown"

    with running_daemon(settings, engine, slow) as daemon:
        insert_order(engine, "slow", [str(data / "image.tif")])
        wait_for(entered.is_set, what="order start")
        daemon.stop()
        wait_for(daemon.claiming_stopped.is_set, what="the loop to stop claiming")
        insert_order(engine, "late", [str(data / "image.tif")])
        release.set()
    assert current_stage(engine, "slow") == STAGE_IMPORTED
    assert current_stage(engine, "late") == STAGE_NEW_ORDER  # not claimed while stopping


def test_shutdown_timeout_interrupts_and_records_the_failure(make_pg_database, data) -> None:
    settings = make_settings(make_pg_database(), data, shutdown_timeout=0.2)
    engine = open_store(settings)
    entered = threading.Event()

    def hangs(ctx: OrderContext) -> str:
        entered.set()
        while True:  # a well-behaved long task: checks for cancellation
            ctx.check_cancelled()
            ctx.cancelled.wait(0.05)

    with running_daemon(settings, engine, hangs) as daemon:
        insert_order(engine, "hang", [str(data / "image.tif")])
        wait_for(entered.is_set, what="order start")
        daemon.stop()
    stage, description = stages(engine, "hang")[-1]
    assert stage == STAGE_INGEST_FAILED
    assert description.startswith("interrupted by shutdown")


def test_heartbeat_expiry_finalises_an_order_of_a_vanished_daemon(store, data) -> None:
    settings, engine = store
    insert_order(engine, "orphan", [str(data / "image.tif")])
    gone = OrderQueue(engine, owner="other-host:1:dead")
    assert gone.claim_next() is not None
    with engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE adi_queue SET heartbeat_at = now() - interval '1 hour'"))
    with running_daemon(settings, engine, ok_handler):
        wait_for(lambda: current_stage(engine, "orphan") == STAGE_INGEST_FAILED, what="recovery")
    stage, description = stages(engine, "orphan")[-1]
    assert "interrupted" in description and "other-host:1:dead" in description
    assert "omero-adi retry orphan" in description


def test_heartbeats_keep_a_long_order_from_being_taken_over(store, data) -> None:
    settings, engine = store  # heartbeat every 0.5 s
    entered, release = threading.Event(), threading.Event()

    def long(ctx: OrderContext) -> str:
        entered.set()
        release.wait(30)
        return "long done"

    def heartbeat_lead() -> float:
        """Seconds between the claim and the claim's newest heartbeat."""
        with engine.connect() as connection:
            return float(connection.execute(sa.text(
                "SELECT extract(epoch FROM heartbeat_at - claimed_at) FROM adi_queue "
                "WHERE uuid = 'long'")).scalar_one())

    with running_daemon(settings, engine, long):
        insert_order(engine, "long", [str(data / "image.tif")])
        wait_for(entered.is_set, what="order start")
        wait_for(lambda: heartbeat_lead() >= 2.5, what="heartbeats for 2.5 s")
        # Claimed longer ago than stale_after, yet alive: nobody may take it over.
        assert OrderQueue(engine).recover(stale_after=2.0, requeue=False) == []
        release.set()
        wait_for(lambda: current_stage(engine, "long") == STAGE_IMPORTED, what="completion")
    assert [s for s, _ in stages(engine, "long")] == [
        STAGE_NEW_ORDER, STAGE_INGEST_STARTED, STAGE_IMPORTED]


def test_a_live_claim_is_left_alone(store, data) -> None:
    settings, engine = store
    insert_order(engine, "busy", [str(data / "image.tif")])
    elsewhere = OrderQueue(engine, owner="other-host:1:alive")
    assert elsewhere.claim_next() is not None
    recovering = OrderQueue(engine)
    assert recovering.recover(stale_after=60, requeue=False) == []
    assert current_stage(engine, "busy") == STAGE_INGEST_STARTED


def test_requeue_setting_puts_interrupted_orders_back(store, data) -> None:
    settings, engine = store
    insert_order(engine, "again", [str(data / "image.tif")])
    OrderQueue(engine, owner="other-host:1:dead").claim_next()
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE adi_queue SET heartbeat_at = now() - interval '1 hour'"))
    settings = make_settings(settings.ingest_tracking_db, data, requeue_interrupted=True)
    with running_daemon(settings, engine, ok_handler):
        wait_for(lambda: current_stage(engine, "again") == STAGE_IMPORTED, what="re-run")
    assert [s for s, _ in stages(engine, "again")] == [
        STAGE_NEW_ORDER, STAGE_INGEST_STARTED, STAGE_NEW_ORDER, STAGE_INGEST_STARTED,
        STAGE_IMPORTED]


def test_an_order_set_back_to_pending_while_it_runs_is_not_claimed_again(store, data) -> None:
    settings, engine = store
    insert_order(engine, "still-running", [str(data / "image.tif")])
    running = OrderQueue(engine, owner="busy-host:1:x")
    claim = running.claim_next()
    assert claim is not None
    legacy_retry(engine, "still-running")  # the latest_event query's `running` says no
    assert OrderQueue(engine, owner="other-host:2:y").claim_next() is None
    with engine.connect() as connection:
        outcomes = connection.execute(sa.text(
            "SELECT outcome FROM adi_queue WHERE uuid = 'still-running' AND claimed_by IS NULL"
        )).scalars().all()
    assert outcomes and set(outcomes) == {"superseded"}
    assert running.finish(claim, STAGE_IMPORTED, "done") is True


def test_a_finished_claim_is_not_finalised_twice(store, data) -> None:
    settings, engine = store
    insert_order(engine, "late-finish", [str(data / "image.tif")])
    queue = OrderQueue(engine, owner="slow-host:1:x")
    claim = queue.claim_next()
    assert claim is not None
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE adi_queue SET heartbeat_at = now() - interval '1 hour'"))
    assert len(OrderQueue(engine).recover(stale_after=1, requeue=False)) == 1
    # The presumed-dead daemon comes back and tries to finish: nothing is written.
    assert queue.finish(claim, STAGE_IMPORTED, "done") is False
    assert [s for s, _ in stages(engine, "late-finish")] == [
        STAGE_NEW_ORDER, STAGE_INGEST_STARTED, STAGE_INGEST_FAILED]


def test_database_outage_while_running_writes_the_final_event_afterwards(
    store, data, pg_admin_url
) -> None:
    settings, engine = store
    database = engine.url.database
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    entered, release = threading.Event(), threading.Event()

    def during_outage(ctx: OrderContext) -> str:
        entered.set()
        release.wait(20)
        return "survived the outage"

    def outage(allow: bool) -> None:
        with admin.connect() as connection:
            connection.execute(sa.text(
                f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allow).lower()}'))
            if not allow:
                connection.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": database})

    try:
        with running_daemon(settings, engine, during_outage):
            insert_order(engine, "outage", [str(data / "image.tif")])
            wait_for(entered.is_set, what="order start")
            outage(allow=False)
            release.set()  # the handler finishes while the database is away
            threading.Event().wait(1.0)  # the outage lasts a while (not a synchronisation)
            outage(allow=True)
            wait_for(lambda: current_stage(engine, "outage") == STAGE_IMPORTED, what="event")
            insert_order(engine, "after", [str(data / "image.tif")])
            wait_for(lambda: current_stage(engine, "after") == STAGE_IMPORTED, what="new order")
    finally:
        outage(allow=True)
        admin.dispose()


def test_daemon_on_sqlite(sqlite_url, data) -> None:
    settings = make_settings(sqlite_url, data)
    engine = open_store(settings)
    with running_daemon(settings, engine, ok_handler):
        insert_order(engine, "lite", [str(data / "image.tif")])
        wait_for(lambda: current_stage(engine, "lite") == STAGE_IMPORTED, what="completion")
        legacy_retry(engine, "lite")
        wait_for(lambda: len(stages(engine, "lite")) == 5, what="legacy retry on SQLite")
    assert current_stage(engine, "lite") == STAGE_IMPORTED


def test_a_full_pool_waits_for_a_worker_instead_of_spinning(make_pg_database, data) -> None:
    settings = make_settings(make_pg_database(), data, max_workers=1)
    engine = open_store(settings)
    entered, release = threading.Event(), threading.Event()

    def blocking(ctx: OrderContext) -> str:
        entered.set()
        release.wait(10)
        return "done"

    with running_daemon(settings, engine, blocking):
        insert_order(engine, "first", [str(data / "image.tif")])
        wait_for(entered.is_set, what="the first order to start")
        for n in range(3):
            insert_order(engine, f"waiting-{n}", [str(data / "image.tif")])
        cpu = time.process_time()
        threading.Event().wait(1.0)  # a window to measure in, not a synchronisation
        busy = time.process_time() - cpu
        release.set()
        wait_for(lambda: current_stage(engine, "waiting-2") == STAGE_IMPORTED, what="the rest")
    assert busy < 0.3, f"the daemon used {busy:.2f} s of CPU in 1 s with nothing to do"


def test_outcomes_the_database_refuses_still_end_the_order(store, data) -> None:
    settings, engine = store
    with engine.begin() as connection:  # a site rule that rejects some descriptions
        connection.execute(sa.text(
            "ALTER TABLE imports ADD CONSTRAINT no_secrets "
            "CHECK (description IS NULL OR description NOT LIKE '%secret%')"))

    def handler(ctx: OrderContext) -> str:
        return {"nul": "binary\x00output", "refused": "a secret"}[ctx.order.uuid]

    with running_daemon(settings, engine, handler):
        insert_order(engine, "nul", [str(data / "image.tif")])
        insert_order(engine, "refused", [str(data / "image.tif")])
        wait_for(lambda: current_stage(engine, "nul") == STAGE_IMPORTED, what="nul order")
        wait_for(lambda: current_stage(engine, "refused") == STAGE_INGEST_FAILED,
                 what="refused outcome")
    assert stages(engine, "nul")[-1][1] == "binary\\0output"
    assert stages(engine, "refused")[-1][1].startswith(
        "the outcome (Import Completed) could not be recorded: IntegrityError")
