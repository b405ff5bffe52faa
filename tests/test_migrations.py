"""Migrations from every starting point a site may have (contracts §1).

Each PostgreSQL test gets its own fresh database; the earlier ADI's schemas
are written by hand with raw SQL, as that ADI left them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa
import yaml

from omero_adi.store import migrate
from omero_adi.store.db import make_engine

HEAD = "4752d1cfa05f"
LEGACY = "78d3d6d84aec"
#: BIOMERO.importer's revision (and head): adds imports.import_options.
SUCCESSOR = "92e8f9e637a1"
REPO = Path(__file__).resolve().parents[1]

IMPORT_COLUMNS = {
    "id", "group_name", "user_name", "destination_id", "destination_type", "stage", "uuid",
    "timestamp", "files", "file_names", "description", "preprocessing_id", "import_options",
}
#: The columns the earlier ADI's rows have (compared across migrations that add others).
LEGACY_COLUMNS = ("id, group_name, user_name, destination_id, destination_type, stage, uuid,"
                  " timestamp, files, file_names, description, preprocessing_id")
NOT_NULL = {"id", "group_name", "user_name", "destination_id", "destination_type", "stage",
            "uuid", "files"}
PREPROCESSING_COLUMNS = {
    "id", "container", "input_file", "output_folder", "alt_output_folder", "extra_params",
}


def _legacy_ddl(dialect: str, description: bool = True,
                import_options: bool = False) -> list[str]:
    """The tables the earlier ADI created (``create_all``), as contracts §1 lists them;
    with ``import_options``, as BIOMERO.importer's models create them."""
    pk = "SERIAL PRIMARY KEY" if dialect == "postgresql" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    now = "now()" if dialect == "postgresql" else "CURRENT_TIMESTAMP"
    ts = "TIMESTAMP WITH TIME ZONE" if dialect == "postgresql" else "DATETIME"
    return [
        f"""CREATE TABLE imports_preprocessing (
            id {pk},
            container VARCHAR NOT NULL,
            input_file VARCHAR NOT NULL,
            output_folder VARCHAR NOT NULL,
            alt_output_folder VARCHAR,
            extra_params JSON
        )""",
        f"""CREATE TABLE imports (
            id {pk},
            group_name VARCHAR NOT NULL,
            user_name VARCHAR NOT NULL,
            destination_id VARCHAR NOT NULL,
            destination_type VARCHAR NOT NULL,
            stage VARCHAR NOT NULL,
            uuid VARCHAR(36) NOT NULL,
            timestamp {ts} DEFAULT ({now}),
            files TEXT NOT NULL,
            file_names TEXT,
            {"description TEXT," if description else ""}
            preprocessing_id INTEGER REFERENCES imports_preprocessing (id)
            {", import_options TEXT" if import_options else ""}
        )""",
        "CREATE INDEX ix_imports_user_name ON imports (user_name)",
        "CREATE INDEX ix_imports_uuid ON imports (uuid)",
        "CREATE INDEX imports_ix_uuid_timestamp ON imports (uuid, timestamp)",
    ]


ORDER_A = "0b8f0c2e-1111-4a4a-8c8c-000000000001"
ORDER_B = "0b8f0c2e-2222-4a4a-8c8c-000000000002"


def _seed(connection: sa.Connection, description: bool = True) -> None:
    """Orders in several stages, one with preprocessing, as the earlier ADI wrote them."""
    connection.execute(sa.text(
        "INSERT INTO imports_preprocessing (container, input_file, output_folder,"
        " alt_output_folder, extra_params) VALUES"
        " ('cellularimagingcf/cimagexpresstoometiff:v0.7', '{Files}', '/data', '/out', :x)"),
        {"x": json.dumps({"saveoption": "single"})})
    pre_id = connection.execute(sa.text("SELECT max(id) FROM imports_preprocessing")).scalar_one()
    rows = [
        ("Import Pending", ORDER_A, None, None),
        ("Import Started", ORDER_A, None, None),
        ("Import Completed", ORDER_A, None, None),
        ("Import Pending", ORDER_B, pre_id, None),
        ("Import Failed", ORDER_B, pre_id, "container exited with 1"),
    ]
    for stage, order, pre, desc in rows:
        columns = ("group_name, user_name, destination_id, destination_type, stage, uuid,"
                   " files, file_names, preprocessing_id")
        values = ":g, :u, :d, :t, :s, :uuid, :f, :n, :p"
        params = {"g": "Lab A", "u": "alice", "d": "12", "t": "Dataset" if pre is None else "Screen",
                  "s": stage, "uuid": order,
                  "f": json.dumps(["/data/Ünï cödé/a b.tif"], ensure_ascii=False),
                  "n": json.dumps(["a b.tif"]), "p": pre}
        if description:
            columns += ", description"
            values += ", :desc"
            params["desc"] = desc
        connection.execute(sa.text(f"INSERT INTO imports ({columns}) VALUES ({values})"), params)


