"""Import correctness as the real server and importer behave (issue 11): the
pure logic.

The same behaviours through the Ice double and the real ``omero`` wrapper are
in ``tests/test_import_double.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from omero_adi.importing.client_paths import client_path, safe_component
from omero_adi.importing.importer_cli import ImporterRun, private_omero_dirs
from omero_adi.importing.importer_says import failed_transfers, verdict
from omero_adi.importing.matching import match, missing
from omero_adi.importing.results import ImportedFileset, ImportFailed, ImportItem
from omero_adi.importing.zarr_register import register_zarr
from omero_adi.omero.boundary import FilesetInfo, PartlyCreated, SessionLost
from omero_adi.omero.sessions import MARGIN, SessionKeeper
from omero_adi.process import Finished

LOG = logging.getLogger("test.correctness")


# --- 3. sanitised client paths (MakePathComponentSafe, WINDOWS_ + UNIX_REQUIRED) ---

@pytest.mark.parametrize("name, safe", [
    ("2026-11-21 10:30:00", "2026-11-21 10;30;00"),
    ('a"b*c<d>e?f|g\\h', "a'bxc[d]e%f!g!h"),
    ("tab\there\x7f\x85", "tab_here__"),
    ("CON", "CON_"), ("nul", "nul_"), ("com1", "com1_"), ("LPT9", "LPT9_"),
    ("aux.tif", "_aux.tif"), ("$MFT", "_$MFT"), ("CONSOLE.tif", "CONSOLE.tif"),
    ("plain-name_1.tif", "plain-name_1.tif"),
])
def test_a_component_is_made_safe_as_the_importer_does(name: str, safe: str) -> None:
    assert safe_component(name) == safe


def test_a_fileset_under_a_timestamped_folder_matches_its_order_path() -> None:
    folder = Path("/data/run 2026-11-21 10:30:00")
    recorded = Path("/data/run 2026-11-21 10;30;00/well?A1.tif".replace("?", "%"))
    assert client_path(PurePosixPath(folder)) == PurePosixPath("/data/run 2026-11-21 10;30;00")
    assert ImportItem.of(folder).holds(recorded)
    assert not ImportItem.of(Path("/data/run")).holds(recorded)


# --- 4. one fileset from several order paths ---------------------------------

def test_a_used_file_is_found_on_disk_under_its_unsanitised_name(tmp_path: Path) -> None:
    """The guard stats the file a fileset links to, not its recorded client path."""
    folder = tmp_path / "run" / "2026-11-21 10:30:00"
    image = folder / "cells:1.tif"
    folder.mkdir(parents=True)
    image.write_bytes(b"pixels")
    item = ImportItem.of(tmp_path / "run")
    recorded = Path(str(client_path(PurePosixPath(image))))
    assert recorded != image and item.holds(recorded)
    assert item.local_file(recorded) == image
    assert item.local_file(Path(str(client_path(PurePosixPath(folder / "gone.tif"))))) is None
    assert ImportItem.of(tmp_path / "other").local_file(recorded) is None


def test_a_failure_with_a_note_keeps_what_was_imported(tmp_path: Path) -> None:
    """Zarr registration and preprocessing add to an import's failure: what it
    imported must still reach the guard (DataPackageImporter records exc.imported)."""
    item = ImportItem.of(tmp_path / "a.tif")
    done = ImportedFileset(item, FilesetInfo(7, "p/", (tmp_path / "a.tif",), (70,), ()))
    failed = ImportFailed("Import failed: x.", [done], unaccounted=True)
    noted = failed.with_note("Registered (annotated): s.zarr → Image 9.")
    assert str(noted) == "Import failed: x.\nRegistered (annotated): s.zarr → Image 9."
    assert (noted.imported, noted.empty, noted.unaccounted) == ((done,), (), True)


def test_one_fileset_from_several_order_paths_covers_all_of_them() -> None:
    header, pixels = ImportItem.of(Path("/d/scan.vsi")), ImportItem.of(Path("/d/_scan_/s.ets"))
    fileset = FilesetInfo(7, "alice_2/x", (Path("/d/scan.vsi"), Path("/d/_scan_/s.ets")),
                          (9,), ())
    imported, strays = match([header, pixels], [fileset])
    assert strays == [] and [e.fileset.id for e in imported] == [7]
    assert missing([header, pixels], imported) == []


# --- 5. what the importer says, said plainly ----------------------------------

def _run(said: str, code: int = 1, errs: bool = True) -> ImporterRun:
    return ImporterRun(Finished(code, False, False, 1.0), (), "", said=said, errs_written=errs)


@pytest.mark.parametrize("said, code, errs, start", [
    ("FATAL: Running /venv/bin/omero as root can corrupt your directory permissions.", 1,
     False, "the `omero` command refuses to run as root"),
    ("Exception: Java could not be found. (Executable=java)", 1, False,
     "the `omero` command could not start Java"),
    ("No JAR files found under '/opt/omero/lib/client'", 103, False,
     "the OMERO.java importer jars are missing"),
    ("Downloading https://downloads.openmicroscopy.org/omero/latest/OMERO.java.zip\n"
     "requests.exceptions.ConnectionError: …", 1, False, "the OMERO.java importer jars are missing"),
    ("No imports found\nUsage: importer-cli [OPTION]... path [path ...]", 1, True,
     "nothing importable was found in /d/a.txt"),
    ("No imports due to errors!\n==> Summary", 0, True, "the importer found files in /d/a.txt"),
])
def test_the_importers_own_words_become_a_plain_description(
        said: str, code: int, errs: bool, start: str) -> None:
    found = verdict(_run(said, code, errs), [Path("/d/a.txt")])
    assert found is not None and found.problem.startswith(start) and not found.transient


@pytest.mark.parametrize("said, errs", [
    ("Ice.ConnectionLostException\n    error = 0", True),
    ("omero.ObjectNotExistException", True),
    ("ServerError: INTERNAL_EXCEPTION", True),
    ("Bad session key. Cannot join 1234 on localhost:4064.", False),
    ("", False),
])
def test_transient_importer_failures_are_told_apart(said: str, errs: bool) -> None:
    found = verdict(_run(said, 2, errs), [Path("/d/a.tif")])
    assert found is not None and found.transient


def test_only_a_file_whose_transfer_began_counts_as_a_failed_transfer() -> None:
    said = ("… ErrorHandler - FILE_EXCEPTION: /d/damaged.tif\nloci.formats.FormatException\n"
            "… LoggingImportMonitor - FILE_UPLOAD_STARTED: /d/a b.tif\n"
            "… ErrorHandler - FILE_EXCEPTION: /d/a b.tif\njava.lang.RuntimeException: …\n")
    assert failed_transfers(said) == ["/d/a b.tif"]  # the first failed while scanning


# --- 1. a valid session for every step ----------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Session:
    def __init__(self, ttl_ms: int, opened: list[Any]):
        self.ttl_ms, self.key, self.closed = ttl_ms, f"key-{len(opened)}", False
        opened.append(self)

    def close(self) -> None:
        self.closed = True


class _Asking(_Session):
    """Asked which filesets a session made: the first one has ended with the run."""

    def created_filesets(self, key: str) -> tuple[int, ...]:
        if self.key == "key-0":
            raise SessionLost("the OMERO session at x ended (RemovedSessionException)")
        return {"key-0": (5, 6)}[key]


def test_the_filesets_of_a_run_whose_session_ended_are_asked_through_a_new_one() -> None:
    """A run that failed because its session ended is tried again, so asking which
    filesets it made must not need that session."""
    from types import SimpleNamespace

    from omero_adi.importing.runs import _created

    opened: list[_Session] = []
    sessions = SessionKeeper(lambda ttl: _Asking(ttl, opened), ttl_ms=600_000, log=LOG)
    ended = sessions.for_step()
    run = ImporterRun(Finished(2, False, False, 1.0), (5,), "", said="ObjectNotExistException")
    ctx = SimpleNamespace(log=LOG)
    assert _created(ctx, sessions, ended, run, []) == (5, 6)  # type: ignore[arg-type]
    assert [s.key for s in opened] == ["key-0", "key-1"] and opened[0].closed


def test_a_session_is_renewed_before_a_step_it_would_not_outlive() -> None:
    clock, opened = _Clock(), []  # type: list[_Session]
    keeper = SessionKeeper(lambda ttl: _Session(ttl, opened), ttl_ms=6_000_000, log=LOG,
                           clock=clock)
    run_session = keeper.for_step(6 * 3600)  # the importer run: longer than the default TTL
    assert run_session.ttl_ms == int((6 * 3600 + MARGIN) * 1000)  # type: ignore[attr-defined]
    clock.now += 1
    assert keeper.for_step(6 * 3600) is run_session  # asked again at once: the same one
    clock.now += 3600
    assert keeper.for_step(600) is run_session  # still lives long enough
    clock.now += 5 * 3600 - 300  # the run took almost all of import_timeout
    renewed = keeper.for_step(600)
    assert renewed is not run_session and run_session.closed  # type: ignore[attr-defined]
    assert renewed.ttl_ms == 6_000_000  # type: ignore[attr-defined]
    keeper.renew()  # e.g. before a run tried again after a lost connection
    fresh = keeper.for_step(600)
    assert fresh is not renewed and renewed.closed  # type: ignore[attr-defined]
    keeper.close()
    assert fresh.closed and keeper.opened == 3  # type: ignore[attr-defined]


def test_a_step_whose_session_the_server_ended_runs_again_in_a_new_one() -> None:
    opened: list[_Session] = []
    keeper = SessionKeeper(lambda ttl: _Session(ttl, opened), ttl_ms=60_000, log=LOG)
    calls = []

    def step(session: Any) -> str:
        calls.append(session.key)
        if len(calls) == 1:
            raise SessionLost("the OMERO session at x ended (SessionTimeoutException)")
        return "done"

    assert keeper.run(step) == "done"
    assert calls == ["key-0", "key-1"] and opened[0].closed


# --- 7. smaller items ------------------------------------------------------------

def test_each_omero_run_gets_a_session_store_and_temporary_folder_of_its_own() -> None:
    with private_omero_dirs() as first, private_omero_dirs() as second:
        assert set(first) == {"OMERO_SESSIONDIR", "OMERO_TMPDIR"}
        folders = {Path(v).parent for v in [*first.values(), *second.values()]}
        assert len(folders) == 2 and all(f.is_dir() for f in folders)
        Path(first["OMERO_SESSIONDIR"], "127.0.0.1", "alice").mkdir(parents=True)
    assert not any(f.exists() for f in folders)  # with the session files in them
    with pytest.raises(RuntimeError), private_omero_dirs() as third:
        raise RuntimeError("the run failed")
    assert not Path(third["OMERO_TMPDIR"]).parent.exists()


class _HalfWay:
    """A session whose second Zarr image fails after creating an Image."""

    def __init__(self) -> None:
        self.next_id = 40

    def register_zarr_image(self, image: Any, dataset_id: int) -> int:
        self.next_id += 1
        if self.next_id == 42:
            raise PartlyCreated("OMERO at x refused: SecurityViolation", ("Image 42",))
        return self.next_id


class _Registering(_Session):
    """A session that registers one image in 400 s of the clock."""

    clock: _Clock

    def register_zarr_image(self, image: Any, dataset_id: int) -> int:
        self.clock.now += 400
        return 100 + int(self.key.split("-")[1])


def test_each_zarr_store_is_registered_in_a_session_that_outlives_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from omero_adi.importing import zarr_register
    from omero_adi.importing.zarr_meta import ZarrContent, ZarrSource
    from omero_adi.orders import Order
    from omero_adi.settings import Settings

    clock, opened = _Clock(), []  # type: list[_Session]
    _Registering.clock = clock
    keeper = SessionKeeper(lambda ttl: _Registering(ttl, opened), ttl_ms=600_000, log=LOG,
                           clock=clock)
    monkeypatch.setattr(zarr_register, "read_contents", lambda order, uris, settings: [
        ZarrContent(ZarrSource(u, "", True), images=(object(),), plate=None)  # type: ignore[arg-type]
        for u in uris])
    stores = [str(tmp_path / f"{n}.zarr") for n in range(3)]
    order = Order(event_id=1, uuid="u", group="lab", user="alice", destination_id=5,
                  destination_type="Dataset", files=tuple(map(Path, stores)),
                  file_names=tuple(stores))
    results = register_zarr(order, stores, Settings(), keeper, logging.LoggerAdapter(LOG, {}))
    # 660 s sessions, 400 s per store: each store after the first needs a new one
    assert [r.image_ids for r in results] == [(100,), (101,), (102,)]
    assert [s.closed for s in opened] == [True, True, False]


def test_a_zarr_registration_failing_half_way_names_what_it_created(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from omero_adi.importing import zarr_register
    from omero_adi.importing.zarr_meta import ZarrContent, ZarrSource
    from omero_adi.orders import Order
    from omero_adi.pipeline import OrderFailed
    from omero_adi.settings import Settings

    def content(uri: str, settings: Any = None) -> ZarrContent:
        return ZarrContent(ZarrSource(uri, "", True), images=(object(), object()),  # type: ignore[arg-type]
                           plate=None)

    monkeypatch.setattr(zarr_register, "read_contents",
                        lambda order, uris, settings: [content(u) for u in uris])
    order = Order(event_id=1, uuid="u", group="lab", user="alice", destination_id=5,
                  destination_type="Dataset", files=(tmp_path / "a.zarr",), file_names=("a.zarr",))
    with caplog.at_level(logging.ERROR), pytest.raises(OrderFailed) as failure:
        register_zarr(order, [str(tmp_path / "a.zarr")], Settings(),
                      SessionKeeper(lambda ttl_ms: _HalfWay(), ttl_ms=60_000, log=LOG),  # type: ignore[arg-type,return-value]
                      logging.LoggerAdapter(LOG, {}))
    assert f"Created for {tmp_path / 'a.zarr'} before the failure: Image 41, Image 42." in str(
        failure.value)
    assert "Image 41, Image 42" in caplog.text
