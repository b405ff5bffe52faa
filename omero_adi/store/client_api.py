"""BIOMERO.importer's client API (contracts §8), on ADI's order store.

``biomero_importer`` re-exports these; they validate an order and write its
Pending event through :func:`~omero_adi.store.tracker.log_ingestion_step`,
the same path (and rows) as every other client.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from omero_adi.import_options import (
    SCHEMAS,
    SUPPORTED_OPERATIONS,
    ImportOptionsError,
    UnsupportedImportOperation,
    parse_import_options,
)
from omero_adi.settings_values import parse_bool
from omero_adi.store.models import STAGE_NEW_ORDER
from omero_adi.store.tracker import get_ingest_tracker, initialize_ingest_tracker, log_ingestion_step

#: Version of this API's answers (BIOMERO.importer's is 1 too).
API_SCHEMA = 1
#: Keys every order must have, as BIOMERO.importer requires them.
SUBMIT_KEYS = ("Group", "Username", "UUID", "DestinationID", "DestinationType", "Files")

__all__ = [
    "ImportOptionsError",
    "OrderNotRecorded",
    "UnsupportedImportOperation",
    "get_importer_capabilities",
    "submit_import_order",
    "supports_import_options",
]


class OrderNotRecorded(RuntimeError):
    """The order was valid but could not be written (the log says why)."""


def get_importer_capabilities() -> dict[str, Any]:
    """What this importer does with an order's ``ImportOptions``; no daemon is asked."""
    errors = []
    if parse_bool(os.environ.get("BIOMERO_SHALLOW_ZARR", "")):
        errors.append("BIOMERO_SHALLOW_ZARR is set, but omero-adi does not run the "
                      "biomero.shallow-zarr operation; orders asking for it are refused")
    return {
        "schema": API_SCHEMA,
        "importOptionsSchemas": list(SCHEMAS),
        "lifecycleOperations": list(SUPPORTED_OPERATIONS),
        # Orders may name a preprocessing container (contracts §5).
        "externalPreprocessing": True,
        "configurationErrors": errors,
    }


def supports_import_options(value: Any) -> bool:
    """Whether every operation ``value`` asks for runs here; ImportOptionsError
    (a ValueError) when ``value`` is not ImportOptions at all."""
    return not parse_import_options(value).unsupported_operations()


def submit_import_order(order: Mapping[str, Any]) -> str:
    """Validate ``order`` and write its ``Import Pending`` event; return its UUID.

    ValueError for a missing key or malformed ImportOptions,
    UnsupportedImportOperation naming an operation this importer does not run,
    OrderNotRecorded when the database did not take it. Without
    :func:`initialize_ingest_tracker`, ``$INGEST_TRACKING_DB_URL`` names the database.
    """
    missing = [key for key in SUBMIT_KEYS if key not in order]
    if missing:
        raise ValueError(f"import order lacks {', '.join(missing)}")
    parse_import_options(order.get("ImportOptions")).check_supported()
    if get_ingest_tracker() is None:
        if not os.environ.get("INGEST_TRACKING_DB_URL"):
            raise OrderNotRecorded("no order database: call initialize_ingest_tracker(config) "
                                   "or set INGEST_TRACKING_DB_URL")
        if not initialize_ingest_tracker({}):
            raise OrderNotRecorded("cannot open the order database named by "
                                   "INGEST_TRACKING_DB_URL (the log says why)")
    if log_ingestion_step(order, STAGE_NEW_ORDER) is None:
        raise OrderNotRecorded(f"order {order['UUID']} was not recorded (the log says why)")
    return str(order["UUID"])
