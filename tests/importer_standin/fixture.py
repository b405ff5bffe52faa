"""pytest fixtures: the OMERO double, the real ``omero`` wrapper with the importer
stand-in, run as the unprivileged account, in a workspace it can reach.

Import them into a test module: ``from tests.importer_standin.fixture import
importer_site  # noqa: F401``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.importer_standin import unprivileged
from tests.importer_standin.jvm import RECORD
from tests.importer_standin.unprivileged import Account
from tests.omero_double.fixture import OmeroDouble


@dataclass
class ImporterSite:
    """A double, its environment (PATH with the stand-in ``java`` and the real
    ``omero``), the unprivileged account, and a workspace it can use."""

    double: OmeroDouble
    who: Account
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def userdir(self) -> Path:
        return Path(self.env["OMERO_USERDIR"])

    @property
    def managed_repository(self) -> Path:
        return self.double.state_dir / "ManagedRepository"

    def folder(self, name: str, *, writable: bool = False) -> Path:
        """A folder in the workspace; ``writable`` gives it to the account."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        if writable:
            unprivileged.give(self.who, path)
        return path

    def session(self, user: str = "researcher", group: str = "Demo") -> str:
        """A session key for ``user`` (as the daemon would get one, over real Ice)."""
        import omero.clients  # noqa: F401

        client = omero.client(self.env["OMERO_HOST"], int(self.env["OMERO_PORT"]))
        try:
            admin = client.createSession("root", "omero")
            principal = omero.sys.Principal(name=user, group=group, eventType="User")
            session = admin.getSessionService().createSessionWithTimeout(principal, 600_000)
            return str(session.getUuid().getValue())
        finally:
            client.__del__()

    def omero(self, *args: str, env: dict[str, str] | None = None,
              cwd: Path | None = None, as_root: bool = False) -> subprocess.CompletedProcess[str]:
        """The real ``omero`` wrapper, as the account (or as root, to see it refuse)."""
        from tests.importer_standin import real_omero

        environment = {**self.env, **(env or {})}
        argv = [str(real_omero()), *args]
        if as_root:
            return subprocess.run(argv, env=environment, capture_output=True, text=True,
                                  cwd=cwd or self.root, timeout=120)
        return unprivileged.run(argv, self.who, environment, cwd=cwd or self.root, timeout=120)

    def java_calls(self) -> list[list[str]]:
        """The importer command lines the stand-in ``java`` was given (not ``-version``)."""
        record = Path(self.env[RECORD])
        calls = [json.loads(line) for line in record.read_text().splitlines()] \
            if record.exists() else []
        return [call for call in calls if call != ["-version"]]

    def launcher(self) -> Path:
        """An ``omero_cli`` for a daemon running as root in the test process."""
        return unprivileged.launcher(self.root / "omero-as-importer", self.who, self.env)

    def omero_settings(self) -> dict[str, Any]:
        """The daemon's settings for this double: the real wrapper (as the account),
        its logs in a folder the account may write, its data in the workspace."""
        env = self.env
        return {
            "omero_cli": str(self.launcher()), "omero_host": env["OMERO_HOST"],
            "omero_port": int(env["OMERO_PORT"]), "omero_user": env["OMERO_USER"],
            "omero_password": env["OMERO_PASSWORD"],
            "managed_repository": str(self.managed_repository),
            "log_file_path": str(self.folder("logs", writable=True) / "app.logs"),
            "base_dir": str(self.folder("data")),
        }

    # --- what the double holds ---------------------------------------------
    def state(self) -> dict[str, Any]:
        return self.double.state()

    def filesets(self) -> dict[int, dict[str, Any]]:
        return {int(i): f for i, f in self.state()["filesets"].items()}

    def images_of(self, fileset_id: int) -> list[int]:
        return sorted(int(i) for i, image in self.state()["images"].items()
                      if image["fileset"] == fileset_id)

    def annotations(self) -> list[dict[str, Any]]:
        """MapAnnotations: ``ns``, ``values`` ([key, value] pairs), ``links`` ([class, id])."""
        return list(self.state()["annotations"].values())


@pytest.fixture
def importer_site(omero_double: OmeroDouble) -> ImporterSite:
    """The ``omero_double`` fixture's double (its state in a workspace the account
    can reach), with the account and the environment the double printed."""
    who = unprivileged.account()
    env = dict(omero_double.env)
    missing = {"PATH", "OMERO_USERDIR"} - set(env)
    assert not missing, f"the double's environment lacks {missing} (install() not run?)"
    root = omero_double.state_dir.parent
    record = root / "record"
    unprivileged.give(who, record)
    env[RECORD] = str(record / "java-argv.jsonl")
    return ImporterSite(omero_double, who, root, env)