def _seed_foreign(connection: sa.Connection) -> None:
    """Another application's tables in the same database, its own Alembic version included."""
    connection.execute(sa.text("CREATE TABLE other_app_table (id INTEGER PRIMARY KEY, note TEXT)"))
    connection.execute(sa.text("INSERT INTO other_app_table VALUES (1, 'keep me'), (2, 'me too')"))
    connection.execute(sa.text(
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
    connection.execute(sa.text("INSERT INTO alembic_version VALUES ('abcdef123456')"))


def _snapshot(engine: sa.Engine, table: str) -> list[tuple[Any, ...]]:
    """Every row; of ``imports``, the earlier ADI's columns (others are compared apart)."""
    columns = LEGACY_COLUMNS if table == "imports" else "*"
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(
            sa.text(f"SELECT {columns} FROM {table} ORDER BY 1"))]


def _imports_without_new_columns(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.text(
            "SELECT id, group_name, user_name, destination_id, destination_type, stage, uuid,"
            " timestamp, files, file_names, preprocessing_id FROM imports ORDER BY id"))]


def _version(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return migrate.current_revision(connection)


def _assert_head_schema(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names())
    assert {"imports", "imports_preprocessing", "adi_queue", migrate.VERSION_TABLE} <= tables
    columns = {c["name"]: c for c in inspector.get_columns("imports")}
    assert set(columns) == IMPORT_COLUMNS
    # (SQLite reports an INTEGER PRIMARY KEY as nullable: leave the key out.)
    assert {n for n, c in columns.items() if not c["nullable"]} - {"id"} == NOT_NULL - {"id"}
    assert {c["name"] for c in inspector.get_columns("imports_preprocessing")} == PREPROCESSING_COLUMNS
    indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("imports")}
    assert {("user_name",), ("uuid",), ("uuid", "timestamp")} <= indexes
    assert "imports_ix_uuid_timestamp" in {ix["name"] for ix in inspector.get_indexes("imports")}
    [fk] = inspector.get_foreign_keys("imports")
    assert (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]) == (
        ["preprocessing_id"], "imports_preprocessing", ["id"])
    assert _version(engine) == HEAD == migrate.head_revision()
    assert migrate.is_at_head(engine)


def _insert_pending(connection: sa.Connection, order: str, stage: str = "Import Pending") -> int:
    connection.execute(sa.text(
        "INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage,"
        " uuid, files) VALUES ('Lab A', 'alice', '1', 'Dataset', :s, :u, '[\"/data/x.tif\"]')"),
        {"s": stage, "u": order})
    return connection.execute(sa.text("SELECT max(id) FROM imports WHERE uuid = :u"),
                              {"u": order}).scalar_one()


def _queue(engine: sa.Engine, order: str | None = None) -> list[tuple[int, str]]:
    with engine.connect() as connection:
        sql = "SELECT event_id, uuid FROM adi_queue"
        if order:
            return [tuple(r) for r in connection.execute(
                sa.text(sql + " WHERE uuid = :u ORDER BY event_id"), {"u": order})]
        return [tuple(r) for r in connection.execute(sa.text(sql + " ORDER BY event_id"))]


@pytest.fixture
def pg_engine(make_pg_database: Callable[[], str]) -> Iterator[sa.Engine]:
    engine = make_engine(make_pg_database())
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "postgres":
        url = request.getfixturevalue("make_pg_database")()
    else:
        url = f"sqlite:///{tmp_path / 'migrations.sqlite'}"
    engine = make_engine(url)
    yield engine
    engine.dispose()


# --- the three starting points ---------------------------------------------------


