"""Orders with preprocessing end to end (contracts §5, issue 5).

PostgreSQL order store → daemon → DataPackageImporter → real Podman (the
API service) running the shell test converters → the OMERO double (the real
``omero import`` wrapper with the importer stand-in, run as an unprivileged
user; ManagedRepository fileset folders with links) → link redirection into
``<original dir>/.processed/``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa

from omero_adi.importing.importer import DataPackageImporter
from omero_adi.omero.blitz import BlitzServer
from omero_adi.settings import Settings, build_settings
from omero_adi.store.models import (
    STAGE_IMPORTED,
    STAGE_INGEST_FAILED,
    STAGE_INGEST_STARTED,
    STAGE_NEW_ORDER,
    STAGE_PREPROCESSING,
)
from omero_adi.store.session import open_store
from tests.helpers import current_stage, insert_order, running_daemon, stages, wait_for
from tests.importer_standin import formats
from tests.importer_standin.fixture import ImporterSite, importer_site  # noqa: F401
from tests.podman_fixtures import (  # noqa: F401  (fixtures)
    ALLOW_PATTERN,
    digests,
    podman_images,
    podman_ready,
    podman_service,
)

FINAL = (STAGE_IMPORTED, STAGE_INGEST_FAILED)
PREPROCESSING_ROW = sa.text(
    "INSERT INTO imports_preprocessing (container, input_file, output_folder, "
    "alt_output_folder, extra_params) VALUES (:container, '{Files}', '/data', '/out', "
    ":extra) RETURNING id"
)


class Site:
    """A database, a data folder, the OMERO double's default world (researcher in
    Demo, Dataset 151, Screen 451), Podman, and settings."""

    def __init__(self, url: str, omero: ImporterSite, podman_url: str,
                 images: dict[str, str], **overrides: Any):
        self.omero = omero
        self.images = images
        self.data = omero.folder("data")
        self.inplace = omero.folder("inplace")
        self.dataset, self.screen = 151, 451
        values: dict[str, Any] = {
            "ingest_tracking_db": url, "max_workers": 2, "import_timeout": 60,
            **omero.omero_settings(),
            "inplace_tmp_root": str(self.inplace),
            "allowed_containers": [ALLOW_PATTERN],
            "podman_url": podman_url,
            "preprocessing_timeout": 120,
            "shutdown_timeout": 10,
        }
        values.update(overrides)
        self.settings: Settings = build_settings(values, {})
        self.engine = open_store(self.settings)
        self.handler = DataPackageImporter(BlitzServer(self.settings), retry_delay=0.01)

    # --- orders ----------------------------------------------------------------
    def file(self, name: str, content: bytes | None = None, kind: str = "image") -> Path:
        """An original: ``content``, then the importer stand-in's marker, which the
        test converters carry into their output (formats.py)."""
        path = self.data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        first = content if content is not None else b"pixels of " + name.encode()
        path.write_bytes(first + b"\n" + formats.Sample(kind).line().encode())
        return path

    def preprocessing(self, kind: str, **extra: str) -> int:
        container = self.images.get(kind, kind)
        with self.engine.begin() as connection:
            return int(connection.execute(
                PREPROCESSING_ROW,
                {"container": container, "extra": json.dumps(extra)},
            ).scalar_one())

    def submit(self, uuid: str, paths: list[Path], pre: int | None = None,
               **fields: Any) -> None:
        fields.setdefault("dest", str(self.screen if fields.get("type") == "Screen"
                                      else self.dataset))
        fields.setdefault("group", "Demo")
        fields.setdefault("user", "researcher")
        insert_order(self.engine, uuid, [str(p) for p in paths], pre=pre, **fields)

    def wait(self, *uuids: str) -> None:
        wait_for(lambda: all(current_stage(self.engine, u) in FINAL for u in uuids),
                 timeout=180, what=f"orders {uuids} to finish")

    # --- what happened ---------------------------------------------------------
    def outcome(self, uuid: str) -> tuple[str, str]:
        stage, description = stages(self.engine, uuid)[-1]
        return stage, description or ""

    def stage_names(self, uuid: str) -> list[str]:
        return [stage for stage, _ in stages(self.engine, uuid)]

    def annotations(self, uuid: str) -> list[dict[str, str]]:
        found = [dict(a["values"]) for a in self.omero.annotations()]
        return [values for values in found if values["UUID"] == uuid]

    def tmp_dir(self, uuid: str) -> Path:
        return self.inplace / uuid

    def filesets(self, uuid: str) -> list[dict[str, Any]]:
        """The double's filesets imported from this order's local folder."""
        local = str(self.tmp_dir(uuid)) + os.sep
        return [f for f in self.omero.filesets().values()
                if all(e["original"].startswith(local) for e in f["entries"])]

    def links(self, uuid: str) -> dict[Path, Path]:
        """Every entry of the order's fileset folders (all must be links) -> its target."""
        found: dict[Path, Path] = {}
        for fileset in self.filesets(uuid):
            folder = self.omero.managed_repository / fileset["template_prefix"]
            entries = list(folder.rglob("*"))
            assert entries, f"fileset folder {folder} is empty"
            for entry in entries:
                assert entry.is_symlink(), f"{entry} is not a link"
                found[entry] = Path(os.path.normpath(entry.parent / os.readlink(entry)))
        return found

    def imports_of(self, uuid: str) -> list[list[str]]:
        local = str(self.tmp_dir(uuid))
        return [call for call in self.omero.java_calls()
                if any(arg.startswith(local) for arg in call)]


