"""Orders end to end: PostgreSQL order store → daemon → DataPackageImporter →
OMERO stand-in (fake ``omero import`` CLI + in-process server)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from omero_adi.importing.importer import DataPackageImporter
from omero_adi.settings import Settings, build_settings
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED
from omero_adi.store.session import open_store
from tests.helpers import current_stage, insert_order, running_daemon, stages, wait_for
from tests.omero_standin import Standin
from tests.omero_standin.fixtures import standin  # noqa: F401  (fixture)

FINAL = (STAGE_IMPORTED, STAGE_INGEST_FAILED)


class Site:
    """A database, a data folder, a stand-in OMERO with lab/alice/bob, and a daemon."""

    def __init__(self, url: str, standin: Standin, tmp_path: Path):
        self.standin = standin
        self.data = tmp_path / "data"
        self.data.mkdir()
        server = standin.server
        server.add_group("lab")
        server.add_group("other")
        server.add_user("alice", ["lab"])
        server.add_user("bob", ["other"])
        self.dataset = server.add_container("Dataset", "lab", "alice")
        self.screen = server.add_container("Screen", "lab", "alice")
        self.settings: Settings = build_settings({
            "ingest_tracking_db": url, "base_dir": str(self.data), "max_workers": 2,
            "omero_cli": str(standin.cli), "import_timeout": 3,
            "log_file_path": str(tmp_path / "logs" / "app.logs"),
            "managed_repository": str(standin.managed_repository), "shutdown_timeout": 5,
        }, {})
        self.engine = open_store(self.settings)
        self.handler = DataPackageImporter(server, retry_delay=0.01)

    def file(self, name: str) -> Path:
        path = self.data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"pixels of " + name.encode())
        return path

    def submit(self, uuid: str, paths: list[Path], **fields: Any) -> None:
        fields.setdefault("dest", str(self.screen if fields.get("type") == "Screen"
                                      else self.dataset))
        insert_order(self.engine, uuid, [str(p) for p in paths], **fields)

    def wait(self, *uuids: str) -> None:
        wait_for(lambda: all(current_stage(self.engine, u) in FINAL for u in uuids),
                 timeout=60, what=f"orders {uuids} to finish")

    def outcome(self, uuid: str) -> tuple[str, str | None]:
        return stages(self.engine, uuid)[-1]

    def annotations(self, uuid: str) -> list[dict[str, str]]:
        found = [dict(a["values"]) for a in self.standin.read()["annotations"]]
        return [values for values in found if values["UUID"] == uuid]

    def checksums(self) -> dict[Path, str]:
        return {p: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.data.rglob("*")) if p.is_file()}


@pytest.fixture
def site(make_pg_database: Callable[[], str], standin: Standin,  # noqa: F811
         tmp_path: Path) -> Iterator[Site]:
    site = Site(make_pg_database(), standin, tmp_path)
    yield site
    site.engine.dispose()


def test_orders_of_every_shape_through_the_daemon(site: Site) -> None:
    single = site.file("single/cells.tif")
    several = [site.file(f"several/img{i}.tif") for i in range(3)]
    folder = site.data / "folder"
    inside = [site.file("folder/a.tif"), site.file("folder/sub/b.tif")]
    (folder / "metadata.csv").write_text("key,value\nstain,DAPI\nbad,row,here\n")
    plate = site.file("plates/plate_series2.xdce")
    mixed = [site.file("mixed/ok.tif"), site.file("mixed/x_BROKEN.tif")]
    before = site.checksums()
    with running_daemon(site.settings, site.engine, site.handler):
        site.submit("single", [single])
        site.submit("several", several)
        site.submit("folder", [folder])
        site.submit("screen", [plate], type="Screen")
        site.submit("mixed", mixed)
        site.submit("stranger", [single], user="mallory")
        site.submit("outsider", [single], user="bob")
        site.wait("single", "several", "folder", "screen", "mixed", "stranger", "outsider")

    for uuid, count in (("single", 1), ("several", 3), ("folder", 2)):
        stage, description = site.outcome(uuid)
        assert stage == STAGE_IMPORTED, description
        assert description.startswith(f"Imported {count} fileset(s) into Dataset {site.dataset}")
        assert len(site.annotations(uuid)) == count
    assert [a.get("csv_stain") for a in site.annotations("single")] == [None]
    assert [a["csv_stain"] for a in site.annotations("folder")] == ["DAPI", "DAPI"]
    stage, description = site.outcome("screen")
    assert stage == STAGE_IMPORTED and f"into Screen {site.screen}" in description
    (plate_values,) = site.annotations("screen")
    assert plate_values["Filepath"] == str(plate)

    stage, description = site.outcome("mixed")
    assert stage == STAGE_INGEST_FAILED
    assert f"Imported (not annotated): {mixed[0]} → Fileset" in description
    assert f"Not imported: {mixed[1]}." in description
    assert site.outcome("stranger") == (
        STAGE_INGEST_FAILED, "user 'mallory' does not exist in OMERO; nothing was imported")
    assert site.outcome("outsider") == (
        STAGE_INGEST_FAILED, "user 'bob' is not a member of group 'lab'; nothing was imported")

    calls = site.standin.import_calls()
    assert len(calls) == 5  # one importer run per importing order, none for refused users
    used = sorted(f["used_files"][0] for f in site.standin.read()["filesets"].values())
    assert used == sorted(map(str, [single, *several, *inside, plate, mixed[0]]))
    assert site.checksums() == before
    logs = Path(site.settings.log_file_path).parent
    assert "IMPORT_DONE" in (logs / "cli.single.errs").read_text()
    assert "Fileset:" in (logs / "cli.single.logs").read_text()


def test_importer_crash_and_timeout_through_the_daemon(site: Site) -> None:
    crash, hang = site.file("c/a_CRASH.tif"), site.file("h/a_HANG.tif")
    before = site.checksums()
    with running_daemon(site.settings, site.engine, site.handler):
        site.submit("crash", [crash])
        site.submit("hang", [hang])
        site.wait("crash", "hang")
    stage, description = site.outcome("crash")
    assert stage == STAGE_INGEST_FAILED
    assert description.startswith("Import failed: the importer crashed (killed by signal 9).")
    stage, description = site.outcome("hang")
    assert stage == STAGE_INGEST_FAILED
    assert description.startswith(
        "Import failed: the importer ran longer than import_timeout (3 s) and was killed.")
    assert site.checksums() == before
