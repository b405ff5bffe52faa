"""Finding a rule's units, and telling when each is complete.

Scanning works on any file system, network shares included: no change
notifications, only ``stat`` and directory listings. A directory whose
modification time has not changed since it was last listed is not listed
again (its entries are the same); files are never opened. What changes
without touching a directory's time — a file growing — is seen by
fingerprinting the units that are still waiting, and only those.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

from omero_adi.watch.rules import WatchRule

#: A directory modified this recently may change again within the same
#: time-stamp tick (coarse on some shares), so it is listed again next scan.
RACY_NS = 2_000_000_000


#: The size :func:`_tree` gives a file that is still being written.
BEING_WRITTEN = -2


@dataclass(frozen=True)
class Fingerprint:
    """What a unit looks like, without reading it: entries, bytes, newest time,
    and a digest of every entry's (path, size, time)."""

    entries: int
    bytes: int
    mtime_ns: int
    digest: str
    #: A file in it is still being written (:data:`~.rules.IN_PROGRESS`): not complete.
    busy: bool = False

    def as_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Fingerprint | None:
        return None if not text else cls(**json.loads(text))


@dataclass(frozen=True)
class Unit:
    path: str
    #: The pattern's segments (``group``, ``user``, ``dataset``) for this unit.
    segments: Mapping[str, str]


@dataclass
class ScanResult:
    units: dict[str, Unit] = field(default_factory=dict)
    #: Units in a directory that was listed anew: they may have changed.
    touched: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    #: CPU time the scan took (this thread's).
    seconds: float = 0.0


@dataclass(frozen=True)
class _Listing:
    mtime_ns: int
    files: tuple[str, ...]
    folders: tuple[str, ...]
    trusted: bool
    #: Entries left alone, and why: reported on every scan, listed anew or not.
    problems: tuple[str, ...]


def under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


