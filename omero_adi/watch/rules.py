"""Watch rules: the ``watch:`` list of the settings.

A rule names a folder under the import roots, whom its orders are for (fixed,
or path segments picked out by ``pattern``), where they go, and what one
order is (a ``file`` or an acquisition ``folder``). Each rule is a section of
the settings, declared and checked as ``notify:`` is: the settings check each
key's type (:mod:`omero_adi.settings_values`), ``__post_init__`` what concerns
several keys, :func:`check_rules` what concerns several rules or other
settings. Everything that can be checked without touching the disk is checked
when settings load; what needs the disk (readable folder, links leading out
of the roots) is checked on every scan and reported there.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Literal, Mapping, Sequence

from omero_adi.settings_values import setting

#: Names a pattern may pick out of the path.
SEGMENTS = ("group", "user", "dataset")
#: Never units, never part of one: dot files and folders (``.processed`` among
#: them) and what writers leave while a file is incomplete.
#: Names of files still being written (a copy, a download, an editor): never part
#: of a unit, and a folder unit holding one is not complete.
IN_PROGRESS = ("*.tmp", "*.temp", "*.part", "*.partial", "*.crdownload", "*.swp", "~*", "*~")
ALWAYS_IGNORED = (".*", *IN_PROGRESS)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Preprocessing:
    """A rule's ``preprocessing:``, which each of its orders carries."""

    container: str = setting("", "Container image (one of `allowed_containers`) run on each "
                                 "file of the order. Required.")
    input_file: str = setting("{Files}", "`--inputfile` of the container; `{Files}`: the file, "
                                         "as the container sees it.")
    output_folder: str = setting("/data", "Folder in the container where the originals appear.")
    alt_output_folder: str = setting("/out", "Folder in the container for local copies.")
    extra_params: dict[str, str] = setting(
        {}, "Further options of the container, `--<name> <value>` (e.g. `{saveoption: single}`).")

    def __post_init__(self) -> None:
        if not self.container.strip():
            raise ValueError("needs a container")


@dataclass(frozen=True)
class WatchRule:
    name: str = setting("", "Name in logs, `status` and metrics (default: the folder).")
    folder: str = setting("", "Absolute folder to watch, under `base_dir` or `allowed_roots`. "
                              "Required.")
    pattern: str = setting(
        "", "Folder levels below `folder` that name the order's owner and destination, e.g. "
        "`{group}/{user}`; each level is `{group}`, `{user}`, `{dataset}`, `*` (any name) or "
        "a fixed name.")
    group: str | None = setting(None, "OMERO group of the orders, unless the pattern has "
                                      "`{group}`.")
    user: str | None = setting(None, "OMERO user of the orders, unless the pattern has `{user}`.")
    dataset_id: int | None = setting(None, "Import into this Dataset.", minimum=1)
    screen_id: int | None = setting(None, "Import into this Screen.", minimum=1)
    dataset_name: str | None = setting(
        None, "Import into the Dataset of this name in the user's group, created when "
        "missing; may use the pattern's segments, e.g. `{dataset}`. Exactly one of "
        "dataset_id, screen_id, dataset_name.")
    unit: str = setting("file", "What becomes one order: each `file`, or each `folder` "
                                "directly below the pattern (an acquisition).",
                        choices=("file", "folder"))
    include: list[str] = setting(["*"], "Globs a unit's name must match.")
    ignore: list[str] = setting(
        [], "Globs of names (files or folders) to leave out, besides "
        f"{', '.join(f'`{glob}`' for glob in ALWAYS_IGNORED)} and the name of "
        "`processed_data_folder`.")
    settle_seconds: float = setting(60.0, "A unit is complete when nothing in it (sizes, "
                                          "times, entries) changed for this long.", minimum=0)
    ready_marker: str | None = setting(
        None, "Instead of settling: complete when this file appears (inside a folder unit; "
        "`<file name><marker>` beside a file unit).")
    scan_interval: float = setting(30.0, "Seconds between scans of the folder.", minimum=0.1)
    preprocessing: Preprocessing | None = setting(
        None, "Preprocessing of every order of the rule (keys below); left out: none.")
    # Derived from the keys above when the rule is made:
    #: One entry per pattern level: a segment name, ``*``, or a fixed name as ``=name``.
    levels: tuple[str, ...] = field(init=False)
    destination_type: Literal["Dataset", "Screen"] = field(init=False)
    destination_id: int | None = field(init=False)
    #: ``processed_data_folder``: the converted copies beside the originals are
    #: never ordered, whatever the folder's name (see :meth:`with_processed_folder`).
    processed_folder: str = field(init=False, default=".processed")

    def __post_init__(self) -> None:
        folder = self.folder
        if not folder:
            raise ValueError("folder is required")
        if not folder.startswith("/") or ".." in PurePosixPath(folder).parts:
            raise ValueError(f"folder {folder!r} must be an absolute path without '..'")
        folder = os.path.normpath(folder)
        object.__setattr__(self, "folder", folder)
        object.__setattr__(self, "name", self.name or folder)
        for key in ("name", "group", "user", "dataset_name", "ready_marker"):
            value = getattr(self, key)
            if value is not None and not value.strip():
                raise ValueError(f"{key} must be non-empty text, got {value!r}")
        levels = _levels(folder, self.pattern)
        for key in ("group", "user"):
            if getattr(self, key) is None and key not in levels:
                raise ValueError(f"give {key}, or name {{{key}}} in the pattern")
            if getattr(self, key) is not None and key in levels:
                raise ValueError(f"{key} is given and also named in the pattern; keep one")
        targets = [key for key in ("dataset_id", "screen_id", "dataset_name")
                   if getattr(self, key) is not None]
        if len(targets) != 1:
            raise ValueError("give exactly one of dataset_id, screen_id, dataset_name "
                             f"(got {', '.join(targets) or 'none'})")
        for name in _PLACEHOLDER.findall(self.dataset_name or ""):
            if name not in levels:
                raise ValueError(f"dataset_name uses {{{name}}}, which the pattern does not "
                                 f"name (pattern levels: {', '.join(levels) or 'none'})")
        if self.ready_marker is not None and "/" in self.ready_marker:
            raise ValueError(f"ready_marker must be a file name, got {self.ready_marker!r}")
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "destination_type",
                           "Screen" if self.screen_id is not None else "Dataset")
        object.__setattr__(self, "destination_id",
                           self.screen_id if self.screen_id is not None else self.dataset_id)

    def with_processed_folder(self, processed_folder: str) -> WatchRule:
        """This rule, leaving out what is named as ``processed_data_folder``."""
        rule = replace(self)
        object.__setattr__(rule, "processed_folder", processed_folder)
        return rule

    def ignored(self, name: str) -> bool:
        """True for names that are never units nor part of one."""
        return (name == self.processed_folder
                or any(fnmatch.fnmatchcase(name, glob) for glob in (*ALWAYS_IGNORED, *self.ignore))
                or (self.ready_marker is not None and self.unit == "file"
                    and name.endswith(self.ready_marker)))

    def in_progress(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, glob) for glob in IN_PROGRESS)

    def included(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.include)

    def owner(self, segments: Mapping[str, str]) -> tuple[str, str]:
        """(group, user) of a unit whose pattern levels matched ``segments``."""
        return (self.group or segments["group"], self.user or segments["user"])

    def destination_name(self, segments: Mapping[str, str]) -> str | None:
        return None if self.dataset_name is None else self.dataset_name.format_map(segments)


