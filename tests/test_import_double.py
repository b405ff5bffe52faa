"""Import correctness through the OMERO double, the real omero-py, ezomero and
``omero import`` wrapper, and the importer stand-in behind it (issue 11).

Each test names the item of issue 11 it holds and failed before its fix.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from omero_adi.checks import check_omero
from omero_adi.importing.importer import DataPackageImporter
from omero_adi.omero.blitz import BlitzServer
from omero_adi.pipeline import OrderFailed
from tests.importer_standin import formats, unprivileged
from tests.importer_standin.fixture import importer_site  # noqa: F401  (fixture)
from tests.podman_fixtures import (  # noqa: F401  (fixtures)
    ALLOW_PATTERN,
    make_order,
    podman_images,
    podman_ready,
)
from tests.test_import_importer import DATASET, World, world  # noqa: F401  (world: fixture)

DEADLINE = 60.0


def _annotated(world: World) -> list[int]:
    """The objects linked to an ``omeroadi.import`` MapAnnotation."""
    return sorted(int(object_id) for a in world.annotations() if a["ns"] == "omeroadi.import"
                  for _, object_id in a["links"])


def _images(state: dict[str, Any]) -> list[int]:
    return sorted(int(i) for i in state["images"])


# --- 1. a valid session for every step ----------------------------------------

def test_an_import_longer_than_ttl_for_user_conn_keeps_its_session(world: World) -> None:
    gate = world.data / "gate"
    image = formats.image(world.data / "slow.tif", wait=str(gate))
    errs = Path(world.settings.log_file_path).parent / "cli.order-1.errs"

    importer_ran: list[bool] = []

    def later() -> None:  # once the importer runs: half an hour passes, then the file is ready
        deadline = time.monotonic() + DEADLINE
        while not (errs.exists() and errs.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        importer_ran.append(errs.exists() and errs.stat().st_size > 0)
        world.site.double.advance(1800)
        gate.touch()

    helper = threading.Thread(target=later)
    helper.start()
    try:
        description = world.run(world.order(image), ttl_for_user_conn=60_000, import_timeout=3600)
    finally:
        gate.touch()
        helper.join()
    assert importer_ran == [True], "the half hour passed before the importer ran"
    assert description.startswith(f"Imported 1 fileset(s) into Dataset {DATASET}")
    assert _annotated(world) == _images(world.site.state())


def test_lookups_and_annotations_after_the_session_ran_out_get_a_new_one(world: World) -> None:
    image = formats.image(world.data / "a.tif", series=2)
    ctx = world.context(world.order(image), ttl_for_user_conn=60_000, import_timeout=600)
    # two hours pass while the importer finishes: every session of the order has ended
    ctx.emit = lambda what, detail: world.site.double.advance(7200)
    description = world.importer(ctx)
    assert description.startswith(f"Imported 1 fileset(s) into Dataset {DATASET}")
    assert _annotated(world) == _images(world.site.state()) and len(_annotated(world)) == 2


# --- 2. no data loss after a late failure ----------------------------------------

def test_a_refused_annotation_lists_what_was_imported(world: World) -> None:
    for call in ("IUpdate.saveAndReturnArray", "IUpdate.saveAndReturnObject"):
        world.site.double.fault(call, "omero.SecurityViolation", message="not allowed", times=5)
    image = formats.image(world.data / "a.tif")
    description = world.fail(world.order(image))
    (fileset,) = list(world.filesets().values())
    assert f"Imported (not annotated): {image} → Fileset {fileset['id']}" in description
    assert "delete them in OMERO and retry the order" in description


def _links_resolve(managed: Path) -> list[Path]:
    """Every link in the ManagedRepository, each checked to reach an existing file."""
    links = [p for p in managed.rglob("*") if p.is_symlink()]
    dangling = [link for link in links if not link.exists()]
    assert links and not dangling, f"links to removed files: {dangling}"
    return [link.resolve() for link in links]


@pytest.mark.parametrize("faults, kept", [
    # annotations refused, however saved: every link redirected
    (("IUpdate.saveAndReturnArray", "IUpdate.saveAndReturnObject"), False),
    (("IQuery.projection",), True),  # the fileset lookup fails: the local copies stay
])
def test_a_late_failure_after_preprocessing_loses_no_pixel_data(
        world: World, podman_images: dict[str, str], faults: tuple[str, ...], kept: bool) -> None:
    source = formats.image(world.data / "raw" / "cells.tif")
    order = replace(make_order([source], container=podman_images["convert"]),
                    group="Demo", user="researcher", destination_id=DATASET, uuid="late-1")
    inplace = world.site.folder("inplace")
    for fault in faults:
        world.site.double.fault(fault, "omero.SecurityViolation", message="refused", times=10)
    with pytest.raises(OrderFailed) as failure:
        world.importer(world.context(order, allowed_containers=[ALLOW_PATTERN],
                                   inplace_tmp_root=str(inplace), preprocessing_timeout=120.0))
    targets = _links_resolve(world.site.managed_repository)
    assert (inplace / "late-1").exists() == kept
    if not kept:
        assert all(".processed" in t.parts for t in targets)  # processed_data_folder's default
        assert "Imported (not annotated)" in str(failure.value)
    else:
        assert "were kept: filesets not listed here may link to them" in str(failure.value)


def test_no_imports_due_to_errors_says_so(world: World) -> None:
    damaged = formats.damaged(world.data / "damaged.tif")  # its reader throws while scanning
    description = world.fail(world.order(damaged))
    assert description.startswith(f"Import failed: the importer found files in {damaged} but "
                                  "could not read any of them"), description


def test_missing_java_says_so(world: World) -> None:
    env = {**world.site.env, "PATH": os.pathsep.join(
        p for p in world.site.env["PATH"].split(os.pathsep)
        if not (Path(p) / "java").exists())}
    launcher = unprivileged.launcher(world.site.root / "omero-no-java", world.site.who, env)
    description = world.fail(world.order(formats.image(world.data / "a.tif")),
                             omero_cli=str(launcher))
    assert description.startswith("Import failed: the `omero` command could not start Java")


# --- 6. transient failures retried, nothing imported twice --------------------------------

def test_a_lost_connection_is_retried_for_the_missing_paths_only(world: World) -> None:
    files = [formats.image(world.data / f"{name}.tif") for name in ("a", "b", "c")]
    world.site.double.fault("import", None, times=1)  # the first fileset goes through
    world.site.double.fault("import", "Ice.ConnectionLostException", message="connection lost")
    description = world.run(world.order(*files))
    imported = sorted(entry["client_path"] for f in list(world.filesets().values()) for entry in f["entries"])
    assert imported == sorted(str(f).lstrip("/") for f in files), description  # each once
    # the stand-in's other fileset thread may or may not have reached c first
    assert re.search(rf"run 2 imported only the [12] path\(s\) still missing: {files[1]}",
                     description), description
    assert _annotated(world) == _images(world.site.state())


# --- 7. smaller items ------------------------------------------------------------------

def test_annotating_100_images_takes_no_more_requests_than_10(world: World) -> None:
    world.run(world.order(formats.image(world.data / "warm-up.tif")))  # the admin session
    counts = []
    for n in (10, 100):
        before = world.site.double.requests()
        world.run(world.order(formats.image(world.data / f"s{n}.tif", series=n)))
        counts.append(world.site.double.requests() - before)
    assert counts[1] <= counts[0], counts
    assert len(_annotated(world)) == 1 + 10 + 100


def test_a_restricted_admin_without_sudo_is_named(world: World) -> None:
    world.site.double.world({"users": [{"name": "helper", "groups": ["Demo"],
                                        "admin": "restricted", "privileges": ["ModifyUser"]}]})
    settings = replace(world.settings, omero_user="helper")
    ok, detail = check_omero(settings)
    assert not ok and "restricted administrator without the Sudo privilege" in detail
    importer = DataPackageImporter(BlitzServer(settings), retry_delay=0.01)
    with pytest.raises(OrderFailed) as failure:
        importer(world.context(world.order(formats.image(world.data / "a.tif"))))
    importer.close()
    assert "without the Sudo privilege" in str(failure.value)


def test_a_session_refused_for_good_is_not_retried_as_unreachable(world: World) -> None:
    world.site.double.fault("createSession", "omero.WrappedCreateSessionException",
                            message="account disabled", times=10)
    description = world.fail(world.order(formats.image(world.data / "a.tif")))
    assert "unreachable" not in description and "refused the session" in description


def test_a_session_whose_join_fails_is_closed(world: World) -> None:
    world.run(world.order(formats.image(world.data / "a.tif")))  # the admin session is open
    world.site.double.fault("createSession", "Glacier2.PermissionDeniedException",
                            message="join refused")
    description = world.fail(world.order(formats.image(world.data / "b.tif")))
    assert "nothing was imported" in description
    sudo = [s for s in world.site.state()["sessions"].values() if s["sudoer"] is not None]
    assert len(sudo) == 2 and all(s["closed"] for s in sudo), sudo


def test_missing_importer_jars_say_so(world: World) -> None:
    empty = world.site.folder("empty-userdir", writable=True)
    env = {**world.site.env, "OMERO_USERDIR": str(empty)}  # no cache/jars: the wrapper downloads
    launcher = unprivileged.launcher(world.site.root / "omero-no-jars", world.site.who, env)
    description = world.fail(world.order(formats.image(world.data / "a.tif")),
                             omero_cli=str(launcher))
    assert description.startswith("Import failed: the OMERO.java importer jars are missing")


