"""The stand-in server's state: one JSON file, shared by the fake CLI and the
in-process stand-in, changed only under an exclusive file lock."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

EMPTY: dict[str, Any] = {
    "next_id": 100,
    "reachable": True,
    "unreachable_for": 0,  # further logins that fail before the server answers again
    "login_attempts": 0,
    "admin_logins": 0,
    "groups": {},  # name -> id
    "users": {},  # name -> {"id", "groups": [names]}
    "datasets": {},  # id -> {"group", "owner", "writable"}
    "screens": {},
    "sessions": {},  # key -> {"user", "group", "ttl_ms", "closed"}
    "filesets": {},  # id -> {"template_prefix", "used_files", "images", "plates", "owner", "group"}
    # registered Zarr (fileset None) also has "name", "sizes", "pixel_type",
    # "channel_names", "lsid", "owner", "group"; a plate "name", "rows",
    # "columns", "wells": [{"row", "column", "fields": [image ids]}], "owner", "group"
    "images": {},  # id -> {"fileset", "dataset"}
    "plates": {},  # id -> {"fileset", "screen", "images"}
    "annotations": [],  # {"id", "kind", "object_id", "namespace", "values": [[k, v], ...]}
    "cli_calls": [],  # argv of every `omero` run
}


class StandinState:
    def __init__(self, path: Path):
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    @classmethod
    def create(cls, path: Path, managed_repository: Path) -> StandinState:
        state = cls(path)
        state._write({**json.loads(json.dumps(EMPTY)), "managed_repository": str(managed_repository)})
        return state

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, mode)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        with self._locked(fcntl.LOCK_SH):
            return json.loads(self.path.read_text())

    @contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """The state to change in place; written back when the block ends."""
        with self._locked(fcntl.LOCK_EX):
            data = json.loads(self.path.read_text())
            yield data
            self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        scratch = self.path.with_name(self.path.name + ".tmp")
        scratch.write_text(json.dumps(data, indent=1))
        os.replace(scratch, self.path)


def new_id(data: dict[str, Any]) -> int:
    data["next_id"] += 1
    return int(data["next_id"])
