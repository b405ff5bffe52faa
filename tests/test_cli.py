"""The admin command line against a real PostgreSQL database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omero_adi import cli
from omero_adi.settings import build_settings
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED, STAGE_NEW_ORDER, STAGES
from omero_adi.store.session import open_store
from tests.helpers import current_stage, insert_order, running_daemon, stages
from tests.test_daemon import make_settings, ok_handler


@pytest.fixture
def env(make_pg_database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    url = make_pg_database()
    monkeypatch.setenv("INGEST_TRACKING_DB_URL", url)
    monkeypatch.chdir(tmp_path)  # no config/settings.yml here
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "image.tif").write_bytes(b"pixels")
    return url, open_store(build_settings({"ingest_tracking_db": url}, {}))


def test_submit_status_cancel_retry(env, capsys) -> None:
    url, engine = env
    assert cli.main(["submit", "--group", "lab", "--user", "alice", "--destination-id", "7",
                     "--uuid", "cli-1", "/data/image.tif"]) == 0
    assert capsys.readouterr().out.strip() == "cli-1"
    assert current_stage(engine, "cli-1") == STAGE_NEW_ORDER

    assert cli.main(["status", "--json", "--uuid", "cli-1"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert (shown["stage"], shown["user"], shown["destination"]) == (
        STAGE_NEW_ORDER, "alice", "Dataset:7")

    assert cli.main(["cancel", "cli-1"]) == 0
    stage, description = stages(engine, "cli-1")[-1]
    assert stage == STAGE_INGEST_FAILED and description.startswith("cancelled by ")

    assert cli.main(["cancel", "cli-1"]) == 1
    assert "only Pending orders can be cancelled" in capsys.readouterr().err

    assert cli.main(["retry", "cli-1"]) == 0
    assert current_stage(engine, "cli-1") == STAGE_NEW_ORDER
    assert cli.main(["retry", "cli-1"]) == 1
    assert "only finished orders can be retried" in capsys.readouterr().err


def test_unknown_uuid_is_a_clear_error(env, capsys) -> None:
    for command in ("retry", "cancel"):
        assert cli.main([command, "no-such-order"]) == 1
        assert "no order with uuid 'no-such-order'" in capsys.readouterr().err
    assert cli.main(["status", "--uuid", "no-such-order"]) == 1
    assert "no order with uuid 'no-such-order'" in capsys.readouterr().err


def test_status_table_filters_by_user(env, capsys) -> None:
    url, engine = env
    insert_order(engine, "a-1", ["/data/a.tif"], user="alice")
    insert_order(engine, "b-1", ["/data/b.tif"], user="bob")
    assert cli.main(["status", "--user", "bob"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["UUID", "STAGE"]
    assert [line.split()[0] for line in out[1:]] == ["b-1"]


def test_submit_wait_follows_the_order_to_completion(env, capsys, tmp_path) -> None:
    url, engine = env
    settings = make_settings(url, tmp_path / "data")
    with running_daemon(settings, engine, ok_handler):
        code = cli.main(["submit", "--group", "lab", "--user", "alice", "--destination-id", "7",
                         "--uuid", "waited", "--wait", "--timeout", "30",
                         str(tmp_path / "data" / "image.tif")])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()[1:]  # after the uuid: one line per stage, in order
    assert [next(s for s in STAGES if s in line) for line in lines] == [
        STAGE_NEW_ORDER, "Import Started", STAGE_IMPORTED]
    assert lines[-1].endswith(f"{STAGE_IMPORTED}  imported 1 file(s)")


def test_check_reports_each_failure_on_its_own_line(env, capsys, tmp_path) -> None:
    config = tmp_path / "settings.yml"
    config.write_text(f"base_dir: {tmp_path / 'missing'}\n"
                      f"inplace_tmp_root: {tmp_path}\nmanaged_repository: {tmp_path}\n")
    code = cli.main(["--config", str(config), "check"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    by_name = {line[5:].split(":")[0]: line[:4].strip() for line in lines}
    assert list(by_name) == ["database", "omero", "podman", "base_dir", "inplace_tmp_root",
                             "managed_repository"]  # as docs/operations.md lists them
    assert by_name["database"] == "ok"  # migrated by the fixture
    assert by_name["base_dir"] == "FAIL"
    assert by_name["inplace_tmp_root"] == "ok"


def test_bad_settings_stop_the_daemon_with_the_key_named(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.yml").write_text("max_workers: lots\n")
    process = subprocess.run([sys.executable, "-m", "omero_adi.main"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 2
    assert "setting 'max_workers' must be a whole number, got 'lots'" in process.stderr


def test_migrate_command_reports_head(env, capsys) -> None:
    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("(head)")
