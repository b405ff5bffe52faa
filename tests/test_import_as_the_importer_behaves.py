"""What the real ``omero import`` wrapper and importer do that the daemon must handle
(issue #11), through the OMERO double and the importer stand-in."""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import pytest

from omero_adi.importing.results import ImportFailed
from omero_adi.pipeline import OrderFailed
from tests.helpers import wait_for
from tests.importer_standin import formats, real_omero
from tests.importer_standin.fixture import importer_site  # noqa: F401  (fixture)
from tests.test_import_importer import World, world  # noqa: F401  (world is a fixture)

DEADLINE = 30.0


def test_a_folder_with_colons_in_its_name_imports_and_is_annotated(world: World) -> None:
    folder = world.data / "2026-11-21 10:30:00"
    image = world.file("2026-11-21 10:30:00/cells.tif")
    description = world.run(world.order(folder))
    assert description.startswith(f"Imported 1 fileset(s) into Dataset {world.dataset}")
    (annotation,) = world.annotations()
    assert dict(annotation["values"])["Filepath"] == str(folder)
    assert image.exists()


def test_one_fileset_from_several_order_paths_is_a_complete_import(world: World) -> None:
    main = formats.multifile(world.data / "set.companion", {"ch1.raw": "c1\n", "ch2.raw": "c2\n"})
    paths = [world.data / "ch1.raw", world.data / "ch2.raw", main]
    description = world.run(world.order(*paths))
    assert description.startswith(f"Imported 1 fileset(s) into Dataset {world.dataset}")
    assert len(world.filesets()) == 1


def stale_key_cli(world: World) -> Path:
    """An ``omero_cli`` that hands the real wrapper a session key the server never
    issued (as when the order's session ended before the importer joined it)."""
    script = world.site.root / "omero-with-a-stale-key"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys, uuid\n"
        "argv = sys.argv[1:]\n"
        "argv[argv.index('-k') + 1] = str(uuid.uuid4())\n"
        f"os.execv({str(world.site.launcher())!r}, [{str(world.site.launcher())!r}, *argv])\n")
    script.chmod(0o755)
    return script


def test_a_refused_session_key_fails_the_order_with_nothing_imported(world: World) -> None:
    with pytest.raises(OrderFailed) as failure:
        world.run(world.order(world.file("a.tif")), omero_cli=str(stale_key_cli(world)))
    assert "Bad session key" in str(failure.value)
    assert world.filesets() == {}


def test_a_refused_session_key_is_described_as_such(world: World) -> None:
    with pytest.raises(OrderFailed) as failure:
        world.run(world.order(world.file("a.tif")), omero_cli=str(stale_key_cli(world)))
    first = str(failure.value).splitlines()[0]
    assert "session" in first and "status 11" not in first


def test_the_wrapper_never_uses_the_shared_session_store(world: World) -> None:
    """Two wrappers starting together on a fresh ``$OMERO_USERDIR`` race to make its
    ``sessions/<host>/<user>`` folders (omero-py util/sessions.py checks, then makes),
    and the loser says "Bad session key". Each run has a store of its own: here the
    shared one cannot even be a folder, and the import still works."""
    shared = world.site.userdir / "sessions"
    shared.parent.mkdir(parents=True, exist_ok=True)
    shared.write_text("not a folder\n")
    description = world.run(world.order(world.file("a.tif")))
    assert description.startswith(f"Imported 1 fileset(s) into Dataset {world.dataset}")
    assert shared.read_text() == "not a folder\n"


def test_an_omero_cli_that_is_not_there_is_named(world: World) -> None:
    missing = world.site.root / "no-such-omero"
    with pytest.raises(OrderFailed) as failure:
        world.run(world.order(world.file("a.tif")), omero_cli=str(missing))
    assert str(failure.value).startswith(
        f"Import failed: the importer could not be started: No such file or directory "
        f"({missing}); set omero_cli to the `omero` executable")
    assert world.filesets() == {}


