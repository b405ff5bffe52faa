"""The ``omeroadi.import`` key-values and ``metadata.csv`` reading."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from omero_adi.importing.annotations import import_annotation, metadata_for, read_metadata_csv
from omero_adi.orders import Order

LOG = logging.LoggerAdapter(logging.getLogger("test.annotations"), {})


def test_keys_and_values_of_a_plain_order() -> None:
    order = Order(event_id=1, uuid="u-1", group="lab", user="alice", destination_id=12,
                  destination_type="Dataset", files=(Path("/data/a.tif"), Path("/data/b.tif")),
                  file_names=("a.tif", "b.tif"))
    stamp = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    values = import_annotation(order, "/data/a.tif", extra={}, metadata={"stain": "DAPI"},
                               timestamp=stamp)
    assert values == {
        "UUID": "u-1", "Filepath": "/data/a.tif", "Group": "lab", "Username": "alice",
        "DestinationID": "12", "DestinationType": "Dataset",
        "Files": '["/data/a.tif", "/data/b.tif"]', "FileNames": '["a.tif", "b.tif"]',
        "csv_stain": "DAPI", "Import_Timestamp": "2025-01-02T03:04:05+00:00",
    }


def test_metadata_csv_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    csv_file = tmp_path / "metadata.csv"
    csv_file.write_text('key,value\n\nplate,"P1, left"\nonly-one-column\n,empty key\n'
                        "a,b,c\nwell,A01\n")
    with caplog.at_level(logging.WARNING):
        assert read_metadata_csv(csv_file, LOG) == {"plate": "P1, left", "well": "A01"}
    assert [r.getMessage().split(" is not")[0][-6:] for r in caplog.records] == [
        "line 4", "line 5", "line 6"]


def test_metadata_for_a_file_without_csv(tmp_path: Path) -> None:
    image = tmp_path / "a.tif"
    image.write_bytes(b"x")
    assert metadata_for(image, LOG, ".processed") == {}