def tree(folder: Path) -> set[str]:
    """Every file and folder under ``folder``, relative, except inside ``.processed``."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if ".processed" not in p.relative_to(folder).parts}


def assert_no_containers_left(podman: str, uuid: str) -> None:
    listed = subprocess.run([podman, "ps", "-a", "--format", "{{.Names}}"],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    assert not [name for name in listed.split() if name.startswith(f"adi-{uuid}")], listed


@pytest.fixture
def make_site(make_pg_database: Callable[[], str], importer_site: ImporterSite,  # noqa: F811
              podman_service: str,  # noqa: F811
              podman_images: dict[str, str]) -> Iterator[Callable[..., Site]]:  # noqa: F811
    made: list[Site] = []

    def make(**overrides: Any) -> Site:
        assert not made, "one site per test"
        made.append(Site(make_pg_database(), importer_site, podman_service,
                         podman_images, **overrides))
        return made[0]

    yield make
    for site in made:
        site.handler.close()
        site.engine.dispose()


def _plain_order_still_works(site: Site) -> None:
    plain = site.file("plain/after.tif")
    before = plain.read_bytes()
    with running_daemon(site.settings, site.engine, site.handler):
        site.submit("plain-after", [plain])
        site.wait("plain-after")
    stage, description = site.outcome("plain-after")
    assert stage == STAGE_IMPORTED, description
    assert description.startswith(f"Imported 1 fileset(s) into Dataset {site.dataset}")
    assert plain.read_bytes() == before


# --- the happy paths -------------------------------------------------------------

def test_dataset_and_screen_orders_are_converted_imported_and_redirected(
    make_site: Callable[..., Site], caplog: pytest.LogCaptureFixture,
) -> None:
    site = make_site()
    caplog.set_level("INFO", logger="omero_adi")
    one = site.file("a/one.tif", b"first image")
    two = site.file("b/two.tif", b"second image")
    (site.data / "a" / "notes.txt").write_text("untouched")
    (site.data / "a" / "metadata.csv").write_text("key,value\nstain,DAPI\n")
    well = site.file("plates/w1.tif", b"plate pixels", kind="plate")
    before = digests(site.data)
    before_tree = tree(site.data)

    single = site.preprocessing("convert", saveoption="single")
    folder = site.preprocessing("convert", saveoption="folder")
    with running_daemon(site.settings, site.engine, site.handler):
        site.submit("pre-dataset", [one, two], pre=single)
        site.submit("pre-screen", [well], pre=folder, type="Screen")
        site.wait("pre-dataset", "pre-screen")

    # Dataset: two files, one converted file each
    stage, description = site.outcome("pre-dataset")
    assert stage == STAGE_IMPORTED, description
    assert description.startswith(f"Imported 2 fileset(s) into Dataset {site.dataset}: ")
    assert f"{one} → Fileset" in description and f"{two} → Fileset" in description
    assert site.stage_names("pre-dataset") == [
        STAGE_NEW_ORDER, STAGE_INGEST_STARTED, STAGE_PREPROCESSING, STAGE_IMPORTED]
    annotations = sorted(site.annotations("pre-dataset"), key=lambda a: a["Filepath"])
    assert [a["Filepath"] for a in annotations] == [str(one), str(two)]
    for values, original in zip(annotations, (one, two)):
        assert values["processing_output_source"] == original.name
        assert values["processing_output_saveoption"] == "single"
        assert values["preprocessing_container"] == site.images["convert"]
        assert values["preprocessing_inputfile"] == "{Files}"
        assert values["preprocessing_outputfolder"] == "/data"
        assert values["preprocessing_altoutputfolder"] == "/out"
        assert values["preprocessing_saveoption"] == "single"
        assert values["preprocessing_id"] == str(single)
        assert values["DestinationType"] == "Dataset"
    assert annotations[0]["csv_stain"] == "DAPI" and "csv_stain" not in annotations[1]
    links = site.links("pre-dataset")
    assert sorted(links.values()) == [
        one.parent / ".processed" / "one.converted.tif",
        two.parent / ".processed" / "two.converted.tif",
    ]
    for link, target in links.items():
        assert link.name == target.name
        original = one if link.name.startswith("one") else two
        assert link.resolve(strict=True) == target
        assert link.read_bytes() == b"converted " + original.read_bytes()

    # Screen: one plate folder of two wells per file
    stage, description = site.outcome("pre-screen")
    assert stage == STAGE_IMPORTED, description
    assert description.startswith(f"Imported 2 fileset(s) into Screen {site.screen}: ")
    assert site.stage_names("pre-screen") == [
        STAGE_NEW_ORDER, STAGE_INGEST_STARTED, STAGE_PREPROCESSING, STAGE_IMPORTED]
    plates = site.annotations("pre-screen")
    assert len(plates) == 2
    assert {a["Filepath"] for a in plates} == {str(well)}
    assert {a["processing_output_saveoption"] for a in plates} == {"folder"}
    assert {a["processing_output_source"] for a in plates} == {"w1.tif"}
    assert {a["preprocessing_id"] for a in plates} == {str(folder)}
    assert {a["DestinationType"] for a in plates} == {"Screen"}
    screen = site.omero.state()["screens"][str(site.screen)]["children"]
    annotated = {link[1] for a in site.omero.annotations() for link in a["links"]
                 if link[0] == "Plate"}
    assert len(screen) == 2 and set(screen) == annotated
    links = site.links("pre-screen")
    assert sorted(links.values()) == [well.parent / ".processed" / "w1.plate" / name
                                      for name in ("A1.tif", "A2.tif")]
    for link, target in links.items():
        assert link.resolve(strict=True) == target
        assert link.read_bytes() == f"well {link.stem} of ".encode() + well.read_bytes()

    # both: one importer run each, local folders gone, originals as they were
    assert len(site.imports_of("pre-dataset")) == 1
    assert len(site.imports_of("pre-screen")) == 1
    assert not site.tmp_dir("pre-dataset").exists()
    assert not site.tmp_dir("pre-screen").exists()
    assert digests(site.data) == before
    assert tree(site.data) == before_tree
    assert {p.name for p in site.data.rglob(".processed")} == {".processed"}
    assert len(list(site.data.rglob(".processed"))) == 3  # a/, b/, plates/
    # the containers ran through the API service and their output is in the order's log
    assert "preprocessing with Podman API at" in caplog.text
    assert "[one.tif stderr] converting /data/one.tif" in caplog.text
    assert "[w1.tif stdout] progress: done" in caplog.text


def test_without_json_the_whole_local_folder_is_imported(
    make_site: Callable[..., Site], caplog: pytest.LogCaptureFixture,
) -> None:
    site = make_site()
    caplog.set_level("INFO", logger="omero_adi")
    one = site.file("a/one.tif", b"first image")
    two = site.file("b/two.tif", b"second image")
    before = digests(site.data)
    before_tree = tree(site.data)
    nojson = site.preprocessing("convert", mode="nojson")
    with running_daemon(site.settings, site.engine, site.handler):
        site.submit("nojson", [one, two], pre=nojson)
        site.wait("nojson")

    stage, description = site.outcome("nojson")
    assert stage == STAGE_IMPORTED, description
    assert description.startswith(f"Imported 2 fileset(s) into Dataset {site.dataset}")
    assert STAGE_PREPROCESSING in site.stage_names("nojson")
    (call,) = site.imports_of("nojson")
    assert call[-1] == str(site.tmp_dir("nojson"))  # the folder itself, not its files
    annotations = site.annotations("nojson")
    assert len(annotations) == 2
    assert not [k for a in annotations for k in a if k.startswith("processing_output_")]
    assert {a["preprocessing_mode"] for a in annotations} == {"nojson"}
    links = site.links("nojson")
    assert sorted(links.values()) == [one.parent / ".processed" / "one.converted.tif",
                                      two.parent / ".processed" / "two.converted.tif"]
    assert all(link.resolve(strict=True) == target for link, target in links.items())
    assert not site.tmp_dir("nojson").exists()
    assert digests(site.data) == before
    assert tree(site.data) == before_tree
    assert "importing the whole local folder" in caplog.text


# --- failures --------------------------------------------------------------------

def test_every_failure_ends_in_import_failed_and_the_daemon_keeps_serving(
    make_site: Callable[..., Site], podman_ready: str,  # noqa: F811
) -> None:
    site = make_site()
    files = {name: site.file(f"{name}/img.tif", f"pixels {name}".encode())
             for name in ("exit", "denied", "badkey", "escape")}
    (site.data / "escape" / "keep.txt").write_text("keep me")
    before = digests(site.data)
    before_tree = tree(site.data)
    fail = site.preprocessing("fail")
    denied = site.preprocessing("docker.io/library/busybox:latest")
    badkey = site.preprocessing("convert", **{"x --rm": "1"})
    escape = site.preprocessing("escape")
    with running_daemon(site.settings, site.engine, site.handler):
        site.submit("exit", [files["exit"]], pre=fail)
        site.submit("denied", [files["denied"]], pre=denied)
        site.submit("badkey", [files["badkey"]], pre=badkey)
        site.submit("escape", [files["escape"]], pre=escape)
        site.wait("exit", "denied", "badkey", "escape")

    stage, description = site.outcome("exit")
    assert stage == STAGE_INGEST_FAILED
    assert description.startswith(
        f"preprocessing container {site.images['fail']} for img.tif exited with code 3: ")
    assert "conversion failed: unsupported file" in description
    assert "reading input" in description
    assert site.stage_names("exit") == [
        STAGE_NEW_ORDER, STAGE_INGEST_STARTED, STAGE_PREPROCESSING, STAGE_INGEST_FAILED]

    for uuid, reason in (
        ("denied", "container 'docker.io/library/busybox:latest' is not allowed on this "
                   f"server (allowed: {ALLOW_PATTERN})"),
        ("badkey", "extra param names ['x --rm'] are not plain option names"),
    ):
        stage, description = site.outcome(uuid)
        assert stage == STAGE_INGEST_FAILED
        assert description.startswith(reason), description
        # refused before anything ran: no Preprocessing event, no .processed folder
        assert site.stage_names(uuid) == [STAGE_NEW_ORDER, STAGE_INGEST_STARTED,
                                          STAGE_INGEST_FAILED]
        assert not (site.data / uuid / ".processed").exists()

    # The misbehaving container could not change the originals or the host; it only
    # wrote passwd.txt, which is nothing importable (how that is described: bug #11.5,
    # test_import_importer.py::test_nothing_importable_is_a_failure).
    stage, description = site.outcome("escape")
    assert stage == STAGE_INGEST_FAILED
    assert "No imports found" in description, description
    assert not (site.data / "escape" / "planted.txt").exists()
    assert not Path("/escaped").exists() and not Path("/etc/escaped").exists()
    assert (site.data / "escape" / ".processed" / "passwd.txt").exists()

    for uuid in ("exit", "denied", "badkey", "escape"):
        assert not site.tmp_dir(uuid).exists(), uuid
        assert site.annotations(uuid) == []
        assert site.filesets(uuid) == []
        assert_no_containers_left(podman_ready, uuid)
    assert site.imports_of("exit") == site.imports_of("denied") == site.imports_of("badkey") == []
    assert digests(site.data) == before
    assert tree(site.data) == before_tree

    _plain_order_still_works(site)


def _single_failing_order(site: Site, uuid: str, image: str) -> str:
    """Run one preprocessing order that must fail, check it left nothing behind
    and the daemon still serves; return its description."""
    original = site.file(f"{uuid}/img.tif")
    before = digests(site.data)
    with running_daemon(site.settings, site.engine, site.handler):
        site.submit(uuid, [original], pre=site.preprocessing(image))
        site.wait(uuid)
    stage, description = site.outcome(uuid)
    assert stage == STAGE_INGEST_FAILED
    assert not site.tmp_dir(uuid).exists()
    assert site.imports_of(uuid) == []
    assert digests(site.data) == before
    _plain_order_still_works(site)
    return description


def test_a_hung_container_is_killed_and_reported(
    make_site: Callable[..., Site], podman_ready: str,  # noqa: F811
) -> None:
    site = make_site(preprocessing_timeout=3)
    description = _single_failing_order(site, "hang", "hang")
    assert description == (f"preprocessing container {site.images['hang']} for img.tif was "
                           "killed after the time limit of 3 s: starting")
    assert STAGE_PREPROCESSING in site.stage_names("hang")
    assert_no_containers_left(podman_ready, "hang")


def test_keep_id_as_root_fails_clearly(make_site: Callable[..., Site]) -> None:
    site = make_site(podman_userns_mode="keep-id")
    description = _single_failing_order(site, "keepid", "convert")
    assert "keep-id" in description and "rootless" in description, description
    assert description.startswith(
        f"Podman could not create the container {site.images['convert']} for img.tif"), \
        description


def test_shutdown_stops_a_running_container_and_says_how_to_retry(
    make_site: Callable[..., Site], podman_ready: str,  # noqa: F811
) -> None:
    site = make_site(shutdown_timeout=1)
    original = site.file("stop/img.tif")
    before = digests(site.data)
    hang = site.preprocessing("hang")

    def container_running() -> bool:
        listed = subprocess.run(
            [podman_ready, "ps", "--filter", "status=running", "--format", "{{.Names}}"],
            capture_output=True, text=True, check=True, timeout=60).stdout
        return any(name.startswith("adi-stopped-") for name in listed.split())

    with running_daemon(site.settings, site.engine, site.handler):
        site.submit("stopped", [original], pre=hang)
        wait_for(container_running, timeout=60, what="the container to run")
    # running_daemon has stopped the daemon: the order was cancelled and finished
    stage, description = site.outcome("stopped")
    assert stage == STAGE_INGEST_FAILED
    assert "the daemon is shutting down" in description, description
    assert "retry with `omero-adi retry stopped`" in description, description
    assert_no_containers_left(podman_ready, "stopped")
    assert not site.tmp_dir("stopped").exists()
    assert site.imports_of("stopped") == []
    assert digests(site.data) == before


@pytest.mark.parametrize("mode", ["json", "nojson"])
def test_outputs_of_the_same_name_from_two_files_fail_instead_of_overwriting(
    make_site: Callable[..., Site], mode: str,
) -> None:
    # a/img.tif and b/img.tif both become img.converted.tif in the order's one local
    # folder: the second would silently replace the first.
    site = make_site()
    first = site.file("a/img.tif", b"first image")
    second = site.file("b/img.tif", b"second image")
    before = digests(site.data)
    convert = site.preprocessing("convert", **({"mode": "nojson"} if mode == "nojson" else {}))
    with running_daemon(site.settings, site.engine, site.handler):
        site.submit("clash", [first, second], pre=convert)
        site.wait("clash")
    stage, description = site.outcome("clash")
    assert stage == STAGE_INGEST_FAILED, description
    assert description == (
        f"the converted files of {first} and {second} have the same name: img.converted.tif; "
        "import files whose converted copies have the same name in separate orders"
    )
    assert site.imports_of("clash") == []
    assert not site.tmp_dir("clash").exists()
    assert digests(site.data) == before
