"""A corpus of bad orders: each ends ``Import Failed`` with its own reason,
while the daemon keeps serving good orders in between."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from omero_adi.pipeline import OrderContext
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED
from omero_adi.store.session import open_store
from tests.helpers import current_stage, insert_order, running_daemon, stages, wait_for
from tests.test_daemon import make_settings


def corpus(base: Path, outside: Path) -> list[tuple[str, dict[str, Any], str]]:
    """(uuid, columns, expected words of the description)."""
    good = str(base / "image.tif")
    many = json.dumps([good] * 10_001)
    return [
        ("empty-group", {"group": "", "files": [good]}, "group_name is empty"),
        ("blank-user", {"user": "   ", "files": [good]}, "user_name is empty"),
        ("project-target", {"type": "Project", "files": [good]}, "'Project' is not supported"),
        ("lowercase-type", {"type": "dataset", "files": [good]}, "'dataset' is not supported"),
        ("text-id", {"dest": "abc", "files": [good]}, "'abc' is not a whole number"),
        ("negative-id", {"dest": "-3", "files": [good]}, "must be a positive id"),
        ("fraction-id", {"dest": "1.5", "files": [good]}, "'1.5' is not a whole number"),
        ("empty-id", {"dest": "", "files": [good]}, "is not a whole number"),
        ("files-not-json", {"files": "image.tif, other.tif"}, "not a JSON list of paths"),
        ("files-object", {"files": '{"a": 1}'}, "must be a JSON list of path strings"),
        ("files-numbers", {"files": "[1, 2]"}, "must be a JSON list of path strings"),
        ("files-mixed", {"files": json.dumps([good, {"a": 1}])}, "list of path strings"),
        ("files-null", {"files": "null"}, "must be a JSON list"),
        ("files-json-string", {"files": json.dumps(good)}, "not a JSON list of paths"),
        ("files-empty", {"files": "[]"}, "empty list"),
        ("files-enormous", {"files": many}, "at most 10000 per order"),
        ("relative", {"files": ["image.tif"]}, "'image.tif' is relative"),
        ("relative-dir", {"files": ["data/image.tif"]}, "is relative"),
        ("dot-dot", {"files": [f"{base}/../escape.tif"]}, "contains '..'"),
        ("outside-root", {"files": [str(outside / "secret.tif")]},
         "(the settings base_dir and allowed_roots name them)"),
        ("etc-passwd", {"files": ["/etc/passwd"]}, "outside the import roots"),
        ("symlink-dir-escape", {"files": [f"{base}/link-out/secret.tif"]}, "resolves to"),
        ("symlink-file-escape", {"files": [f"{base}/evil.tif"]}, "resolves to"),
        ("missing", {"files": [f"{base}/nope.tif"]}, "does not exist"),
        ("dangling-link", {"files": [f"{base}/dangling.tif"]}, "does not exist"),
        ("through-a-file", {"files": [f"{good}/inner"]}, "does not exist"),
        ("second-missing", {"files": [good, f"{base}/gone.tif"]}, f"'{base}/gone.tif' does not"),
        ("nul-byte", {"files": [f"{base}/a\u0000b.tif"]}, "NUL character"),
        ("bad uuid!", {"files": [good]}, "is not a valid order id"),
        ("../../etc", {"files": [good]}, "is not a valid order id"),
        ("pre-params-list", {"files": [good], "pre": "params-list"}, "must be a JSON object"),
        ("pre-param-nested", {"files": [good], "pre": "param-nested"}, "must be a single value"),
        ("pre-no-container", {"files": [good], "pre": "no-container"},
         "preprocessing container is empty"),
    ]


PREPROCESSING_ROWS = {
    "params-list": ("cellularimagingcf/convertleica-docker:v1.2.0", "[1, 2]"),
    "param-nested": ("cellularimagingcf/convertleica-docker:v1.2.0", '{"a": {"b": 1}}'),
    "no-container": ("", "{}"),
}


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    base, outside = tmp_path / "data", tmp_path / "elsewhere"
    base.mkdir()
    outside.mkdir()
    (base / "image.tif").write_bytes(b"pixels")
    (outside / "secret.tif").write_bytes(b"secret")
    os.symlink(outside, base / "link-out")
    os.symlink(outside / "secret.tif", base / "evil.tif")
    os.symlink(base / "removed.tif", base / "dangling.tif")
    return base, outside


def _preprocessing_ids(engine: sa.Engine) -> dict[str, int]:
    ids = {}
    with engine.begin() as connection:
        for name, (container, params) in PREPROCESSING_ROWS.items():
            ids[name] = connection.execute(sa.text(
                "INSERT INTO imports_preprocessing (container, input_file, output_folder, "
                "alt_output_folder, extra_params) VALUES (:c, '{Files}', '/data', '/out', "
                "CAST(:p AS JSON)) RETURNING id"), {"c": container, "p": params}).scalar_one()
    return ids


def test_each_bad_order_fails_with_its_own_reason_and_good_ones_still_run(
    make_pg_database, layout
) -> None:
    base, outside = layout
    settings = make_settings(make_pg_database(), base)
    engine = open_store(settings)
    pre_ids = _preprocessing_ids(engine)
    bad = corpus(base, outside)
    assert len(bad) >= 30
    handled: list[str] = []

    def handler(ctx: OrderContext) -> str:
        handled.append(ctx.order.uuid)
        return "imported"

    with running_daemon(settings, engine, handler):
        for number, (uuid, fields, _) in enumerate(bad):
            if "pre" in fields:
                fields = {**fields, "pre": pre_ids[fields["pre"]]}
            insert_order(engine, uuid, **fields)
            insert_order(engine, f"good-{number}", [str(base / "image.tif")])
        wait_for(lambda: all(current_stage(engine, f"good-{n}") == STAGE_IMPORTED
                             for n in range(len(bad))), timeout=60, what="good orders")
        wait_for(lambda: all(current_stage(engine, uuid) == STAGE_INGEST_FAILED
                             for uuid, _, _ in bad), timeout=60, what="bad orders")

    descriptions = {}
    for uuid, _, expected in bad:
        description = stages(engine, uuid)[-1][1]
        assert expected in description, (uuid, description)
        descriptions[uuid] = description
    assert len(set(descriptions.values())) >= len(bad) - 6  # reasons are specific, not generic
    assert not set(handled) & set(descriptions), "a bad order reached the importer"
    assert (base / "image.tif").read_bytes() == b"pixels"
    assert (outside / "secret.tif").read_bytes() == b"secret"