def test_empty_database_reaches_head(any_engine: sa.Engine) -> None:
    with any_engine.begin() as connection:
        _seed_foreign(connection)
    assert migrate.upgrade(any_engine) == HEAD
    _assert_head_schema(any_engine)
    # Running again is a no-op.
    assert migrate.upgrade(any_engine) == HEAD
    assert _snapshot(any_engine, "other_app_table") == [(1, "keep me"), (2, "me too")]
    assert _snapshot(any_engine, "alembic_version") == [("abcdef123456",)]


def test_earlier_adi_database_without_version_table_is_adopted(any_engine: sa.Engine) -> None:
    dialect = any_engine.dialect.name
    with any_engine.begin() as connection:
        for ddl in _legacy_ddl(dialect):
            connection.execute(sa.text(ddl))
        _seed(connection)
        _seed_foreign(connection)
    imports = _snapshot(any_engine, "imports")
    preprocessing = _snapshot(any_engine, "imports_preprocessing")
    assert len(imports) == 5 and len(preprocessing) == 1

    with pytest.raises(migrate.MigrationError) as refused:
        migrate.upgrade(any_engine)
    message = str(refused.value)
    assert "ADI_ALLOW_AUTO_STAMP" in message and migrate.VERSION_TABLE in message
    # Refusing changes nothing.
    tables = set(sa.inspect(any_engine).get_table_names())
    assert migrate.VERSION_TABLE not in tables and "adi_queue" not in tables
    assert _snapshot(any_engine, "imports") == imports

    assert migrate.upgrade(any_engine, allow_auto_stamp=True) == HEAD
    _assert_head_schema(any_engine)
    assert _snapshot(any_engine, "imports") == imports
    assert _snapshot(any_engine, "imports_preprocessing") == preprocessing
    assert _snapshot(any_engine, "other_app_table") == [(1, "keep me"), (2, "me too")]
    assert _snapshot(any_engine, "alembic_version") == [("abcdef123456",)]
    # Ids continue after the adopted rows; the queue works for new orders.
    with any_engine.begin() as connection:
        new_id = _insert_pending(connection, "new-order")
    assert new_id == 6
    assert _queue(any_engine, "new-order") == [(6, "new-order")]


