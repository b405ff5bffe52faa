"""The client module (contracts §2), on PostgreSQL and SQLite.

OMERO.biomero and scripts write orders with
``from omero_adi.utils.ingest_tracker import …``; every test here goes
through that import path and reads the result back with plain SQL, the way
dashboards and the daemon see it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid as uuidlib
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from omero_adi.store import tracker as tracker_module
from omero_adi.store.db import make_engine
from omero_adi.store.retry import is_transient, retry_transient
from omero_adi.utils.ingest_tracker import (
    STAGE_IMPORTED,
    STAGE_INGEST_FAILED,
    STAGE_INGEST_STARTED,
    STAGE_NEW_ORDER,
    STAGE_PREPROCESSING,
    Base,
    IngestionTracking,
    IngestTracker,
    Preprocessing,
    get_ingest_tracker,
    initialize_ingest_tracker,
    log_ingestion_step,
)

SCREEN_CONTAINER = "cellularimagingcf/cimagexpresstoometiff:v0.7"
LEICA_CONTAINER = "cellularimagingcf/convertleica-docker:v1.2.0"

IMPORT_COLUMNS = (
    "id", "group_name", "user_name", "destination_id", "destination_type", "stage",
    "uuid", "timestamp", "files", "file_names", "description", "preprocessing_id",
    "import_options",
)
PREPROCESSING_COLUMNS = (
    "id", "container", "input_file", "output_folder", "alt_output_folder", "extra_params",
)


# --- helpers ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_global_tracker() -> Iterator[None]:
    """Each test starts and ends without the process-wide tracker."""
    tracker_module._tracker = None
    yield
    if tracker_module._tracker is not None:
        tracker_module._tracker.dispose()
    tracker_module._tracker = None


@pytest.fixture
def tracker(db_url: str) -> IngestTracker:
    assert initialize_ingest_tracker({"ingest_tracking_db": db_url}) is True
    current = get_ingest_tracker()
    assert current is not None
    return current


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def plain_order(**extra: Any) -> dict[str, Any]:
    order = {
        "Group": "Lab A",
        "Username": "alice",
        "DestinationID": 123,
        "DestinationType": "Dataset",
        "UUID": new_uuid(),
        "Files": ["/data/lab/run1/plate_A01.tif", "/data/lab/run1/plate_A02.tif"],
    }
    order.update(extra)
    return order


def screen_order(**extra: Any) -> dict[str, Any]:
    order = plain_order(
        DestinationID=456,
        DestinationType="Screen",
        Files=["/data/screens/exp1/MeasurementIndex.ColumbusIDX.xml"],
        preprocessing_container=SCREEN_CONTAINER,
        preprocessing_inputfile="{Files}",
        preprocessing_outputfolder="/data",
        preprocessing_altoutputfolder="/out",
        extra_params={"saveoption": "single"},
    )
    order.update(extra)
    return order


def leica_order(image_uuid: str, **extra: Any) -> dict[str, Any]:
    order = plain_order(
        DestinationID=789,
        Files=["/data/leica/project.lif"],
        preprocessing_container=LEICA_CONTAINER,
        preprocessing_inputfile="{Files}",
        preprocessing_outputfolder="/data",
        preprocessing_altoutputfolder="/out",
        extra_params={"image_uuid": image_uuid},
    )
    order.update(extra)
    return order


def raw_rows(engine: sa.Engine, table: str, where: str = "", **params: Any) -> list[dict[str, Any]]:
    columns = IMPORT_COLUMNS if table == "imports" else PREPROCESSING_COLUMNS
    sql = f"SELECT {', '.join(columns)} FROM {table} {where} ORDER BY id"
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.text(sql), params)]


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def json_value(value: Any) -> Any:
    """A JSON column as a Python value (psycopg2 decodes it, sqlite3 does not)."""
    return json.loads(value) if isinstance(value, str) else value


# --- the import path ---------------------------------------------------------


def test_client_module_exports_and_stage_strings() -> None:
    import omero_adi.utils.ingest_tracker as module

    assert (
        STAGE_NEW_ORDER, STAGE_INGEST_STARTED, STAGE_PREPROCESSING, STAGE_IMPORTED,
        STAGE_INGEST_FAILED,
    ) == (
        "Import Pending", "Import Started", "Import Preprocessing", "Import Completed",
        "Import Failed",
    )
    assert IngestionTracking.__tablename__ == "imports"
    assert Preprocessing.__tablename__ == "imports_preprocessing"
    assert IngestionTracking.metadata is Base.metadata
    assert set(IMPORT_COLUMNS) == set(IngestionTracking.__table__.columns.keys())
    assert set(PREPROCESSING_COLUMNS) == set(Preprocessing.__table__.columns.keys())
    assert "preprocessing" in sa.inspect(IngestionTracking).relationships
    for name in ("IngestTracker", "initialize_ingest_tracker", "get_ingest_tracker",
                 "log_ingestion_step"):
        assert callable(getattr(module, name))


# --- the three order shapes --------------------------------------------------


def test_plain_dataset_order(tracker: IngestTracker) -> None:
    order = plain_order()
    event_id = log_ingestion_step(order, STAGE_NEW_ORDER)
    assert type(event_id) is int

    [row] = raw_rows(tracker.engine, "imports")
    assert row["id"] == event_id
    assert row["timestamp"] is not None
    del row["timestamp"]
    assert row == {
        "id": event_id,
        "group_name": "Lab A",
        "user_name": "alice",
        "destination_id": "123",
        "destination_type": "Dataset",
        "stage": "Import Pending",
        "uuid": order["UUID"],
        "files": row["files"],
        "file_names": "[]",  # the earlier ADI's text for an order without FileNames
        "description": None,
        "preprocessing_id": None,
        "import_options": None,
    }
    assert isinstance(row["files"], str)
    assert json.loads(row["files"]) == order["Files"]
    assert count(tracker.engine, "imports_preprocessing") == 0

    # The next event of the same order is a new row; nothing is updated.
    started = log_ingestion_step(order, STAGE_INGEST_STARTED)
    assert type(started) is int and started > event_id
    rows = raw_rows(tracker.engine, "imports")
    assert [(r["id"], r["stage"], r["uuid"]) for r in rows] == [
        (event_id, "Import Pending", order["UUID"]),
        (started, "Import Started", order["UUID"]),
    ]


def test_screen_conversion_order(tracker: IngestTracker) -> None:
    order = screen_order(FileNames=["MeasurementIndex.ColumbusIDX.xml"])
    event_id = log_ingestion_step(order, STAGE_NEW_ORDER)
    assert type(event_id) is int

    [row] = raw_rows(tracker.engine, "imports")
    assert (row["destination_id"], row["destination_type"]) == ("456", "Screen")
    assert row["stage"] == "Import Pending"
    assert json.loads(row["files"]) == ["/data/screens/exp1/MeasurementIndex.ColumbusIDX.xml"]
    assert isinstance(row["file_names"], str)
    assert json.loads(row["file_names"]) == ["MeasurementIndex.ColumbusIDX.xml"]
    assert type(row["preprocessing_id"]) is int

    [pre] = raw_rows(tracker.engine, "imports_preprocessing")
    assert pre["id"] == row["preprocessing_id"]
    assert {k: v for k, v in pre.items() if k != "extra_params"} == {
        "id": row["preprocessing_id"],
        "container": SCREEN_CONTAINER,
        "input_file": "{Files}",
        "output_folder": "/data",
        "alt_output_folder": "/out",
    }
    assert json_value(pre["extra_params"]) == {"saveoption": "single"}

    with tracker.Session() as session:
        event = session.get(IngestionTracking, event_id)
        assert event is not None and event.preprocessing is not None
        assert event.files == order["Files"]
        assert event.file_names == ["MeasurementIndex.ColumbusIDX.xml"]
        assert event.preprocessing.container == SCREEN_CONTAINER
        assert event.preprocessing.extra_params == {"saveoption": "single"}


def test_leica_conversion_order(tracker: IngestTracker) -> None:
    image_uuid = new_uuid()
    event_id = log_ingestion_step(leica_order(image_uuid), STAGE_NEW_ORDER)
    assert type(event_id) is int
    [row] = raw_rows(tracker.engine, "imports")
    [pre] = raw_rows(tracker.engine, "imports_preprocessing")
    assert row["destination_id"] == "789" and row["destination_type"] == "Dataset"
    assert row["preprocessing_id"] == pre["id"]
    assert (pre["container"], pre["input_file"], pre["output_folder"], pre["alt_output_folder"]) == (
        LEICA_CONTAINER, "{Files}", "/data", "/out",
    )
    assert json_value(pre["extra_params"]) == {"image_uuid": image_uuid}


def test_db_log_ingestion_event_on_the_tracker_itself(db_url: str) -> None:
    tracker = IngestTracker({"ingest_tracking_db": db_url})
    try:
        first = tracker.db_log_ingestion_event(plain_order(), STAGE_NEW_ORDER)
        assert type(first) is int
        assert tracker.db_log_ingestion_event({"Group": "g"}, STAGE_NEW_ORDER) is None
        assert count(tracker.engine, "imports") == 1
    finally:
        tracker.dispose()


# --- preprocessing keys -------------------------------------------------------


def test_other_preprocessing_keys_become_extra_params(tracker: IngestTracker) -> None:
    order = screen_order(preprocessing_saveoption="single", preprocessing_threads="4")
    del order["extra_params"]
    log_ingestion_step(order, STAGE_NEW_ORDER)
    [pre] = raw_rows(tracker.engine, "imports_preprocessing")
    assert json_value(pre["extra_params"]) == {"saveoption": "single", "threads": "4"}
    # The four column keys are columns, never extra params.
    assert pre["container"] == SCREEN_CONTAINER and pre["alt_output_folder"] == "/out"

    both = screen_order(extra_params={"image_uuid": "abc"}, preprocessing_saveoption="single")
    log_ingestion_step(both, STAGE_NEW_ORDER)
    pre2 = raw_rows(tracker.engine, "imports_preprocessing")[-1]
    assert json_value(pre2["extra_params"]) == {"image_uuid": "abc", "saveoption": "single"}


def test_preprocessing_id_links_an_existing_row(tracker: IngestTracker) -> None:
    order = screen_order()
    first = log_ingestion_step(order, STAGE_NEW_ORDER)
    [pre] = raw_rows(tracker.engine, "imports_preprocessing")

    # The daemon's next event: same fields, plus the id of the row it already has.
    again = dict(order, _preprocessing_id=pre["id"])
    second = log_ingestion_step(again, STAGE_PREPROCESSING)
    third = log_ingestion_step({**plain_order(UUID=order["UUID"]), "_preprocessing_id": pre["id"]},
                               STAGE_IMPORTED)
    assert type(second) is int and type(third) is int
    assert count(tracker.engine, "imports_preprocessing") == 1
    rows = raw_rows(tracker.engine, "imports")
    assert [(r["id"], r["stage"], r["preprocessing_id"]) for r in rows] == [
        (first, "Import Pending", pre["id"]),
        (second, "Import Preprocessing", pre["id"]),
        (third, "Import Completed", pre["id"]),
    ]


def test_preprocessing_id_of_no_row_writes_nothing(tracker: IngestTracker) -> None:
    assert log_ingestion_step(plain_order(_preprocessing_id=999_999), STAGE_NEW_ORDER) is None
    assert count(tracker.engine, "imports") == 0


# --- missing fields, descriptions ---------------------------------------------


@pytest.mark.parametrize("key", ["Group", "Username", "UUID", "DestinationID"])
def test_missing_required_key_writes_nothing(tracker: IngestTracker, key: str) -> None:
    for broken in ({k: v for k, v in screen_order().items() if k != key},
                   screen_order(**{key: None})):
        assert log_ingestion_step(broken, STAGE_NEW_ORDER) is None
    assert count(tracker.engine, "imports") == 0
    assert count(tracker.engine, "imports_preprocessing") == 0


def test_destination_id_zero_is_not_missing(tracker: IngestTracker) -> None:
    assert type(log_ingestion_step(plain_order(DestinationID=0), STAGE_NEW_ORDER)) is int
    assert raw_rows(tracker.engine, "imports")[0]["destination_id"] == "0"


@pytest.mark.parametrize("key", ["Description", "description"])
def test_description(tracker: IngestTracker, key: str) -> None:
    reason = "Import failed: file not found: /data/x.tif"
    log_ingestion_step(plain_order(**{key: reason}), STAGE_INGEST_FAILED)
    [row] = raw_rows(tracker.engine, "imports")
    assert (row["stage"], row["description"]) == ("Import Failed", reason)


def test_log_before_initialising_returns_none() -> None:
    assert get_ingest_tracker() is None
    assert log_ingestion_step(plain_order(), STAGE_NEW_ORDER) is None


# --- other writers -------------------------------------------------------------


def test_manual_insertion_recipe(tracker: IngestTracker) -> None:
    """What OMERO.biomero's web plugin does: build the objects itself."""
    order_uuid = new_uuid()
    with tracker.Session() as session:
        pre = Preprocessing(
            container=SCREEN_CONTAINER,
            input_file="{Files}",
            output_folder="/data",
            alt_output_folder="/out",
            extra_params={"saveoption": "single"},
        )
        session.add(pre)
        session.flush()
        pre_id = pre.id
        order = IngestionTracking(
            group_name="Lab A",
            user_name="alice",
            destination_id="456",
            destination_type="Screen",
            stage=STAGE_NEW_ORDER,
            uuid=order_uuid,
            files=["/data/screens/a b/é.xml"],
            file_names=["é.xml"],
            preprocessing_id=pre.id,
        )
        session.add(order)
        by_relationship = IngestionTracking(
            group_name="Lab A", user_name="alice", destination_id="457",
            destination_type="Screen", stage=STAGE_NEW_ORDER, uuid=new_uuid(),
            files=["/data/two.xml"],
            preprocessing=Preprocessing(container=LEICA_CONTAINER, input_file="{Files}",
                                        output_folder="/data"),
        )
        session.add(by_relationship)
        session.commit()
        order_id = order.id

    rows = raw_rows(tracker.engine, "imports")
    assert [r["uuid"] for r in rows][0] == order_uuid
    assert rows[0]["preprocessing_id"] == pre_id
    assert json.loads(rows[0]["files"]) == ["/data/screens/a b/é.xml"]
    assert json.loads(rows[0]["file_names"]) == ["é.xml"]
    assert rows[0]["timestamp"] is not None
    assert rows[1]["preprocessing_id"] not in (None, pre_id)
    pres = raw_rows(tracker.engine, "imports_preprocessing")
    assert [p["container"] for p in pres] == [SCREEN_CONTAINER, LEICA_CONTAINER]
    assert pres[1]["alt_output_folder"] is None and pres[1]["extra_params"] is None

    with tracker.Session() as session:
        loaded = session.get(IngestionTracking, order_id)
        assert loaded is not None and loaded.preprocessing is not None
        assert loaded.preprocessing.id == pre_id
        assert loaded.preprocessing.extra_params == {"saveoption": "single"}
        assert loaded.files == ["/data/screens/a b/é.xml"]


