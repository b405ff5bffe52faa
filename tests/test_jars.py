"""Missing OMERO.java jars are named, with the way to add them, where an import failed."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from omero_adi.importing.importer_cli import ImporterFiles, run_importer
from omero_adi.importing.jars import missing_jars_note


def lay_out_jars(userdir: Path) -> None:
    """What ``omero import --fetch-jars`` leaves (omero/plugins/import.py, _userdir_jars)."""
    libs = userdir / "cache" / "jars" / "OMERO.java-5.9.1-ice36" / "libs"
    libs.mkdir(parents=True)
    (libs / "omero-blitz.jar").write_bytes(b"PK")
    (userdir / "cache" / "jars" / "OMERO.java.txt").write_text("OMERO.java-5.9.1-ice36\n")


def test_no_note_where_the_jars_are_or_the_folders_are_unknown(tmp_path) -> None:
    lay_out_jars(tmp_path)
    assert missing_jars_note({"OMERO_USERDIR": str(tmp_path)}) is None
    assert missing_jars_note({}) is None
    client = tmp_path / "server" / "lib" / "client"
    client.mkdir(parents=True)
    (client / "omero-blitz.jar").write_bytes(b"PK")
    assert missing_jars_note({"OMERO_USERDIR": str(tmp_path / "empty"),
                              "OMERODIR": str(tmp_path / "server")}) is None


@pytest.mark.parametrize("layout", ["nothing", "pointer without jars"])
def test_the_note_names_the_folder_and_both_ways_to_add_them(tmp_path, layout) -> None:
    if layout != "nothing":
        (tmp_path / "cache" / "jars").mkdir(parents=True)
        (tmp_path / "cache" / "jars" / "OMERO.java.txt").write_text("OMERO.java-5.9.1-ice36")
    note = missing_jars_note({"OMERO_USERDIR": str(tmp_path)})
    assert note is not None
    assert f"at {tmp_path / 'cache' / 'jars'}" in note
    assert "--fetch-jars" in note and "OMERO_JARS=skip" in note


def test_a_failed_import_without_jars_ends_its_tail_with_the_note(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OMERO_USERDIR", str(tmp_path / "userdir"))
    files = ImporterFiles.for_order(tmp_path / "logs", "u1")
    failing = [sys.executable, "-c", "import sys; sys.exit('ConnectionError: no route')"]
    run = run_importer(failing, files, timeout=30, cancelled=threading.Event())
    assert run.finished.returncode == 1
    lines = run.errors_tail.splitlines()
    assert "ConnectionError: no route" in lines[-2]
    assert lines[-1].startswith("The OMERO.java importer jars are missing")