def test_database_at_the_earlier_revision_reaches_head(any_engine: sa.Engine) -> None:
    dialect = any_engine.dialect.name
    with any_engine.begin() as connection:
        for ddl in _legacy_ddl(dialect):
            connection.execute(sa.text(ddl))
        connection.execute(sa.text(
            f"CREATE TABLE {migrate.VERSION_TABLE} "
            "(version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        connection.execute(sa.text(f"INSERT INTO {migrate.VERSION_TABLE} VALUES ('{LEGACY}')"))
        _seed(connection)
        _seed_foreign(connection)
    imports = _snapshot(any_engine, "imports")
    preprocessing = _snapshot(any_engine, "imports_preprocessing")
    assert _version(any_engine) == LEGACY

    assert migrate.upgrade(any_engine) == HEAD  # no auto stamp needed
    _assert_head_schema(any_engine)
    assert _snapshot(any_engine, "imports") == imports
    assert _snapshot(any_engine, "imports_preprocessing") == preprocessing
    assert _snapshot(any_engine, "other_app_table") == [(1, "keep me"), (2, "me too")]
    assert _snapshot(any_engine, "alembic_version") == [("abcdef123456",)]


def test_pre_description_schema_gets_the_column(any_engine: sa.Engine) -> None:
    with any_engine.begin() as connection:
        for ddl in _legacy_ddl(any_engine.dialect.name, description=False):
            connection.execute(sa.text(ddl))
        _seed(connection, description=False)
        _seed_foreign(connection)
    assert "description" not in {c["name"] for c in sa.inspect(any_engine).get_columns("imports")}
    before = _imports_without_new_columns(any_engine)

    assert migrate.upgrade(any_engine, allow_auto_stamp=True) == HEAD
    _assert_head_schema(any_engine)
    assert _imports_without_new_columns(any_engine) == before
    with any_engine.connect() as connection:
        assert connection.execute(sa.text(
            "SELECT count(*) FROM imports WHERE description IS NOT NULL")).scalar_one() == 0
    assert _snapshot(any_engine, "other_app_table") == [(1, "keep me"), (2, "me too")]
    assert _snapshot(any_engine, "alembic_version") == [("abcdef123456",)]


def test_tables_made_by_the_models_are_adopted(any_engine: sa.Engine) -> None:
    """A client's ``create_all`` (the earlier ADI's start-up) then auto stamp."""
    from omero_adi.store.models import IngestionTracking, Preprocessing

    IngestionTracking.metadata.create_all(
        any_engine, tables=[Preprocessing.__table__, IngestionTracking.__table__])
    with any_engine.begin() as connection:
        _seed(connection)
    imports = _snapshot(any_engine, "imports")
    assert migrate.upgrade(any_engine, allow_auto_stamp=True) == HEAD
    _assert_head_schema(any_engine)
    assert _snapshot(any_engine, "imports") == imports


# --- racing migrators --------------------------------------------------------------


def _migrate_after_barrier(url: str, barrier: Any, results: Any) -> None:
    from omero_adi.store import migrate as child_migrate
    from omero_adi.store.db import make_engine as child_make_engine

    engine = child_make_engine(url)
    barrier.wait(timeout=60)
    try:
        results.put(("ok", child_migrate.upgrade(engine)))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_racing_migrators_on_an_empty_database(request: pytest.FixtureRequest, tmp_path: Path,
                                               kind: str) -> None:
    """Several daemons (or a daemon and the CLI) starting at once: PostgreSQL
    serialises them with an advisory lock, SQLite with a lock file."""
    if kind == "postgres":
        url = request.getfixturevalue("make_pg_database")()
    else:
        url = f"sqlite:///{tmp_path / 'raced.sqlite'}"
    context = multiprocessing.get_context("spawn")
    racers = 4
    barrier = context.Barrier(racers)
    results = context.Queue()
    processes = [context.Process(target=_migrate_after_barrier, args=(url, barrier, results))
                 for _ in range(racers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    outcomes = [results.get(timeout=5) for _ in range(racers)]
    assert [p.exitcode for p in processes] == [0] * racers, outcomes
    assert outcomes == [("ok", HEAD)] * racers
    engine = make_engine(url)
    try:
        _assert_head_schema(engine)
        with engine.connect() as connection:
            assert connection.execute(sa.text(
                f"SELECT count(*) FROM {migrate.VERSION_TABLE}")).scalar_one() == 1
    finally:
        engine.dispose()


def _cli_command(args: list[str], **env: str) -> tuple[list[str], dict[str, str]]:
    """``python -m omero_adi ARGS`` and its environment: the site's ADI
    variables removed, ``env`` added."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("INGEST_TRACKING_DB_URL", "ADI_SETTINGS", "ADI_ALLOW_AUTO_STAMP",
                                "ADI_RUN_MIGRATIONS")}
    environment.update(env)
    return [sys.executable, "-m", "omero_adi", *args], environment


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    command, environment = _cli_command(args, **env)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=120)


def test_two_cli_migrators_started_together(make_pg_database: Callable[[], str],
                                            tmp_path: Path) -> None:
    url = make_pg_database()
    command, env = _cli_command(["migrate"], INGEST_TRACKING_DB_URL=url)
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert all("(head)" in out for out, _ in outputs), outputs
    engine = make_engine(url)
    try:
        _assert_head_schema(engine)
    finally:
        engine.dispose()


# --- downgrade and upgrade of our own revision -----------------------------------------


def _has_queue_trigger(engine: sa.Engine) -> bool:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            triggers = connection.execute(sa.text(
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'adi_imports_pending'")).scalar_one()
            functions = connection.execute(sa.text(
                "SELECT count(*) FROM pg_proc WHERE proname = 'adi_enqueue_pending'")).scalar_one()
            assert triggers == functions
            return bool(triggers)
        names = connection.execute(sa.text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars().all()
        return bool({"adi_imports_pending_insert", "adi_imports_pending_update"} & set(names))


def test_downgrade_and_upgrade_the_queue_revision(any_engine: sa.Engine) -> None:
    with any_engine.begin() as connection:
        _seed_foreign(connection)
    assert migrate.upgrade(any_engine) == HEAD
    with any_engine.begin() as connection:
        _seed(connection)
    imports = _snapshot(any_engine, "imports")
    preprocessing = _snapshot(any_engine, "imports_preprocessing")
    assert _has_queue_trigger(any_engine) and len(_queue(any_engine)) == 2

    assert migrate.downgrade(any_engine, LEGACY) == LEGACY
    assert _version(any_engine) == LEGACY
    assert "adi_queue" not in sa.inspect(any_engine).get_table_names()
    assert not _has_queue_trigger(any_engine)
    assert _snapshot(any_engine, "imports") == imports
    assert _snapshot(any_engine, "imports_preprocessing") == preprocessing
    # Clients keep writing while downgraded: no trigger left to trip over.
    with any_engine.begin() as connection:
        _insert_pending(connection, "while-down")
    imports = _snapshot(any_engine, "imports")

    assert migrate.upgrade(any_engine) == HEAD
    _assert_head_schema(any_engine)
    assert _has_queue_trigger(any_engine)
    assert _snapshot(any_engine, "imports") == imports
    assert _snapshot(any_engine, "imports_preprocessing") == preprocessing
    with any_engine.begin() as connection:
        new_id = _insert_pending(connection, "after-up")
    assert _queue(any_engine, "after-up") == [(new_id, "after-up")]
    assert _snapshot(any_engine, "other_app_table") == [(1, "keep me"), (2, "me too")]
    assert _snapshot(any_engine, "alembic_version") == [("abcdef123456",)]


# --- the queue trigger ------------------------------------------------------------------


def test_pending_rows_and_retries_are_queued(any_engine: sa.Engine) -> None:
    migrate.upgrade(any_engine)
    order = str(uuidlib.uuid4())
    with any_engine.begin() as connection:
        pending = _insert_pending(connection, order)
    assert _queue(any_engine) == [(pending, order)]

    with any_engine.begin() as connection:
        started = _insert_pending(connection, order, "Import Started")
        failed = _insert_pending(connection, order, "Import Failed")
        other = _insert_pending(connection, "other-order", "Import Completed")
        connection.execute(sa.text(
            "UPDATE adi_queue SET finished_at = CURRENT_TIMESTAMP, outcome = 'failed'"
            " WHERE event_id = :e"), {"e": pending})
    assert _queue(any_engine) == [(pending, order)]  # only Pending events are queued
    assert other not in [e for e, _ in _queue(any_engine)]

    # The operators' retry recipe.
    with any_engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE imports SET stage = 'Import Pending' WHERE uuid = :u"), {"u": order})
    assert _queue(any_engine, order) == [(pending, order), (started, order), (failed, order)]
    with any_engine.connect() as connection:
        waiting = connection.execute(sa.text(
            "SELECT event_id FROM adi_queue WHERE finished_at IS NULL ORDER BY event_id")
        ).scalars().all()
    assert waiting == [started, failed]

    # Updating another column of a Pending row does not queue it again.
    with any_engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE imports SET description = 'note' WHERE uuid = :u"), {"u": order})
    assert len(_queue(any_engine, order)) == 3


def test_pending_insert_notifies_listeners(pg_engine: sa.Engine) -> None:
    migrate.upgrade(pg_engine)
    listener = pg_engine.raw_connection()
    try:
        listener.driver_connection.set_isolation_level(0)  # autocommit
        with listener.cursor() as cursor:
            cursor.execute("LISTEN omero_adi_orders")
        with pg_engine.begin() as connection:
            _insert_pending(connection, "notified-order")
        raw = listener.driver_connection
        ready, _, _ = select.select([raw], [], [], 10)
        assert ready, "no notification within 10 s"
        raw.poll()
        assert [n.payload for n in raw.notifies] == ["notified-order"]
    finally:
        listener.close()


# --- the command line -------------------------------------------------------------------


def test_cli_migrate_with_environment_url(make_pg_database: Callable[[], str],
                                          tmp_path: Path) -> None:
    url = make_pg_database()
    result = _cli(["migrate"], tmp_path, INGEST_TRACKING_DB_URL=url)
    assert result.returncode == 0, result.stderr
    assert "(head)" in result.stdout and HEAD in result.stdout
    again = _cli(["migrate"], tmp_path, INGEST_TRACKING_DB_URL=url)
    assert again.returncode == 0 and "(head)" in again.stdout
    engine = make_engine(url)
    try:
        _assert_head_schema(engine)
    finally:
        engine.dispose()
    assert not (tmp_path / "omero_adi.sqlite").exists()  # the URL was used, not the default


def test_cli_migrate_with_config_file(make_pg_database: Callable[[], str], tmp_path: Path) -> None:
    url = make_pg_database()
    config = tmp_path / "site.yml"
    config.write_text(yaml.safe_dump({"ingest_tracking_db": url}))
    result = _cli(["--config", str(config), "migrate"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(head)" in result.stdout
    engine = make_engine(url)
    try:
        _assert_head_schema(engine)
    finally:
        engine.dispose()


def test_cli_migrate_embedded_sqlite_default(tmp_path: Path) -> None:
    result = _cli(["migrate"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(head)" in result.stdout
    assert (tmp_path / "omero_adi.sqlite").exists()


def test_cli_migrate_legacy_database_needs_auto_stamp(make_pg_database: Callable[[], str],
                                                      tmp_path: Path) -> None:
    url = make_pg_database()
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for ddl in _legacy_ddl("postgresql"):
                connection.execute(sa.text(ddl))
            _seed(connection)
        refused = _cli(["migrate"], tmp_path, INGEST_TRACKING_DB_URL=url)
        assert refused.returncode != 0
        assert "ADI_ALLOW_AUTO_STAMP" in refused.stderr
        adopted = _cli(["migrate"], tmp_path, INGEST_TRACKING_DB_URL=url, ADI_ALLOW_AUTO_STAMP="1")
        assert adopted.returncode == 0, adopted.stderr
        assert "(head)" in adopted.stdout
        _assert_head_schema(engine)
        assert len(_snapshot(engine, "imports")) == 5
    finally:
        engine.dispose()


# --- BIOMERO.importer's revision (contracts §8) ------------------------------------------

FLAT_OPTIONS = {"schema": 1, "platePixelSource": "label", "plateLabelName": "nuclei"}
ENVELOPE_OPTIONS = {"schema": 2, "registration": {"schema": 1, "platePixelSource": "source"},
                    "operations": [{"kind": "biomero.shallow-zarr", "phase": "postprocess"}]}


def _seed_successor(connection: sa.Connection, version_table: bool = True) -> None:
    """A database BIOMERO.importer made: its tables, its revision, orders with options."""
    for ddl in _legacy_ddl(connection.dialect.name, import_options=True):
        connection.execute(sa.text(ddl))
    if version_table:
        connection.execute(sa.text(
            f"CREATE TABLE {migrate.VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        connection.execute(sa.text(f"INSERT INTO {migrate.VERSION_TABLE} VALUES ('{SUCCESSOR}')"))
    _seed(connection)
    for order, options in (("opt-flat", FLAT_OPTIONS), ("opt-envelope", ENVELOPE_OPTIONS)):
        connection.execute(sa.text(
            "INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage,"
            " uuid, files, file_names, import_options) VALUES ('Lab A', 'alice', '3', 'Screen',"
            " 'Import Pending', :u, '[\"/data/p.zarr\"]', '[]', :o)"),
            {"u": order, "o": json.dumps(options)})


def _options(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        return {r.uuid: r.import_options for r in connection.execute(sa.text(
            "SELECT uuid, import_options FROM imports WHERE import_options IS NOT NULL"))}


def _successor_chain_upgrades(engine: sa.Engine, tmp_path: Path) -> None:
    """What BIOMERO.importer does at start-up: ``alembic upgrade head`` with a script
    directory of only its own two revisions; it fails on a revision it does not know."""
    from alembic import command

    scripts = tmp_path / "successor_migrations"
    (scripts / "versions").mkdir(parents=True)
    source = REPO / "migrations"
    for name in ("env.py", "script.py.mako"):
        (scripts / name).write_text((source / name).read_text())
    for revision in (LEGACY, SUCCESSOR):
        [path] = (source / "versions").glob(f"{revision}_*.py")
        (scripts / "versions" / path.name).write_text(path.read_text())
    with engine.connect() as connection:
        config = migrate._config(connection)
        config.set_main_option("script_location", str(scripts))
        command.upgrade(config, "head")
        connection.commit()


def test_successor_database_reaches_head_with_its_options(any_engine: sa.Engine,
                                                           tmp_path: Path) -> None:
    with any_engine.begin() as connection:
        _seed_successor(connection)
        _seed_foreign(connection)
    imports, options = _snapshot(any_engine, "imports"), _options(any_engine)
    assert _version(any_engine) == SUCCESSOR and len(options) == 2

    assert migrate.upgrade(any_engine) == HEAD  # no auto stamp: it has a version
    _assert_head_schema(any_engine)
    assert _snapshot(any_engine, "imports") == imports
    assert _options(any_engine) == options
    assert json.loads(options["opt-flat"]) == FLAT_OPTIONS
    assert _snapshot(any_engine, "other_app_table") == [(1, "keep me"), (2, "me too")]
    with any_engine.begin() as connection:
        new_id = _insert_pending(connection, "after-successor")
    assert _queue(any_engine, "after-successor") == [(new_id, "after-successor")]

    # And back: exactly BIOMERO.importer's revision, which its own chain accepts.
    assert migrate.downgrade(any_engine, SUCCESSOR) == SUCCESSOR
    with any_engine.connect() as connection:
        assert connection.execute(sa.text(
            f"SELECT version_num FROM {migrate.VERSION_TABLE}")).scalars().all() == [SUCCESSOR]
    assert "adi_queue" not in sa.inspect(any_engine).get_table_names()
    assert not _has_queue_trigger(any_engine)
    assert _options(any_engine) == options
    assert len(_snapshot(any_engine, "imports")) == len(imports) + 1
    _successor_chain_upgrades(any_engine, tmp_path)
    assert _version(any_engine) == SUCCESSOR


def test_successor_tables_without_version_are_adopted(any_engine: sa.Engine) -> None:
    """BIOMERO.importer's create_all made the column already: revision 92e8f9e637a1
    leaves it (and its rows) as they are."""
    with any_engine.begin() as connection:
        _seed_successor(connection, version_table=False)
    imports, options = _snapshot(any_engine, "imports"), _options(any_engine)
    assert migrate.upgrade(any_engine, allow_auto_stamp=True) == HEAD
    _assert_head_schema(any_engine)
    assert (_snapshot(any_engine, "imports"), _options(any_engine)) == (imports, options)


def test_downgrade_from_head_to_the_successor_revision(any_engine: sa.Engine,
                                                       tmp_path: Path) -> None:
    """A site going back to BIOMERO.importer: rows written by omero-adi stay."""
    assert migrate.upgrade(any_engine) == HEAD
    with any_engine.begin() as connection:
        _seed(connection)
        connection.execute(sa.text("UPDATE imports SET import_options = :o WHERE id = 1"),
                           {"o": json.dumps(FLAT_OPTIONS)})
    imports, options = _snapshot(any_engine, "imports"), _options(any_engine)

    assert migrate.downgrade(any_engine, SUCCESSOR) == SUCCESSOR
    assert {c["name"] for c in sa.inspect(any_engine).get_columns("imports")} == IMPORT_COLUMNS
    assert (_snapshot(any_engine, "imports"), _options(any_engine)) == (imports, options)
    _successor_chain_upgrades(any_engine, tmp_path)

    # Down to the earlier ADI's revision: the column goes, the rows stay.
    assert migrate.downgrade(any_engine, LEGACY) == LEGACY
    assert "import_options" not in {c["name"] for c in sa.inspect(any_engine).get_columns("imports")}
    assert _snapshot(any_engine, "imports") == imports
    assert migrate.upgrade(any_engine) == HEAD
    _assert_head_schema(any_engine)


def test_cli_downgrade_to_the_successor_revision(make_pg_database: Callable[[], str],
                                                 tmp_path: Path) -> None:
    url = make_pg_database()
    assert _cli(["migrate"], tmp_path, INGEST_TRACKING_DB_URL=url).returncode == 0
    down = _cli(["migrate", "--downgrade", SUCCESSOR], tmp_path, INGEST_TRACKING_DB_URL=url)
    assert down.returncode == 0, down.stderr
    assert f"at revision {SUCCESSOR}" in down.stdout and "(head)" not in down.stdout


def test_cli_migrate_falls_back_to_sqlalchemy_url(make_pg_database: Callable[[], str],
                                                  tmp_path: Path) -> None:
    url = make_pg_database()
    result = _cli(["migrate"], tmp_path, SQLALCHEMY_URL=url)
    assert result.returncode == 0, result.stderr
    assert "(head)" in result.stdout
    assert not (tmp_path / "omero_adi.sqlite").exists()
    engine = make_engine(url)
    try:
        _assert_head_schema(engine)
    finally:
        engine.dispose()
