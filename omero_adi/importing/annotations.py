"""The key-value MapAnnotation every imported Image or Plate gets (contracts §4)."""

from __future__ import annotations

import csv
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Mapping

from omero_adi.orders import Order

METADATA_CSV = "metadata.csv"


def metadata_csv_paths(origin: Path, processed: str) -> list[Path]:
    """The ``metadata.csv`` files that describe ``origin``: beside it (inside it,
    for a folder), then in that folder's ``processed`` (``.processed``) subfolder."""
    folder = origin if origin.is_dir() else origin.parent
    candidates = [folder / METADATA_CSV, folder / processed / METADATA_CSV]
    return [path for path in candidates if path.is_file()]


def read_metadata_csv(path: Path, log: logging.LoggerAdapter[logging.Logger]) -> dict[str, str]:
    """Two-column ``key,value`` rows; any other row is skipped with a warning.

    A first row ``key,value`` is taken as a header.
    """
    values: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != 2 or not row[0].strip():
                log.warning("%s line %d is not a 'key,value' row; skipped: %r", path, number, row)
                continue
            key, value = row[0].strip(), row[1].strip()
            if number == 1 and (key.lower(), value.lower()) == ("key", "value"):
                continue
            values[key] = value
    return values


def metadata_for(
    origin: Path, log: logging.LoggerAdapter[logging.Logger], processed: str
) -> dict[str, str]:
    """All ``metadata.csv`` key-values for ``origin``; ``processed`` wins on a clash."""
    values: dict[str, str] = {}
    for path in metadata_csv_paths(origin, processed):
        values.update(read_metadata_csv(path, log))
    return values


def import_annotation(
    order: Order,
    filepath: str,
    *,
    extra: Mapping[str, str],
    metadata: Mapping[str, str],
    timestamp: datetime,
) -> dict[str, str]:
    """The key-values, in their order, for an object imported from ``filepath``
    (the order's path as written, ``s3://`` included).

    ``extra`` are added as named: the ``processing_output_<key>`` values that
    preprocessing reported for the file.
    """
    values = {
        "UUID": order.uuid,
        "Filepath": filepath,
        "Group": order.group,
        "Username": order.user,
        "DestinationID": str(order.destination_id),
        "DestinationType": order.destination_type,
        "Files": json.dumps(list(order.file_texts)),
        "FileNames": json.dumps(list(order.file_names)),
    }
    if order.preprocessing is not None:
        values.update(order.preprocessing.annotation_fields())
        values["preprocessing_id"] = str(order.preprocessing.id)
    values.update(extra)
    values.update({f"csv_{k}": v for k, v in metadata.items()})
    values["Import_Timestamp"] = timestamp.isoformat()
    return values