def test_plain_sql_pending_row_reads_through_the_orm(tracker: IngestTracker) -> None:
    order_uuid = new_uuid()
    with tracker.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO imports (group_name, user_name, destination_id, destination_type,"
                " stage, uuid, files, file_names) VALUES ('Lab B', 'bob', '42', 'Dataset',"
                " 'Import Pending', :uuid, :files, NULL)"
            ),
            {"uuid": order_uuid, "files": '["/data/b/one.tif", "/data/b/two.tif"]'},
        )
    with tracker.Session() as session:
        [event] = session.scalars(sa.select(IngestionTracking).where(
            IngestionTracking.uuid == order_uuid)).all()
        assert event.stage == STAGE_NEW_ORDER
        assert event.files == ["/data/b/one.tif", "/data/b/two.tif"]
        assert event.file_names == [] and event.preprocessing is None  # NULL reads as []
        assert event.import_options == {}
        assert event.timestamp is not None
        assert type(event.id) is int

    # A later event written through the module continues the same order.
    started = log_ingestion_step(
        {"Group": event.group_name, "Username": event.user_name, "UUID": order_uuid,
         "DestinationID": event.destination_id, "DestinationType": "Dataset",
         "Files": event.files},
        STAGE_INGEST_STARTED,
    )
    assert type(started) is int and started > event.id


