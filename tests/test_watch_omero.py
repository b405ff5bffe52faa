"""Watch rules against the OMERO double through the real omero-py and ezomero:
a Dataset named from a path segment is found, or created in the user's
group, before the order is written; an unknown user is refused once."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from omero_adi.omero.blitz import BlitzServer
from omero_adi.settings import build_settings
from omero_adi.store.session import open_store
from tests.omero_double.fixture import OmeroDouble
from tests.watch_helpers import (Clock, group_named, ledger_rows, omero_settings, orders_for,
                                 runner, scan_all, user_named, write)


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = open_store(build_settings({"ingest_tracking_db": pg_url}, {}))
    yield engine
    engine.dispose()


def test_datasets_by_name_are_found_or_created_as_the_user_and_unknown_users_refused(
        pg_url: str, engine: sa.Engine, tmp_path: Path, omero_double: OmeroDouble) -> None:
    folder = tmp_path / "scope"
    settings = build_settings({
        "ingest_tracking_db": pg_url, "base_dir": str(tmp_path), **omero_settings(omero_double),
        "watch": [{"name": "scope", "folder": str(folder), "pattern": "{user}/{dataset}",
                   "group": "Demo", "dataset_name": "{dataset}", "settle_seconds": 0}],
    }, {})
    server = BlitzServer(settings)
    try:
        existing = write(folder / "researcher" / "dataset 151" / "a.tif")
        new = [write(folder / "researcher" / "week 2" / f"{n}.tif") for n in range(2)]
        stranger = write(folder / "mallory" / "week 2" / "c.tif")
        watcher = runner(settings, engine, Clock(), server)
        scan_all(watcher)
        later = write(folder / "researcher" / "week 2" / "later.tif")
        scan_all(runner(settings, engine, Clock(), server))  # another daemon, another pass
    finally:
        server.close()
    held = omero_double.state()
    created = [d for d in held["datasets"].values() if d["name"] == "week 2"]
    assert len(created) == 1, "one Dataset of the name, however many units and passes"
    researcher = user_named(omero_double, "researcher")
    demo = group_named(omero_double, "Demo")
    assert (created[0]["owner"], created[0]["group"]) == (researcher["id"], demo["id"])
    assert orders_for(engine, existing)[0].destination_id == "151"
    assert {orders_for(engine, p)[0].destination_id for p in [*new, later]} == {
        str(created[0]["id"])}
    assert orders_for(engine, stranger) == []
    [refused] = [r for r in ledger_rows(engine, "scope") if r.state == "refused"]
    assert (refused.path, refused.description) == (
        str(stranger), "user 'mallory' does not exist in OMERO")
