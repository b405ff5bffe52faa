"""An OMERO stand-in for tests: a fake ``omero import`` executable and an
in-process :class:`~omero_adi.omero.boundary.OmeroServer`, sharing one state.

Never shipped: the daemon's real OMERO boundary is :mod:`omero_adi.omero.blitz`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.omero_standin.server import StandinServer
from tests.omero_standin.state import StandinState

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Standin:
    root: Path
    state: StandinState
    server: StandinServer
    #: An executable to use as the ``omero_cli`` setting.
    cli: Path
    managed_repository: Path

    def read(self) -> dict[str, Any]:
        return self.state.read()

    def import_calls(self) -> list[list[str]]:
        return [call for call in self.read()["cli_calls"] if call[:1] == ["import"]]


def make_standin(root: Path) -> Standin:
    """A fresh, empty stand-in server whose files live under ``root``."""
    managed = root / "ManagedRepository"
    managed.mkdir(parents=True)
    state = StandinState.create(root / "state.json", managed)
    cli = root / "omero"
    cli.write_text(
        "#!/bin/sh\n"
        f"OMERO_STANDIN_STATE={shlex.quote(str(state.path))} "
        f"PYTHONPATH={shlex.quote(str(REPO_ROOT))} "
        f"exec {shlex.quote(sys.executable)} -m tests.omero_standin.fake_cli \"$@\"\n"
    )
    cli.chmod(0o755)
    return Standin(root, state, StandinServer(state), cli, managed)
