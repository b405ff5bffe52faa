"""DataPackageImporter through the OMERO double (real omero-py, ezomero and the real
``omero import`` wrapper with the importer stand-in, run as an unprivileged user)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from omero_adi.importing.importer import DataPackageImporter
from omero_adi.importing.results import ImportFailed, ImportItem
from omero_adi.omero.blitz import BlitzServer
from omero_adi.orders import Order, PreprocessingSpec
from omero_adi.pipeline import OrderContext, OrderFailed, OrderInterrupted
from omero_adi.settings import Settings
from tests.importer_standin import formats
from tests.importer_standin.fixture import ImporterSite, importer_site  # noqa: F401

TEMPLATE = re.compile(r"^researcher_\d+/\d{4}-\d{2}/\d{2}/\d{2}-\d{2}-\d{2}\.\d{3}$")
BASE_KEYS = ["UUID", "Filepath", "Group", "Username", "DestinationID", "DestinationType",
             "Files", "FileNames"]
#: The double's default world (tests/omero_double/README.md).
DATASET, SCREEN, LAB2_DATASET = 151, 451, 152


class World:
    """The double's default world, a data folder, and the daemon's importer."""

    def __init__(self, site: ImporterSite):
        self.site = site
        self.data = site.folder("data")
        self.dataset, self.screen = DATASET, SCREEN
        # one fileset at a time: which file fails first is then certain
        self.settings = Settings(**site.omero_settings(), omero_connect_retries=3,
                                 import_timeout=60, parallel_filesets_per_worker=1)
        self.importer = DataPackageImporter(BlitzServer(self.settings), retry_delay=0.01)
        self.count = 0
        self.emitted: list[tuple[str, str]] = []

    def file(self, name: str, **behaviour: str) -> Path:
        """An importable image (the stand-in's sample format)."""
        return formats.image(self.data / name, **behaviour)

    def order(self, *files: Path, kind: str = "Dataset", user: str = "researcher",
              group: str = "Demo", destination: int | None = None) -> Order:
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
        return self.site.annotations()

    def filesets(self) -> dict[int, dict[str, Any]]:
        return self.site.filesets()

    def user_sessions(self) -> list[dict[str, Any]]:
        root = next(u["id"] for u in self.site.state()["users"].values() if u["name"] == "root")
        return [s for s in self.site.state()["sessions"].values() if s["user"] != root]

    def checksums(self) -> dict[Path, str]:
        return {p: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.data.rglob("*")) if p.is_file()}


