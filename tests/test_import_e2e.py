"""Orders end to end: PostgreSQL order store → daemon → DataPackageImporter →
the OMERO double (real omero-py and ezomero, the real ``omero import`` wrapper
with the importer stand-in, run as an unprivileged user)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from omero_adi.importing.importer import DataPackageImporter
from omero_adi.omero.blitz import BlitzServer
from omero_adi.settings import Settings, build_settings, load_settings
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED
from omero_adi.store.session import open_store
from tests.helpers import current_stage, insert_order, running_daemon, stages, wait_for
from tests.importer_standin import formats, unprivileged
from tests.importer_standin.fixture import ImporterSite, importer_site  # noqa: F401

FINAL = (STAGE_IMPORTED, STAGE_INGEST_FAILED)


class Site:
    """A database, the double's default world (researcher in Demo, Dataset 151,
    Screen 451), a data folder, and a daemon."""

    def __init__(self, url: str, importer_site: ImporterSite):  # noqa: F811
        self.omero = importer_site
        self.data = importer_site.folder("data")
        self.dataset, self.screen = 151, 451
        self.settings: Settings = build_settings({
            "ingest_tracking_db": url, "max_workers": 2, "import_timeout": 60,
            "shutdown_timeout": 5, "parallel_filesets_per_worker": 1,
            **importer_site.omero_settings(),
        }, {})
        self.engine = open_store(self.settings)
        self.handler = DataPackageImporter(BlitzServer(self.settings), retry_delay=0.01)

    def file(self, name: str, **behaviour: str) -> Path:
        return formats.image(self.data / name, **behaviour)

    def submit(self, uuid: str, paths: list[Path], **fields: Any) -> None:
        fields.setdefault("dest", str(self.screen if fields.get("type") == "Screen"
                                      else self.dataset))
        fields.setdefault("group", "Demo")
        fields.setdefault("user", "researcher")
        insert_order(self.engine, uuid, [str(p) for p in paths], **fields)

    def wait(self, *uuids: str) -> None:
        wait_for(lambda: all(current_stage(self.engine, u) in FINAL for u in uuids),
                 timeout=90, what=f"orders {uuids} to finish")

    def outcome(self, uuid: str) -> tuple[str, str | None]:
        return stages(self.engine, uuid)[-1]

    def annotations(self, uuid: str) -> list[dict[str, str]]:
        found = [dict(a["values"]) for a in self.omero.annotations()]
        return [values for values in found if values["UUID"] == uuid]

    def checksums(self) -> dict[Path, str]:
        return {p: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.data.rglob("*")) if p.is_file()}


@pytest.fixture
def site(make_pg_database: Callable[[], str],
         importer_site: ImporterSite) -> Iterator[Site]:  # noqa: F811
    site = Site(make_pg_database(), importer_site)
    yield site
    site.handler.close()
    site.engine.dispose()


def test_orders_of_every_shape_through_the_daemon(site: Site) -> None:
    single = site.file("single/cells.tif")
    several = [site.file(f"several/img{i}.tif") for i in range(3)]
    folder = site.data / "folder"
    inside = [site.file("folder/a.tif"), site.file("folder/sub/b.tif")]
    (folder / "metadata.csv").write_text("key,value\nstain,DAPI\nbad,row,here\n")
    plate = formats.plate(site.data / "plates" / "plate.xdce", fields=2)
    mixed = [site.file("mixed/ok.tif"), site.file("mixed/x.tif", on_import="fail")]
    before = site.checksums()
    with running_daemon(site.settings, site.engine, site.handler):
        site.submit("single", [single])
        site.submit("several", several)
        site.submit("folder", [folder])
        site.submit("screen", [plate], type="Screen")
        site.submit("mixed", mixed)
        site.submit("stranger", [single], user="mallory")
        site.submit("outsider", [single], user="alice")
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
        STAGE_INGEST_FAILED, "user 'alice' is not a member of group 'Demo'; nothing was imported")

    logs = Path(site.settings.log_file_path).parent
    runs = sorted(p.name for p in logs.glob("cli.*.errs"))
    # one importer run per importing order, none for refused users
    assert runs == [f"cli.{u}.errs" for u in ("folder", "mixed", "screen", "several", "single")]
    used = sorted(f["entries"][0]["original"] for i, f in site.omero.filesets().items()
                  if site.omero.images_of(i))  # a failed import's fileset has none
    assert used == sorted(map(str, [single, *several, *inside, plate, mixed[0]]))
    assert site.checksums() == before
    assert "IMPORT_DONE" in (logs / "cli.single.errs").read_text()
    assert "- Fileset:" in (logs / "cli.single.logs").read_text()


def test_importer_crash_and_timeout_through_the_daemon(site: Site) -> None:
    crash, hang = site.file("c/a.tif", on_import="crash"), site.file("h/a.tif", on_import="hang")
    before = site.checksums()
    # long enough for the wrapper and the importer to start on a busy machine
    settings = replace(site.settings, import_timeout=15)
    with running_daemon(settings, site.engine, site.handler):
        site.submit("crash", [crash])
        site.submit("hang", [hang])
        site.wait("crash", "hang")
    stage, description = site.outcome("crash")
    assert stage == STAGE_INGEST_FAILED
    # the JVM aborts (-6); omero-py's wrapper exits with that status, 250 to the daemon
    assert description.startswith("Import failed: the importer exited with status 250.")
    stage, description = site.outcome("hang")
    assert stage == STAGE_INGEST_FAILED
    assert description.startswith(
        "Import failed: the importer ran longer than import_timeout (15 s) and was killed.")
    assert site.checksums() == before


def test_the_daemon_process_as_an_unprivileged_user_imports_with_the_real_omero(
    make_pg_database: Callable[[], str], importer_site: ImporterSite  # noqa: F811
) -> None:
    """As a deployment runs it: ``omero-adi run`` as a non-root user with the
    double's environment, finding the real ``omero`` (and the stand-in's
    ``java``) on PATH, no launcher."""
    site = importer_site
    image = formats.image(site.folder("data") / "cells.tif", series=2)
    home = site.folder("daemon", writable=True)
    config = home / "settings.yml"
    config.write_text(yaml.safe_dump({
        "ingest_tracking_db": make_pg_database(), "base_dir": str(image.parent),
        "log_file_path": str(home / "logs" / "app.logs"), "shutdown_timeout": 5}))
    engine = open_store(load_settings(config))  # migrated before the daemon starts
    log = open(home / "daemon.out", "wb")
    daemon = unprivileged.popen(
        [str(Path(sys.executable).parent / "omero-adi"), "--config", str(config), "run"],
        site.who, {**os.environ, **site.env}, cwd=home, stdout=log, stderr=subprocess.STDOUT)
    try:
        insert_order(engine, "as-user", [str(image)], group="Demo", user="researcher", dest="151")
        wait_for(lambda: current_stage(engine, "as-user") in FINAL, timeout=120,
                 what="the order to finish")
        stage, description = stages(engine, "as-user")[-1]
        assert stage == STAGE_IMPORTED, description
        (fileset,) = site.filesets()
        assert len(site.images_of(fileset)) == 2 and len(site.annotations()) == 2
        assert (home / "logs" / "cli.as-user.errs").stat().st_uid == site.who.uid
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        engine.dispose()