def _levels(folder: str, pattern: str) -> tuple[str, ...]:
    """``{group}/{user}`` → ("group", "user"); fixed names become ``=name``."""
    if pattern.startswith("/"):  # written out in full: it must begin with the folder
        if not PurePosixPath(pattern).is_relative_to(folder):
            raise ValueError(f"pattern {pattern!r} does not begin with the folder {folder!r}")
        pattern = str(PurePosixPath(pattern).relative_to(folder))
    levels: list[str] = []
    for part in (p for p in pattern.split("/") if p not in ("", ".")):
        names = _PLACEHOLDER.findall(part)
        if part == "*":
            levels.append("*")
        elif not names:
            if part == ".." or "{" in part or "}" in part:
                raise ValueError(f"pattern level {part!r} is not a name or a {{segment}}")
            levels.append("=" + part)
        elif part != "{" + names[0] + "}":
            raise ValueError(f"pattern level {part!r} must be a whole {{segment}}")
        elif names[0] not in SEGMENTS:
            raise ValueError(f"pattern names an unknown segment {{{names[0]}}}; "
                             f"known: {', '.join('{' + s + '}' for s in SEGMENTS)}")
        elif names[0] in levels:
            raise ValueError(f"pattern names {{{names[0]}}} twice")
        else:
            levels.append(names[0])
    return tuple(levels)


def check_rules(rules: Sequence[WatchRule], roots: Sequence[str]) -> None:
    """Rule names differ; every rule's folder lies under one of ``roots``
    (base_dir, allowed_roots). ValueError says which rule and why."""
    names = [rule.name for rule in rules]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"watch rule name {name!r} is used twice; give each rule a name")
    normal = [PurePosixPath(os.path.normpath(root)) for root in roots]
    for rule in rules:
        folder = PurePosixPath(rule.folder)
        if not any(folder == root or root in folder.parents for root in normal):
            raise ValueError(f"watch rule {rule.name!r}: folder {rule.folder} is outside the "
                             f"import roots ({', '.join(map(str, normal))}); add its root to "
                             "allowed_roots or watch a folder under base_dir")
