"""Typed settings: `config/settings.yml` (or JSON), then the environment on top.

Every key is declared once, in :class:`Settings`, with its type, default and
meaning. The configuration reference in ``docs/configuration.md`` is tested
against this class, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from omero_adi.notify.config import NotifySettings
from omero_adi.settings_values import SettingsError, convert, optional, setting
from omero_adi.watch.rules import WatchRule, check_rules

log = logging.getLogger(__name__)

DEFAULT_SETTINGS_PATH = Path("config/settings.yml")
DEFAULT_SQLITE_URL = "sqlite:///omero_adi.sqlite"

#: Keys of the file-based system that preceded the database; accepted, ignored.
LEGACY_KEYS = frozenset(
    {"group_list", "data_dir_name", "upload_orders_dir_name", "failed_uploads_directory_name"}
)

#: Environment variable -> settings key. The environment wins over the file.
ENVIRONMENT = {
    "INGEST_TRACKING_DB_URL": "ingest_tracking_db",
    "OMERO_HOST": "omero_host",
    "OMERO_PORT": "omero_port",
    "OMERO_USER": "omero_user",
    "OMERO_PASSWORD": "omero_password",
    "PODMAN_USERNS_MODE": "podman_userns_mode",
    "USE_REGISTER_ZARR": "use_register_zarr",
    "ADI_RUN_MIGRATIONS": "run_migrations",
    "ADI_ALLOW_AUTO_STAMP": "allow_auto_stamp",
    "CONTAINER_HOST": "podman_url",
    "PROCESSED_DATA_FOLDER": "processed_data_folder",
    "PODMAN_BIND_RETRY_ATTEMPTS": "podman_bind_retry_attempts",
    "PODMAN_BIND_RETRY_DELAY_SECONDS": "podman_bind_retry_delay_seconds",
    "SQLALCHEMY_URL": "sqlalchemy_url",
}


@dataclass(frozen=True)
class Settings:
    # --- order store -------------------------------------------------------
    ingest_tracking_db: str = setting(
        DEFAULT_SQLITE_URL,
        "URL of the order database: postgresql:// (or postgres://) in production, "
        "sqlite:/// for a single machine. Without one, a SQLite file in the working "
        "directory is used.",
    )
    run_migrations: bool = setting(True, "Run database migrations at start-up.")
    allow_auto_stamp: bool = setting(
        False,
        "Adopt a database whose ADI tables exist but carry no migration version "
        "(created by the earlier ADI or by a client's create_all).",
    )
    sqlalchemy_url: str = setting(
        "",
        "Database that `omero-adi migrate` migrates when ingest_tracking_db is not set "
        "(BIOMERO.importer's fallback).",
    )
    # --- logging -----------------------------------------------------------
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL.", choices=(
        "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    log_file_path: str = setting("logs/app.logs", "The daemon's log file.")
    log_max_bytes: int = setting(50_000_000, "Rotate the log file at this size (bytes).", minimum=0)
    log_backup_count: int = setting(5, "Rotated log files kept.", minimum=0)
    # --- daemon ------------------------------------------------------------
    base_dir: str = setting("/data", "Root of the shared storage that orders may read.")
    allowed_roots: list[str] = setting(
        [], "Further directories, besides base_dir, that order files may live in."
    )
    max_workers: int = setting(4, "Orders processed at the same time.", minimum=1)
    poll_interval: float = setting(
        30.0,
        "Seconds between safety polls on PostgreSQL (pickup normally happens "
        "at once through LISTEN/NOTIFY).",
        minimum=0.1,
    )
    sqlite_poll_interval: float = setting(
        0.5, "Seconds between polls on SQLite, which has no notifications.", minimum=0.01
    )
    heartbeat_interval: float = setting(
        10.0, "Seconds between heartbeats of a daemon that runs orders.", minimum=0.1
    )
    stale_after: float = setting(
        60.0,
        "A claimed order whose daemon sent no heartbeat for this many seconds "
        "is considered interrupted.",
        minimum=0.1,
    )
    recovery_interval: float = setting(
        60.0, "Seconds between looks for interrupted orders.", minimum=0.1
    )
    requeue_interrupted: bool = setting(
        False, "Re-queue interrupted orders instead of failing them."
    )
    shutdown_timeout: float = setting(
        60.0, "Seconds running orders may take to finish after SIGTERM.", minimum=0
    )
    # --- OMERO -------------------------------------------------------------
    omero_host: str = setting("localhost", "OMERO server host.")
    omero_port: int = setting(4064, "OMERO server port.", minimum=1)
    omero_user: str = setting("root", "OMERO admin user that opens sessions for users.")
    omero_password: str = setting("", "Password of omero_user.", secret=True)
    omero_cli: str = setting("omero", "The `omero` executable that runs imports.")
    import_timeout: float = setting(
        6 * 3600.0, "Seconds one importer run may take before it is killed.", minimum=1
    )
    import_depth: int = setting(10, "Directory depth the importer scans (--depth).", minimum=1)
    omero_connect_retries: int = setting(
        5, "Attempts to reach OMERO before an order fails.", minimum=1
    )
    ttl_for_user_conn: int = setting(
        6_000_000, "Lifetime of a user's OMERO session (milliseconds); the session an "
        "importer run joins lives at least import_timeout + 60 s.", minimum=1000
    )
    parallel_upload_per_worker: int = setting(2, "--parallel-upload of the importer.", minimum=1)
    parallel_filesets_per_worker: int = setting(
        2, "--parallel-fileset of the importer.", minimum=1
    )
    skip_all: bool = setting(False, "--skip all.")
    skip_checksum: bool = setting(False, "--skip checksum.")
    skip_minmax: bool = setting(False, "--skip minmax.")
    skip_thumbnails: bool = setting(False, "--skip thumbnails.")
    skip_upgrade: bool = setting(False, "--skip upgrade.")
    use_register_zarr: bool = setting(
        False, "Register .zarr paths with their own metadata instead of importing them."
    )
    zarr_s3_endpoint: str = setting("", "Endpoint URL for s3:// Zarr stores (empty: AWS).")
    zarr_s3_anonymous: bool = setting(True, "Read s3:// Zarr stores without credentials.")
    managed_repository: str = setting(
        "/OMERO/ManagedRepository", "The OMERO server's ManagedRepository, as ADI sees it."
    )
    annotation_namespace: str = setting(
        "omeroadi.import",
        "Namespace of the key-value annotation on imported images and plates "
        "(BIOMERO.importer uses biomero.import).",
    )
    # --- preprocessing -----------------------------------------------------
    podman_url: str = setting(
        "", "Podman API socket (unix://…); empty: the usual socket paths, then the podman CLI."
    )
    podman_userns_mode: str = setting("", "`keep-id` runs containers with --userns=keep-id.")
    allowed_containers: list[str] = setting(
        [], "Container images (names or glob patterns) that orders may run."
    )
    preprocessing_timeout: float = setting(
        4 * 3600.0, "Seconds one preprocessing container may run.", minimum=1
    )
    inplace_tmp_root: str = setting(
        "/OMERO/OMERO_inplace", "Local folder for preprocessed copies, one subfolder per order."
    )
    processed_data_folder: str = setting(
        ".processed",
        "Folder beside the originals for the converted copies (and metadata.csv): one "
        "name, not a path. Choose it before the first import: links point into it.",
    )
    podman_bind_retry_attempts: int = setting(
        3, "Runs of a container whose bind mount fails as busy (EBUSY, CIFS/DFS shares).",
        minimum=1,
    )
    podman_bind_retry_delay_seconds: float = setting(
        2.0, "Seconds before running such a container again.", minimum=0
    )
    # --- watch folders -----------------------------------------------------
    watch: list[WatchRule] = setting(
        [], "Watch rules: folders whose complete new files or acquisition folders become "
        "orders by themselves (docs/watch.md; the keys of a rule follow).",
    )
    # --- observability -----------------------------------------------------
    metrics_port: int = setting(
        0, "Port of the /healthz and /metrics endpoint; 0 turns it off.", minimum=0
    )
    # --- notifications and the in-place guard (docs/notifications.md) -------
    notify: NotifySettings = setting(
        NotifySettings(), "Notifications by e-mail and webhook (a section; keys below)."
    )
    guard_interval: float = setting(
        86400.0,
        "Seconds over which the in-place guard checks every imported file once "
        "(one stat each, spread evenly); 0 turns the periodic check off.",
        minimum=0,
    )
    # --- health check (tests/system_check.py) ------------------------------
    preprocessing: bool = setting(False, "System check: order with preprocessing.")
    sample_image: str = setting(
        "/auto-importer/tests/Barbie.tif", "System check: sample image to import."
    )
    sample_group: str = setting("", "System check: OMERO group.")
    sample_user: str = setting("", "System check: OMERO user.")
    sample_parent_id: str = setting("", "System check: Dataset or Screen id.")
    sample_parent_type: str = setting("Dataset", "System check: Dataset or Screen.")
    sample_pre_container: str = setting("", "System check: preprocessing container.")
    sample_pre_input: str = setting("{Files}", "System check: preprocessing input file.")
    sample_pre_out: str = setting("/data", "System check: preprocessing output folder.")
    sample_pre_outalt: str = setting("/out", "System check: alternative output folder.")
    sample_pre_save: str = setting("", "System check: `saveoption` extra parameter.")

    def __post_init__(self) -> None:
        folder = self.processed_data_folder
        if not folder.strip() or "/" in folder or "\\" in folder or folder in (".", ".."):
            raise SettingsError(
                f"setting 'processed_data_folder' must be one folder name, got {folder!r}")
        object.__setattr__(self, "watch", [  # the watcher never orders the converted copies
            rule.with_processed_folder(folder) for rule in self.watch])
        try:
            check_rules(self.watch, [self.base_dir, *self.allowed_roots])
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

    @property
    def database_is_default(self) -> bool:
        return self.ingest_tracking_db == DEFAULT_SQLITE_URL

    @property
    def migration_url(self) -> str:
        """The database to migrate: ingest_tracking_db, else sqlalchemy_url when set."""
        if self.database_is_default and self.sqlalchemy_url:
            return self.sqlalchemy_url
        return self.ingest_tracking_db

    def skip_flags(self) -> list[str]:
        """The importer's --skip options, as the settings ask."""
        if self.skip_all:
            return ["--skip", "all"]
        flags: list[str] = []
        for name in ("checksum", "minmax", "thumbnails", "upgrade"):
            if getattr(self, f"skip_{name}"):
                flags += ["--skip", name]
        return flags

    def describe(self) -> dict[str, Any]:
        """All values, secrets masked: safe to log."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("ingest_tracking_db", "sqlalchemy_url"):
                value = mask_url(value)
            out[f.name] = _described(value, f)
        return out


def _described(value: Any, f: dataclasses.Field[Any]) -> Any:
    """A value for the log: secrets masked, sections as mappings."""
    if f.metadata.get("secret") and value:
        return "***"
    if dataclasses.is_dataclass(value):
        return {sub.name: _described(getattr(value, sub.name), sub)
                for sub in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_described(item, f) for item in value]
    return value


def mask_url(url: str) -> str:
    """Hide the password of a database URL: ``postgresql://u:***@h/db``."""
    # Up to the last "@" of the URL: a password may hold "@", ":" or "/" unencoded
    # (better to hide a host now and then than to show part of a password).
    return re.sub(r"(://[^:/@\s]*:)\S*@", r"\1***@", url)


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


