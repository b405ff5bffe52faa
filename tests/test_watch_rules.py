"""Bad watch rules and bad trees get clear errors; ``omero-adi watch`` and
``status`` show what the rules do; the watch metrics are the documented ones.

Only ``watch --forget`` needs OMERO's answer (a user refused, then created):
that test runs the real :class:`BlitzServer` against the Ice double. The rest
checks settings, scanning and reports with a fixed group, user and Dataset,
which the watcher never asks OMERO about: no server and no stand-in there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import prometheus_client
import pytest
import sqlalchemy as sa
import yaml

from omero_adi import cli
from omero_adi.settings import SettingsError, build_settings
from omero_adi.store.session import open_store
from omero_adi.watch.report import METRICS, register_metrics
from omero_adi.watch.scan import Scanner
from tests.omero_double.fixture import OmeroDouble
from tests.watch_helpers import (
    Clock,
    CountingBlitz,
    blitz,  # noqa: F401  (fixture)
    orders_for,
    runner,
    scan_all,
    write,
)

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"folder": "/data/incoming", "group": "lab", "user": "alice", "dataset_id": 7}


@pytest.mark.parametrize("change, message", [
    ({"folder": "/elsewhere/incoming"}, "watch rule '/elsewhere/incoming': folder "
     "/elsewhere/incoming is outside the import roots (/data)"),
    ({"folder": None}, "setting 'watch[0]': folder is required"),
    ({"folder": "incoming"}, "setting 'watch[0]': folder 'incoming' must be an absolute path"),
    ({"folder": "/data/../etc"},
     "setting 'watch[0]': folder '/data/../etc' must be an absolute path without '..'"),
    ({"pattern": "{group}/{project}", "group": None}, "setting 'watch[0]': pattern names an "
     "unknown segment {project}; known: {group}, {user}, {dataset}"),
    ({"pattern": "{group}x"}, "setting 'watch[0]': pattern level '{group}x' must be a whole "
     "{segment}"),
    ({"pattern": "/other/{user}", "user": None},
     "setting 'watch[0]': pattern '/other/{user}' does not begin with the folder"),
    ({"dataset_id": None, "dataset_name": "{dataset}"},
     "setting 'watch[0]': dataset_name uses {dataset}, which the pattern does not name"),
    ({"pattern": "{group}"}, "setting 'watch[0]': group is given and also named in the pattern"),
    ({"user": None}, "setting 'watch[0]': give user, or name {user} in the pattern"),
    ({"group": " "}, "setting 'watch[0]': group must be non-empty text, got ' '"),
    ({"screen_id": 3}, "setting 'watch[0]': give exactly one of dataset_id, screen_id, "
                       "dataset_name (got dataset_id, screen_id)"),
    ({"dataset_id": "seven"}, "setting 'watch[0].dataset_id' must be a whole number, got 'seven'"),
    ({"dataset_id": 0}, "setting 'watch[0].dataset_id' must be at least 1, got 0"),
    ({"unit": "plate"}, "setting 'watch[0].unit' must be one of file, folder, got 'plate'"),
    ({"settle_seconds": -1}, "setting 'watch[0].settle_seconds' must be at least 0, got -1"),
    ({"include": 5}, "setting 'watch[0].include' must be a list of text, got 5"),
    ({"ready_marker": "a/b"}, "setting 'watch[0]': ready_marker must be a file name"),
    ({"preprocessing": {"input_file": "{Files}"}},
     "setting 'watch[0].preprocessing': needs a container"),
    ({"preprocessing": {"container": "c", "extra_params": ["a"]}},
     "setting 'watch[0].preprocessing.extra_params' must be a mapping of names to values"),
    ({"preprocessing": {"container": "c", "extra_params": {"a": [1]}}},
     "setting 'watch[0].preprocessing.extra_params.a' must be text, got [1]"),
    ({"preprocessing": {"container": "c", "colour": "blue"}},
     "unknown setting watch[0].preprocessing.colour"),
    ({"colour": "blue"}, "unknown setting watch[0].colour"),
])
def test_a_bad_rule_stops_the_settings_with_a_clear_message(
        change: dict[str, Any], message: str) -> None:
    """Each message names the rule (its place in the list, or its name), the key
    and what is wrong."""
    rule = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(SettingsError) as error:
        build_settings({"watch": [rule]}, {})
    assert message in str(error.value)


def test_a_misspelt_key_gets_the_nearest_one_and_the_rule_its_name() -> None:
    rules = [{**GOOD, "name": "scope-a", "settle_second": 5}]
    with pytest.raises(SettingsError) as error:
        build_settings({"watch": rules}, {})
    assert str(error.value) == ("unknown setting watch[0].settle_second; did you mean "
                                "watch[0].settle_seconds? (watch[0] is 'scope-a')")
    with pytest.raises(SettingsError, match=r"; known: container, input_file, "):
        build_settings({"watch": [{**GOOD, "preprocessing": {"container": "c", "zz": 1}}]}, {})


def test_the_example_rules_of_docs_watch_md_are_valid() -> None:
    text = (ROOT / "docs" / "watch.md").read_text(encoding="utf-8")
    example = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", text, re.S)[0])
    rules = build_settings(example, {}).watch
    assert [(r.name, r.levels, r.unit, r.dataset_name, r.destination_id) for r in rules] == [
        ("microscope-1", ("group", "user", "dataset"), "file", "{dataset}", None),
        ("screening", (), "folder", None, 451)]
    assert rules[1].preprocessing is not None
    assert rules[1].preprocessing.extra_params == {"saveoption": "single"}


def test_rule_names_must_differ_and_allowed_roots_count_as_roots() -> None:
    with pytest.raises(SettingsError, match="name 'a' is used twice"):
        build_settings({"watch": [{**GOOD, "name": "a"}, {**GOOD, "name": "a"}]}, {})
    settings = build_settings({"allowed_roots": ["/scope"],
                               "watch": [{**GOOD, "folder": "/scope/x/"}]}, {})
    assert settings.watch[0].folder == "/scope/x"
    with pytest.raises(SettingsError, match="setting 'watch' must be a list"):
        build_settings({"watch": {"folder": "/data"}}, {})


def test_symbolic_links_out_of_the_roots_are_reported_and_left_alone(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    write(outside / "secret.tif")
    (root / "in").mkdir(parents=True)
    (root / "in" / "leak.tif").symlink_to(outside / "secret.tif")
    (root / "in" / "leakdir").symlink_to(outside)
    (root / "via").symlink_to(outside)
    settings = build_settings({"base_dir": str(root), "watch": [
        {**GOOD, "name": "in", "folder": str(root / "in")},
        {**GOOD, "name": "via", "folder": str(root / "via")}]}, {})
    os.utime(root / "in", (1_000_000, 1_000_000))  # quiet for long: the listing is kept
    scanners = [Scanner(rule, [str(root)]) for rule in settings.watch]
    inside, via = (scanner.scan() for scanner in scanners)
    assert scanners[0].scan().problems == inside.problems, "reported while they last"
    assert inside.units == {}
    assert sorted(inside.problems) == [
        f"{root}/in/leak.tif is a symbolic link to {outside}/secret.tif, outside the import "
        "roots: left alone",
        f"{root}/in/leakdir is a symbolic link to {outside}, outside the import roots: left alone"]
    assert via.problems == [f"folder {root}/via resolves to {outside}, outside the import "
                            f"roots ({root})"]


def test_names_an_order_cannot_carry_are_reported_and_do_not_hold_up_the_rest(
        make_pg_database: Any, tmp_path: Path) -> None:
    url = make_pg_database()
    engine = open_store(build_settings({"ingest_tracking_db": url}, {}))
    good = write(tmp_path / "in" / "good.tif")
    for name in (b"bad\xff.tif", b"line\nbreak.tif"):
        with open(bytes(tmp_path / "in") + b"/" + name, "wb") as odd:
            odd.write(b"pixels")
    settings = build_settings(yaml.safe_load(_settings_file(tmp_path, url, name="odd",
                                                            settle_seconds=0).read_text()), {})
    watcher = runner(settings, engine, Clock())
    scan_all(watcher)
    assert len(orders_for(engine, good)) == 1
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM imports")).scalar_one() == 1
    assert sorted(watcher.rules["odd"].problems) == [
        f"'{tmp_path}/in/bad\\udcff.tif': the name is not printable UTF-8 (an order cannot "
        "name it): left alone",
        f"'{tmp_path}/in/line\\nbreak.tif': the name is not printable UTF-8 (an order cannot "
        "name it): left alone"]
    engine.dispose()


@pytest.fixture
def shared_tree() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's own is private to root)."""
    with tempfile.TemporaryDirectory(prefix="adi-watch-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def _settings_file(folder: Path, url: str, **rule: Any) -> Path:
    path = folder / "settings.yml"
    path.write_text(yaml.safe_dump({"ingest_tracking_db": url, "base_dir": str(folder),
                                    "watch": [{**GOOD, "folder": str(folder / "in"), **rule}]}))
    return path


def test_an_unreadable_folder_is_reported_by_the_watcher_running_unprivileged(
        make_pg_database: Any, shared_tree: Path) -> None:
    url = make_pg_database()
    open_store(build_settings({"ingest_tracking_db": url}, {})).dispose()
    write(shared_tree / "in" / "open" / "a.tif")
    write(shared_tree / "in" / "locked" / "b.tif")
    for folder in (shared_tree / "in", shared_tree / "in" / "open"):
        folder.chmod(0o755)
    (shared_tree / "in" / "open" / "a.tif").chmod(0o644)
    (shared_tree / "in" / "locked").chmod(0o000)
    config = _settings_file(shared_tree, url, settle_seconds=0)
    config.chmod(0o644)
    shown = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "omero_adi", "watch", "--dry-run", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert f"problem      cannot read {shared_tree}/in/locked: Permission denied" in shown.stdout
    assert f"would order  {shared_tree}/in/open/a.tif  for alice in lab into Dataset 7" \
        in shown.stdout


def test_check_scans_each_rule_and_fails_on_its_problems(
        make_pg_database: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = make_pg_database()
    open_store(build_settings({"ingest_tracking_db": url}, {})).dispose()
    write(tmp_path / "in" / "a.tif")
    (tmp_path / "in" / "away").symlink_to("/etc")
    config = _settings_file(tmp_path, url, name="scope")
    assert cli.main(["check", "--config", str(config)]) == 1
    [line] = [line for line in capsys.readouterr().out.splitlines() if "watch scope" in line]
    assert line == (f"FAIL watch scope: {tmp_path}/in/away is a symbolic link to /etc, "
                    "outside the import roots: left alone")
    (tmp_path / "in" / "away").unlink()
    cli.main(["check", "--config", str(config)])
    [line] = [line for line in capsys.readouterr().out.splitlines() if "watch scope" in line]
    assert line.startswith(f"ok   watch scope: {tmp_path}/in: 1 unit(s), the scan took ")


def test_watch_dry_run_prints_what_each_rule_would_order_and_writes_nothing(
        make_pg_database: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = make_pg_database()
    engine = open_store(build_settings({"ingest_tracking_db": url}, {}))
    old = write(tmp_path / "in" / "old.tif")
    os.utime(old, (1_000_000, 1_000_000))
    write(tmp_path / "in" / "new.tif")
    write(tmp_path / "in" / "empty.tif", b"")
    config = _settings_file(tmp_path, url, name="scope", settle_seconds=600)
    assert cli.main(["watch", "--dry-run", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"would order  {old}  for alice in lab into Dataset 7" in out
    assert re.search(rf"waiting      {tmp_path}/in/new.tif  \(changed \d+s ago; settles after "
                     r"600s\)", out)
    assert f"waiting      {tmp_path}/in/empty.tif  (empty)" in out
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM imports")).scalar_one() == 0
        assert connection.execute(sa.text(
            "SELECT count(*) FROM adi_watch_units")).scalar_one() == 0
    engine.dispose()


def test_watch_dry_run_without_a_database_creates_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "in" / "a.tif")
    monkeypatch.chdir(tmp_path)  # the default SQLite file would land here
    config = _settings_file(tmp_path, "sqlite:///omero_adi.sqlite", name="scope")
    assert cli.main(["watch", "--dry-run", "--config", str(config)]) == 0
    assert "(no ledger: no order database at omero_adi.sqlite" in capsys.readouterr().out
    assert not (tmp_path / "omero_adi.sqlite").exists()


def test_status_and_watch_show_each_rules_last_scan_waiting_and_ordered_units(
        make_pg_database: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = make_pg_database()
    engine = open_store(build_settings({"ingest_tracking_db": url}, {}))
    config = _settings_file(tmp_path, url, name="scope", settle_seconds=5)
    settings = build_settings(yaml.safe_load(config.read_text()), {})
    clock = Clock()
    write(tmp_path / "in" / "a.tif")
    write(tmp_path / "in" / "b.tif")
    watcher = runner(settings, engine, clock)
    scan_all(watcher)
    clock.advance(5)
    write(tmp_path / "in" / "c.tif")
    scan_all(watcher)
    for command in (["status"], ["watch"]):
        assert cli.main([*command, "--config", str(config)]) == 0
        lines = capsys.readouterr().out.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("RULE"))
        assert lines[header].split() == ["RULE", "LAST", "SCAN", "CPU", "S", "UNITS",
                                         "WAITING", "ORDERED", "REFUSED", "CHANGED", "PROBLEMS"]
        row = lines[header + 1].split()
        assert (row[0], row[4], row[5], row[6], row[7], row[8]) == (
            "scope", "3", "1", "2", "0", "0"), lines
    registry = prometheus_client.CollectorRegistry()
    register_metrics(watcher, registry)
    page = prometheus_client.generate_latest(registry).decode()
    for line in ('omero_adi_watch_units_ordered_total{rule="scope"} 2.0',
                 'omero_adi_watch_units_waiting{rule="scope"} 1.0',
                 'omero_adi_watch_units{rule="scope"} 3.0',
                 'omero_adi_watch_units_changed_total{rule="scope"} 0.0'):
        assert line in page.splitlines(), page
    assert re.search(r'^omero_adi_watch_last_scan_timestamp_seconds\{rule="scope"\} 1\.\d+e\+09$',
                     page, re.M), page
    engine.dispose()


def test_forget_lets_a_refused_unit_be_looked_at_again_and_only_a_refused_one(
        make_pg_database: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        omero_double: OmeroDouble, blitz: CountingBlitz) -> None:
    url = make_pg_database()
    engine = open_store(build_settings({"ingest_tracking_db": url}, {}))
    config = _settings_file(tmp_path, url, settle_seconds=0, user=None, pattern="{user}",
                            group="Lab2", dataset_id=152)
    known, unknown = write(tmp_path / "in" / "alice" / "a.tif"), write(
        tmp_path / "in" / "newcomer" / "b.tif")
    watcher = runner(build_settings(yaml.safe_load(config.read_text()), {}), engine, Clock(),
                     blitz)
    scan_all(watcher)
    assert cli.main(["watch", "--forget", str(known), "--config", str(config)]) == 1
    assert "is ordered; only refused units can be forgotten" in capsys.readouterr().err
    omero_double.world({"users": [{"name": "newcomer", "groups": ["Lab2"]}]})  # the cause fixed
    scan_all(watcher)  # ... but the unit stays refused until it is forgotten
    assert orders_for(engine, unknown) == []
    assert cli.main(["watch", "--forget", str(unknown), "--config", str(config)]) == 0
    scan_all(watcher)  # the running watcher looks at it afresh
    [order] = orders_for(engine, unknown)
    assert order.user_name == "newcomer"
    engine.dispose()


def test_the_watch_metrics_are_the_ones_docs_watch_md_lists() -> None:
    text = (ROOT / "docs" / "watch.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(omero_adi_watch_[a-z_]+)", text, re.M))
    served = {name + ("_total" if kind == "counter" else "") for name, kind, _, _ in METRICS}
    assert documented == served
