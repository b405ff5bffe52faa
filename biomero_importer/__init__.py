"""``biomero_importer``: BIOMERO.importer's module path, served by omero-adi.

Thin re-exports, so that clients written for BIOMERO.importer (today's
OMERO.biomero) work unchanged; the code lives in :mod:`omero_adi`.
"""

from omero_adi.store.client_api import (
    UnsupportedImportOperation,
    get_importer_capabilities,
    submit_import_order,
    supports_import_options,
)
from omero_adi.store.tracker import IngestTracker, get_ingest_tracker
from omero_adi.store.models import IngestionTracking

__all__ = [
    "IngestTracker",
    "IngestionTracking",
    "UnsupportedImportOperation",
    "get_importer_capabilities",
    "get_ingest_tracker",
    "submit_import_order",
    "supports_import_options",
]
