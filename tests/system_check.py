"""System check of a running deployment: import the sample image end to end.

    python tests/system_check.py [--config config/settings.yml] [--timeout S] [--no-wait]

Reads the settings (the ``sample_*`` keys name the image, group, user and
destination), copies ``sample_image`` into a fresh folder under ``base_dir``,
creates an order (with preprocessing when ``preprocessing`` is true), and
follows it to ``Import Completed`` or ``Import Failed``, printing each stage
with its time. Exit status: 0 imported (or, with ``--no-wait``, ordered);
1 failed or not finished in time; 2 the check cannot start (settings,
database, sample). The copies stay: OMERO links to them in place.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid as uuidlib
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from omero_adi.cli import follow
from omero_adi.settings import (
    DEFAULT_SETTINGS_PATH,
    Settings,
    SettingsError,
    load_settings,
    mask_url,
)
from omero_adi.store import admin, migrate
from omero_adi.store.db import make_engine

#: Folder under base_dir that holds one sub-folder per check.
CHECK_DIR = "omero-adi-system-check"


class CheckError(Exception):
    """The check cannot start; the message says what to fix."""


def open_database(settings: Settings) -> Engine:
    """The order database, which the daemon must have migrated already."""
    where = mask_url(settings.ingest_tracking_db)
    if settings.database_is_default and not Path(
        settings.ingest_tracking_db.removeprefix("sqlite:///")
    ).exists():
        raise CheckError("no order database: set ingest_tracking_db or INGEST_TRACKING_DB_URL "
                         "to the daemon's database")
    engine = make_engine(settings.ingest_tracking_db)
    try:
        with engine.connect() as connection:
            revision = migrate.current_revision(connection)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise CheckError(f"cannot reach the order database {where}: "
                         f"{str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}") from exc
    if revision is None:
        engine.dispose()
        raise CheckError(f"the order database {where} has no omero-adi tables: "
                         "is the daemon running on it? (or run `omero-adi migrate`)")
    return engine


def copy_sample(settings: Settings) -> Path:
    """A fresh copy of the sample under ``<base_dir>/omero-adi-system-check/``."""
    if not settings.sample_image:
        raise CheckError("sample_image is not set: name an image file (or folder) to import")
    for key in ("sample_group", "sample_user", "sample_parent_id"):
        if not getattr(settings, key):
            raise CheckError(f"{key} is not set")
    sample = Path(settings.sample_image)
    if not sample.exists():
        raise CheckError(f"sample_image {sample} does not exist")
    folder = Path(settings.base_dir) / CHECK_DIR / (
        f"{datetime.now():%Y%m%d-%H%M%S}-{uuidlib.uuid4().hex[:6]}"
    )
    target = folder / sample.name
    try:
        folder.mkdir(parents=True)
        if sample.is_dir():
            shutil.copytree(sample, target)
        else:
            shutil.copy2(sample, target)
    except OSError as exc:
        raise CheckError(f"cannot copy the sample into {folder}: {exc}") from exc
    return target


def order_info(settings: Settings, path: Path) -> dict[str, Any]:
    """The order, in the shape the web plugin sends (contracts §2)."""
    info: dict[str, Any] = {
        "Group": settings.sample_group,
        "Username": settings.sample_user,
        "DestinationID": settings.sample_parent_id,
        "DestinationType": settings.sample_parent_type,
        "Files": [str(path)],
    }
    if settings.preprocessing:
        info.update({
            "preprocessing_container": settings.sample_pre_container,
            "preprocessing_inputfile": settings.sample_pre_input,
            "preprocessing_outputfolder": settings.sample_pre_out,
            "preprocessing_altoutputfolder": settings.sample_pre_outalt,
            "extra_params": (
                {"saveoption": settings.sample_pre_save} if settings.sample_pre_save else {}
            ),
        })
    return info


#: Makes the orders of a check: the settings of each (a variant of the loaded
#: settings, per group), from the loaded settings and the settings file's path.
Variants = Callable[[Settings, Path], list[Settings]]
#: Writes one order (the web plugin's dict) and returns its uuid.
Submit = Callable[[Engine, dict[str, Any]], str]


def run_check(argv: Sequence[str] | None, doc: str, name: str, variants: Variants,
              submit: Submit) -> int:
    """Order the sample once per variant, print the uuids, then follow each order;
    ``name`` starts its error messages."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--config", help="settings file (default: config/settings.yml)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the orders to finish (default 600)")
    parser.add_argument("--no-wait", action="store_true",
                        help="create the orders, print their uuids and exit")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        path = Path(args.config or os.environ.get("ADI_SETTINGS") or DEFAULT_SETTINGS_PATH)
        engine = open_database(settings)
        try:
            uuids = [_order_sample(engine, variant, submit)
                     for variant in variants(settings, path)]
            if args.no_wait:
                return 0
            deadline = time.monotonic() + args.timeout
            results = []
            for number, uuid in enumerate(uuids):
                if len(uuids) > 1:
                    print(f"order {uuid}", flush=True)
                left = deadline - time.monotonic()
                # a look at every order, however long the ones before it took
                results.append(follow(engine, uuid, left if number == 0 else max(left, 1.0)))
            return max(results, default=0)
        finally:
            engine.dispose()
    except (SettingsError, CheckError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"{name}: database error: {mask_url(str(exc).splitlines()[0])}", file=sys.stderr)
        return 2


def _order_sample(engine: Engine, settings: Settings, submit: Submit) -> str:
    path = copy_sample(settings)
    uuid = submit(engine, order_info(settings, path))
    print(f"order {uuid}: {path} -> {settings.sample_parent_type} "
          f"{settings.sample_parent_id} as {settings.sample_user}/{settings.sample_group}"
          f"{' with preprocessing' if settings.preprocessing else ''}", flush=True)
    return uuid


def main(argv: Sequence[str] | None = None) -> int:
    return run_check(argv, __doc__, "system check", lambda settings, _path: [settings],
                     admin.submit)


if __name__ == "__main__":
    sys.exit(main())
