"""Both generations' clients (contracts §2, §8): ``omero_adi`` and ``biomero_importer``
module paths, rows identical to the earlier ADI's, and ``ImportOptions`` from the
client API, the module and plain SQL through the daemon."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

import biomero_importer
from omero_adi.import_options import ImportOptions
from omero_adi.pipeline import OrderContext
from omero_adi.store import tracker as tracker_module
from omero_adi.store.client_api import OrderNotRecorded
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED
from omero_adi.store.session import open_store
from tests.helpers import current_stage, insert_order, running_daemon, wait_for
from tests.test_daemon import make_settings
from tests.test_store_client import (  # noqa: F401  (_no_global_tracker: autouse fixture)
    _no_global_tracker,
    leica_order,
    plain_order,
    screen_order,
)

MODULES = ["omero_adi.utils.ingest_tracker", "biomero_importer.utils.ingest_tracker"]
SHAPES = {"plain": plain_order, "screen": screen_order, "leica": lambda: leica_order("img-1")}
FLAT = {"schema": 1, "platePixelSource": "label", "plateLabelName": "nuclei"}
SHALLOW = {"schema": 2, "registration": {"schema": 1, "platePixelSource": "source"},
           "operations": [{"kind": "biomero.shallow-zarr", "phase": "postprocess"}]}


@pytest.fixture(params=MODULES)
def module(request: pytest.FixtureRequest, db_url: str) -> ModuleType:
    """A client module, initialised on a fresh database of each kind."""
    client = importlib.import_module(request.param)
    assert client.initialize_ingest_tracker({"ingest_tracking_db": db_url}) is True
    return client


def rows(engine: sa.Engine, uuid: str) -> list[Any]:
    with engine.connect() as connection:
        return connection.execute(sa.text(
            "SELECT i.*, p.container, p.input_file, p.output_folder, p.alt_output_folder,"
            " p.extra_params FROM imports i LEFT JOIN imports_preprocessing p"
            " ON p.id = i.preprocessing_id WHERE i.uuid = :u ORDER BY i.id"), {"u": uuid}).all()


def earlier_adi_row(order: dict[str, Any]) -> dict[str, Any]:
    """The ``imports`` text columns the earlier ADI wrote for ``order`` (json.dumps,
    its defaults, ``FileNames`` absent as ``[]``), and its preprocessing columns."""
    expected = {
        "group_name": order["Group"], "user_name": order["Username"],
        "destination_id": str(order["DestinationID"]),
        "destination_type": order["DestinationType"], "stage": "Import Pending",
        "uuid": order["UUID"], "files": json.dumps(order["Files"]),
        "file_names": json.dumps(order.get("FileNames", [])), "description": None,
        "import_options": None,
    }
    if "preprocessing_container" in order:
        expected.update(container=order["preprocessing_container"],
                        input_file=order["preprocessing_inputfile"],
                        output_folder=order["preprocessing_outputfolder"],
                        alt_output_folder=order["preprocessing_altoutputfolder"])
    return expected


# --- the two module paths -------------------------------------------------------------


def test_both_paths_export_the_same_objects() -> None:
    import biomero_importer.utils.ingest_tracker as successor
    import omero_adi.utils.ingest_tracker as earlier

    assert successor.__all__ == earlier.__all__
    for name in earlier.__all__:
        assert getattr(successor, name) is getattr(earlier, name), name
    for name in ("submit_import_order", "get_importer_capabilities", "supports_import_options",
                 "UnsupportedImportOperation"):
        assert callable(getattr(biomero_importer, name))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_web_plugin_orders_give_the_earlier_adis_rows(module: ModuleType, shape: str) -> None:
    order = SHAPES[shape]()
    order["Files"] = ["/data/Ünï cödé/plate 1.tif", *order["Files"][1:]]
    event_id = module.log_ingestion_step(order, module.STAGE_NEW_ORDER)
    tracker = module.get_ingest_tracker()
    [row] = rows(tracker.engine, order["UUID"])
    assert row.id == event_id
    written = {key: getattr(row, key) for key in earlier_adi_row(order)}
    assert written == earlier_adi_row(order)
    assert "\\u00dc" in row.files  # non-ASCII escaped, as json.dumps wrote it
    extra = row.extra_params if not isinstance(row.extra_params, str) else json.loads(
        row.extra_params)
    assert extra == (order.get("extra_params") or None)
    with tracker.Session() as session:
        event = session.get(module.IngestionTracking, event_id)
        assert (event.files, event.file_names, event.import_options) == (order["Files"], [], {})


def test_file_names_written_every_other_way(module: ModuleType) -> None:
    tracker = module.get_ingest_tracker()
    explicit_none = plain_order(FileNames=None)
    module.log_ingestion_step(explicit_none, module.STAGE_NEW_ORDER)
    by_orm, by_sql = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    with tracker.Session() as session, session.begin():
        session.add(module.IngestionTracking(
            group_name="g", user_name="u", destination_id="1", destination_type="Dataset",
            stage=module.STAGE_NEW_ORDER, uuid=by_orm, files=["/data/a.tif"]))
    insert_order(tracker.engine, by_sql, ["/data/b.tif"])
    # As the earlier ADI: json.dumps(None), and nothing at all where nothing was set.
    assert [r.file_names for r in rows(tracker.engine, explicit_none["UUID"])] == ["null"]
    assert [r.file_names for r in rows(tracker.engine, by_orm)] == [None]
    assert [r.file_names for r in rows(tracker.engine, by_sql)] == [None]
    with tracker.Session() as session:
        loaded = session.scalars(sa.select(module.IngestionTracking).where(
            module.IngestionTracking.uuid.in_([by_orm, by_sql]))).all()
        assert [e.file_names for e in loaded] == [[], []]  # its getter read NULL as []


def test_import_options_by_module(module: ModuleType) -> None:
    tracker = module.get_ingest_tracker()
    with_options = plain_order(ImportOptions=FLAT)
    empty = plain_order(ImportOptions={})
    for order in (with_options, empty):
        module.log_ingestion_step(order, module.STAGE_NEW_ORDER)
    [row] = rows(tracker.engine, with_options["UUID"])
    assert json.loads(row.import_options) == FLAT
    assert [r.import_options for r in rows(tracker.engine, empty["UUID"])] == [None]
    with tracker.Session() as session:
        events = session.scalars(sa.select(module.IngestionTracking).order_by(
            module.IngestionTracking.id)).all()
        assert [e.import_options for e in events] == [FLAT, {}]
    assert module.log_ingestion_step(plain_order(ImportOptions=["x"]), "Import Pending") is None


def test_python_m_biomero_importer_main_is_the_daemon(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "biomero_importer.main", "--help"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "run the import daemon" in done.stdout


# --- the client API ----------------------------------------------------------------------


def test_capabilities_say_what_this_importer_does(monkeypatch: pytest.MonkeyPatch) -> None:
    capabilities = biomero_importer.get_importer_capabilities()
    assert capabilities == {"schema": 1, "importOptionsSchemas": [1, 2],
                            "lifecycleOperations": [], "externalPreprocessing": True,
                            "configurationErrors": []}
    monkeypatch.setenv("BIOMERO_SHALLOW_ZARR", "true")
    [error] = biomero_importer.get_importer_capabilities()["configurationErrors"]
    assert "biomero.shallow-zarr" in error
    assert biomero_importer.get_importer_capabilities()["lifecycleOperations"] == []


@pytest.mark.parametrize("options, supported", [
    (None, True), ({}, True), (FLAT, True), ({"schema": 2, "operations": []}, True),
    ({"schema": 2, "registration": FLAT}, True), (SHALLOW, False),
])
def test_supports_import_options(options: Any, supported: bool) -> None:
    assert biomero_importer.supports_import_options(options) is supported


@pytest.mark.parametrize("options, named", [
    ({"schema": 3}, "schema 3"), ({"schema": 1, "platePixelSource": "labels"}, "platePixelSource"),
    ({"schema": 1, "platePixelSource": "label"}, "needs plateLabelName"),
    ({"platePixelSource": "label", "plateLabelName": "a/b"}, "not a path"),
    ({"platePixelSource": "source", "plateLabelName": "nuclei"}, "only used with"),
    ({"schema": 1, "pixelSource": "label"}, "'pixelSource'"),
    ({"schema": 2, "operations": [{"phase": "postprocess"}]}, "operations[0]"),
    ("not json", "not valid JSON"),
])
def test_malformed_options_name_the_key(options: Any, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("[", r"\[")):
        biomero_importer.supports_import_options(options)


def test_submit_import_order(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    order = plain_order(ImportOptions={"schema": 2, "operations": [], "registration": FLAT})
    with pytest.raises(OrderNotRecorded, match="INGEST_TRACKING_DB_URL"):
        biomero_importer.submit_import_order(order)
    monkeypatch.setenv("INGEST_TRACKING_DB_URL", db_url)
    assert biomero_importer.submit_import_order(order) == order["UUID"]
    engine = tracker_module.get_ingest_tracker().engine  # type: ignore[union-attr]
    [row] = rows(engine, order["UUID"])
    assert (row.stage, json.loads(row.import_options)) == ("Import Pending",
                                                           order["ImportOptions"])
    with pytest.raises(ValueError, match="lacks DestinationType, Files"):
        biomero_importer.submit_import_order(
            {k: v for k, v in order.items() if k not in ("DestinationType", "Files")})
    refused = plain_order(ImportOptions=SHALLOW)
    with pytest.raises(biomero_importer.UnsupportedImportOperation,
                       match="'biomero.shallow-zarr' are not supported"):
        biomero_importer.submit_import_order(refused)
    assert rows(engine, refused["UUID"]) == []


# --- through the daemon --------------------------------------------------------------------


def test_daemon_applies_copies_or_refuses_import_options(make_pg_database: Any,
                                                          tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "plate.zarr").mkdir(parents=True)
    (data / "image.tif").write_bytes(b"pixels")
    settings = make_settings(make_pg_database(), data, use_register_zarr=True)
    engine = open_store(settings)
    seen: dict[str, ImportOptions] = {}

    def handler(ctx: OrderContext) -> str:
        seen[ctx.order.uuid] = ctx.order.import_options
        return "imported"

    tif, zarr = [str(data / "image.tif")], [str(data / "plate.zarr")]
    cases = {  # uuid: (files, type, import_options text), by plain SQL as scripts write them
        "label-plate": (zarr, "Screen", json.dumps(FLAT)),
        "enveloped": (tif, "Dataset", json.dumps({"schema": 2, "operations": []})),
        "shallow": (zarr, "Screen", json.dumps(SHALLOW)),
        "label-on-tif": (tif, "Screen", json.dumps(FLAT)),
        "label-in-dataset": (zarr, "Dataset", json.dumps(FLAT)),
        "not-json": (tif, "Dataset", "{schema: 1"),
    }
    with running_daemon(settings, engine, handler):
        with engine.begin() as connection:
            for uuid, (files, kind, options) in cases.items():
                insert_order(connection, uuid, files, type=kind)
                connection.execute(sa.text("UPDATE imports SET import_options = :o WHERE uuid = :u"),
                                   {"o": options, "u": uuid})
        wait_for(lambda: all(current_stage(engine, u) in (STAGE_IMPORTED, STAGE_INGEST_FAILED)
                             for u in cases), timeout=60, what="all orders to finish")

    assert seen == {"label-plate": ImportOptions("label", "nuclei"), "enveloped": ImportOptions()}
    for uuid in ("label-plate", "enveloped"):
        history = rows(engine, uuid)
        assert [r.stage for r in history] == ["Import Pending", "Import Started", STAGE_IMPORTED]
        assert {r.import_options for r in history} == {cases[uuid][2]}  # on every stage row
    failures = {uuid: rows(engine, uuid)[-1] for uuid in cases if uuid not in seen}
    assert all(r.stage == STAGE_INGEST_FAILED for r in failures.values())
    assert "'biomero.shallow-zarr' are not supported" in failures["shallow"].description
    assert failures["shallow"].import_options == cases["shallow"][2]
    assert "the order names no .zarr store" in failures["label-on-tif"].description
    assert "the destination is a Dataset" in failures["label-in-dataset"].description
    assert "ImportOptions is not valid JSON" in failures["not-json"].description


def test_label_option_needs_use_register_zarr(make_pg_database: Any, tmp_path: Path) -> None:
    (tmp_path / "plate.zarr").mkdir()
    settings = make_settings(make_pg_database(), tmp_path)
    engine = open_store(settings)
    with running_daemon(settings, engine, lambda ctx: "imported"):
        with engine.begin() as connection:  # one transaction: the daemon sees it whole
            insert_order(connection, "label-off", [str(tmp_path / "plate.zarr")], type="Screen")
            connection.execute(sa.text("UPDATE imports SET import_options = :o"),
                               {"o": json.dumps(FLAT)})
        wait_for(lambda: current_stage(engine, "label-off") == STAGE_INGEST_FAILED,
                 what="the order to fail")
    description = rows(engine, "label-off")[-1].description
    assert "platePixelSource 'label'" in description and "use_register_zarr is off" in description