def test_unicode_and_spaces_round_trip(tracker: IngestTracker) -> None:
    files = [
        "/data/Ünïcödé dir/画像 01.tif",
        "/data/with space/a  b (copy).czi",
        '/data/quotes/it\'s "fine".lif',
        "/data/emoji/🔬 scan.nd2",
    ]
    names = ["画像 01.tif", "a  b (copy).czi", 'it\'s "fine".lif', "🔬 scan.nd2"]
    event_id = log_ingestion_step(
        plain_order(Files=files, FileNames=names, Group="Gruppe Ä", Username="zoë",
                    Description="Fehlgeschlagen: ünïcödé"),
        STAGE_NEW_ORDER,
    )
    [row] = raw_rows(tracker.engine, "imports")
    assert json.loads(row["files"]) == files
    assert json.loads(row["file_names"]) == names
    assert (row["group_name"], row["user_name"]) == ("Gruppe Ä", "zoë")
    assert row["description"] == "Fehlgeschlagen: ünïcödé"
    with tracker.Session() as session:
        event = session.get(IngestionTracking, event_id)
        assert event is not None
        assert event.files == files and event.file_names == names


# --- configuration ---------------------------------------------------------------


def test_environment_url_overrides_config(db_url: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ignored = tmp_path / "ignored" / "config.sqlite"
    ignored.parent.mkdir()
    monkeypatch.setenv("INGEST_TRACKING_DB_URL", db_url)
    assert initialize_ingest_tracker({"ingest_tracking_db": f"sqlite:///{ignored}"}) is True
    event_id = log_ingestion_step(plain_order(), STAGE_NEW_ORDER)
    assert type(event_id) is int
    assert not ignored.exists()
    engine = make_engine(db_url)
    try:
        assert [r["id"] for r in raw_rows(engine, "imports")] == [event_id]
    finally:
        engine.dispose()


def test_tracker_object(db_url: str) -> None:
    tracker = IngestTracker({"ingest_tracking_db": db_url})
    assert isinstance(tracker.engine, sa.Engine)
    with tracker.Session() as session:
        assert isinstance(session, sa.orm.Session)
        assert session.scalar(sa.select(sa.func.count()).select_from(IngestionTracking)) == 0
    # Tables exist without anyone calling create_all.
    tables = set(sa.inspect(tracker.engine).get_table_names())
    assert {"imports", "imports_preprocessing"} <= tables
    tracker.dispose()
    # A disposed engine holds no connections; it reconnects on demand.
    assert tracker.engine.pool.checkedout() == 0


def test_initialising_again_replaces_the_tracker(db_url: str, tmp_path: Path) -> None:
    assert initialize_ingest_tracker({"ingest_tracking_db": db_url}) is True
    first = get_ingest_tracker()
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    assert initialize_ingest_tracker({"ingest_tracking_db": other}) is True
    second = get_ingest_tracker()
    assert isinstance(second, IngestTracker) and second is not first
    log_ingestion_step(plain_order(), STAGE_NEW_ORDER)
    assert count(second.engine, "imports") == 1
    # Initialising twice on one database is harmless (migrations are idempotent).
    assert initialize_ingest_tracker({"ingest_tracking_db": db_url}) is True
    assert initialize_ingest_tracker({"ingest_tracking_db": db_url}) is True


def test_unreachable_database_fails_initialisation(caplog: pytest.LogCaptureFixture) -> None:
    url = "postgresql://nobody:secret-pw@127.0.0.1:1/none"
    assert initialize_ingest_tracker({"ingest_tracking_db": url}) is False
    assert get_ingest_tracker() is None
    assert "secret-pw" not in caplog.text


def test_an_unsupported_database_fails_initialisation_saying_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert initialize_ingest_tracker({"ingest_tracking_db": "mysql://u:pw@db/orders"}) is False
    assert get_ingest_tracker() is None
    assert "database URL scheme 'mysql://' is not supported" in caplog.text


def test_failed_initialisation_keeps_no_connection(make_pg_database: Any) -> None:
    """A client retrying initialisation on a database it may not adopt must
    not pile up server connections."""
    url = make_pg_database()
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with admin.begin() as connection:  # the earlier ADI's table, no version table
            connection.execute(sa.text("CREATE TABLE imports (id integer PRIMARY KEY)"))
        for _ in range(3):
            assert initialize_ingest_tracker({"ingest_tracking_db": url}) is False
        assert get_ingest_tracker() is None
        with admin.connect() as connection:
            others = connection.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()")).scalar_one()
        assert others == 0
    finally:
        admin.dispose()


def test_client_adopts_an_earlier_database_with_auto_stamp(
    make_pg_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_pg_database()
    # The earlier ADI's start-up: create_all, no version table.
    Base.metadata.create_all(sa.create_engine(url, poolclass=sa.pool.NullPool),
                             tables=[Preprocessing.__table__, IngestionTracking.__table__])
    assert initialize_ingest_tracker({"ingest_tracking_db": url}) is False
    monkeypatch.setenv("ADI_ALLOW_AUTO_STAMP", "1")
    assert initialize_ingest_tracker({"ingest_tracking_db": url}) is True
    assert type(log_ingestion_step(plain_order(), STAGE_NEW_ORDER)) is int


def test_run_migrations_off_still_creates_the_shared_tables(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADI_RUN_MIGRATIONS", "0")
    assert initialize_ingest_tracker({"ingest_tracking_db": db_url}) is True
    tracker = get_ingest_tracker()
    assert tracker is not None
    tables = set(sa.inspect(tracker.engine).get_table_names())
    assert {"imports", "imports_preprocessing"} <= tables
    assert "alembic_version_omeroadi" not in tables and "adi_queue" not in tables
    assert type(log_ingestion_step(screen_order(), STAGE_NEW_ORDER)) is int


# --- atomicity ----------------------------------------------------------------------


def _reject_user(engine: sa.Engine, user: str) -> None:
    """A database rule that makes the ``imports`` insert fail for ``user``.

    The preprocessing row is inserted first (the order row references it), so
    the order's transaction fails half-way.
    """
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text(
                f"ALTER TABLE imports ADD CONSTRAINT reject_user CHECK (user_name <> '{user}')"))
        else:
            connection.execute(sa.text(
                f"CREATE TRIGGER reject_user BEFORE INSERT ON imports "
                f"WHEN NEW.user_name = '{user}' BEGIN SELECT RAISE(ABORT, 'rejected'); END"))


def test_order_and_preprocessing_row_commit_together(tracker: IngestTracker) -> None:
    _reject_user(tracker.engine, "mallory")
    assert log_ingestion_step(screen_order(Username="mallory"), STAGE_NEW_ORDER) is None
    assert count(tracker.engine, "imports") == 0
    assert count(tracker.engine, "imports_preprocessing") == 0

    # The same order from an accepted user is written whole.
    assert type(log_ingestion_step(screen_order(), STAGE_NEW_ORDER)) is int
    assert count(tracker.engine, "imports") == 1
    assert count(tracker.engine, "imports_preprocessing") == 1


def test_not_null_violation_after_preprocessing_insert_leaves_nothing(
    tracker: IngestTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tracker_module.event_from_order_info

    def broken(info: Any, stage: str) -> IngestionTracking:
        event = real(info, stage)
        event.group_name = None  # type: ignore[assignment]  # NOT NULL column
        return event

    monkeypatch.setattr(tracker_module, "event_from_order_info", broken)
    assert log_ingestion_step(leica_order("x"), STAGE_NEW_ORDER) is None
    assert count(tracker.engine, "imports") == 0
    assert count(tracker.engine, "imports_preprocessing") == 0


# --- transient errors -----------------------------------------------------------------


def _terminate_other_backends(admin: sa.Engine) -> list[int]:
    """Kill every other session on the test database, and wait until they are gone."""
    with admin.connect() as connection:
        pids = connection.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")).scalars().all()
        for pid in pids:
            assert connection.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        for _ in range(500):  # bounded: termination takes milliseconds
            alive = connection.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": list(pids)}).scalar_one()
            if not alive:
                break
            connection.execute(sa.text("SELECT pg_sleep(0.01)"))
            connection.commit()  # pg_stat_activity is a per-transaction snapshot
        else:
            pytest.fail("terminated backends did not go away")
    return list(pids)


def test_write_survives_a_dropped_connection(
    make_pg_database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = make_pg_database()
    assert initialize_ingest_tracker({"ingest_tracking_db": url}) is True
    tracker = get_ingest_tracker()
    assert tracker is not None
    order = plain_order()
    first = log_ingestion_step(order, STAGE_NEW_ORDER)
    assert type(first) is int
    with tracker.engine.connect() as connection:
        pooled_pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    assert tracker.engine.pool.checkedin() >= 1

    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        killed = _terminate_other_backends(admin)
        assert pooled_pid in killed

        caplog.set_level(logging.WARNING, logger="omero_adi.store.retry")
        second = log_ingestion_step(order, STAGE_INGEST_STARTED)
        assert type(second) is int and second > first
        assert any("retrying" in r.getMessage() for r in caplog.records), caplog.text
        with admin.connect() as connection:
            stages = connection.execute(sa.text(
                "SELECT stage FROM imports WHERE uuid = :u ORDER BY id"), {"u": order["UUID"]}
            ).scalars().all()
        assert stages == ["Import Pending", "Import Started"]  # written once, not twice
    finally:
        admin.dispose()


def _dbapi_error(engine: sa.Engine, sql: str) -> DBAPIError:
    with engine.connect() as connection:
        with pytest.raises(DBAPIError) as caught:
            connection.execute(sa.text(sql))
    return caught.value


def test_is_transient_postgres_errors(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE IF NOT EXISTS t_unique (k int PRIMARY KEY)"))
            connection.execute(sa.text("INSERT INTO t_unique VALUES (1) ON CONFLICT DO NOTHING"))

        def raised(code: str) -> DBAPIError:
            return _dbapi_error(
                engine, f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$")

        for code in ("40001", "40P01", "57P01", "57P03", "53300", "08006"):
            error = raised(code)
            assert isinstance(error.orig, psycopg2.Error) and error.orig.pgcode == code
            assert is_transient(error), code
        for code in ("23505", "42P01", "22P02", "P0001"):
            assert not is_transient(raised(code)), code

        unique = _dbapi_error(engine, "INSERT INTO t_unique VALUES (1)")
        assert isinstance(unique, sa.exc.IntegrityError) and not is_transient(unique)
        assert not is_transient(_dbapi_error(engine, "SELEC 1"))
        assert not is_transient(_dbapi_error(engine, "SELECT * FROM no_such_table"))
    finally:
        engine.dispose()

    # Nobody listening on the port: psycopg2 has no SQLSTATE, yet it is transient.
    unreachable = make_engine("postgresql://u:p@127.0.0.1:1/db")
    with pytest.raises(DBAPIError) as caught:
        unreachable.connect()
    assert isinstance(caught.value.orig, psycopg2.OperationalError)
    assert is_transient(caught.value)

    # A connection the server dropped is invalidated, and transient.
    engine = make_engine(pg_url)
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        _terminate_other_backends(admin)
        with engine.connect() as connection, pytest.raises(DBAPIError) as caught:
            connection.execute(sa.text("SELECT 1"))
        assert caught.value.connection_invalidated
        assert is_transient(caught.value)
    finally:
        engine.dispose()
        admin.dispose()


def test_is_transient_sqlite_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locks.sqlite'}"
    holder = sa.create_engine(url)
    impatient = sa.create_engine(url, connect_args={"timeout": 0})
    try:
        with holder.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
            connection.execute(sa.text("INSERT INTO t VALUES (1)"))
        with holder.connect() as locking:
            locking.exec_driver_sql("BEGIN EXCLUSIVE")
            busy = _dbapi_error(impatient, "INSERT INTO t VALUES (2)")
            locking.rollback()
        assert isinstance(busy.orig, sqlite3.OperationalError)
        assert busy.orig.sqlite_errorcode == sqlite3.SQLITE_BUSY
        assert is_transient(busy)

        duplicate = _dbapi_error(impatient, "INSERT INTO t VALUES (1)")
        assert isinstance(duplicate.orig, sqlite3.IntegrityError) and not is_transient(duplicate)
        assert not is_transient(_dbapi_error(impatient, "SELEC 1"))
        assert not is_transient(_dbapi_error(impatient, "SELECT * FROM missing"))
    finally:
        holder.dispose()
        impatient.dispose()
    assert not is_transient(ValueError("not a database error"))


def test_retry_transient_is_bounded_and_retries_only_transient(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retry.sqlite'}"
    engine = sa.create_engine(url)
    impatient = sa.create_engine(url, connect_args={"timeout": 0})
    slept: list[float] = []
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
        with engine.connect() as locking:
            locking.exec_driver_sql("BEGIN EXCLUSIVE")
            calls = 0

            def write() -> None:
                nonlocal calls
                calls += 1
                with impatient.begin() as connection:
                    connection.execute(sa.text("INSERT INTO t VALUES (2)"))

            with pytest.raises(DBAPIError):
                retry_transient(write, attempts=3, sleep=slept.append)
            assert calls == 3 and len(slept) == 2
            assert slept[1] > slept[0]  # backs off
            locking.rollback()

        calls = 0

        def unlocked_after_two() -> int:
            nonlocal calls
            calls += 1
            if calls < 3:
                # A real busy error: another connection holds the lock.
                with engine.connect() as locking2:
                    locking2.exec_driver_sql("BEGIN EXCLUSIVE")
                    try:
                        with impatient.begin() as connection:
                            connection.execute(sa.text("INSERT INTO t VALUES (3)"))
                    finally:
                        locking2.rollback()
            with impatient.begin() as connection:
                connection.execute(sa.text("INSERT INTO t VALUES (3)"))
            return calls

        assert retry_transient(unlocked_after_two, attempts=5, sleep=slept.append) == 3

        permanent = 0

        def duplicate() -> None:
            nonlocal permanent
            permanent += 1
            with impatient.begin() as connection:
                connection.execute(sa.text("INSERT INTO t VALUES (3)"))

        with pytest.raises(sa.exc.IntegrityError):
            retry_transient(duplicate, attempts=5, sleep=slept.append)
        assert permanent == 1
    finally:
        engine.dispose()
        impatient.dispose()
