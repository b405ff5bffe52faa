"""Orders: a claimed ``imports`` row, checked and turned into a typed :class:`Order`.

The :class:`UploadOrderManager` is the only place that decides whether an
order is acceptable. Everything after it works with :class:`Order` and
never looks at raw row values again.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal, Mapping, Sequence

from omero_adi.import_options import (
    ImportOptions,
    ImportOptionsError,
    UnsupportedImportOperation,
    parse_import_options,
)
from omero_adi.settings import Settings

DestinationType = Literal["Dataset", "Screen"]
UUID_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,35}$")
#: More files than this in one order is almost certainly a mistake.
MAX_FILES = 10_000


class OrderRejected(Exception):
    """The order cannot be run as written; the message says why and what to do."""


@dataclass(frozen=True)
class EventRow:
    """The Pending event a daemon claimed, exactly as stored (unchecked)."""

    event_id: int
    uuid: str
    group_name: str
    user_name: str
    destination_id: str
    destination_type: str
    files: Any  # decoded JSON when it was JSON, the raw text otherwise
    file_names: Any
    preprocessing: PreprocessingRow | None = None
    import_options: Any = None  # decoded JSON, as files


@dataclass(frozen=True)
class PreprocessingRow:
    id: int
    container: str
    input_file: str
    output_folder: str
    alt_output_folder: str | None
    extra_params: Any


@dataclass(frozen=True)
class PreprocessingSpec:
    """How to convert an order's files before import (contracts §5)."""

    id: int
    container: str
    input_file: str
    output_folder: str
    alt_output_folder: str | None
    extra_params: Mapping[str, str] = field(default_factory=dict)

    def annotation_fields(self) -> dict[str, str]:
        """The ``preprocessing_*`` key-values that go on imported images."""
        values = {
            "preprocessing_container": self.container,
            "preprocessing_inputfile": self.input_file,
            "preprocessing_outputfolder": self.output_folder,
            "preprocessing_altoutputfolder": self.alt_output_folder or "",
        }
        values.update({f"preprocessing_{k}": v for k, v in self.extra_params.items()})
        return values


@dataclass(frozen=True)
class Order:
    """A validated import order: what the rest of the daemon works with."""

    event_id: int
    uuid: str
    group: str
    user: str
    destination_id: int
    destination_type: DestinationType
    files: tuple[Path, ...]
    file_names: tuple[str, ...]
    preprocessing: PreprocessingSpec | None = None
    import_options: ImportOptions = field(default_factory=ImportOptions)

    @property
    def file_texts(self) -> tuple[str, ...]:
        """The paths as the order wrote them (``Path`` turns ``s3://`` into ``s3:/``)."""
        return tuple(
            "s3://" + str(p)[4:] if str(p).startswith("s3:/") else str(p) for p in self.files
        )


def is_zarr(path: str) -> bool:
    """An OME-Zarr store, registered instead of imported with ``use_register_zarr``."""
    return path.rstrip("/").lower().endswith(".zarr")


def default_file_names(files: Sequence[Any]) -> list[str]:
    """The names the ``file_names`` column gets when a client left it empty."""
    return [PurePath(str(path)).name for path in files]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OrderRejected(f"{name} is empty; set it to a non-empty value")
    return value.strip()


def _file_list(raw: Any) -> list[str]:
    if isinstance(raw, str):  # stored text that was not JSON
        raise OrderRejected(
            f"files is not a JSON list of paths (got {raw[:80]!r}); "
            'write it as e.g. ["/data/user/image.tif"]'
        )
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise OrderRejected("files must be a JSON list of path strings")
    if not raw:
        raise OrderRejected("files is an empty list; name at least one file or folder")
    if len(raw) > MAX_FILES:
        raise OrderRejected(f"files lists {len(raw)} paths; at most {MAX_FILES} per order")
    return raw


