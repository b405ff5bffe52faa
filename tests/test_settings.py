"""Settings (contracts §3): files, environment on top, validation, masking."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from omero_adi import settings as settings_module
from omero_adi.settings import (
    DEFAULT_SQLITE_URL,
    ENVIRONMENT,
    LEGACY_KEYS,
    Settings,
    SettingsError,
    build_settings,
    load_settings,
    mask_url,
    settings_keys,
)

REPO = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {
    "ingest_tracking_db", "log_level", "log_file_path", "base_dir", "max_workers",
    "parallel_upload_per_worker", "parallel_filesets_per_worker", "skip_all", "skip_checksum",
    "skip_minmax", "skip_thumbnails", "skip_upgrade", "ttl_for_user_conn", "use_register_zarr",
    "shutdown_timeout", "preprocessing", "sample_image", "sample_group", "sample_user",
    "sample_parent_id", "sample_parent_type", "sample_pre_container", "sample_pre_input",
    "sample_pre_out", "sample_pre_outalt", "sample_pre_save",
}

#: variable -> (value in the file, value in the environment, expected setting)
ENV_CASES: dict[str, tuple[Any, str, Any]] = {
    "INGEST_TRACKING_DB_URL": ("sqlite:///from-file.sqlite", "postgresql://u:pw@envhost/biomero",
                               "postgresql://u:pw@envhost/biomero"),
    "OMERO_HOST": ("file-host", "env-host", "env-host"),
    "OMERO_PORT": (4064, "14064", 14064),
    "OMERO_USER": ("file-admin", "env-admin", "env-admin"),
    "OMERO_PASSWORD": ("file-pw", "env-pw", "env-pw"),
    "PODMAN_USERNS_MODE": ("", "keep-id", "keep-id"),
    "USE_REGISTER_ZARR": (True, "false", False),
    "ADI_RUN_MIGRATIONS": (True, "0", False),
    "ADI_ALLOW_AUTO_STAMP": (False, "1", True),
    "CONTAINER_HOST": ("unix:///file/podman.sock", "unix:///env/podman.sock",
                       "unix:///env/podman.sock"),
    # BIOMERO.importer's variables (contracts §8)
    "PROCESSED_DATA_FOLDER": (".processed", "processed", "processed"),
    "PODMAN_BIND_RETRY_ATTEMPTS": (3, "5", 5),
    "PODMAN_BIND_RETRY_DELAY_SECONDS": (2, "0.5", 0.5),
    "SQLALCHEMY_URL": ("", "postgresql://u:pw@fallback/biomero",
                       "postgresql://u:pw@fallback/biomero"),
}


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data))
    return path


# --- files ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yml", ".yaml", ".json"])
def test_yaml_and_json_files(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"settings{suffix}", {
        "ingest_tracking_db": "postgresql://adi@db/biomero",
        "max_workers": 8,
        "skip_all": True,
        "shutdown_timeout": 12.5,
        "allowed_roots": ["/data2", "/scratch"],
        "log_level": "debug",
        "sample_parent_id": 51,
    })
    loaded = load_settings(path, environ={})
    assert loaded.ingest_tracking_db == "postgresql://adi@db/biomero"
    assert loaded.max_workers == 8 and type(loaded.max_workers) is int
    assert loaded.skip_all is True
    assert loaded.shutdown_timeout == 12.5
    assert loaded.allowed_roots == ["/data2", "/scratch"]
    assert loaded.log_level == "DEBUG"
    assert loaded.sample_parent_id == "51"
    assert loaded.skip_flags() == ["--skip", "all"]
    # Unset keys keep their defaults.
    assert loaded.log_file_path == "logs/app.logs" and loaded.base_dir == "/data"


def test_empty_file_and_empty_values_keep_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yml"
    empty.write_text("# nothing here\n")
    assert load_settings(empty, environ={}) == Settings()
    blank = tmp_path / "blank.yml"
    blank.write_text("max_workers:\nbase_dir:\n")
    assert load_settings(blank, environ={}) == Settings()


@pytest.mark.parametrize("text, suffix", [("max_workers: [1, 2\n", ".yml"), ("{not json", ".json"),
                                          ("- a list\n- not a mapping\n", ".yml")])
def test_unreadable_files_fail_clearly(tmp_path: Path, text: str, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_text(text)
    with pytest.raises(SettingsError, match="broken"):
        load_settings(path, environ={})


def test_shipped_settings_file(caplog: pytest.LogCaptureFixture) -> None:
    shipped = REPO / "config" / "settings.yml"
    raw = yaml.safe_load(shipped.read_text())
    assert set(raw) == set(settings_keys())  # documents every key, and nothing else
    assert CONTRACT_KEYS <= set(raw)
    with caplog.at_level(logging.DEBUG, logger="omero_adi"):
        loaded = load_settings(shipped, environ={})
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    # The values shown are the defaults, except where the file says otherwise.
    differing = {k for k in settings_keys() if getattr(loaded, k) != getattr(Settings(), k)}
    assert differing == {"allowed_containers"}


def test_contract_defaults() -> None:
    defaults = Settings()
    assert defaults.log_file_path == "logs/app.logs"
    assert defaults.base_dir == "/data"
    assert CONTRACT_KEYS <= set(settings_keys())


def test_default_sqlite_url_when_nothing_configured(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/settings.yml here
    loaded = load_settings()
    assert loaded.ingest_tracking_db == DEFAULT_SQLITE_URL
    assert DEFAULT_SQLITE_URL.startswith("sqlite:///") and "////" not in DEFAULT_SQLITE_URL
    assert loaded.database_is_default
    assert not build_settings({"ingest_tracking_db": "postgresql://h/db"}, {}).database_is_default


def test_default_file_is_config_settings_yml(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    write(tmp_path / "config" / "settings.yml", {"max_workers": 3})
    monkeypatch.chdir(tmp_path)
    assert load_settings().max_workers == 3


def test_adi_settings_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    write(tmp_path / "config" / "settings.yml", {"max_workers": 3})
    chosen = write(tmp_path / "site.json", {"max_workers": 7})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADI_SETTINGS", str(chosen))
    assert load_settings().max_workers == 7
    # An explicit path wins over $ADI_SETTINGS.
    assert load_settings(tmp_path / "config" / "settings.yml").max_workers == 3


def test_named_missing_file_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope" / "settings.yml"
    with pytest.raises(SettingsError, match="nope/settings.yml"):
        load_settings(missing, environ={})
    monkeypatch.setenv("ADI_SETTINGS", str(missing))
    with pytest.raises(SettingsError, match="nope/settings.yml"):
        load_settings()


# --- the environment ----------------------------------------------------------------------


def test_every_environment_variable_is_covered() -> None:
    assert set(ENV_CASES) == set(ENVIRONMENT)
    contract = {"INGEST_TRACKING_DB_URL", "OMERO_HOST", "OMERO_USER", "OMERO_PASSWORD",
                "OMERO_PORT", "PODMAN_USERNS_MODE", "USE_REGISTER_ZARR", "ADI_RUN_MIGRATIONS",
                "ADI_ALLOW_AUTO_STAMP"}
    assert contract <= set(ENVIRONMENT)


@pytest.mark.parametrize("variable", sorted(ENV_CASES))
def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        variable: str) -> None:
    key = ENVIRONMENT[variable]
    in_file, in_env, expected = ENV_CASES[variable]
    path = write(tmp_path / "settings.yml", {key: in_file})
    from_file = getattr(load_settings(path, environ={}), key)
    assert from_file == getattr(build_settings({key: in_file}, {}), key) != expected
    monkeypatch.setenv(variable, in_env)
    loaded = load_settings(path)
    assert getattr(loaded, key) == expected


def test_environment_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for variable, (_, in_env, _) in ENV_CASES.items():
        monkeypatch.setenv(variable, in_env)
    loaded = load_settings()
    for variable, (_, _, expected) in ENV_CASES.items():
        assert getattr(loaded, ENVIRONMENT[variable]) == expected, variable


def test_empty_database_variable_means_unset(tmp_path: Path) -> None:
    """Compose files often pass ``INGEST_TRACKING_DB_URL=`` through empty; the
    client module then uses the configured URL, and so must the daemon."""
    path = write(tmp_path / "settings.yml", {"ingest_tracking_db": "postgresql://adi@db/x"})
    assert load_settings(path, environ={"INGEST_TRACKING_DB_URL": ""}).ingest_tracking_db == (
        "postgresql://adi@db/x")
    assert build_settings({}, {"INGEST_TRACKING_DB_URL": " "}).ingest_tracking_db == (
        DEFAULT_SQLITE_URL)


@pytest.mark.parametrize("variable, value, expected", [
    ("USE_REGISTER_ZARR", "maybe", "true or false"),
    ("ADI_RUN_MIGRATIONS", "2", "true or false"),
    ("OMERO_PORT", "http", "whole number"),
    ("OMERO_PORT", "0", "at least 1"),
])
def test_bad_environment_values_fail(variable: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as failed:
        build_settings({}, {variable: value})
    message = str(failed.value)
    assert ENVIRONMENT[variable] in message and expected in message and value in message


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, expected", [
    ("max_workers", "many", "whole number"),
    ("max_workers", 2.5, "whole number"),
    ("max_workers", 0, "at least 1"),
    ("max_workers", True, "whole number"),
    ("skip_all", "maybe", "true or false"),
    ("skip_checksum", 3, "true or false"),
    ("allowed_roots", 5, "list of text"),
    ("allowed_roots", [1, 2], "list of text"),
    ("allowed_containers", {"a": 1}, "list of text"),
    ("shutdown_timeout", "soon", "number"),
    ("shutdown_timeout", -1, "at least 0"),
    ("poll_interval", "nan", "number"),
    ("heartbeat_interval", float("inf"), "number"),
    ("log_level", "LOUD", "one of DEBUG, INFO"),
    ("base_dir", ["/a"], "text"),
    ("ttl_for_user_conn", 10, "at least 1000"),
])
def test_bad_types_fail_naming_key_and_expectation(tmp_path: Path, key: str, value: Any,
                                                   expected: str) -> None:
    path = write(tmp_path / "settings.json", {key: value})
    with pytest.raises(SettingsError) as failed:
        load_settings(path, environ={})
    message = str(failed.value)
    assert repr(key) in message and expected in message


def test_numbers_written_as_text_are_accepted() -> None:
    loaded = build_settings({"max_workers": "6", "shutdown_timeout": "2.5", "omero_port": 4064.0})
    assert (loaded.max_workers, loaded.shutdown_timeout, loaded.omero_port) == (6, 2.5, 4064)
    assert type(loaded.omero_port) is int


def test_unknown_key_warns_and_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "settings.yml", {"max_workrs": 9, "max_workers": 2})
    with caplog.at_level(logging.WARNING, logger="omero_adi.settings"):
        loaded = load_settings(path, environ={})
    assert loaded.max_workers == 2
    assert not hasattr(loaded, "max_workrs")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "max_workrs" in warnings[0] and "unknown" in warnings[0]


@pytest.mark.parametrize("key", sorted(LEGACY_KEYS))
def test_legacy_keys_warn_and_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                          key: str) -> None:
    assert {"group_list", "data_dir_name", "upload_orders_dir_name",
            "failed_uploads_directory_name"} == LEGACY_KEYS
    path = write(tmp_path / "settings.yml", {key: ["whatever"], "max_workers": 5})
    with caplog.at_level(logging.WARNING, logger="omero_adi.settings"):
        loaded = load_settings(path, environ={})
    assert loaded.max_workers == 5 and not hasattr(loaded, key)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and key in warnings[0] and "ignored" in warnings[0]


def test_cli_reports_a_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from omero_adi.cli import main

    path = write(tmp_path / "settings.yml", {"max_workers": "many"})
    assert main(["--config", str(path), "migrate"]) == 2
    err = capsys.readouterr().err
    assert "max_workers" in err and "whole number" in err


# --- secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, masked", [
    ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
    ("postgresql+psycopg2://omero_adi:s3cr3t!@db.example.org:5432/biomero",
     "postgresql+psycopg2://omero_adi:***@db.example.org:5432/biomero"),
    ("postgresql://:secret@h/db", "postgresql://:***@h/db"),
    ("postgresql://u:pa:ss:word@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p@ssw0rd@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p%40ssw0rd@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
    ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),
])
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked  # user, host, database and options stay readable


def test_mask_url_keeps_urls_without_password() -> None:
    for url in ("sqlite:///omero_adi.sqlite", "postgresql://adi@db/biomero",
                "postgresql://db:5432/biomero"):
        assert mask_url(url) == url
    assert mask_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    # Inside a longer message, only the URL is touched.
    assert mask_url("cannot reach postgresql://u:secret@h/db: see admin@example.org") == (
        "cannot reach postgresql://u:***@h/db: see admin@example.org")


def test_describe_masks_secrets(caplog: pytest.LogCaptureFixture) -> None:
    loaded = build_settings({"ingest_tracking_db": "postgresql://adi:dbsecret@db/biomero"},
                            {"OMERO_PASSWORD": "omerosecret"})
    assert loaded.omero_password == "omerosecret"
    described = loaded.describe()
    assert set(described) == set(settings_keys())
    text = json.dumps(described)
    assert "dbsecret" not in text and "omerosecret" not in text
    assert described["omero_password"] == "***"
    assert described["ingest_tracking_db"] == "postgresql://adi:***@db/biomero"
    assert described["max_workers"] == loaded.max_workers
    # An empty password is shown as empty, not as a mask that suggests one is set.
    assert Settings().describe()["omero_password"] == ""


def test_every_setting_is_documented() -> None:
    for f in dataclasses.fields(Settings):
        assert f.metadata.get("doc"), f.name
    rows = settings_module.setting_docs()
    # A section (notify) is documented key by key, as notify.<key>; a list of
    # them (watch) as watch[].<key>.
    assert list(dict.fromkeys(re.split(r"[.\[]", r[0])[0] for r in rows)) == settings_keys()


# --- BIOMERO.importer's settings ----------------------------------------------------------


@pytest.mark.parametrize("folder", ["", "  ", "a/b", "/abs", ".", "..", "a\\b"])
def test_processed_data_folder_must_be_one_name(folder: str) -> None:
    with pytest.raises(SettingsError, match="processed_data_folder' must be one folder name"):
        build_settings({}, {"PROCESSED_DATA_FOLDER": folder})


def test_sqlalchemy_url_is_only_the_migration_fallback() -> None:
    fallback = "postgresql://adi@fallback/biomero"
    only = build_settings({}, {"SQLALCHEMY_URL": fallback})
    assert only.migration_url == fallback
    assert only.ingest_tracking_db == DEFAULT_SQLITE_URL  # the daemon's own database is unchanged
    both = build_settings({"ingest_tracking_db": "postgresql://adi@main/x"},
                          {"SQLALCHEMY_URL": fallback})
    assert both.migration_url == "postgresql://adi@main/x"
    assert build_settings({}, {"SQLALCHEMY_URL": "postgresql://u:pw@h/d"}).describe()[
        "sqlalchemy_url"] == "postgresql://u:***@h/d"


def test_successor_defaults() -> None:
    defaults = Settings()
    assert defaults.annotation_namespace == "omeroadi.import"
    assert defaults.processed_data_folder == ".processed"
    assert (defaults.podman_bind_retry_attempts, defaults.podman_bind_retry_delay_seconds) == (3, 2)
    assert defaults.sample_image == "/auto-importer/tests/Barbie.tif"
