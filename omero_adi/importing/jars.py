"""Whether the OMERO.java importer jars are where the ``omero import`` wrapper looks.

omero-py's import plugin (``omero/plugins/import.py``, ``_get_classpath_logback``
and ``_userdir_jars``) takes the jars from ``$OMERODIR/lib/client`` when that
exists, else from the folder named in ``<cache>/jars/OMERO.java.txt``, where
``<cache>`` is ``$OMERO_USERDIR/cache`` (``get_omero_user_cache_dir`` in
``omero/util/__init__.py``). With neither it downloads OMERO.java at every
start, which fails without the internet. An image built with
``OMERO_JARS=skip`` is in that state; the note below says so where the order's
failure is described.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping


def locate_jars(omerodir: Path | None, cache: Path) -> tuple[Path, int]:
    """The folder ``omero import`` takes its jars from, and how many it holds.

    ``$OMERODIR/lib/client`` when that folder exists, else the folder that
    ``<cache>/jars/OMERO.java.txt`` names (the pointer file itself when there is
    none, with no jars).
    """
    if omerodir is not None and (omerodir / "lib" / "client").is_dir():
        folder = omerodir / "lib" / "client"
    else:
        pointer = cache / "jars" / "OMERO.java.txt"
        if not pointer.is_file():
            return pointer, 0
        folder = cache / "jars" / pointer.read_text("utf-8", "replace").strip() / "libs"
    return folder, len(list(folder.glob("*.jar")))


def missing_jars_note(environ: Mapping[str, str] = os.environ) -> str | None:
    """A sentence saying the jars are missing and how to add them, or None.

    Only judged where the wrapper's folders are known from the environment
    (``OMERO_USERDIR``, as the image sets it); elsewhere None.
    """
    userdir = environ.get("OMERO_USERDIR")
    if not userdir:
        return None
    omerodir = environ.get("OMERODIR")
    cache = Path(userdir) / "cache"
    folder, count = locate_jars(Path(omerodir) if omerodir else None, cache)
    if count:
        return None
    jars = cache / "jars"
    return (
        f"The OMERO.java importer jars are missing ({folder} holds none), so "
        "`omero import` tries to download them at every start, which needs the "
        f"internet. Add them: mount a folder made by `OMERO_USERDIR=<dir> omero import "
        f"--fetch-jars latest` (its cache/jars) at {jars}, or rebuild the image without "
        "--build-arg OMERO_JARS=skip."
    )
