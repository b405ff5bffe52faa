"""Which files the importer finds, and how they group into filesets.

Modelled on ome/omero-blitz ``ImportCandidates.java`` and the commons-io
``DirectoryWalker`` it extends:
- each named path: a directory is walked, anything else goes to
  ``handleFile`` directly (a missing path too, and fails there);
- the walk: the named directory is depth 0, its entries depth 1; a level is
  listed only while ``depth + 1 <= omero.import.depth`` (the wrapper's
  ``--depth``, default 4), so files up to that many levels below a named
  folder are found; entries come in the order the file system lists them
  (``File.listFiles``, unsorted); a folder that cannot be listed is skipped
  without a word (``handleRestricted`` does nothing); directories are entered
  whatever their name, **hidden ones included**, symbolic links followed;
- ``handleFile``: names starting with ``.`` are skipped (files only), and so
  is any file already used by an earlier candidate (``allFiles``);
- ``singleFile``: a missing or unreadable file is ``UNREADABLE_FILE``; the
  reader then decides (``formats.py`` stands in for Bio-Formats): unknown
  format, an error (``FILE_EXCEPTION``), or a candidate with its used files;
- ``Groups.parse``: a candidate whose file is used by more candidates than it
  uses files itself is dropped, so a file another candidate uses is not
  imported again (whichever was found first); each remaining container's file
  becomes its first used file;
- the summary: ``N file(s) parsed into M group(s) with K call(s) to setId in
  Xms. (Yms total)``: X is the time spent reading (``readerTime``), Y the time
  since the scan began.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from tests.importer_standin.formats import Sample, read_sample
from tests.importer_standin.monitor import CANDIDATES, Monitor
from tests.importer_standin.paths import absolute


@dataclass
class Container:
    """``ImportContainer``: one fileset to import."""

    file: str
    used_files: list[str]
    sample: Sample

    @property
    def is_spw(self) -> bool:
        return self.sample.kind == "plate"


def java_file(path: str) -> str:
    """``new File(path)``: repeated and trailing separators are dropped."""
    return re.sub("/+", "/", path).rstrip("/") or "/"


class Candidates:
    def __init__(self, paths: list[str], depth: int, monitor: Monitor):
        started = time.monotonic()  # the field ``start``, set as the object is made
        self.depth, self.monitor = depth, monitor
        self.containers: list[Container] = []
        self.used_by: dict[str, list[str]] = {}
        self.all_files: set[str] = set()
        self.setids = self.unknown = self.count = 0
        #: ``readerTime``: seconds spent reading candidates (``singleFile``'s setId part).
        self.reader_time = 0.0
        monitor.info(CANDIDATES, f"Depth: {depth} Metadata Level: MINIMUM")
        if not paths:
            return
        for path in paths:
            path = java_file(path)
            if os.path.isdir(path):
                self._walk(path, 0)
            else:
                self._handle_file(path)
        self.containers = self._grouped()
        elapsed = int((time.monotonic() - started) * 1000)
        monitor.info(CANDIDATES, f"{self.count} file(s) parsed into {len(self.containers)} "
                                 f"group(s) with {self.setids} call(s) to setId in "
                                 f"{int(self.reader_time * 1000)}ms. ({elapsed}ms total) "
                                 f"[{self.unknown} unknowns]")

    def _walk(self, directory: str, depth: int) -> None:
        child_depth = depth + 1
        if child_depth > self.depth:
            return
        try:
            names = os.listdir(directory)
        except OSError:
            return  # handleRestricted
        for name in names:
            child = os.path.join(directory, name)
            if os.path.isdir(child):
                self._walk(child, child_depth)
            else:
                self._handle_file(child)

    def _handle_file(self, path: str) -> None:
        self.count += 1
        if os.path.basename(path).startswith("."):
            return
        full = absolute(path)
        if full in self.all_files:
            return
        container = self._single_file(full)
        if container is None:
            return
        self.containers.append(container)
        self.all_files.update(container.used_files)
        for used in container.used_files:
            self.used_by.setdefault(used, []).append(full)

    def _single_file(self, path: str) -> Container | None:
        if not os.path.exists(path) or not os.access(path, os.R_OK):
            self.monitor.unreadable(path)
            return None
        self.setids += 1
        reading = time.monotonic()
        try:
            return self._read(path)
        finally:
            self.reader_time += time.monotonic() - reading

    def _read(self, path: str) -> Container | None:
        """The reader's part of ``singleFile``: ``setId`` and the used files."""
        try:
            sample = read_sample(path)
        except OSError as exc:  # e.g. a FIFO or a file that vanished
            self.monitor.file_exception(path, f"java.io.IOException: {exc}")
            return None
        if sample is None:
            self.unknown += 1
            self.monitor.unknown_format(path)
            return None
        if sample.kind == "damaged":
            self.monitor.file_exception(
                path, f"loci.formats.FormatException: {path}: damaged file (stand-in)")
            return None
        used = [path] + [os.path.join(os.path.dirname(path), name) for name in sample.files]
        for member in used[1:]:
            if not os.access(member, os.R_OK):
                self.monitor.file_exception(path, f"java.io.FileNotFoundException: {member}")
                return None
        return Container(path, used, sample)

    def _grouped(self) -> list[Container]:
        """``Groups.parse``."""
        keep = []
        for key, users in self.used_by.items():
            they_use_me = [user for user in users if user != key]
            i_use_them = [other for other, its_users in self.used_by.items()
                          if key in its_users and other != key]
            if not len(i_use_them) < len(they_use_me):
                keep.append(key)
        ordered = [c for key in keep for c in self.containers if c.file == key]
        for container in ordered:
            container.file = container.used_files[0]
        return ordered
