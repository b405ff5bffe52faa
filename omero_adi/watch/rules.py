"""Watch rules: the ``watch:`` list of the settings, parsed and checked.

A rule names a folder under the import roots, whom its orders are for (fixed,
or path segments picked out by ``pattern``), where they go, and what one
order is (a ``file`` or an acquisition ``folder``). Everything that can be
checked without touching the disk is checked here, when settings load; what
needs the disk (readable folder, links leading out of the roots) is checked
on every scan and reported there.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal, Mapping, Sequence

Unit = Literal["file", "folder"]

#: Names a pattern may pick out of the path.
SEGMENTS = ("group", "user", "dataset")
#: Never units, never part of one: dot files and folders (``.processed`` among
#: them) and what writers leave while a file is incomplete.
ALWAYS_IGNORED = (".*", "*.tmp", "*.temp", "*.part", "*.partial", "*.crdownload",
                  "*.swp", "~*", "*~")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class RuleError(ValueError):
    """A watch rule that cannot work as written; the message says which and why."""


@dataclass(frozen=True)
class RuleField:
    name: str
    kind: str
    default: Any
    doc: str


#: Every key of a rule, for the configuration reference.
RULE_FIELDS = (
    RuleField("name", "str", None, "Name in logs, `status` and metrics (default: the folder)."),
    RuleField("folder", "str", None, "Absolute folder to watch, under `base_dir` or "
              "`allowed_roots`. Required."),
    RuleField("pattern", "str", "", "Folder levels below `folder` that name the order's "
              "owner and destination, e.g. `{group}/{user}`; each level is `{group}`, "
              "`{user}`, `{dataset}`, `*` (any name) or a fixed name."),
    RuleField("group", "str", None, "OMERO group of the orders, unless the pattern has `{group}`."),
    RuleField("user", "str", None, "OMERO user of the orders, unless the pattern has `{user}`."),
    RuleField("dataset_id", "int", None, "Import into this Dataset."),
    RuleField("screen_id", "int", None, "Import into this Screen."),
    RuleField("dataset_name", "str", None, "Import into the Dataset of this name in the "
              "user's group, created when missing; may use the pattern's segments, e.g. "
              "`{dataset}`. Exactly one of dataset_id, screen_id, dataset_name."),
    RuleField("unit", "str", "file", "What becomes one order: each `file`, or each `folder` "
              "directly below the pattern (an acquisition)."),
    RuleField("include", "list[str]", ["*"], "Globs a unit's name must match."),
    RuleField("ignore", "list[str]", [], "Globs of names (files or folders) to leave out, "
              f"besides {', '.join(f'`{glob}`' for glob in ALWAYS_IGNORED)} and the name of "
              "`processed_data_folder`."),
    RuleField("settle_seconds", "float", 60.0, "A unit is complete when nothing in it "
              "(sizes, times, entries) changed for this long."),
    RuleField("ready_marker", "str", None, "Instead of settling: complete when this file "
              "appears (inside a folder unit; `<file name><marker>` beside a file unit)."),
    RuleField("scan_interval", "float", 30.0, "Seconds between scans of the folder."),
    RuleField("preprocessing", "dict", None, "Preprocessing for every order: `container` "
              "(required), `input_file` (`{Files}`), `output_folder` (`/data`), "
              "`alt_output_folder` (`/out`), `extra_params` (a mapping)."),
)
_KEYS = {f.name for f in RULE_FIELDS}
_PREPROCESSING_KEYS = {"container", "input_file", "output_folder", "alt_output_folder",
                       "extra_params"}


@dataclass(frozen=True)
class Preprocessing:
    container: str
    input_file: str = "{Files}"
    output_folder: str = "/data"
    alt_output_folder: str = "/out"
    extra_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WatchRule:
    name: str
    folder: str
    #: One entry per folder level: a segment name, ``*``, or a fixed name as ``=name``.
    levels: tuple[str, ...]
    group: str | None
    user: str | None
    destination_type: Literal["Dataset", "Screen"]
    destination_id: int | None
    dataset_name: str | None
    unit: Unit
    include: tuple[str, ...]
    ignore: tuple[str, ...]
    settle_seconds: float
    ready_marker: str | None
    scan_interval: float
    preprocessing: Preprocessing | None
    #: ``processed_data_folder``: the converted copies beside the originals are
    #: never ordered, whatever the folder's name (set by the settings, not a rule key).
    processed_folder: str = ".processed"

    def ignored(self, name: str) -> bool:
        """True for names that are never units nor part of one."""
        return (name == self.processed_folder
                or any(fnmatch.fnmatchcase(name, glob) for glob in ALWAYS_IGNORED + self.ignore)
                or (self.ready_marker is not None and self.unit == "file"
                    and name.endswith(self.ready_marker)))

    def included(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.include)

    def owner(self, segments: Mapping[str, str]) -> tuple[str, str]:
        """(group, user) of a unit whose pattern levels matched ``segments``."""
        return (self.group or segments["group"], self.user or segments["user"])

    def destination_name(self, segments: Mapping[str, str]) -> str | None:
        return None if self.dataset_name is None else self.dataset_name.format_map(segments)


def _text(rule: str, raw: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise RuleError(f"{rule}: {key} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise RuleError(f"{rule}: {key} must be non-empty text, got {value!r}")
    return value.strip()


def _number(rule: str, raw: Mapping[str, Any], key: str, default: float, minimum: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise RuleError(f"{rule}: {key} must be a number of at least {minimum}, got {value!r}")
    return float(value)


def _globs(rule: str, raw: Mapping[str, Any], key: str, default: Sequence[str]) -> tuple[str, ...]:
    value = raw.get(key, default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{rule}: {key} must be a list of glob patterns, got {value!r}")
    return tuple(value)


def _levels(rule: str, folder: str, pattern: str) -> tuple[str, ...]:
    """``{group}/{user}`` → ("group", "user"); fixed names become ``=name``."""
    if pattern.startswith("/"):  # written out in full: it must begin with the folder
        if not PurePosixPath(pattern).is_relative_to(folder):
            raise RuleError(f"{rule}: pattern {pattern!r} does not begin with the folder "
                            f"{folder!r}")
        pattern = str(PurePosixPath(pattern).relative_to(folder))
    levels: list[str] = []
    for part in (p for p in pattern.split("/") if p not in ("", ".")):
        names = _PLACEHOLDER.findall(part)
        if part == "*":
            levels.append("*")
        elif not names:
            if part == ".." or "{" in part or "}" in part:
                raise RuleError(f"{rule}: pattern level {part!r} is not a name or a {{segment}}")
            levels.append("=" + part)
        elif part != "{" + names[0] + "}":
            raise RuleError(f"{rule}: pattern level {part!r} must be a whole {{segment}}")
        elif names[0] not in SEGMENTS:
            raise RuleError(f"{rule}: pattern names an unknown segment {{{names[0]}}}; "
                            f"known: {', '.join('{' + s + '}' for s in SEGMENTS)}")
        elif names[0] in levels:
            raise RuleError(f"{rule}: pattern names {{{names[0]}}} twice")
        else:
            levels.append(names[0])
    return tuple(levels)


def _preprocessing(rule: str, raw: Any) -> Preprocessing | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise RuleError(f"{rule}: preprocessing must be a mapping, got {raw!r}")
    unknown = set(raw) - _PREPROCESSING_KEYS
    if unknown:
        raise RuleError(f"{rule}: unknown preprocessing key(s) {', '.join(sorted(unknown))}")
    extra = raw.get("extra_params") or {}
    if not isinstance(extra, dict) or any(isinstance(v, (dict, list)) for v in extra.values()):
        raise RuleError(f"{rule}: preprocessing extra_params must map names to single values")
    texts = {k: _text(rule, raw, k) for k in _PREPROCESSING_KEYS - {"extra_params"}}
    if texts["container"] is None:
        raise RuleError(f"{rule}: preprocessing needs a container")
    given: dict[str, Any] = {k: v for k, v in texts.items() if v is not None}
    return Preprocessing(**given, extra_params={str(k): str(v) for k, v in extra.items()})


def parse_rule(raw: Any, number: int) -> WatchRule:
    """One entry of the ``watch:`` list; :class:`RuleError` says what is wrong."""
    where = f"watch rule {number}"
    if not isinstance(raw, dict):
        raise RuleError(f"{where} must be a mapping of keys to values, got {raw!r}")
    folder = _text(where, raw, "folder", required=True)
    assert folder is not None
    where = f"watch rule {number} ({raw.get('name') or folder})"
    unknown = set(raw) - _KEYS
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(_KEYS))}")
    if not folder.startswith("/") or ".." in PurePosixPath(folder).parts:
        raise RuleError(f"{where}: folder {folder!r} must be an absolute path without '..'")
    folder = os.path.normpath(folder)
    levels = _levels(where, folder, _text(where, raw, "pattern") or "")
    owner = {key: _text(where, raw, key) for key in ("group", "user")}
    for key, value in owner.items():
        if value is None and key not in levels:
            raise RuleError(f"{where}: give {key}, or name {{{key}}} in the pattern")
        if value is not None and key in levels:
            raise RuleError(f"{where}: {key} is given and also named in the pattern; keep one")
    targets = [key for key in ("dataset_id", "screen_id", "dataset_name")
               if raw.get(key) is not None]
    if len(targets) != 1:
        raise RuleError(f"{where}: give exactly one of dataset_id, screen_id, dataset_name "
                        f"(got {', '.join(targets) or 'none'})")
    target_id = None
    dataset_name = None
    if targets[0] == "dataset_name":
        dataset_name = _text(where, raw, "dataset_name")
        assert dataset_name is not None
        for name in _PLACEHOLDER.findall(dataset_name):
            if name not in levels:
                raise RuleError(f"{where}: dataset_name uses {{{name}}}, which the pattern "
                                f"does not name (pattern levels: {', '.join(levels) or 'none'})")
    else:
        target_id = raw[targets[0]]
        if isinstance(target_id, bool) or not isinstance(target_id, int) or target_id <= 0:
            raise RuleError(f"{where}: {targets[0]} must be a positive id, got {target_id!r}")
    unit = raw.get("unit", "file")
    if unit not in ("file", "folder"):
        raise RuleError(f"{where}: unit must be 'file' or 'folder', got {unit!r}")
    marker = _text(where, raw, "ready_marker")
    if marker is not None and "/" in marker:
        raise RuleError(f"{where}: ready_marker must be a file name, got {marker!r}")
    return WatchRule(
        name=_text(where, raw, "name") or folder,
        folder=folder,
        levels=levels,
        group=owner["group"],
        user=owner["user"],
        destination_type="Screen" if targets[0] == "screen_id" else "Dataset",
        destination_id=target_id,
        dataset_name=dataset_name,
        unit=unit,
        include=_globs(where, raw, "include", ["*"]),
        ignore=_globs(where, raw, "ignore", []),
        settle_seconds=_number(where, raw, "settle_seconds", 60.0, 0.0),
        ready_marker=marker,
        scan_interval=_number(where, raw, "scan_interval", 30.0, 0.1),
        preprocessing=_preprocessing(where, raw.get("preprocessing")),
    )


def parse_rules(raw: Any) -> list[WatchRule]:
    """The whole ``watch:`` list: every rule valid, names unique."""
    if not isinstance(raw, list):
        raise RuleError(f"watch must be a list of rules, got {raw!r}")
    rules = [parse_rule(entry, number) for number, entry in enumerate(raw, 1)]
    names = [rule.name for rule in rules]
    for name in names:
        if names.count(name) > 1:
            raise RuleError(f"watch rule name {name!r} is used twice; give each rule a name")
    return rules


def check_roots(rules: Sequence[WatchRule], roots: Sequence[str]) -> None:
    """Every rule's folder lies under one of ``roots`` (base_dir, allowed_roots)."""
    normal = [PurePosixPath(os.path.normpath(root)) for root in roots]
    for rule in rules:
        folder = PurePosixPath(rule.folder)
        if not any(folder == root or root in folder.parents for root in normal):
            raise RuleError(f"watch rule {rule.name!r}: folder {rule.folder} is outside the "
                            f"import roots ({', '.join(map(str, normal))}); add its root to "
                            "allowed_roots or watch a folder under base_dir")
