"""``omero-adi check``: can this daemon work here? One line per check."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy.exc import SQLAlchemyError

from omero_adi.logs import order_log
from omero_adi.pipeline import OrderFailed
from omero_adi.settings import Settings, mask_url
from omero_adi.store import migrate
from omero_adi.store.db import make_engine

Check = tuple[str, bool, str]


def check_database(settings: Settings) -> tuple[bool, str]:
    engine = make_engine(settings.ingest_tracking_db)
    try:
        with engine.connect() as connection:
            current = migrate.current_revision(connection)
    except SQLAlchemyError as exc:
        return False, f"{mask_url(settings.ingest_tracking_db)} unreachable: {exc.__class__.__name__}"
    finally:
        engine.dispose()
    head = migrate.head_revision()
    where = mask_url(settings.ingest_tracking_db)
    if current != head:
        return False, f"{where} is at {current or 'no revision'}, needs {head}: run `omero-adi migrate`"
    return True, f"{where} at revision {head}"


def check_omero(settings: Settings) -> tuple[bool, str]:
    from omero_adi.omero.blitz import check_omero as login

    return login(settings)


def check_podman(settings: Settings) -> tuple[bool, str]:
    from omero_adi.importing.engines import connect

    try:
        engine = connect(settings, order_log("check"))
    except OrderFailed as exc:
        return False, str(exc)
    return True, type(engine).__name__


def check_folder(path: Path) -> tuple[bool, str]:
    """Readable, and writable (a temporary file is created and removed)."""
    if not path.is_dir():
        return False, f"{path} is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return False, f"{path} is not readable"
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".omero-adi-check-"):
            pass
    except OSError as exc:
        return False, f"{path} is not writable: {exc.strerror}"
    return True, f"{path} readable and writable"


def run_checks(settings: Settings) -> Iterator[Check]:
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        ("database", lambda: check_database(settings)),
        ("omero", lambda: check_omero(settings)),
        ("podman", lambda: check_podman(settings)),
        ("base_dir", lambda: check_folder(Path(settings.base_dir))),
        ("inplace_tmp_root", lambda: check_folder(Path(settings.inplace_tmp_root))),
        ("managed_repository", lambda: check_folder(Path(settings.managed_repository))),
    ]
    quiet = logging.getLogger("omero_adi")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # keep the output to one line per check
    try:
        for name, check in checks:
            ok, detail = check()
            yield name, ok, detail
    finally:
        quiet.setLevel(level)