@pytest.fixture
def world(importer_site: ImporterSite,  # noqa: F811
          monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    # a deployment's daemon and its `omero` command share one environment (and user);
    # here omero-py in this root process and the account's wrapper share its tmp/
    monkeypatch.setenv("OMERO_USERDIR", str(importer_site.userdir))
    shared_tmp = importer_site.userdir / "tmp"
    shared_tmp.mkdir(exist_ok=True)
    shared_tmp.chmod(0o1777)
    world = World(importer_site)
    yield world
    world.importer.close()


def _values(annotation: dict[str, Any]) -> dict[str, str]:
    return dict(annotation["values"])


def _target(annotation: dict[str, Any]) -> tuple[str, int]:
    (link,) = annotation["links"]
    return link[0], link[1]


def test_single_file_into_a_dataset(world: World) -> None:
    image = world.file("cells.tif")
    before = world.checksums()
    description = world.run(world.order(image))
    (fileset_id, fileset), = world.filesets().items()
    assert TEMPLATE.match(fileset["template_prefix"]), fileset["template_prefix"]
    link = world.site.managed_repository / fileset["template_prefix"] / "cells.tif"
    assert link.is_symlink() and link.resolve() == image.resolve()
    (image_id,) = world.site.images_of(fileset_id)
    assert image_id in world.site.state()["datasets"][str(world.dataset)]["children"]
    assert description == (f"Imported 1 fileset(s) into Dataset {world.dataset}: "
                           f"{image} → Fileset {fileset_id} (Image {image_id})")
    (annotation,) = world.annotations()
    assert _target(annotation) == ("Image", image_id)
    assert annotation["ns"] == "omeroadi.import"
    values = _values(annotation)
    assert list(values) == BASE_KEYS + ["Import_Timestamp"]
    assert values["Filepath"] == str(image) and values["Username"] == "researcher"
    assert values["Files"] == f'["{image}"]' and values["FileNames"] == '["cells.tif"]'
    assert all(s["closed"] for s in world.user_sessions())
    assert world.checksums() == before
    assert world.emitted == [("importer_exit", "0")]


def test_plate_into_a_screen(world: World) -> None:
    plate = formats.plate(world.data / "plate.xdce", fields=4)
    world.run(world.order(plate, kind="Screen"))
    (plate_id, stored), = world.site.state()["plates"].items()
    assert int(plate_id) in world.site.state()["screens"][str(world.screen)]["children"]
    assert sum(len(well["samples"]) for well in stored["wells"]) == 4
    (annotation,) = world.annotations()
    assert _target(annotation) == ("Plate", int(plate_id))
    assert _values(annotation)["DestinationType"] == "Screen"


def test_several_files_in_one_importer_run(world: World) -> None:
    files = [world.file(f"img{i}.tif") for i in range(3)]
    order = world.order(*files)
    world.run(order)
    assert len(world.filesets()) == 3
    filepaths = sorted(_values(a)["Filepath"] for a in world.annotations())
    assert filepaths == sorted(map(str, files))
    errs = (Path(world.settings.log_file_path).parent / f"cli.{order.uuid}.errs").read_text()
    assert errs.count("IMPORT_DONE Imported file:") == 3  # one importer run for all three


def test_admin_session_is_reused_across_orders(world: World) -> None:
    world.run(world.order(world.file("a.tif")))
    world.run(world.order(world.file("b.tif")))
    sessions = world.site.state()["sessions"].values()
    assert len(sessions) - len(world.user_sessions()) == 1  # one admin login
    assert len(world.user_sessions()) == 2


def test_a_directory_is_scanned(world: World) -> None:
    folder = world.data / "run1"
    inner = [world.file("run1/a.tif"), world.file("run1/deeper/b.tif")]
    (folder / "notes.txt").write_text("notes\n")
    (folder / "metadata.csv").write_text("key,value\nmicroscope,Zeiss\n")
    before = world.checksums()
    world.run(world.order(folder))
    used = sorted(f["entries"][0]["original"] for f in world.filesets().values())
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


def test_successor_namespace_and_processed_folder(world: World) -> None:
    """A site coming from BIOMERO.importer: annotation_namespace biomero.import, and
    PROCESSED_DATA_FOLDER=processed for the metadata.csv beside the converted copies."""
    image = world.file("cells.tif")
    (world.data / ".processed").mkdir()
    (world.data / ".processed" / "metadata.csv").write_text("objective,63x\n")
    (world.data / "processed").mkdir()
    (world.data / "processed" / "metadata.csv").write_text("objective,100x\n")
    world.run(world.order(image), annotation_namespace="biomero.import",
              processed_data_folder="processed")
    (annotation,) = world.annotations()
    assert annotation["ns"] == "biomero.import"
    assert _values(annotation)["csv_objective"] == "100x"


def test_one_bad_file_among_good_ones(world: World) -> None:
    good, bad, later = world.file("a.tif"), world.file("b.tif", on_import="fail"), world.file("c.tif")
    before = world.checksums()
    description = world.fail(world.order(good, bad, later))
    by_file = {f["entries"][0]["original"]: i for i, f in world.filesets().items()}
    # the failed import's fileset stays; the importer stopped there (INTERNAL_EXCEPTION),
    # so a second run imported only the file it had not reached (#11.6)
    assert sorted(by_file) == sorted(map(str, (good, bad, later)))
    assert world.site.images_of(by_file[str(bad)]) == []
    fileset_id, later_id = by_file[str(good)], by_file[str(later)]
    assert description.startswith(
        "Import failed: these filesets hold no Image (the server's import of them failed")
    assert (f"Imported (not annotated): {good} → Fileset {fileset_id} "
            f"(Image {world.site.images_of(fileset_id)[0]}); {later} → Fileset {later_id}"
            ) in description
    assert f"run 2 imported only the 1 path(s) still missing: {later}." in description
    assert f"Not imported: {bad}.\nFilesets without any Image: Fileset {by_file[str(bad)]}" in (
        description)
    assert "Failure response on import!" in description
    assert world.annotations() == []
    assert world.checksums() == before


def test_a_failed_run_reports_what_it_imported(world: World) -> None:
    good, bad = world.file("a.tif"), world.file("b.tif", on_import="fail")
    ctx = world.context(world.order(good, bad))
    with pytest.raises(ImportFailed) as failure:
        world.importer.import_items(ctx, [ImportItem.of(good), ImportItem.of(bad)])
    (imported,) = failure.value.imported
    assert imported.item.path == good and imported.fileset.used_files == (good,)


@pytest.mark.parametrize("user, group, expected", [
    ("mallory", "Demo", "user 'mallory' does not exist in OMERO"),
    ("alice", "Demo", "user 'alice' is not a member of group 'Demo'"),
    ("researcher", "nolab", "group 'nolab' does not exist in OMERO"),
])
def test_wrong_user_or_group_fails_before_importing(
        world: World, user: str, group: str, expected: str) -> None:
    description = world.fail(world.order(world.file("a.tif"), user=user, group=group))
    assert description == f"{expected}; nothing was imported"
    assert world.filesets() == {}


def test_destination_problems_fail_before_importing(world: World) -> None:
    image = world.file("a.tif")
    assert world.fail(world.order(image, destination=999)) == (
        "Dataset 999 does not exist (or user 'researcher' cannot see it); nothing was imported")
    assert world.fail(world.order(image, destination=LAB2_DATASET)).startswith(
        f"Dataset {LAB2_DATASET} does not exist")  # another group's: invisible to researcher
    assert world.fail(world.order(image, kind="Screen", destination=999)).startswith(
        "Screen 999 does not exist")
    assert world.fail(world.order(image, user="other")) == (
        f"user 'other' may not add data to Dataset {DATASET} (owned by 'researcher'); "
        "nothing was imported")
    assert world.filesets() == {}


def test_importer_crash(world: World) -> None:
    files = [world.file("a.tif"), world.file("b.tif", on_import="crash")]
    before = world.checksums()
    description = world.fail(world.order(*files))
    # the JVM aborts (-6); omero-py's wrapper exits with that status, 250 to the daemon
    assert description.startswith("Import failed: the importer exited with status 250.")
    assert f"Not imported: {files[1]}." in description
    # it died transferring b.tif: the server had saved that fileset already
    (empty,) = [i for i, f in world.filesets().items() if not world.site.images_of(i)]
    assert f"Filesets without any Image: Fileset {empty} ({files[1]})." in description
    assert "fatal error has been detected" in description
    assert world.checksums() == before


def test_importer_timeout_kills_it(world: World) -> None:
    started = time.monotonic()
    description = world.fail(world.order(world.file("x.tif", on_import="hang")),
                             import_timeout=3)
    assert time.monotonic() - started < 20
    assert description.startswith(
        "Import failed: the importer ran longer than import_timeout (3 s) and was killed.")
    assert world.emitted == [("importer_exit", "timeout")]


def test_cancellation_stops_the_importer(world: World) -> None:
    ctx = world.context(world.order(world.file("x.tif", on_import="hang")))
    threading.Timer(0.5, ctx.cancelled.set).start()
    with pytest.raises(OrderInterrupted):
        world.importer(ctx)


def test_nothing_importable_is_a_failure(world: World) -> None:
    (world.data / "readme.txt").write_text("not an image\n")
    description = world.fail(world.order(world.data / "readme.txt"))
    assert description.startswith(
        f"Import failed: nothing importable was found in {world.data / 'readme.txt'}: no file "
        "there is one the importer can read")


def test_omero_unreachable_after_bounded_retries(world: World) -> None:
    world.site.double.refuse(120)
    description = world.fail(world.order(world.file("a.tif")))
    assert description == (f"OMERO unreachable at {world.settings.omero_host}:"
                           f"{world.settings.omero_port} (ConnectionRefusedException) "
                           "(gave up after 3 attempts); nothing was imported")


def test_omero_back_within_the_retries(world: World) -> None:
    world.site.double.fault("createSession", "Glacier2.CannotCreateSessionException", times=2)
    world.run(world.order(world.file("a.tif")))
    assert len(world.annotations()) == 1


def test_preprocessing_seam_imports_copies_annotated_as_originals(world: World) -> None:
    original = world.file("raw.lif")
    copy = formats.image(world.site.folder("inplace") / "raw.ome.tiff")
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
    (session,) = world.user_sessions()
    assert session["uuid"] not in caplog.text and "-k ***" in caplog.text
    assert os.path.exists(Path(world.settings.log_file_path).parent / "cli.order-1.errs")