class Scanner:
    """One rule's tree, scanned incrementally; keeps the listings between scans."""

    def __init__(self, rule: WatchRule, roots: Sequence[str]):
        self.rule = rule
        #: Import roots with symbolic links resolved, as paths are checked against them.
        self.roots = [os.path.realpath(root) for root in roots]
        self._listings: dict[str, _Listing] = {}
        #: The file units of each listed directory, kept while its listing is.
        self._file_units: dict[str, dict[str, Unit]] = {}

    def scan(self) -> ScanResult:
        started = time.thread_time()
        result = ScanResult()
        folder = self.rule.folder
        real = os.path.realpath(folder)
        if not under(real, self.roots):
            result.problems.append(f"folder {folder} resolves to {real}, outside the import "
                                   f"roots ({', '.join(self.roots)})")
        elif not os.path.isdir(folder):
            result.problems.append(f"folder {folder} does not exist or is not a directory")
        else:
            seen: set[str] = set()
            self._walk(folder, 0, {}, None, result, seen)
            for gone in self._listings.keys() - seen:
                del self._listings[gone]
                self._file_units.pop(gone, None)
        result.seconds = time.thread_time() - started
        return result

    def _walk(self, path: str, depth: int, segments: dict[str, str], inside: str | None,
              result: ScanResult, seen: set[str]) -> None:
        seen.add(path)
        listing, fresh = self._list(path, result)
        if listing is None:
            return
        rule, levels = self.rule, self.rule.levels
        if depth < len(levels):
            level = levels[depth]
            for name in listing.folders:
                if level == "*" or level == "=" + name:
                    self._walk(f"{path}/{name}", depth + 1, segments, None, result, seen)
                elif not level.startswith("="):
                    self._walk(f"{path}/{name}", depth + 1, {**segments, level: name}, None,
                               result, seen)
            return
        if inside is not None:  # within a folder unit
            if fresh:
                result.touched.add(inside)
            for name in listing.folders:
                self._walk(f"{path}/{name}", depth + 1, segments, inside, result, seen)
        elif rule.unit == "folder":
            for name in listing.folders:
                if rule.included(name):
                    unit = f"{path}/{name}"
                    result.units[unit] = Unit(unit, segments)
                    self._walk(unit, depth + 1, segments, unit, result, seen)
        else:
            found = self._file_units.get(path)
            if fresh or found is None:
                found = {f"{path}/{name}": Unit(f"{path}/{name}", segments)
                         for name in listing.files if rule.included(name)}
                self._file_units[path] = found
                if fresh:
                    result.touched.update(found)
            result.units.update(found)
            for name in listing.folders:
                self._walk(f"{path}/{name}", depth + 1, segments, None, result, seen)

    def _list(self, path: str, result: ScanResult) -> tuple[_Listing | None, bool]:
        """The directory's entries: from the last scan when its time is unchanged."""
        try:
            mtime_ns = os.stat(path).st_mtime_ns
            cached = self._listings.get(path)
            if cached is not None and cached.trusted and cached.mtime_ns == mtime_ns:
                result.problems.extend(cached.problems)
                return cached, False
            now_ns = time.time_ns()
            problems: list[str] = []
            files, folders = self._entries(path, problems)
        except OSError as exc:
            self._listings.pop(path, None)
            self._file_units.pop(path, None)
            result.problems.append(f"cannot read {path}: {exc.strerror or exc}")
            return None, False
        listing = _Listing(mtime_ns, files, folders, trusted=mtime_ns < now_ns - RACY_NS,
                           problems=tuple(problems))
        self._listings[path] = listing
        result.problems.extend(problems)
        return listing, True

    def _entries(self, path: str, problems: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        files: list[str] = []
        folders: list[str] = []
        with os.scandir(path) as entries:
            for entry in entries:
                if self.rule.ignored(entry.name):
                    continue
                if not entry.name.isprintable() or _undecodable(entry.name):
                    problems.append(f"{entry.path!r}: the name is not printable UTF-8 "
                                           "(an order cannot name it): left alone")
                    continue
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not under(target, self.roots):
                        problems.append(f"{entry.path} is a symbolic link to {target}, "
                                               "outside the import roots: left alone")
                    elif os.path.isfile(target):
                        files.append(entry.name)
                    # links to folders are not followed (no loops, no second way in)
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                elif entry.is_file(follow_symlinks=False):
                    files.append(entry.name)
        return tuple(sorted(files)), tuple(sorted(folders))


def _undecodable(name: str) -> bool:
    """True for a name whose bytes were not UTF-8 (Python keeps them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def fingerprint(rule: WatchRule, path: str) -> Fingerprint | None:
    """The unit as it is now; None when it is gone."""
    try:
        if rule.unit == "file":
            stat = os.stat(path)
            return Fingerprint(1, stat.st_size, stat.st_mtime_ns,
                               f"{stat.st_size}:{stat.st_mtime_ns}")
        entries = sorted(_tree(rule, path, ""))
    except OSError:
        return None
    digest = hashlib.sha256()
    for relative, size, mtime_ns in entries:
        digest.update(f"{relative}\0{size}\0{mtime_ns}\n".encode("utf-8", "surrogateescape"))
    files = [e for e in entries if e[1] >= 0]
    return Fingerprint(len(files), sum(e[1] for e in files),
                       max((e[2] for e in files), default=0), digest.hexdigest(),
                       busy=any(e[1] == BEING_WRITTEN for e in entries))


def _tree(rule: WatchRule, path: str, prefix: str) -> Iterator[tuple[str, int, int]]:
    """(relative path, size, time) of every file below ``path``; folders with size
    -1, files still being written with :data:`BEING_WRITTEN` (and no time)."""
    with os.scandir(path) as entries:
        for entry in entries:
            if rule.ignored(entry.name):
                if rule.in_progress(entry.name):
                    yield prefix + entry.name, BEING_WRITTEN, 0
                continue
            relative = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                yield relative + "/", -1, 0
                yield from _tree(rule, entry.path, relative + "/")
            else:
                stat = entry.stat()
                yield relative, stat.st_size, stat.st_mtime_ns


def marker_present(rule: WatchRule, path: str) -> bool:
    assert rule.ready_marker is not None
    marker = f"{path}/{rule.ready_marker}" if rule.unit == "folder" else path + rule.ready_marker
    return os.path.isfile(marker)


class Settler:
    """Which waiting units are complete: unchanged for ``settle_seconds`` between
    two looks (by this daemon's clock, so the share's clock does not matter),
    or their ready marker present. Empty units are never complete."""

    def __init__(self, rule: WatchRule, clock: Callable[[], float] = time.monotonic):
        self.rule = rule
        self.clock = clock
        #: unit → (fingerprint, when that fingerprint was first seen, last look)
        self.waiting: dict[str, tuple[Fingerprint, float, float]] = {}

    def check(self, unit: str) -> Fingerprint | None:
        """The unit's fingerprint when it is complete now, else None (it waits)."""
        now = self.clock()
        current = fingerprint(self.rule, unit)
        if current is None:
            self.waiting.pop(unit, None)
            return None
        before = self.waiting.get(unit)
        since = now if before is None or before[0] != current else before[1]
        self.waiting[unit] = (current, since, now)
        if current.entries == 0 or current.bytes == 0 or current.busy:
            return None
        if self.rule.ready_marker is not None:
            return current if marker_present(self.rule, unit) else None
        return current if now - since >= self.rule.settle_seconds else None

    def next_due(self) -> float | None:
        """When the next waiting unit may be complete (clock time), or None. A unit
        looked at since it was due (empty, or its order must wait) waits for the
        next scan."""
        if self.rule.ready_marker is not None:
            return None
        settle = self.rule.settle_seconds
        due = [since + settle for _, since, looked in self.waiting.values()
               if since + settle > looked]
        return min(due, default=None)

    def forget(self, unit: str) -> None:
        self.waiting.pop(unit, None)
