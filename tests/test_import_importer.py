"""DataPackageImporter against the OMERO stand-in (fake CLI + in-process server)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from omero_adi.importing.importer import DataPackageImporter
from omero_adi.importing.results import ImportFailed, ImportItem
from omero_adi.orders import Order, PreprocessingSpec
from omero_adi.pipeline import OrderContext, OrderFailed, OrderInterrupted
from omero_adi.settings import Settings
from tests.omero_standin import Standin
from tests.omero_standin.fixtures import standin  # noqa: F401  (fixture)

TEMPLATE = re.compile(r"^alice_\d+/\d{4}-\d{2}/\d{2}/\d{2}-\d{2}-\d{2}\.\d{3}(__\d+)?$")
BASE_KEYS = ["UUID", "Filepath", "Group", "Username", "DestinationID", "DestinationType",
             "Files", "FileNames"]


class World:
    """A stand-in server with a group, users and destinations, and a data folder."""

    def __init__(self, standin: Standin, tmp_path: Path):
        self.standin = standin
        self.server = standin.server
        self.data = tmp_path / "data"
        self.data.mkdir()
        for group in ("lab", "other"):
            self.server.add_group(group)
        self.server.add_user("alice", ["lab"])
        self.server.add_user("bob", ["other"])
        self.dataset = self.server.add_container("Dataset", "lab", "alice")
        self.screen = self.server.add_container("Screen", "lab", "alice")
        self.settings = Settings(
            omero_cli=str(standin.cli), log_file_path=str(tmp_path / "logs" / "app.logs"),
            base_dir=str(self.data), omero_connect_retries=3, import_timeout=60,
            managed_repository=str(standin.managed_repository),
        )
        self.importer = DataPackageImporter(self.server, retry_delay=0.01)
        self.count = 0
        self.emitted: list[tuple[str, str]] = []

    def file(self, name: str, content: bytes = b"pixels") -> Path:
        path = self.data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content + name.encode())
        return path

    def order(self, *files: Path, kind: str = "Dataset", user: str = "alice",
              group: str = "lab", destination: int | None = None) -> Order:
        self.count += 1
        if destination is None:
            destination = self.dataset if kind == "Dataset" else self.screen
        return Order(event_id=self.count, uuid=f"order-{self.count}", group=group, user=user,
                     destination_id=destination, destination_type=kind,  # type: ignore[arg-type]
                     files=files, file_names=tuple(f.name for f in files))

    def context(self, order: Order, **settings: Any) -> OrderContext:
        return OrderContext(
            order=order, settings=replace(self.settings, **settings),
            log=logging.LoggerAdapter(logging.getLogger("test.order"), {}),
            record_stage=lambda stage, description: None, cancelled=threading.Event(),
            emit=lambda what, detail: self.emitted.append((what, detail)),
        )

    def run(self, order: Order, **settings: Any) -> str:
        return self.importer(self.context(order, **settings))

    def fail(self, order: Order, **settings: Any) -> str:
        with pytest.raises(OrderFailed) as failure:
            self.run(order, **settings)
        return str(failure.value)

    def annotations(self) -> list[dict[str, Any]]:
        return self.standin.read()["annotations"]

    def checksums(self) -> dict[Path, str]:
        return {p: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.data.rglob("*")) if p.is_file()}


@pytest.fixture
def world(standin: Standin, tmp_path: Path) -> World:  # noqa: F811
    return World(standin, tmp_path)


def _values(annotation: dict[str, Any]) -> dict[str, str]:
    return dict(annotation["values"])


def test_single_file_into_a_dataset(world: World) -> None:
    image = world.file("cells.tif")
    before = world.checksums()
    description = world.run(world.order(image))
    state = world.standin.read()
    (fileset_id, fileset), = state["filesets"].items()
    assert TEMPLATE.match(fileset["template_prefix"]), fileset["template_prefix"]
    link = world.standin.managed_repository / fileset["template_prefix"] / "cells.tif"
    assert link.is_symlink() and link.resolve() == image.resolve()
    (image_id,) = fileset["images"]
    assert state["images"][str(image_id)]["dataset"] == world.dataset
    assert description == (f"Imported 1 fileset(s) into Dataset {world.dataset}: "
                           f"{image} → Fileset {fileset_id} (Image {image_id})")
    (annotation,) = world.annotations()
    assert (annotation["kind"], annotation["object_id"]) == ("Image", image_id)
    assert annotation["namespace"] == "omeroadi.import"
    values = _values(annotation)
    assert list(values) == BASE_KEYS + ["Import_Timestamp"]
    assert values["Filepath"] == str(image) and values["Username"] == "alice"
    assert values["Files"] == f'["{image}"]' and values["FileNames"] == '["cells.tif"]'
    assert all(s["closed"] for s in state["sessions"].values())
    assert world.checksums() == before
    assert world.emitted == [("importer_exit", "0")]


def test_plate_into_a_screen(world: World) -> None:
    plate = world.file("plate_series4.xdce")
    world.run(world.order(plate, kind="Screen"))
    state = world.standin.read()
    (plate_id, stored), = state["plates"].items()
    assert stored["screen"] == world.screen and len(stored["images"]) == 4
    (annotation,) = world.annotations()
    assert (annotation["kind"], annotation["object_id"]) == ("Plate", int(plate_id))
    assert _values(annotation)["DestinationType"] == "Screen"


def test_several_files_in_one_importer_run(world: World) -> None:
    files = [world.file(f"img{i}.tif") for i in range(3)]
    order = world.order(*files)
    world.run(order)
    (call,) = world.standin.import_calls()
    session_key = call[call.index("-k") + 1]
    logs = Path(world.settings.log_file_path).parent
    assert call == [
        "import", "-k", session_key, "-s", "localhost", "-p", "4064",
        "--transfer=ln_s", "--no-upgrade",
        "--file", str(logs / f"cli.{order.uuid}.logs"),
        "--errs", str(logs / f"cli.{order.uuid}.errs"),
        "--output", "yaml", "--parallel-upload", "2", "--parallel-fileset", "2",
        "--depth", "10", "-d", str(world.dataset), *map(str, files),
    ]
    filepaths = sorted(_values(a)["Filepath"] for a in world.annotations())
    assert filepaths == sorted(map(str, files))
    assert world.standin.read()["admin_logins"] == 1


def test_admin_session_is_reused_across_orders(world: World) -> None:
    world.run(world.order(world.file("a.tif")))
    world.run(world.order(world.file("b.tif")))
    state = world.standin.read()
    assert state["admin_logins"] == 1 and len(state["sessions"]) == 2


def test_a_directory_is_scanned(world: World) -> None:
    folder = world.data / "run1"
    inner = [world.file("run1/a.tif"), world.file("run1/deeper/b.tif")]
    world.file("run1/notes.txt")
    (folder / "metadata.csv").write_text("key,value\nmicroscope,Zeiss\n")
    before = world.checksums()
    world.run(world.order(folder))
    state = world.standin.read()
    used = sorted(f["used_files"][0] for f in state["filesets"].values())
    assert used == sorted(map(str, inner))
    values = [_values(a) for a in world.annotations()]
    assert [v["Filepath"] for v in values] == [str(folder)] * 2
    assert all(v["csv_microscope"] == "Zeiss" for v in values)
    assert world.checksums() == before


def test_metadata_csv_beside_the_file_and_in_processed(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    image = world.file("cells.tif")
    (world.data / "metadata.csv").write_text(
        "key,value\nstain,DAPI\nbroken row with,three,columns\nobjective,40x\n")
    (world.data / ".processed").mkdir()
    (world.data / ".processed" / "metadata.csv").write_text("objective,63x\n")
    with caplog.at_level(logging.WARNING):
        world.run(world.order(image))
    values = _values(world.annotations()[0])
    assert list(values) == BASE_KEYS + ["csv_stain", "csv_objective", "Import_Timestamp"]
    assert values["csv_stain"] == "DAPI" and values["csv_objective"] == "63x"
    assert "line 3 is not a 'key,value' row" in caplog.text


def test_one_bad_file_among_good_ones(world: World) -> None:
    good, bad, later = world.file("a.tif"), world.file("b_BROKEN.tif"), world.file("c.tif")
    before = world.checksums()
    description = world.fail(world.order(good, bad, later))
    (fileset_id, fileset), = world.standin.read()["filesets"].items()
    assert description.startswith("Import failed: the importer exited with status 2.")
    assert (f"Imported (not annotated): {good} → Fileset {fileset_id} "
            f"(Image {fileset['images'][0]})") in description
    assert f"Not imported: {bad}, {later}." in description
    assert "FormatException: b_BROKEN.tif" in description
    assert world.annotations() == []
    assert world.checksums() == before


def test_a_failed_run_reports_what_it_imported(world: World) -> None:
    good, bad = world.file("a.tif"), world.file("b_BROKEN.tif")
    ctx = world.context(world.order(good, bad))
    with pytest.raises(ImportFailed) as failure:
        world.importer.import_items(ctx, [ImportItem.of(good), ImportItem.of(bad)])
    (imported,) = failure.value.imported
    assert imported.item.path == good and imported.fileset.used_files == (good,)


@pytest.mark.parametrize("user, group, expected", [
    ("mallory", "lab", "user 'mallory' does not exist in OMERO"),
    ("bob", "lab", "user 'bob' is not a member of group 'lab'"),
    ("alice", "nolab", "group 'nolab' does not exist in OMERO"),
])
def test_wrong_user_or_group_fails_before_importing(
        world: World, user: str, group: str, expected: str) -> None:
    description = world.fail(world.order(world.file("a.tif"), user=user, group=group))
    assert description == f"{expected}; nothing was imported"
    assert world.standin.import_calls() == []


def test_destination_problems_fail_before_importing(world: World) -> None:
    image = world.file("a.tif")
    elsewhere = world.server.add_container("Dataset", "other", "bob")
    locked = world.server.add_container("Dataset", "lab", "carol", writable=False)
    assert world.fail(world.order(image, destination=999)) == (
        "Dataset 999 does not exist (or user 'alice' cannot see it); nothing was imported")
    assert world.fail(world.order(image, destination=elsewhere)) == (
        f"Dataset {elsewhere} is in group 'other', not in the order's group 'lab'; "
        "nothing was imported")
    assert world.fail(world.order(image, kind="Screen", destination=locked + 1000)).startswith(
        f"Screen {locked + 1000} does not exist")
    assert world.fail(world.order(image, destination=locked)) == (
        f"user 'alice' may not add data to Dataset {locked} (owned by 'carol'); "
        "nothing was imported")
    assert world.standin.import_calls() == []


def test_importer_crash(world: World) -> None:
    files = [world.file("a.tif"), world.file("b_CRASH.tif")]
    before = world.checksums()
    description = world.fail(world.order(*files))
    assert description.startswith("Import failed: the importer crashed (killed by signal 9).")
    assert f"Not imported: {files[1]}." in description
    assert "fatal error has been detected" in description
    assert world.checksums() == before


def test_importer_timeout_kills_it(world: World) -> None:
    started = time.monotonic()
    description = world.fail(world.order(world.file("x_HANG.tif")), import_timeout=1)
    assert time.monotonic() - started < 15
    assert description.startswith(
        "Import failed: the importer ran longer than import_timeout (1 s) and was killed.")
    assert world.emitted == [("importer_exit", "timeout")]


def test_cancellation_stops_the_importer(world: World) -> None:
    ctx = world.context(world.order(world.file("x_HANG.tif")))
    threading.Timer(0.5, ctx.cancelled.set).start()
    with pytest.raises(OrderInterrupted):
        world.importer(ctx)


def test_nothing_importable_is_a_failure(world: World) -> None:
    description = world.fail(world.order(world.file("readme.txt")))
    assert description.startswith(
        "Import failed: the importer created no fileset (nothing importable found).")
    assert "No imports found" in description


def test_omero_unreachable_after_bounded_retries(world: World) -> None:
    world.server.set_unreachable(100)
    description = world.fail(world.order(world.file("a.tif")))
    assert description == ("OMERO unreachable at standin:4064 (ConnectionRefusedException) "
                           "(gave up after 3 attempts); nothing was imported")
    assert world.standin.read()["login_attempts"] == 3
    assert world.standin.import_calls() == []


def test_omero_back_within_the_retries(world: World) -> None:
    world.server.set_unreachable(2)
    world.run(world.order(world.file("a.tif")))
    assert world.standin.read()["login_attempts"] == 3
    assert len(world.annotations()) == 1


def test_preprocessing_seam_imports_copies_annotated_as_originals(
        world: World, tmp_path: Path) -> None:
    original = world.file("raw.lif")
    copy = tmp_path / "inplace" / "raw.ome.tiff"
    copy.parent.mkdir()
    copy.write_bytes(b"converted")
    spec = PreprocessingSpec(id=7, container="cellularimagingcf/convertleica-docker:v1.2.0",
                             input_file="{Files}", output_folder="/data",
                             alt_output_folder="/out", extra_params={"image_uuid": "u-1"})
    order = replace(world.order(original), preprocessing=spec)
    result = world.importer.import_items(world.context(order), [
        ImportItem(path=copy, origin=original, keyvalues={"processing_output_series": "3"})])
    (imported,) = result.filesets
    assert imported.fileset.used_files == (copy,)
    values = _values(world.annotations()[0])
    assert list(values) == BASE_KEYS + [
        "preprocessing_container", "preprocessing_inputfile", "preprocessing_outputfolder",
        "preprocessing_altoutputfolder", "preprocessing_image_uuid", "preprocessing_id",
        "processing_output_series", "Import_Timestamp"]
    assert values["Filepath"] == str(original) and values["preprocessing_id"] == "7"


def test_session_key_is_not_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        world.run(world.order(world.file("a.tif")))
    (session_key,) = world.standin.read()["sessions"]
    assert session_key not in caplog.text and "-k ***" in caplog.text
    assert os.path.exists(Path(world.settings.log_file_path).parent / "cli.order-1.errs")
