"""The admin command line against a real PostgreSQL database."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from omero_adi import cli
from omero_adi.follow import follow
from omero_adi.importing.jars import locate_jars
from omero_adi.store import admin, migrate
from omero_adi.store.queue import OrderQueue
from omero_adi.settings import build_settings
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED, STAGE_NEW_ORDER, STAGES
from omero_adi.store.session import open_store
from tests.helpers import current_stage, insert_order, running_daemon, stages, wait_for
from tests.test_daemon import make_settings, ok_handler

#: The revision before the last (downgrade and upgrade again).
PROGRESS_REVISION = "b3d5f1e8a214"


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
    assert stage == STAGE_INGEST_FAILED and (description or "").startswith("cancelled by ")

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
    assert list(by_name) == ["settings", "database", "omero", "omero_cli", "java", "omero_jars",
                             "user", "podman", "base_dir", "inplace_tmp_root",
                             "managed_repository", "temporary_dir"]  # as docs/operations.md lists them
    assert by_name["settings"] == "ok"
    assert by_name["database"] == "ok"  # migrated by the fixture
    assert by_name["base_dir"] == "FAIL"
    assert by_name["inplace_tmp_root"] == "ok"


def test_check_names_a_temporary_directory_the_importer_cannot_use(
        env, capsys, tmp_path, monkeypatch) -> None:
    not_a_folder = tmp_path / "tmp"
    not_a_folder.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_folder))  # what gettempdir() gives
    cli.main(["check"])
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "temporary_dir" in line]
    assert line == f"FAIL temporary_dir: {not_a_folder} is not a directory"


def test_check_reports_what_imports_need_on_this_machine(env, capsys, tmp_path) -> None:
    """Expectations from this machine itself: whatever it lacks must show as FAIL."""
    cli.main(["check"])
    details = {line[5:].split(":", 1)[0]: (line[:4].strip(), line[5:].split(": ", 1)[1])
               for line in capsys.readouterr().out.splitlines()}
    omero = shutil.which("omero")
    assert details["omero_cli"] == ("ok", omero) if omero else details["omero_cli"][0] == "FAIL"
    java = shutil.which("java")
    assert details["java"][0] == ("ok" if java else "FAIL")
    if java:
        assert details["java"][1].startswith(f"{java}: ") and "version" in details["java"][1]
    from omero.cli import OMERODIR
    from omero.util import get_omero_user_cache_dir

    folder, count = locate_jars(Path(OMERODIR), Path(get_omero_user_cache_dir()))
    assert details["omero_jars"] == (
        ("ok", f"{count} jars in {folder}") if count else
        ("FAIL", f"no OMERO.java jars at {folder}: fetch them as the daemon's user with "
                 "`omero import --fetch-jars latest`"))
    root = os.geteuid() == 0
    assert details["user"] == (("FAIL", details["user"][1]) if root else ("ok", f"uid {os.geteuid()}"))
    assert not root or "refuses" in details["user"][1]
    state, detail = details["podman"]
    assert state == "ok" and re.search(r", Podman \d+\.\d+", detail), detail
    assert detail.startswith(("podman command line (", "Podman API at "))


def test_bad_settings_stop_the_daemon_with_the_key_named(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.yml").write_text("max_workers: lots\n")
    process = subprocess.run([sys.executable, "-m", "omero_adi.main"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 2
    assert "setting 'max_workers' must be a whole number, got 'lots'" in process.stderr


def test_migrate_says_what_it_did(make_pg_database, monkeypatch, tmp_path, capsys) -> None:
    url = make_pg_database()
    monkeypatch.setenv("INGEST_TRACKING_DB_URL", url)
    monkeypatch.chdir(tmp_path)
    head = migrate.head_revision()
    assert cli.main(["migrate"]) == 0
    assert capsys.readouterr().out == (
        f"{url}: created omero-adi's tables; now at revision {head} (head)\n")
    assert cli.main(["migrate"]) == 0
    assert capsys.readouterr().out == f"{url}: already at revision {head} (head); nothing to do\n"
    assert cli.main(["migrate", "--downgrade", PROGRESS_REVISION]) == 0
    assert capsys.readouterr().out == (
        f"{url}: downgraded from {head}; now at revision {PROGRESS_REVISION}\n")
    assert cli.main(["migrate"]) == 0
    assert capsys.readouterr().out == (
        f"{url}: upgraded from {PROGRESS_REVISION}; now at revision {head} (head)\n")


def test_status_on_an_unmigrated_database_says_to_migrate(
    make_pg_database, monkeypatch, tmp_path, capsys
) -> None:
    monkeypatch.setenv("INGEST_TRACKING_DB_URL", make_pg_database())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status"]) == 1
    assert "has no omero-adi tables yet: run `omero-adi migrate`" in capsys.readouterr().err


def test_status_on_a_database_older_than_the_progress_table_says_to_migrate(
    make_pg_database, monkeypatch, tmp_path, capsys
) -> None:
    monkeypatch.setenv("INGEST_TRACKING_DB_URL", make_pg_database())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["migrate"]) == 0
    before_progress = "a7c4e2d90b13"  # the revision before adi_progress
    assert cli.main(["migrate", "--downgrade", before_progress]) == 0
    capsys.readouterr()
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert f"is at revision {before_progress}, older than this omero-adi" in err
    assert "run `omero-adi migrate`" in err and "Traceback" not in err


def test_status_without_a_database_creates_no_sqlite_file(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no settings, no INGEST_TRACKING_DB_URL: the default SQLite file
    for command in (["status"], ["retry", "x"], ["cancel", "x"]):
        assert cli.main(command) == 1
        assert "no order database at omero_adi.sqlite" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_status_marks_cut_descriptions_and_shows_one_order_whole(env, capsys) -> None:
    url, engine = env
    long = "the importer exited with status 2: " + "x" * 80
    insert_order(engine, "long-1", ["/data/a.tif", "/data/b.tif"])
    with engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE imports SET stage = 'Import Failed', description = :d WHERE uuid = 'long-1'"),
            {"d": long + "\nImporter errors (end of logs/cli.long-1.errs):\nboom"})
    insert_order(engine, "short-1", ["/data/c.tif"])
    with engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE imports SET stage = 'Import Failed', description = 'short reason' "
            "WHERE uuid = 'short-1'"))
    assert cli.main(["status"]) == 0
    table = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert table["long-1"].endswith(long[:59] + "…")
    assert table["short-1"].endswith("short reason")  # whole: no mark

    assert cli.main(["status", "--uuid", "long-1"]) == 0
    shown = capsys.readouterr().out
    assert long in shown and "boom" in shown and "…" not in shown
    assert "/data/a.tif" in shown and "/data/b.tif" in shown


def test_status_json_lists_are_lists(env, capsys) -> None:
    url, engine = env
    insert_order(engine, "json-1", ["/data/a.tif", "/data/b.tif"])
    assert cli.main(["status", "--json", "--uuid", "json-1"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["files"] == ["/data/a.tif", "/data/b.tif"]
    assert shown["progress"] is None


def test_submit_refuses_relative_paths_before_writing(env, capsys) -> None:
    url, engine = env
    assert cli.main(["submit", "--group", "lab", "--user", "alice", "--destination-id", "7",
                     "--uuid", "rel-1", "data/image.tif"]) == 1
    err = capsys.readouterr().err
    assert "'data/image.tif' is a relative path; give absolute paths" in err
    assert current_stage(engine, "rel-1") is None


def test_submit_wait_says_when_no_daemon_works(env, capsys) -> None:
    url, engine = env
    uuid = admin.submit(engine, {"Group": "lab", "Username": "alice", "DestinationID": 7,
                                 "Files": ["/data/image.tif"]})
    assert follow(engine, uuid, timeout=2.0, no_daemon_after=0.5) == 1
    err = capsys.readouterr().err
    assert f"no daemon has picked up order {uuid} in 0s, and none is running any order" in err
    assert err.index("no daemon has picked up") < err.index("did not finish within")


def test_submit_wait_says_nothing_of_the_kind_while_daemons_are_busy(env, capsys) -> None:
    url, engine = env
    busy = OrderQueue(engine, "other-daemon")
    insert_order(engine, "running-elsewhere", ["/data/image.tif"])
    assert busy.claim_next() is not None  # a daemon is at work (a fresh heartbeat)
    insert_order(engine, "queued-behind", ["/data/image.tif"])
    assert follow(engine, "queued-behind", timeout=1.5, no_daemon_after=0.2) == 1
    assert "no daemon has picked up" not in capsys.readouterr().err


def test_ctrl_c_during_submit_wait_stops_following_with_one_line(env, tmp_path) -> None:
    url, engine = env
    process = subprocess.Popen(
        [sys.executable, "-m", "omero_adi", "submit", "--group", "lab", "--user", "alice",
         "--destination-id", "7", "--uuid", "waited-1", "--wait", "/data/image.tif"],
        cwd=tmp_path, env={**os.environ, "INGEST_TRACKING_DB_URL": url},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "waited-1"  # the order is written
    wait_for(lambda: admin.history(engine, "waited-1"), what="the order")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines() == [
        "stopped following order waited-1; it goes on "
        "(`omero-adi status --uuid waited-1` shows it)"]
    assert current_stage(engine, "waited-1") == STAGE_NEW_ORDER


def test_every_option_has_help_and_bare_omero_adi_lists_the_commands(capsys) -> None:
    parser = cli.build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in commands.choices:
        assert f"    {name} " in out


def test_misspelled_settings_suggest_the_key_and_reach_check_and_the_log(
    env, tmp_path, capsys
) -> None:
    url, engine = env
    config = tmp_path / "settings.yml"
    config.write_text(f"max_worker: 3\nlog_file_path: {tmp_path / 'logs' / 'app.logs'}\n")
    warning = "unknown settings key 'max_worker' is ignored; did you mean 'max_workers'?"
    assert cli.main(["--config", str(config), "check"]) == 1
    assert f"FAIL settings: {warning}" in capsys.readouterr().out.splitlines()
    status = subprocess.run([sys.executable, "-m", "omero_adi", "--config", str(config), "status"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "INGEST_TRACKING_DB_URL": url})
    assert status.returncode == 0 and status.stderr == f"WARNING {warning}\n"
    # The daemon writes it to its log file; it stops at once on a database without tables.
    config.write_text(config.read_text() + "ingest_tracking_db: sqlite:////nonexistent/x.db\n")
    process = subprocess.run([sys.executable, "-m", "omero_adi", "--config", str(config), "run"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in os.environ.items()
                                  if k != "INGEST_TRACKING_DB_URL"})
    assert process.returncode == 1
    assert warning in (tmp_path / "logs" / "app.logs").read_text()


def test_readme_puts_the_installed_command_on_the_path() -> None:
    """The README's "Using it" calls ``omero-adi``, which scripts/run installs
    into .venv/bin: the block first puts that on PATH (test_docs parses the
    command lines themselves)."""
    root = Path(__file__).parents[1]
    assert ".venv/bin/pip install" in (root / "scripts" / "run").read_text()
    readme = (root / "README.md").read_text()
    block = readme.split("## Using it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    first = block.strip().splitlines()[0]
    assert first == 'export PATH="$PWD/.venv/bin:$PATH"'
