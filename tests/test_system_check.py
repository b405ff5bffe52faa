"""tests/system_check.py against a running daemon: a simple handler, and the
real DataPackageImporter through the OMERO double and the real ``omero`` wrapper."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from omero_adi.importing.importer import DataPackageImporter
from omero_adi.omero.blitz import BlitzServer
from omero_adi.pipeline import OrderContext, OrderFailed
from omero_adi.settings import build_settings, load_settings
from omero_adi.store.models import STAGE_PREPROCESSING
from omero_adi.store.session import open_store
from tests import system_check
from tests.helpers import current_stage, running_daemon
from tests.importer_standin import formats
from tests.importer_standin.fixture import ImporterSite, importer_site  # noqa: F401

SCRIPT = Path(system_check.__file__)


def write_config(tmp_path: Path, url: str, **values: Any) -> Path:
    """A settings file with a sample image and a data folder under tmp_path."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    sample = tmp_path / "samples" / "sample.tif"
    sample.parent.mkdir(exist_ok=True)
    sample.write_bytes(b"sample pixels")
    config = tmp_path / "settings.yml"
    config.write_text(yaml.safe_dump({
        "ingest_tracking_db": url, "base_dir": str(data), "sample_image": str(sample),
        "sample_group": "lab", "sample_user": "alice", "sample_parent_id": "51",
        "sample_parent_type": "Dataset", "shutdown_timeout": 5,
        "log_file_path": str(tmp_path / "logs" / "app.logs"), **values,
    }))
    return config


def run_check(config: Path, handler: Callable[[OrderContext], str | None],
              *args: str, check: Callable[[list[str]], int] = system_check.main) -> int:
    """``check`` (system_check's main, or t_main's) beside a running daemon."""
    settings = load_settings(config)
    engine = open_store(settings)
    try:
        with running_daemon(settings, engine, handler):
            return check(["--config", str(config), "--timeout", "30", *args])
    finally:
        engine.dispose()


def test_a_plain_order_is_followed_to_completion(pg_url, tmp_path, capsys) -> None:
    seen: list[OrderContext] = []

    def handler(ctx: OrderContext) -> str:
        seen.append(ctx)
        return "imported the sample"

    config = write_config(tmp_path, pg_url)
    assert run_check(config, handler) == 0
    out = capsys.readouterr().out
    timed = re.findall(r"^ +\d+\.\d\ds +(?:\(\+\d+\.\d\ds\))? +(Import \w+.*)$", out, re.M)
    assert timed == ["Import Pending", "Import Started", "Import Completed  imported the sample"]
    (ctx,) = seen
    order = ctx.order
    copy = order.files[0]
    assert copy.parent.parent == tmp_path / "data" / system_check.CHECK_DIR
    assert copy.read_bytes() == b"sample pixels"
    assert (order.group, order.user, order.destination_type, order.destination_id) == (
        "lab", "alice", "Dataset", 51)
    assert order.preprocessing is None


def test_preprocessing_settings_shape_the_order(pg_url, tmp_path, capsys) -> None:
    seen: list[Any] = []

    def handler(ctx: OrderContext) -> str:
        seen.append(ctx.order.preprocessing)
        ctx.record_stage(STAGE_PREPROCESSING, None)
        return "converted and imported"

    config = write_config(
        tmp_path, pg_url, preprocessing=True,
        sample_pre_container="cellularimagingcf/cimagexpresstoometiff:v0.7",
        sample_pre_save="single", sample_parent_type="Screen",
    )
    assert run_check(config, handler) == 0
    assert "Import Preprocessing" in capsys.readouterr().out
    (spec,) = seen
    assert spec.container == "cellularimagingcf/cimagexpresstoometiff:v0.7"
    assert (spec.input_file, spec.output_folder, spec.alt_output_folder) == (
        "{Files}", "/data", "/out")
    assert spec.extra_params == {"saveoption": "single"}


def test_a_failed_order_exits_1_with_its_reason(pg_url, tmp_path, capsys) -> None:
    def handler(ctx: OrderContext) -> str:
        raise OrderFailed("user 'alice' is not a member of group 'lab'")

    assert run_check(write_config(tmp_path, pg_url), handler) == 1
    assert "Import Failed  user 'alice' is not a member" in capsys.readouterr().out


def test_no_wait_only_orders_and_timeout_says_what_to_do(sqlite_url, tmp_path, capsys) -> None:
    config = write_config(tmp_path, sqlite_url)
    engine = open_store(load_settings(config))  # the schema a daemon would have made
    assert system_check.main(["--config", str(config), "--no-wait"]) == 0
    uuid = capsys.readouterr().out.split()[1].rstrip(":")
    assert current_stage(engine, uuid) == "Import Pending"
    assert system_check.main(["--config", str(config), "--timeout", "0.5"]) == 1
    assert "did not finish within 0s; is the daemon running?" in capsys.readouterr().err


@pytest.mark.parametrize("values, message", [
    ({"sample_image": ""}, "sample_image is not set"),
    ({"sample_image": "/nowhere/sample.tif"}, "sample_image /nowhere/sample.tif does not exist"),
    ({"sample_user": ""}, "sample_user is not set"),
    ({"ingest_tracking_db": "postgresql://adi:secret@127.0.0.1:1/none"},
     "cannot reach the order database postgresql://adi:***@127.0.0.1:1/none"),
    ({"ingest_tracking_db": None}, "no order database: set ingest_tracking_db"),
])
def test_what_is_missing_is_named(sqlite_url, tmp_path, values, message) -> None:
    config = write_config(tmp_path, sqlite_url, **values)
    open_store(build_settings({"ingest_tracking_db": sqlite_url}, {})).dispose()
    done = subprocess.run([sys.executable, str(SCRIPT), "--config", str(config)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "secret" not in done.stderr


def test_a_database_without_adi_tables_is_named(sqlite_url, tmp_path, capsys) -> None:
    assert system_check.main(["--config", str(write_config(tmp_path, sqlite_url))]) == 2
    assert "has no omero-adi tables: is the daemon running on it?" in capsys.readouterr().err


def test_end_to_end_through_the_omero_double_and_the_real_importer_wrapper(
    pg_url, tmp_path, importer_site: ImporterSite, capsys  # noqa: F811
) -> None:
    settings = importer_site.omero_settings()
    config = write_config(tmp_path, pg_url, sample_group="Demo", sample_user="researcher",
                          sample_parent_id="151", **settings)
    sample = Path(yaml.safe_load(config.read_text())["sample_image"])
    formats.image(sample)  # an image the importer stand-in can read
    handler = DataPackageImporter(BlitzServer(load_settings(config)), retry_delay=0.01)
    try:
        assert run_check(config, handler) == 0
    finally:
        handler.close()
    out = capsys.readouterr().out
    assert "Import Completed  Imported 1 fileset(s) into Dataset 151" in out
    (annotation,) = importer_site.annotations()
    copy = Path(dict(annotation["values"])["Filepath"])
    assert copy.parent.parent == Path(settings["base_dir"]) / system_check.CHECK_DIR
    assert copy.read_bytes() == sample.read_bytes()