class UploadOrderManager:
    """Checks a claimed event against the settings and builds the :class:`Order`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.roots = [
            Path(os.path.realpath(r)) for r in [settings.base_dir, *settings.allowed_roots]
        ]

    def validate(self, row: EventRow) -> Order:
        if not UUID_PATTERN.match(row.uuid or ""):
            raise OrderRejected(
                f"uuid {row.uuid!r} is not a valid order id (letters, digits, '-' and '_', "
                "at most 36)"
            )
        group = _text(row.group_name, "group_name")
        user = _text(row.user_name, "user_name")
        if row.destination_type not in ("Dataset", "Screen"):
            raise OrderRejected(
                f"destination_type {row.destination_type!r} is not supported; "
                "use 'Dataset' or 'Screen'"
            )
        try:
            destination_id = int(str(row.destination_id).strip())
        except ValueError:
            raise OrderRejected(
                f"destination_id {row.destination_id!r} is not a whole number; "
                f"give the id of the {row.destination_type}"
            ) from None
        if destination_id <= 0:
            raise OrderRejected(f"destination_id {destination_id} must be a positive id")
        files = tuple(self._check_path(p) for p in _file_list(row.files))
        options = self._import_options(row, files)
        return Order(
            event_id=row.event_id,
            uuid=row.uuid,
            group=group,
            user=user,
            destination_id=destination_id,
            destination_type=row.destination_type,  # type: ignore[arg-type]
            files=files,
            file_names=self._file_names(row.file_names, files),
            preprocessing=self._preprocessing(row.preprocessing),
            import_options=options,
        )

    def _check_path(self, raw: str) -> Path:
        if "\x00" in raw:
            raise OrderRejected(f"path {raw!r} contains a NUL character")
        if raw.startswith("s3://"):
            if self.settings.use_register_zarr and raw.rstrip("/").endswith(".zarr"):
                return Path(raw)  # registered from object storage, nothing local to check
            raise OrderRejected(
                f"path {raw!r} is in object storage; only OME-Zarr (.zarr) can be "
                "registered from s3://, and only with use_register_zarr on"
            )
        path = Path(raw)
        if not path.is_absolute():
            raise OrderRejected(f"path {raw!r} is relative; give the absolute path on the server")
        if ".." in path.parts:
            raise OrderRejected(f"path {raw!r} contains '..'; give the direct path")
        real = Path(os.path.realpath(path))
        if not any(real == root or root in real.parents for root in self.roots):
            allowed = ", ".join(str(r) for r in self.roots)
            via = f" (it resolves to {real})" if str(real) != raw.rstrip("/") else ""
            raise OrderRejected(
                f"path {raw!r} is outside the import roots{via}; allowed: {allowed} "
                "(the settings base_dir and allowed_roots name them)"
            )
        if not real.exists():
            raise OrderRejected(f"file {raw!r} does not exist (check the path and the mount)")
        if not os.access(real, os.R_OK) or (real.is_dir() and not os.access(real, os.X_OK)):
            raise OrderRejected(f"file {raw!r} is not readable by the import daemon")
        return path

    def _import_options(self, row: EventRow, files: Sequence[Path]) -> ImportOptions:
        """The order's ImportOptions, when this importer can honour every one of them."""
        try:
            options = parse_import_options(row.import_options)
            options.check_supported()
        except (ImportOptionsError, UnsupportedImportOperation) as exc:
            raise OrderRejected(str(exc)) from None
        if options.uses_label:
            zarr = [p for p in files if is_zarr(str(p))]
            why = ("use_register_zarr is off" if not self.settings.use_register_zarr else
                   "the order names no .zarr store" if not zarr else
                   f"the destination is a {row.destination_type}, not a Screen"
                   if row.destination_type != "Screen" else "")
            if why:
                raise OrderRejected(
                    "ImportOptions platePixelSource 'label' applies only to registering an "
                    f"OME-Zarr plate into a Screen, and {why}; nothing was imported")
        return options

    @staticmethod
    def _file_names(raw: Any, files: Sequence[Path]) -> tuple[str, ...]:
        if isinstance(raw, list) and len(raw) == len(files) and all(isinstance(n, str) for n in raw):
            return tuple(raw)
        return tuple(default_file_names(files))

    @staticmethod
    def _preprocessing(row: PreprocessingRow | None) -> PreprocessingSpec | None:
        if row is None:
            return None
        extra = {} if row.extra_params is None else row.extra_params
        if isinstance(extra, str):  # the store decodes JSON: text left over is not JSON
            raise OrderRejected("extra_params is not valid JSON")
        if not isinstance(extra, dict):
            raise OrderRejected("extra_params must be a JSON object of option names to values")
        return PreprocessingSpec(
            id=row.id,
            container=_text(row.container, "preprocessing container"),
            input_file=_text(row.input_file, "preprocessing input_file"),
            output_folder=_text(row.output_folder, "preprocessing output_folder"),
            alt_output_folder=row.alt_output_folder or None,
            extra_params={str(k): _param_value(k, v) for k, v in extra.items()},
        )


def _param_value(key: Any, value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise OrderRejected(f"extra param {key!r} must be a single value, got {value!r}")
    return str(value)
