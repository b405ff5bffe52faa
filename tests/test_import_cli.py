"""The importer's command line and its ``--output yaml`` report."""

from __future__ import annotations

from pathlib import Path

import pytest

from omero_adi.importing.importer_cli import (
    ImporterFiles,
    ImporterOutputError,
    build_command,
    parse_yaml_report,
)
from omero_adi.settings import Settings

FILES = ImporterFiles(Path("logs/cli.u1.logs"), Path("logs/cli.u1.errs"))


def test_command_for_a_screen_with_skips() -> None:
    settings = Settings(omero_cli="/opt/omero/bin/omero", omero_host="omero.example",
                        omero_port=4064, parallel_upload_per_worker=8,
                        parallel_filesets_per_worker=3, skip_checksum=True,
                        skip_thumbnails=True, import_depth=10)
    command = build_command(settings, session_key="k-1", destination_type="Screen",
                            destination_id=51, paths=[Path("/data/a.xdce"), Path("/data/run")],
                            files=FILES)
    assert command == [
        "/opt/omero/bin/omero", "import", "-k", "k-1", "-s", "omero.example", "-p", "4064",
        "--transfer=ln_s", "--no-upgrade", "--file", "logs/cli.u1.logs",
        "--errs", "logs/cli.u1.errs", "--output", "yaml",
        "--parallel-upload", "8", "--parallel-fileset", "3",
        "--skip", "checksum", "--skip", "thumbnails",
        "--depth", "10", "-r", "51", "/data/a.xdce", "/data/run",
    ]


def test_skip_all_replaces_the_single_skips() -> None:
    settings = Settings(skip_all=True, skip_minmax=True)
    command = build_command(settings, session_key="k", destination_type="Dataset",
                            destination_id=3, paths=[Path("/data/a.tif")], files=FILES)
    assert command[command.index("--output") + 6:][:2] == ["--skip", "all"]
    assert command.count("--skip") == 1
    assert command[-3:] == ["-d", "3", "/data/a.tif"]


def test_yaml_report_one_document_per_fileset() -> None:
    report = ("---\n- Fileset: 4102\n  Image: [5001,5002]\n"
              "---\n- Fileset: 4103\n  Image: [5003]\n  Plate: [77]\n")
    assert parse_yaml_report(report) == (4102, 4103)


def test_yaml_report_empty() -> None:
    assert parse_yaml_report("") == ()


@pytest.mark.parametrize("text", ["---\n- Fileset: [unclosed\n", "---\n- Image: [1]\n",
                                  "---\n- Fileset: one\n  Image: [1]\n"])
def test_yaml_report_malformed(text: str) -> None:
    with pytest.raises(ImporterOutputError):
        parse_yaml_report(text)
