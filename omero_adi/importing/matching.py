"""Which order path each fileset the importer reported came from.

A fileset is matched by the files it used, as the server recorded them
(``FilesetEntry.clientPath``, sanitised: :mod:`.client_paths`), never by a
``LIKE`` on paths, so an older import of the same file is never taken for it.
One fileset may hold files of several order paths (a multi-file image whose
files the order names one by one): it covers all of them.
"""

from __future__ import annotations

from typing import Sequence

from omero_adi.importing.results import ImportedFileset, ImportItem
from omero_adi.omero.boundary import FilesetInfo


def match(
    items: Sequence[ImportItem], filesets: Sequence[FilesetInfo]
) -> tuple[list[ImportedFileset], list[FilesetInfo]]:
    """(filesets from the order's paths, filesets matching no path: strays)."""
    imported: list[ImportedFileset] = []
    strays: list[FilesetInfo] = []
    for fileset in filesets:
        owners = tuple(item for item in items
                       if any(item.holds(f) for f in fileset.used_files))
        if owners:
            # The deepest path names it when an order names a folder and a file in it.
            owner = max(owners, key=lambda item: len(item.path.parts))
            imported.append(ImportedFileset(owner, fileset, owners))
        else:
            strays.append(fileset)
    return imported, strays


def missing(items: Sequence[ImportItem], imported: Sequence[ImportedFileset]) -> list[ImportItem]:
    """The order's paths that no fileset came from."""
    covered = {id(item) for entry in imported for item in entry.covers or (entry.item,)}
    return [item for item in items if id(item) not in covered]
