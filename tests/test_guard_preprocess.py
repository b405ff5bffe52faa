"""The guard watches what OMERO's links point to: for a preprocessed order,
the durable copies in ``.processed/`` (real Podman, the OMERO double with the
real ``omero import`` wrapper and the importer stand-in)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from omero_adi.notify.guard import Guard
from omero_adi.store.models import STAGE_IMPORTED
from tests.helpers import running_daemon
from tests.importer_standin.fixture import importer_site  # noqa: F401  (fixture)
from tests.podman_fixtures import podman_images, podman_ready, podman_service  # noqa: F401
from tests.test_preprocess_e2e import Site, make_site  # noqa: F401  (fixture)


def test_a_preprocessed_order_is_guarded_at_its_durable_copies(
    make_site: Callable[..., Site],  # noqa: F811
) -> None:
    site = make_site()
    original = site.file("a/one.tif", b"first image")
    with running_daemon(site.settings, site.engine, site.handler):
        site.submit("pre-guard", [original], pre=site.preprocessing("convert",
                                                                    saveoption="single"))
        site.wait("pre-guard")
    stage, description = site.outcome("pre-guard")
    assert stage == STAGE_IMPORTED, description
    with site.engine.connect() as connection:
        watched = connection.execute(sa.text("SELECT path FROM adi_guard_files")).scalars().all()
    targets = sorted(str(target) for target in site.links("pre-guard").values())
    assert sorted(watched) == targets and targets
    assert all(Path(p).parent == original.parent / ".processed" for p in watched)
    assert Guard(site.settings, site.engine, None).check() == []
