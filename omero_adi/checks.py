"""``omero-adi check``: can this daemon work here? One line per check."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

from sqlalchemy.exc import SQLAlchemyError

from omero_adi.importing.jars import locate_jars
from omero_adi.logs import order_log
from omero_adi.pipeline import OrderFailed
from omero_adi.settings import Settings, mask_url
from omero_adi.store import migrate
from omero_adi.store.db import UnsupportedDatabase, make_engine
from omero_adi.store.session import describe_error
from omero_adi.watch.report import rule_checks

Check = tuple[str, bool, str]
#: Seconds a program asked for its version may take.
VERSION_TIMEOUT = 30


def check_settings(unknown: Sequence[str]) -> tuple[bool, str]:
    """Keys of the settings file that no setting has (a misspelling is ignored)."""
    if unknown:
        return False, "; ".join(unknown)
    return True, "no unknown keys"


def check_database(settings: Settings) -> tuple[bool, str]:
    try:
        engine = make_engine(settings.ingest_tracking_db)
    except UnsupportedDatabase as exc:
        return False, str(exc)
    try:
        with engine.connect() as connection:
            current = migrate.current_revision(connection)
    except SQLAlchemyError as exc:
        return False, f"cannot use {describe_error(settings.ingest_tracking_db, exc)}"
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


def check_omero_cli(settings: Settings) -> tuple[bool, str]:
    executable = shutil.which(settings.omero_cli)
    if executable is None:
        beside = Path(sys.executable).parent / settings.omero_cli
        hint = (f"put {beside.parent} on PATH or set omero_cli to {beside}" if beside.exists()
                else "install omero-py (pip install 'omero-adi[omero]') or set omero_cli")
        return False, f"omero_cli {settings.omero_cli!r} is not an executable on PATH: {hint}"
    return True, executable


def _version_line(argv: Sequence[str]) -> str:
    """The first line a program prints about its version (Java prints it on stderr)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=VERSION_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no answer ({exc})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else f"exit status {done.returncode}, no output"


def check_java() -> tuple[bool, str]:
    """``omero import`` runs ``java`` from PATH (omero-py's omero/java.py)."""
    java = shutil.which("java")
    if java is None:
        return False, "no `java` on PATH: the importer is a Java program (install Java 17)"
    return True, f"{java}: {_version_line([java, '-version'])}"


def check_omero_jars() -> tuple[bool, str]:
    """The OMERO.java libraries, where ``omero import`` looks for them (omero-py's
    plugins/import.py, ``_get_classpath_logback``): ``$OMERODIR/lib/client``, else
    the folder that ``OMERO.java.txt`` names in the user's cache, filled by
    ``omero import --fetch-jars``. Without them the importer downloads them on
    first use, which fails offline."""
    try:
        from omero.cli import OMERODIR
        from omero.util import get_omero_user_cache_dir
    except ImportError as exc:
        return False, f"omero-py is not installed ({exc}): pip install 'omero-adi[omero]'"
    folder, count = locate_jars(Path(OMERODIR), Path(get_omero_user_cache_dir()))
    if not count:
        return False, (f"no OMERO.java jars at {folder}: fetch them as the daemon's user "
                       "with `omero import --fetch-jars latest`")
    return True, f"{count} jars in {folder}"


def check_user() -> tuple[bool, str]:
    """``omero`` exits at once when run as root (omero-py's omero/main.py, ``not_root``)."""
    uid = os.geteuid()
    if uid == 0:
        return False, ("running as root: `omero import` refuses to ('FATAL: Running … as root "
                       "can corrupt your directory permissions'); run the daemon as an "
                       "ordinary user")
    return True, f"uid {uid}"


def check_podman(settings: Settings) -> tuple[bool, str]:
    from omero_adi.importing.engines import PodmanApi, PodmanCli, connect

    try:
        engine = connect(settings, order_log("check"))
    except OrderFailed as exc:
        return False, str(exc)
    version = "unknown"
    if isinstance(engine, PodmanApi):
        from podman import PodmanClient
        from podman.errors import APIError

        try:
            with PodmanClient(base_url=engine.url) as client:
                version = str(client.version().get("Version", "unknown"))
        except (APIError, OSError) as exc:
            version = f"version unknown ({exc})"
    elif isinstance(engine, PodmanCli):
        version = _version_line([engine.executable, "version", "--format", "{{.Client.Version}}"])
    return True, f"{engine.description}, Podman {version}"


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


def check_temporary_dir() -> tuple[bool, str]:
    """Where each importer run makes its own folder (importer_cli.private_omero_dirs)."""
    try:
        folder = tempfile.gettempdir()  # TMPDIR, TEMP, TMP, /tmp, …: the first usable
    except OSError as exc:
        return False, f"no usable temporary directory: {exc}"
    return check_folder(Path(folder))


def run_checks(settings: Settings, unknown_settings: Sequence[str] = ()) -> Iterator[Check]:
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        ("settings", lambda: check_settings(unknown_settings)),
        ("database", lambda: check_database(settings)),
        ("omero", lambda: check_omero(settings)),
        ("omero_cli", lambda: check_omero_cli(settings)),
        ("java", check_java),
        ("omero_jars", check_omero_jars),
        ("user", check_user),
        ("podman", lambda: check_podman(settings)),
        ("base_dir", lambda: check_folder(Path(settings.base_dir))),
        ("inplace_tmp_root", lambda: check_folder(Path(settings.inplace_tmp_root))),
        ("managed_repository", lambda: check_folder(Path(settings.managed_repository))),
        ("temporary_dir", check_temporary_dir),
        *rule_checks(settings),
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
