"""What one preprocessing container runs (contracts §5), and what it reports back.

:func:`build_run` turns an order's preprocessing spec and one of its files
into a :class:`ContainerRun`: image, mounts and arguments, checked against
the settings before anything starts. :func:`parse_report` reads the JSON
file list a converter may print as its last line of standard output.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from omero_adi.orders import UUID_PATTERN, Order
from omero_adi.pipeline import OrderFailed
from omero_adi.settings import Settings

DEFAULT_REGISTRY = "docker.io/"
PARAM_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerRun:
    """One container for one file of an order; everything is checked already."""

    name: str
    image: str
    args: tuple[str, ...]
    mounts: tuple[Mount, ...]
    userns: str | None
    #: The order's file this run converts.
    source: Path
    #: ``alt_output_folder`` inside the container, and the local folder behind it.
    alt_folder: str
    local_dir: Path

    def local_path(self, alt_path: str) -> Path | None:
        """The local file behind a container path under the alt folder, else None."""
        path = PurePosixPath(alt_path)
        try:
            relative = path.relative_to(self.alt_folder)
        except ValueError:
            return None
        if not path.is_absolute() or ".." in relative.parts:
            return None
        return self.local_dir.joinpath(*relative.parts)


@dataclass(frozen=True)
class ReportedFile:
    """One entry of the converter's JSON list, its ``alt_path`` mapped locally."""

    local_path: Path
    keyvalues: tuple[tuple[str, str], ...]


def normalise_image(name: str) -> str:
    """``docker.io/`` in front of a name whose first part names no registry."""
    first, slash, _ = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return name
    return DEFAULT_REGISTRY + name


def _repository(name: str) -> str:
    """The name without ``:tag`` or ``@digest``."""
    name = name.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def image_allowed(image: str, patterns: Iterable[str]) -> bool:
    """Whether ``image`` matches one of the allowed names or glob patterns.

    Both sides are compared with and without the implied ``docker.io/``, and
    a pattern without a tag allows every tag of that repository.
    """
    full = normalise_image(image)
    short = full.removeprefix(DEFAULT_REGISTRY)
    names = {full, short, _repository(full), _repository(short)}
    return any(
        fnmatchcase(name, form)
        for pattern in patterns
        for form in {pattern.strip(), normalise_image(pattern.strip())}
        for name in names
    )


def inplace_dir(settings: Settings, order: Order) -> Path:
    """The order's local folder for converted copies: ``<inplace_tmp_root>/<UUID>``."""
    if not UUID_PATTERN.match(order.uuid):
        raise OrderFailed(f"uuid {order.uuid!r} is not a valid order id")
    return Path(settings.inplace_tmp_root) / order.uuid


def _container_dir(value: str | None, what: str) -> str:
    if not value:
        raise OrderFailed(f"preprocessing {what} is empty; give a folder such as /data or /out")
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts or str(path) == "/" or re.search(
        r"[:,\x00]", value
    ):
        raise OrderFailed(
            f"preprocessing {what} {value!r} must be an absolute folder inside the container "
            "(not '/', without '..', ':' or ',')"
        )
    return str(path)


def _single_arg(value: str, what: str) -> str:
    if "\x00" in value:
        raise OrderFailed(f"preprocessing {what} contains a NUL character")
    return value


def build_run(order: Order, source: Path, settings: Settings) -> ContainerRun:
    """The container run for one file of ``order``; :class:`OrderFailed` when unsafe."""
    spec = order.preprocessing
    if spec is None:
        raise OrderFailed("the order has no preprocessing")
    if not IMAGE_NAME.match(spec.container):
        raise OrderFailed(f"container {spec.container!r} is not a valid image name")
    image = normalise_image(spec.container)
    if not image_allowed(image, settings.allowed_containers):
        allowed = ", ".join(settings.allowed_containers) or "none"
        raise OrderFailed(
            f"container {spec.container!r} is not allowed on this server (allowed: {allowed}); "
            "an administrator can add it to the allowed_containers setting"
        )
    output = _container_dir(spec.output_folder, "output_folder")
    alt = _container_dir(spec.alt_output_folder, "alt_output_folder")
    if PurePosixPath(alt).is_relative_to(output) or PurePosixPath(output).is_relative_to(alt):
        raise OrderFailed(
            f"preprocessing output_folder {output!r} and alt_output_folder {alt!r} must not "
            "overlap"
        )
    bad_keys = [k for k in spec.extra_params if not PARAM_KEY.match(k)]
    if bad_keys:
        raise OrderFailed(
            f"extra param names {bad_keys!r} are not plain option names "
            "(letters, digits, '-' and '_', not starting with '-')"
        )

    def substitute(value: str, what: str) -> str:
        return _single_arg(value, what).replace("{Files}", f"{output}/{source.name}")

    args = ["--inputfile", substitute(spec.input_file, "input_file")]
    for key, value in spec.extra_params.items():
        args += [f"--{key}", substitute(value, f"extra param {key!r}")]
    processed = settings.processed_data_folder  # the durable copies, beside the originals
    args += ["--outputfolder", f"{output}/{processed}", "--altoutputfolder", alt]
    local_dir = inplace_dir(settings, order)
    mounts = (
        # Originals are read-only; only the processed folder beside them is writable.
        Mount(source.parent, output, read_only=True),
        Mount(source.parent / processed, f"{output}/{processed}"),
        Mount(local_dir, alt),
    )
    return ContainerRun(
        name=f"adi-{order.uuid}-{secrets.token_hex(4)}",
        image=image,
        args=tuple(args),
        mounts=mounts,
        userns="keep-id" if settings.podman_userns_mode == "keep-id" else None,
        source=source,
        alt_folder=alt,
        local_dir=local_dir,
    )


def _keyvalues(raw: Any) -> tuple[tuple[str, str], ...] | None:
    if raw is None:
        return ()
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        return None
    return tuple((str(k), str(v)) for item in raw for k, v in item.items())


def parse_report(stdout: str, run: ContainerRun) -> tuple[ReportedFile, ...] | None:
    """The files listed by the last line of ``stdout``, or None when it is no such list.

    An ``alt_path`` outside the alt folder fails the order: a converter must
    not make ADI import files from anywhere else.
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        entries = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("alt_path"), str) for e in entries
    ):
        return None
    reported = []
    for entry in entries:
        local = run.local_path(entry["alt_path"])
        if local is None:
            raise OrderFailed(
                f"the container for {run.source.name} reported alt_path {entry['alt_path']!r}, "
                f"which is outside its alt output folder {run.alt_folder}"
            )
        keyvalues = _keyvalues(entry.get("keyvalues"))
        if keyvalues is None:
            return None
        reported.append(ReportedFile(local, keyvalues))
    return tuple(reported)
