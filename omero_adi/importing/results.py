"""What an import is given and what it gives back.

The types :mod:`~omero_adi.importing.importer` and
:mod:`~omero_adi.importing.preprocess` share: preprocessing hands the importer
:class:`ImportItem` s and reads :class:`ImportResult` / :class:`ImportFailed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from omero_adi.importing.client_paths import client_path, safe_component
from omero_adi.omero.boundary import FilesetInfo
from omero_adi.pipeline import OrderFailed


@dataclass(frozen=True)
class ImportItem:
    """One path for the importer, and what its annotations say about it.

    A plain order imports its own files (``path == origin``). Preprocessing
    (contracts §5) hands in local copies instead: ``path`` is the copy,
    ``origin`` the order's file it stands for (``Filepath``, where
    ``metadata.csv`` is looked for), ``keyvalues`` the fully named key-values
    the container reported for it (``processing_output_<key>``).
    """

    path: Path
    origin: Path
    keyvalues: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, path: Path) -> ImportItem:
        return cls(path=path, origin=path)

    @cached_property
    def _roots(self) -> dict[PurePosixPath, Path]:
        """This path and its real path as the importer records them (and as they
        are): worked out once, as matching asks for every file of every fileset."""
        return {client_path(PurePosixPath(p)): Path(p)
                for p in (self.path, os.path.realpath(self.path))}

    def holds(self, used_file: Path) -> bool:
        """Whether a fileset's used file (its recorded client path) is this path or
        inside it, as the importer sanitised it (:mod:`.client_paths`)."""
        used = PurePosixPath(used_file)
        return any(used == root or root in used.parents for root in self._roots)

    def local_file(self, used_file: Path) -> Path | None:
        """The file on disk that a used file inside this path stands for (its
        client path is sanitised: ``10:30`` was recorded as ``10;30``); None when
        it is not inside this path, or no longer there."""
        used = PurePosixPath(used_file)
        for root, found in self._roots.items():
            if used != root and root not in used.parents:
                continue
            for part in used.relative_to(root).parts:
                if (found / part).exists():  # the usual case: nothing was sanitised
                    found = found / part
                    continue
                try:
                    names = [n for n in os.listdir(found) if safe_component(n) == part]
                except OSError:
                    return None
                if not names:
                    return None
                found = found / names[0]
            return found
        return None


@dataclass(frozen=True)
class ImportedFileset:
    #: The order path the fileset is annotated with (the deepest that holds its files).
    item: ImportItem
    fileset: FilesetInfo
    #: Every order path whose files went into it: several, when files named
    #: separately form one multi-file image.
    covers: tuple[ImportItem, ...] = ()

    def describe(self) -> str:
        return f"{self.item.origin} → Fileset {self.fileset.id} ({describe_objects(self.fileset)})"


@dataclass(frozen=True)
class RegisteredZarr:
    """What one ``.zarr`` store became (``use_register_zarr``), shaped like a fileset."""

    path: str
    image_ids: tuple[int, ...]
    plate_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ImportResult:
    filesets: tuple[ImportedFileset, ...]
    #: The ``.zarr`` paths registered instead of imported (``use_register_zarr``).
    registered: tuple[RegisteredZarr, ...] = ()
    #: What happened on the way: the importer runs that were tried again, and why.
    notes: tuple[str, ...] = ()

    def describe(self, kind: str, destination_id: int) -> str:
        """The ``Import Completed`` description."""
        lines = []
        if self.registered:
            lines.append(f"Registered {len(self.registered)} Zarr store(s) in {kind} "
                         f"{destination_id}: " + describe_registered(self.registered))
        if self.filesets or not self.registered:
            lines.append(f"Imported {len(self.filesets)} fileset(s) into {kind} {destination_id}: "
                         + "; ".join(f.describe() for f in self.filesets))
        lines.extend(self.notes)
        return "\n".join(lines)


class ImportFailed(OrderFailed):
    """The order failed after the importer started; ``imported`` is what it did
    import (e.g. for preprocessing to redirect those filesets' links).

    ``empty``: filesets the run left without images (the server's import of
    them failed); they have links in ManagedRepository all the same.
    ``unaccounted``: filesets may exist that neither lists (the report was
    unreadable, a lookup failed), so files they may link to must stay.
    """

    def __init__(self, description: str, imported: Sequence[ImportedFileset], *,
                 empty: Sequence[ImportedFileset] = (), unaccounted: bool = False):
        super().__init__(description)
        self.imported = tuple(imported)
        self.empty = tuple(empty)
        self.unaccounted = unaccounted

    def with_note(self, note: str) -> ImportFailed:
        """The same failure, its description followed by ``note`` (what else the
        order did): what it imported still reaches the guard and the links."""
        return ImportFailed(f"{self}\n{note}", self.imported, empty=self.empty,
                            unaccounted=self.unaccounted)


def describe_objects(found: FilesetInfo | RegisteredZarr) -> str:
    """``Plate 5; Image 7, 8``: what a fileset or registered store holds."""
    objects = [("Plate", found.plate_ids), ("Image", found.image_ids)]
    text = "; ".join(f"{kind} {', '.join(map(str, ids))}" for kind, ids in objects if ids)
    return text or "no images"


def describe_registered(registered: Sequence[RegisteredZarr]) -> str:
    return "; ".join(f"{r.path} → {describe_objects(r)}" for r in registered)
