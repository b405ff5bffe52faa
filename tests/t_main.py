"""Upload health check for several groups: one sample order per group, followed to its end.

    python tests/t_main.py [--config config/settings.yml] [--timeout S] [--no-wait]

The earlier ADI's ``tests/t_main.py``, on the order database: reads the
settings; for each entry of the JSON file that the ``group_list`` key names
(relative to the working directory, as before) it copies ``sample_image``
under ``base_dir`` and creates an order through the client module
(``omero_adi.utils.ingest_tracker``); without ``group_list``, one order from
the ``sample_*`` settings. It prints the uuids, then follows each order to
``Import Completed`` or ``Import Failed`` as ``tests/system_check.py`` does.

An entry is an object: ``group`` (or the earlier ``omero_grp_name``) and
optionally ``user``, ``destination_id``, ``destination_type`` (default: the
``sample_*`` settings) and ``folder`` (or ``core_grp_name``), a folder under
``base_dir`` for the copy. Exit status: 0 all imported (or ordered, with
``--no-wait``); 1 any failed or unfinished; 2 the check cannot start.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import uuid as uuidlib
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from sqlalchemy import Engine

from omero_adi.settings import Settings, read_file
from omero_adi.utils import ingest_tracker

if __package__:
    from tests.system_check import CheckError, run_check
else:  # python tests/t_main.py (in the image too): system_check.py is beside it
    from system_check import CheckError, run_check  # type: ignore[no-redef]

#: The earlier group list's key names -> these.
ALIASES = {"omero_grp_name": "group", "core_grp_name": "folder"}
KEYS = {"group", "user", "destination_id", "destination_type", "folder"}
#: Keys of the earlier group list that orders have no use for.
IGNORED = {"omero_grp_id"}


def group_list_path(config: Path) -> Path | None:
    """The file the settings' ``group_list`` names, or None without one."""
    raw = read_file(config).get("group_list") if config.exists() else None
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        raise CheckError(f"group_list in {config} must be a file name, got {raw!r}")
    return Path(raw)


def read_groups(path: Path) -> list[Mapping[str, Any]]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckError(f"group_list {path}: cannot read it ({exc.strerror})") from exc
    except ValueError as exc:
        raise CheckError(f"group_list {path} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise CheckError(f"group_list {path} must be a non-empty JSON list of groups, "
                         'e.g. [{"group": "Lab A", "user": "alice", "destination_id": 51}]')
    return entries


def group_settings(settings: Settings, entry: Any, where: str) -> Settings:
    """The sample order's settings for one group entry."""
    if not isinstance(entry, Mapping):
        raise CheckError(f"{where} must be an object with a group, got {entry!r}"[:200])
    values = {ALIASES.get(k, k): v for k, v in entry.items() if k not in IGNORED}
    unknown = sorted(set(values) - KEYS)
    if unknown:
        raise CheckError(f"{where} has unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(KEYS))})")
    group = values.get("group")
    if not isinstance(group, str) or not group.strip():
        raise CheckError(f"{where} names no group (\"group\": the OMERO group name)")
    kind = values.get("destination_type", settings.sample_parent_type)
    if kind not in ("Dataset", "Screen"):
        raise CheckError(f"{where}: destination_type must be Dataset or Screen, got {kind!r}")
    destination = str(values.get("destination_id", settings.sample_parent_id)).strip()
    if not destination.isdigit():
        raise CheckError(f"{where}: destination_id must be a {kind} id, got {destination!r} "
                         "(set it, or sample_parent_id)")
    user = values.get("user", settings.sample_user)
    if not isinstance(user, str) or not user.strip():
        raise CheckError(f"{where}: no user (set \"user\", or sample_user)")
    base = Path(settings.base_dir)
    folder = values.get("folder")
    if folder is not None:
        parts = PurePosixPath(str(folder)).parts
        if not parts or str(folder).startswith("/") or ".." in parts:
            raise CheckError(f"{where}: folder {folder!r} must be a folder under base_dir")
        base = base / str(folder)
    return dataclasses.replace(settings, sample_group=group.strip(), sample_user=user.strip(),
                               sample_parent_id=destination, sample_parent_type=kind,
                               base_dir=str(base))


def variants(settings: Settings, config: Path) -> list[Settings]:
    path = group_list_path(config)
    if path is None:
        return [settings]
    entries = read_groups(path)
    return [group_settings(settings, entry, f"group_list {path} entry {number}")
            for number, entry in enumerate(entries)]


def submit(engine: Engine, info: dict[str, Any]) -> str:
    """Write the order through the client module, as the web plugin does."""
    url = engine.url.render_as_string(hide_password=False)
    tracker = ingest_tracker.get_ingest_tracker()
    if (tracker is None or tracker.database_url != url) and not (
            ingest_tracker.initialize_ingest_tracker({"ingest_tracking_db": url})):
        raise CheckError("the client module cannot open the order database (see the log)")
    order = {**info, "UUID": str(uuidlib.uuid4())}
    if ingest_tracker.log_ingestion_step(order, ingest_tracker.STAGE_NEW_ORDER) is None:
        raise CheckError(f"the client module did not record order {order['UUID']} (see the log)")
    return order["UUID"]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run_check(argv, __doc__, "t_main", variants, submit)
    finally:
        tracker = ingest_tracker.get_ingest_tracker()
        if tracker is not None:
            tracker.dispose()


if __name__ == "__main__":
    sys.exit(main())
