"""A stand-in for OMERO.java's command-line importer, started by the real ``omero import``.

Tests (and the standalone double) run omero-py's own, unchanged ``omero``
wrapper; only the ``java`` it starts is replaced (``jvm.py``), by a model of
``CommandLineImporter`` and what it uses, each behaviour citing its source in
ome/omero-blitz. It joins the ``-k`` session over real Ice and imports each
fileset through the OMERO double's import steps (``server.py``;
tests/omero_double/README.md).
The sample files it can import are described in ``formats.py``. Never shipped.

:func:`install` lays out the ``java`` and the OMERO.java jar layout the
wrapper looks for; ``unprivileged.py`` runs the wrapper as a non-root user,
as a deployment does (the wrapper refuses root).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: What ``OMERO.java.txt`` names: the folder ``omero import --fetch-jars`` unpacks.
OMERO_JAVA = "OMERO.java-5.6.16-ice36-standin"
#: The jars of the stand-in's OMERO.java: placeholders, never opened; the stand-in
#: ``java`` only checks that the importer's jar is on the class path.
JARS = ("omero-blitz-5.8.3.jar", "omero-gateway-5.10.3.jar", "formats-gpl-8.0.1.jar")


def real_omero() -> Path:
    """omero-py's ``omero`` script beside the running Python (the venv's)."""
    script = Path(sys.executable).parent / "omero"
    if not script.is_file():
        raise RuntimeError(f"omero-py's `omero` is not installed beside {sys.executable}")
    return script


def user_dir(state_dir: Path) -> Path:
    """``OMERO_USERDIR``: session files land in ``sessions/``, the jars in ``cache/jars/``."""
    return state_dir / "omero-userdir"


def install(bin_dir: Path, *, state_dir: Path) -> dict[str, str]:
    """Lay out ``bin_dir/java`` and the jars; return the environment that uses them.

    The layout is what ``omero import --fetch-jars`` leaves under
    ``$OMERO_USERDIR/cache/jars`` (``omero/plugins/import.py``:
    ``_userdir_jars``, ``download_omero_java``; ``omero/util``:
    ``get_omero_user_cache_dir``), which the wrapper then uses, saying
    ``Using <folder>`` on its standard error. ``OMERO_USERDIR`` is world-writable
    (sticky) so that an unprivileged importer can leave its session files
    there for the tests to see.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    java = bin_dir / "java"
    java.write_text(
        "#!/bin/sh\n"
        f"OMERO_DOUBLE_STATE=${{OMERO_DOUBLE_STATE:-{shlex.quote(str(state_dir))}}} "
        f"exec {shlex.quote(sys.executable)} {shlex.quote(str(HERE / 'jvm.py'))} \"$@\"\n")
    java.chmod(0o755)
    userdir = user_dir(state_dir)
    jars = userdir / "cache" / "jars"
    libs = jars / OMERO_JAVA / "libs"
    libs.mkdir(parents=True, exist_ok=True)
    for jar in JARS:
        (libs / jar).write_text("stand-in: the importer is tests/importer_standin\n")
    (libs / "logback-cli.xml").write_text("<!-- stand-in: the layout is in monitor.py -->\n")
    (jars / "OMERO.java.txt").write_text(OMERO_JAVA)
    for folder in (state_dir, userdir):
        folder.chmod(0o755 if folder == state_dir else 0o1777)
    return {
        "PATH": os.pathsep.join([str(bin_dir), str(real_omero().parent), os.environ["PATH"]]),
        "OMERO_USERDIR": str(userdir),
    }
