"""``from omero_adi.utils.ingest_tracker import …``, as OMERO.biomero does.

A thin re-export: the code lives in :mod:`omero_adi.store`.
"""

from omero_adi.store.models import (
    STAGE_IMPORTED,
    STAGE_INGEST_FAILED,
    STAGE_INGEST_STARTED,
    STAGE_NEW_ORDER,
    STAGE_PREPROCESSING,
    Base,
    IngestionTracking,
    Preprocessing,
)
from omero_adi.store.tracker import (
    IngestTracker,
    get_ingest_tracker,
    initialize_ingest_tracker,
    log_ingestion_step,
)

__all__ = [
    "Base",
    "IngestionTracking",
    "Preprocessing",
    "STAGE_NEW_ORDER",
    "STAGE_INGEST_STARTED",
    "STAGE_PREPROCESSING",
    "STAGE_IMPORTED",
    "STAGE_INGEST_FAILED",
    "IngestTracker",
    "initialize_ingest_tracker",
    "get_ingest_tracker",
    "log_ingestion_step",
]