def read_file(path: Path) -> dict[str, Any]:
    """Parse a YAML or JSON settings file into a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SettingsError(f"settings file {path} is not valid: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping of keys to values")
    return data


def unknown_key(key: str) -> str:
    """The warning for a key no setting has, naming the nearest known one."""
    nearest = difflib.get_close_matches(key, [*_field_types(), *LEGACY_KEYS], n=1)
    hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
    return f"unknown settings key {key!r} is ignored{hint}"


def build_settings(
    values: Mapping[str, Any], environ: Mapping[str, str] | None = None,
    unknown: list[str] | None = None,
) -> Settings:
    """Validate raw values (file contents) and apply the environment on top.

    Warnings about unknown keys go to ``unknown`` when given (the caller logs
    them once its log is set up), else to the log at once.
    """
    environ = os.environ if environ is None else environ
    kinds = _field_types()
    metas = {f.name: f.metadata for f in dataclasses.fields(Settings)}
    accepted: dict[str, Any] = {}
    for key, raw in values.items():
        if key in LEGACY_KEYS:
            log.warning("settings key %r belongs to the old file-based system and is ignored%s",
                        key, " by the daemon (tests/t_main.py reads it)"
                        if key == "group_list" else "")
        elif key not in kinds:
            if unknown is None:
                log.warning("%s", unknown_key(key))
            else:
                unknown.append(unknown_key(key))
        elif raw is None:
            continue  # an empty YAML value keeps the default
        else:
            accepted[key] = convert(key, raw, kinds[key], metas[key], from_env=False)
    for variable, key in ENVIRONMENT.items():
        if variable in environ:
            if key in ("podman_url", "ingest_tracking_db", "sqlalchemy_url") and not environ[variable].strip():
                continue  # set but empty (as compose files pass them on): unset
            accepted[key] = convert(key, environ[variable], kinds[key], metas[key], from_env=True)
    return Settings(**accepted)


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None,
    unknown: list[str] | None = None,
) -> Settings:
    """Settings from ``path``, else ``$ADI_SETTINGS``, else ``config/settings.yml``.

    An explicitly named file must exist; the default one may be absent.
    """
    environ = os.environ if environ is None else environ
    explicit = path or environ.get("ADI_SETTINGS")
    chosen = Path(explicit) if explicit else DEFAULT_SETTINGS_PATH
    if chosen.exists() or explicit:
        values = read_file(chosen)
    else:
        log.info("no %s found; using defaults and the environment", chosen)
        values = {}
    return build_settings(values, environ, unknown)


def settings_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings)]


def setting_docs(section: Any = Settings, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, meaning) for every setting, for the docs; the keys
    of a section (``notify``) follow as ``notify.<key>``, those of a list of
    mappings as ``watch[].<key>``. Derived fields (``init=False``) are not keys."""
    kinds = typing.get_type_hints(section)
    rows = []
    for f in (f for f in dataclasses.fields(section) if f.init):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        kind, doc = optional(kinds[f.name]), f.metadata["doc"]  # X | None: X, default null
        item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            if default is None:  # a section that may be left out
                rows.append((prefix + f.name, kind.__name__, default, doc))
            rows += setting_docs(kind, f"{prefix}{f.name}.")
        elif isinstance(item, type) and dataclasses.is_dataclass(item):
            rows.append((prefix + f.name, f"list[{item.__name__}]", default, doc))
            rows += setting_docs(item, f"{prefix}{f.name}[].")
        else:
            plain = isinstance(kind, type) and not isinstance(kind, types.GenericAlias)
            rows.append((prefix + f.name, kind.__name__ if plain else str(kind), default, doc))
    return rows
