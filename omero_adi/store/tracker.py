"""The client API that OMERO.biomero and scripts use to write order events.

``order_info`` is the dict the web plugin sends (contracts §2). It is turned
into rows exactly once, here; the daemon itself works with typed orders.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from omero_adi.settings import DEFAULT_SQLITE_URL, mask_url
from omero_adi.settings_values import parse_bool
from omero_adi.store import migrate
from omero_adi.store.db import UnsupportedDatabase, make_engine
from omero_adi.store.models import IngestionTracking, Preprocessing
from omero_adi.store.retry import retry_transient

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("Group", "Username", "UUID", "DestinationID")
#: ``preprocessing_<key>`` entries that map to columns; any other becomes an extra param.
PREPROCESSING_COLUMNS = {
    "preprocessing_container": "container",
    "preprocessing_inputfile": "input_file",
    "preprocessing_outputfolder": "output_folder",
    "preprocessing_altoutputfolder": "alt_output_folder",
}
PREFIX = "preprocessing_"


class OrderInfoError(ValueError):
    """An ``order_info`` dict that cannot become an event row."""


def preprocessing_from_order_info(info: Mapping[str, Any]) -> Preprocessing | None:
    """The preprocessing row an order asks for, or None when it asks for none."""
    if not info.get("preprocessing_container"):
        return None
    columns = {column: info.get(key) for key, column in PREPROCESSING_COLUMNS.items()}
    missing = [k for k, c in PREPROCESSING_COLUMNS.items() if c != "alt_output_folder" and not columns[c]]
    if missing:
        raise OrderInfoError(f"preprocessing order lacks {', '.join(missing)}")
    extra = dict(info.get("extra_params") or {})
    for key, value in info.items():
        if key.startswith(PREFIX) and key not in PREPROCESSING_COLUMNS:
            extra[key[len(PREFIX):]] = value
    return Preprocessing(**columns, extra_params=extra or None)


def event_from_order_info(info: Mapping[str, Any], stage: str) -> IngestionTracking:
    """One ``imports`` row (with its preprocessing row, if any) for ``info``."""
    missing = [key for key in REQUIRED_KEYS if info.get(key) in (None, "")]
    if missing:
        raise OrderInfoError(f"order_info lacks {', '.join(missing)}")
    files = info.get("Files") or []
    if isinstance(files, str):
        files = [files]
    options = info.get("ImportOptions")
    if options is not None and not isinstance(options, (Mapping, str)):
        raise OrderInfoError(f"ImportOptions must be a dict, got {type(options).__name__}")
    # As the earlier ADI: no FileNames is the JSON text [], an explicit None is null.
    names = info.get("FileNames", [])
    event = IngestionTracking(
        group_name=str(info["Group"]),
        user_name=str(info["Username"]),
        uuid=str(info["UUID"]),
        destination_id=str(info["DestinationID"]),
        destination_type=str(info.get("DestinationType") or "Dataset"),
        stage=stage,
        files=list(files),
        file_names="null" if names is None else names,
        description=info.get("Description", info.get("description")),
        import_options=options,
    )
    if info.get("_preprocessing_id") is not None:
        event.preprocessing_id = int(info["_preprocessing_id"])
    else:
        event.preprocessing = preprocessing_from_order_info(info)
    return event


class IngestTracker:
    """Writes order events; ``config['ingest_tracking_db']`` or
    ``$INGEST_TRACKING_DB_URL`` names the database."""

    def __init__(self, config: Mapping[str, Any]):
        url = os.environ.get("INGEST_TRACKING_DB_URL") or config.get("ingest_tracking_db")
        self.database_url: str = url or DEFAULT_SQLITE_URL
        self.engine = make_engine(self.database_url)
        self.Session = sessionmaker(bind=self.engine, expire_on_commit=False)
        try:
            if _env_flag("ADI_RUN_MIGRATIONS", True):
                migrate.upgrade(
                    self.engine, allow_auto_stamp=_env_flag("ADI_ALLOW_AUTO_STAMP", False)
                )
            # Without migrations, at least the shared tables must exist.
            tables = IngestionTracking.metadata.tables
            IngestionTracking.metadata.create_all(
                self.engine, tables=[tables["imports_preprocessing"], tables["imports"]]
            )
        except BaseException:
            self.engine.dispose()  # a failed start must not keep connections open
            raise
        log.info("ingest tracker ready on %s", mask_url(self.database_url))

    def db_log_ingestion_event(self, order_info: Mapping[str, Any], stage: str) -> int | None:
        """Record one event; return its row id, or None when nothing was written."""
        try:
            event_from_order_info(order_info, stage)  # validate before touching the database
        except (OrderInfoError, TypeError, ValueError) as exc:
            log.error("not recording %r for order %s: %s", stage, order_info.get("UUID"), exc)
            return None

        def write() -> int:
            with self.Session() as session, session.begin():
                event = event_from_order_info(order_info, stage)
                session.add(event)
                session.flush()
                return event.id

        try:
            return retry_transient(write, what=f"recording {stage!r}")
        except SQLAlchemyError as exc:
            log.error("could not record %r for order %s: %s", stage, order_info.get("UUID"), exc)
            return None

    def dispose(self) -> None:
        self.engine.dispose()


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    value = None if raw is None else parse_bool(raw)
    return default if value is None else value


_tracker: IngestTracker | None = None


def initialize_ingest_tracker(config: Mapping[str, Any]) -> bool:
    """Create the process-wide tracker; False (and a logged reason) on failure."""
    global _tracker
    if _tracker is not None:
        _tracker.dispose()
        _tracker = None
    try:
        _tracker = IngestTracker(config)
    except (SQLAlchemyError, migrate.MigrationError, OSError, UnsupportedDatabase) as exc:
        log.error("could not initialise the ingest tracker: %s", exc)
        return False
    return True


def get_ingest_tracker() -> IngestTracker | None:
    return _tracker


def log_ingestion_step(order_info: Mapping[str, Any], stage: str) -> int | None:
    """Record one event through the process-wide tracker."""
    if _tracker is None:
        log.error("ingest tracker not initialised; call initialize_ingest_tracker first")
        return None
    return _tracker.db_log_ingestion_event(order_info, stage)
