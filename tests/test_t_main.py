"""tests/t_main.py, the multi-group upload health check, against PostgreSQL and a
running daemon: the real DataPackageImporter on the OMERO double (Zarr samples,
registered through the real omero-py), and a simple handler."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import sqlalchemy as sa
import yaml

from omero_adi.importing.importer import DataPackageImporter
from omero_adi.omero.blitz import BlitzServer
from omero_adi.pipeline import OrderContext
from omero_adi.settings import load_settings
from omero_adi.store.session import open_store
from tests import t_main
from tests.test_store_client import _no_global_tracker  # noqa: F401  (autouse fixture)
from tests.test_system_check import run_check
from tests.omero_double.fixture import OmeroDouble
from tests.test_zarr_meta import new_store, write_image

SCRIPT = Path(t_main.__file__)
UUID = re.compile(r"^order ([0-9a-f-]{36}): (\S+) -> (\w+) (\d+) as (\w+)/(\w+)$", re.M)


def write_config(tmp_path: Path, url: str, groups: Any = None, **values: Any) -> Path:
    """config/settings.yml (and config/groups_list.json when ``groups`` is given) in
    ``tmp_path``, the working directory of the check, as in the earlier image."""
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "config").mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "ingest_tracking_db": url, "base_dir": str(tmp_path / "data"),
        "sample_image": str(tmp_path / "sample.tif"), "sample_group": "lab",
        "sample_user": "alice", "sample_parent_id": "51", "shutdown_timeout": 5,
        "log_file_path": str(tmp_path / "logs" / "app.logs"), **values,
    }
    if groups is not None:
        settings["group_list"] = "config/groups_list.json"
        (tmp_path / "config" / "groups_list.json").write_text(
            groups if isinstance(groups, str) else json.dumps(groups))
    (tmp_path / "sample.tif").write_bytes(b"sample pixels")
    config = tmp_path / "config" / "settings.yml"
    config.write_text(yaml.safe_dump(settings))
    return config


def imports(url: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT * FROM imports ORDER BY id")).all()
    finally:
        engine.dispose()


def test_one_order_per_group_through_the_omero_double(
    make_pg_database: Callable[[], str], tmp_path: Path, omero_double: OmeroDouble,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # group_list is relative to the working directory
    env = omero_double.env
    groups = [
        {"group": "Demo", "user": "researcher", "destination_id": 151},
        # the earlier group list's keys: folder under base_dir, and an id nobody needs
        {"omero_grp_name": "Lab2", "core_grp_name": "lab2", "omero_grp_id": 4, "user": "alice",
         "destination_id": 152},
        {"group": "Lab2", "user": "researcher", "destination_id": 152},  # not a member
    ]
    url = make_pg_database()
    config = write_config(
        tmp_path, url, groups, sample_image=str(tmp_path / "sample.zarr"),
        use_register_zarr=True, omero_host=env["OMERO_HOST"], omero_port=int(env["OMERO_PORT"]),
        omero_user=env["OMERO_USER"], omero_password=env["OMERO_PASSWORD"],
    )
    write_image(new_store(tmp_path / "sample.zarr", 2), shape=(1, 2, 1, 16, 16))
    settings = load_settings(config)
    importer = DataPackageImporter(BlitzServer(settings), retry_delay=0.01)

    try:
        assert run_check(config, importer, check=t_main.main) == 1  # one of the three fails
    finally:
        importer.close()

    out = capsys.readouterr().out
    ordered = UUID.findall(out)
    assert [(kind, dest, user, group) for _, _, kind, dest, user, group in ordered] == [
        ("Dataset", "151", "researcher", "Demo"), ("Dataset", "152", "alice", "Lab2"),
        ("Dataset", "152", "researcher", "Lab2")]
    copies = [Path(path) for _, path, *_ in ordered]
    assert copies[1].is_relative_to(tmp_path / "data" / "lab2")
    assert out.count("Import Completed") == 2 and out.count("Import Failed") == 1
    assert re.search(r"Import Failed .*researcher.*Lab2", out)
    state = omero_double.state()
    assert [len(state["datasets"][d]["children"]) for d in ("151", "152")] == [1, 1]
    annotated = sorted(dict(a["values"])["UUID"] for a in state["annotations"].values())
    assert annotated == sorted(uuid for uuid, *_ in ordered[:2])
    # Written through the client module: the earlier ADI's rows.
    pending = [r for r in imports(url) if r.stage == "Import Pending"]
    assert [(r.uuid, r.files, r.file_names) for r in pending] == [
        (uuid, json.dumps([path]), "[]") for uuid, path, *_ in ordered]


def test_without_group_list_the_sample_settings_make_one_order(
    make_pg_database: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[OrderContext] = []

    def handler(ctx: OrderContext) -> str:
        seen.append(ctx)
        return "imported the sample"

    config = write_config(tmp_path, make_pg_database())
    assert run_check(config, handler, check=t_main.main) == 0
    out = capsys.readouterr().out
    [(uuid, path, kind, dest, user, group)] = UUID.findall(out)
    assert (kind, dest, user, group) == ("Dataset", "51", "alice", "lab")
    assert "Import Completed  imported the sample" in out
    [ctx] = seen
    assert (ctx.order.uuid, ctx.order.files) == (uuid, (Path(path),))
    assert Path(path).read_bytes() == b"sample pixels"


@pytest.mark.parametrize("groups, message", [
    (None, "group_list config/groups_list.json: cannot read it (No such file or directory)"),
    ("[{'group': 'Demo'}]", "is not valid JSON"),
    ("[]", "must be a non-empty JSON list of groups"),
    ({"group": "Demo"}, "must be a non-empty JSON list of groups"),
    (["Demo"], "entry 0 must be an object with a group"),
    ([{"user": "alice"}], "entry 0 names no group"),
    ([{"group": "Demo"}, {"group": "Lab2", "dataset": 3}], "entry 1 has unknown key(s) dataset"),
    ([{"group": "Demo", "destination_id": "abc"}], "destination_id must be a Dataset id"),
    ([{"group": "Demo", "destination_type": "Project"}], "must be Dataset or Screen"),
    ([{"group": "Demo", "folder": "../up"}], "must be a folder under base_dir"),
])
def test_a_missing_or_malformed_group_list_is_named(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], groups: Any, message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, sqlite_url, groups if groups is not None else [])
    if groups is None:
        (tmp_path / "config" / "groups_list.json").unlink()
    open_store(load_settings(config)).dispose()
    assert t_main.main(["--config", str(config), "--no-wait"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t_main: ") and message in err
    assert imports(sqlite_url) == []  # nothing ordered


def test_runs_as_a_script_from_the_working_directory(sqlite_url: str, tmp_path: Path) -> None:
    """``python tests/t_main.py`` in the image: config/settings.yml of the working
    directory, system_check.py beside the script."""
    config = write_config(tmp_path, sqlite_url, [{"group": "Demo", "user": "researcher"},
                                                 {"group": "Lab2", "user": "alice"}])
    open_store(load_settings(config)).dispose()
    done = subprocess.run([sys.executable, str(SCRIPT), "--no-wait"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert [m[5] for m in UUID.findall(done.stdout)] == ["Demo", "Lab2"]
    assert [r.stage for r in imports(sqlite_url)] == ["Import Pending"] * 2
