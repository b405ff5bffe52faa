"""Running the importer (and the daemon) as an unprivileged user, as a deployment does.

omero-py's ``omero`` refuses to run as root (``omero/main.py`` ``not_root``:
``FATAL: Running … as root can corrupt your directory permissions.`` on
standard *output*, exit 1). Tests run as root here, so the importer runs as
the account ``adi-importer`` (created on first use, idempotently), in a
workspace under ``/tmp`` that it can reach (pytest's own ``tmp_path`` sits in
a private ``/tmp/pytest-of-root``). The folders above the tests' Python
interpreter get the others-may-traverse bit if they lack it (pyenv keeps it
under ``/root``, mode 0700): an unprivileged importer must be able to run it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

NAME = "adi-importer"
#: Workspaces live here; the folder itself is root's, world-traversable.
WORKSPACES = Path("/tmp/adi-importer-workspaces")


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` as this account sees it: its own HOME, USER and LOGNAME."""
        return {**base, "HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def account() -> Account:
    """The unprivileged account, created if missing (safe to race: useradd's 9 is 'exists')."""
    try:
        entry = pwd.getpwnam(NAME)
    except KeyError:
        done = subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/sh",
                               NAME], capture_output=True, text=True)
        if done.returncode not in (0, 9):
            raise RuntimeError(f"useradd {NAME} failed: {done.stderr.strip()}")
        entry = pwd.getpwnam(NAME)
    grp.getgrgid(entry.pw_gid)  # the user group exists too
    _reach(Path(os.path.realpath(sys.executable)))
    return Account(NAME, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _reach(path: Path) -> None:
    """Let others *traverse* (never list) the folders above ``path``: the tests'
    interpreter may live under root's private home (pyenv in ``/root``)."""
    for folder in path.parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def workspace() -> Path:
    """A fresh folder the account can reach (``0o755``, root's); remove with :func:`discard`."""
    WORKSPACES.mkdir(mode=0o755, exist_ok=True)
    WORKSPACES.chmod(0o755)
    folder = Path(tempfile.mkdtemp(prefix="ws-", dir=WORKSPACES))
    folder.chmod(0o755)
    return folder


def discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def give(who: Account, *paths: Path) -> None:
    """Make ``paths`` (created if missing) and everything in them the account's."""
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        for item in _tree(path):
            os.chown(item, who.uid, who.gid, follow_symlinks=False)


def _tree(path: Path) -> Iterator[Path]:
    yield path
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            yield Path(root) / name


def launcher(path: Path, who: Account, env: Mapping[str, str]) -> Path:
    """An executable that runs the real ``omero`` as ``who`` with ``env`` added: the
    ``omero_cli`` setting for a daemon that itself runs as root in a test."""
    from tests.importer_standin import real_omero

    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in who.env(env).items())
    # The daemon makes a private folder for each run's session store and temporary
    # files (importer_cli.private_omero_dirs); deployed, the daemon and ``omero`` are
    # one user, so here that folder becomes the account's.
    path.write_text(
        "#!/bin/sh\n"
        'for d in "${OMERO_SESSIONDIR:-}" "${OMERO_TMPDIR:-}"; do\n'
        '  case "$d" in */adi-omero-*/*) chown '
        f'{who.uid}:{who.gid} "${{d%/*}}";; esac\n'
        "done\n"
        f"exec setpriv --reuid={who.uid} --regid={who.gid} --clear-groups -- "
        f"env {assignments} {shlex.quote(str(real_omero()))} \"$@\"\n")
    path.chmod(0o755)
    return path


def popen(argv: list[str], who: Account, env: Mapping[str, str], **kwargs: Any) -> subprocess.Popen:
    """Start ``argv`` as ``who`` (the daemon of an end-to-end test, or ``omero`` itself)."""
    return subprocess.Popen(argv, user=who.uid, group=who.gid, extra_groups=[],
                            env=who.env(env), **kwargs)


def run(argv: list[str], who: Account, env: Mapping[str, str], **kwargs: Any
        ) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``who`` to the end, capturing its output as text."""
    return subprocess.run(argv, user=who.uid, group=who.gid, extra_groups=[],
                          env=who.env(env), capture_output=True, text=True, **kwargs)
