"""The site of the notification and guard tests: a database, a data folder and a
daemon with notifications; with OMERO, the OMERO double (real omero-py, the real
``omero import`` wrapper and the importer stand-in) where alice of group ``lab``
has an address, and real imports."""

from __future__ import annotations

import uuid as uuidlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
import sqlalchemy as sa

from omero_adi.daemon import Daemon
from omero_adi.importing.importer import DataPackageImporter
from omero_adi.notify.outbox import Outbox
from omero_adi.notify.service import Notifications
from omero_adi.omero.blitz import BlitzServer
from omero_adi.omero.boundary import OmeroServer
from omero_adi.pipeline import OrderHandler
from omero_adi.settings import Settings, build_settings
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED
from omero_adi.store.session import open_store
from tests.helpers import current_stage, insert_order, running_daemon, stages, wait_for
from tests.importer_standin import formats
from tests.importer_standin.fixture import ImporterSite

FINAL = (STAGE_IMPORTED, STAGE_INGEST_FAILED)
#: What the OMERO double is told besides its default world: group ``lab`` where
#: alice has an address of her own, a Dataset of hers, and bob without an address.
LAB = {"groups": [{"name": "lab"}],
       "users": [{"name": "alice", "groups": ["lab"], "email": "alice@lab.example.org"},
                 {"name": "bob", "groups": ["lab"], "email": None}],
       "datasets": [{"id": 901, "name": "alice's", "group": "lab", "owner": "alice"}]}
LAB_DATASET = 901
FAILED = sa.text(
    "INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, "
    "uuid, files, description) VALUES ('lab', 'alice', :dest, 'Dataset', :stage, :uuid, "
    ":files, 'the converter exited with status 3') RETURNING id")


def queue_failed_order(connection: sa.Connection, outbox: Outbox, uuid: str) -> int:
    """An order's ``Import Failed`` row and its messages, in the caller's transaction
    as the daemon's queue writes them (no claim: nothing runs); how many were queued."""
    event_id = connection.execute(FAILED, {
        "dest": str(LAB_DATASET), "stage": STAGE_INGEST_FAILED, "uuid": uuid,
        "files": f'["/data/alice/{uuid}.tif"]'}).scalar_one()
    return outbox.add_event(connection, event_id, STAGE_INGEST_FAILED)


class NoOmero:
    """The server of a site without OMERO (delivery and outbox tests): asking
    it anything fails the test."""

    def user_email(self, user: str) -> str | None:
        raise AssertionError(f"a test without OMERO asked for {user!r}'s address")

    def close(self) -> None:
        pass


class Site:
    """A database, a data folder and a daemon whose notifications use them. With
    ``omero`` (the double, the real wrapper and the importer stand-in): alice in
    group lab, her address from OMERO, and orders imported for real."""

    def __init__(self, url: str, tmp_path: Path, notify: dict[str, Any],
                 omero: ImporterSite | None = None, **more: Any):
        self.omero = omero
        values: dict[str, Any] = {
            "ingest_tracking_db": url, "max_workers": 2, "shutdown_timeout": 5,
            "guard_interval": 0, "notify": notify, **more}
        if omero is None:
            self.data = tmp_path / "data"
            self.data.mkdir(exist_ok=True)
            values["base_dir"] = str(self.data)
        else:
            omero.double.world(LAB)
            values.update(omero.omero_settings(), import_timeout=60,
                          parallel_filesets_per_worker=1)
            self.data = Path(values["base_dir"])
        self.settings: Settings = build_settings(values, {})
        self.engine = open_store(self.settings)
        self.importer = None if omero is None else DataPackageImporter(
            BlitzServer(self.settings), retry_delay=0.01)

    def server(self, settings: Settings) -> OmeroServer:
        if self.omero is None:
            return NoOmero()  # type: ignore[return-value]
        return BlitzServer(settings)

    def daemon(self, handler: OrderHandler | None = None) -> AbstractContextManager[Daemon]:
        """The daemon; its orders go to ``handler``, else to the real importer."""
        notifications = Notifications(self.settings, server=self.server)
        chosen = handler or self.importer
        assert chosen is not None, "a site without OMERO needs a handler"
        return running_daemon(self.settings, self.engine, chosen, notifications=notifications)

    def order(self, count: int = 1, failing: bool = True, series: int = 1,
              **fields: Any) -> tuple[str, list[str]]:
        """An order of alice's (lab) into her Dataset; with OMERO, its files are
        images the importer stand-in imports (``failing``: the server refuses them)."""
        uuid = str(uuidlib.uuid4())
        files = []
        for number in range(count):
            path = self.data / uuid[:8] / f"plate {number}.tif"
            path.parent.mkdir(exist_ok=True)
            if self.omero is None:
                path.write_bytes(b"pixels")
            else:
                formats.image(path, series=series, **({"on_import": "fail"} if failing else {}))
            files.append(str(path))
        fields = {"user": "alice", "group": "lab", "dest": str(LAB_DATASET), **fields}
        insert_order(self.engine, uuid, files, **fields)
        return uuid, files

    def wait(self, uuid: str) -> str:
        return str(wait_for(lambda: (stage := current_stage(self.engine, uuid)) in FINAL and stage,
                            timeout=90, what=f"order {uuid}"))

    def description(self, uuid: str) -> str:
        return stages(self.engine, uuid)[-1][1] or ""

    def outbox(self) -> Sequence[Any]:
        with self.engine.connect() as connection:
            return connection.execute(
                sa.text("SELECT * FROM adi_notify_outbox ORDER BY id")).fetchall()

    def close(self) -> None:
        if self.importer is not None:
            self.importer.close()
        self.engine.dispose()


@pytest.fixture
def site_factory(make_pg_database: Callable[[], str], tmp_path: Path,
                 request: pytest.FixtureRequest) -> Iterator[Callable[..., Site]]:
    """``make(notify, omero=True)``: a site with the OMERO double (started for the
    first such site of the test), or without OMERO."""
    made: list[Site] = []

    def make(notify: dict[str, Any], url: str | None = None, omero: bool = False,
             **more: Any) -> Site:
        double = request.getfixturevalue("importer_site") if omero else None
        made.append(Site(url or make_pg_database(), tmp_path, notify, double, **more))
        return made[-1]

    yield make
    for site in made:
        site.close()