def test_an_importer_run_as_root_is_described_as_such(world: World) -> None:
    with pytest.raises(OrderFailed) as failure:  # the real wrapper as root, no launcher
        world.run(world.order(world.file("a.tif")), omero_cli=str(real_omero()))
    first = str(failure.value).splitlines()[0]
    assert "root" in first and "status 1" not in first


def test_a_fileset_imported_but_not_reported_is_named(world: World) -> None:
    flag = world.site.root / "go"
    held = world.file("held.tif", hold=str(world.site.root / "never"))
    bad = world.file("bad.tif", wait=str(flag), on_import="fail")
    order = world.order(held, bad)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            world.run(order, parallel_filesets_per_worker=2)
        except BaseException as exc:  # noqa: BLE001  (the test reads it)
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_for(world.filesets, DEADLINE, what="the held fileset to be created")
    finally:
        flag.touch()
        worker.join(DEADLINE)
    assert not worker.is_alive(), "the order did not finish"
    (fileset_id,) = [i for i, f in world.filesets().items()
                     if f["entries"][0]["original"] == str(held)]
    (failure,) = outcome
    assert isinstance(failure, OrderFailed)
    assert f"Fileset {fileset_id}" in str(failure)
    assert f"Not imported: {bad}." in str(failure)


def test_no_session_file_is_left_under_omero_userdir(world: World) -> None:
    world.run(world.order(world.file("a.tif")))
    (session,) = world.user_sessions()
    left = [p for p in (world.site.userdir / "sessions").rglob(session["uuid"]) if p.is_file()]
    assert left == []


def test_a_file_gone_before_its_transfer_fails_naming_the_fileset_left_without_images(
        world: World) -> None:
    """The importer found the file, but it was moved away before its turn came: the
    server had already saved that fileset (importFileset comes before any transfer)."""
    flag = world.site.root / "go"
    good, gone, later = (world.file("a.tif"), world.file("b.tif", wait=str(flag)),
                         world.file("c.tif"))
    before = world.checksums()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            world.run(world.order(good, gone, later))
        except BaseException as exc:  # noqa: BLE001  (the test reads it)
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:  # one fileset at a time: b.tif waits while a.tif is imported
        wait_for(lambda: any(world.site.images_of(i) for i in world.filesets()), DEADLINE,
                 what="a.tif to be imported")
        moved = gone.rename(world.site.folder("elsewhere") / gone.name)
    finally:
        flag.touch()
        worker.join(DEADLINE)
    assert not worker.is_alive(), "the order did not finish"
    (failure,) = outcome
    assert isinstance(failure, ImportFailed)
    by_file = {f["entries"][0]["original"]: i for i, f in world.filesets().items()}
    assert sorted(by_file) == [str(good), str(gone)]  # c.tif was never started
    empty = by_file[str(gone)]
    assert world.site.images_of(empty) == []
    description = str(failure)
    assert description.startswith(
        f"Import failed: the importer could not read {gone} as it linked it into OMERO")
    assert f"{gone} → Fileset {empty} (no images)" in description.splitlines()[0]
    assert (f"Imported (not annotated): {good} → Fileset {by_file[str(good)]} "
            f"(Image {world.site.images_of(by_file[str(good)])[0]}).") in description
    assert f"Not imported: {gone}, {later}." in description
    assert f"Filesets without any Image: Fileset {empty} ({gone})." in description
    assert "delete the filesets named here in OMERO and retry the order" in description
    # nothing imported is lost: the caller (preprocessing, the guard) gets both filesets
    assert [e.fileset.id for e in failure.imported] == [by_file[str(good)]]
    assert [e.fileset.id for e in failure.empty] == [empty]
    assert world.annotations() == []
    after = world.checksums()
    assert after == {p: c for p, c in before.items() if p != gone}
    assert hashlib.sha256(moved.read_bytes()).hexdigest() == before[gone]
