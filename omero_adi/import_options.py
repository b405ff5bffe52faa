"""``ImportOptions``: the per-order options BIOMERO.importer's clients send (contracts §8).

Two forms arrive in the ``import_options`` column: the flat registration
options (schema 1) and the envelope (schema 2) that adds lifecycle
operations. :func:`parse_import_options` turns either into one
:class:`ImportOptions`, or raises :class:`ImportOptionsError` naming the key
that is wrong. Every option is either applied or refused: this importer runs
no lifecycle operation, so any operation raises
:class:`UnsupportedImportOperation` with its kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

PlatePixelSource = Literal["source", "label"]
#: The forms of ``ImportOptions`` this importer reads.
SCHEMAS = (1, 2)
#: Lifecycle operations this importer runs: none (``biomero.shallow-zarr`` is not one).
SUPPORTED_OPERATIONS: tuple[str, ...] = ()
REGISTRATION_KEYS = frozenset({"schema", "platePixelSource", "plateLabelName"})
ENVELOPE_KEYS = frozenset({"schema", "registration", "operations"})


class ImportOptionsError(ValueError):
    """``ImportOptions`` that are not one of the two forms; the message names the key."""


class UnsupportedImportOperation(ValueError):
    """The options ask for a lifecycle operation this importer does not run."""


@dataclass(frozen=True)
class ImportOptions:
    """Options of one order; the defaults are what an order without options gets."""

    plate_pixel_source: PlatePixelSource = "source"
    #: The NGFF label whose pixels a ``label`` plate shows (one path segment).
    plate_label_name: str | None = None
    #: Kinds of the lifecycle operations asked for, in order.
    operations: tuple[str, ...] = ()

    @property
    def uses_label(self) -> bool:
        return self.plate_pixel_source == "label"

    def unsupported_operations(self) -> list[str]:
        return [kind for kind in self.operations if kind not in SUPPORTED_OPERATIONS]

    def check_supported(self) -> None:
        """Raise :class:`UnsupportedImportOperation` naming each operation not run here."""
        unsupported = self.unsupported_operations()
        if unsupported:
            raise UnsupportedImportOperation(
                f"ImportOptions operation(s) {', '.join(map(repr, unsupported))} are not "
                "supported by this importer (it runs no lifecycle operations); submit the "
                "order without them"
            )


def _keys(value: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ImportOptionsError(
            f"{where} has unknown key(s) {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(sorted(allowed))})"
        )


def _registration(value: Any, where: str) -> ImportOptions:
    """The flat schema-1 options (also the envelope's ``registration``)."""
    if not isinstance(value, Mapping):
        raise ImportOptionsError(f"{where} must be a JSON object, got {value!r}"[:200])
    _keys(value, REGISTRATION_KEYS, where)
    if value.get("schema", 1) != 1:
        raise ImportOptionsError(f"{where} schema must be 1, got {value.get('schema')!r}")
    source = value.get("platePixelSource", "source")
    if source not in ("source", "label"):
        raise ImportOptionsError(
            f"{where} platePixelSource must be 'source' or 'label', got {source!r}")
    name = value.get("plateLabelName")
    if source == "label":
        if not isinstance(name, str) or not name.strip():
            raise ImportOptionsError(
                f"{where} platePixelSource 'label' needs plateLabelName, the NGFF label to show")
        if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
            raise ImportOptionsError(
                f"{where} plateLabelName {name!r} must be one label name, not a path")
    elif name is not None:
        raise ImportOptionsError(
            f"{where} plateLabelName {name!r} is only used with platePixelSource 'label'")
    return ImportOptions(plate_pixel_source=source, plate_label_name=name)


def _operation_kind(operation: Any, index: int) -> str:
    if not isinstance(operation, Mapping) or not isinstance(operation.get("kind"), str):
        raise ImportOptionsError(
            f"ImportOptions operations[{index}] must be an object with a 'kind', "
            f"got {operation!r}"[:200])
    return str(operation["kind"])


def parse_import_options(value: Any) -> ImportOptions:
    """The options of an order: ``None`` or ``{}`` (none), schema 1, or the schema-2 envelope."""
    if value is None or (isinstance(value, Mapping) and not value):
        return ImportOptions()
    if isinstance(value, str):  # stored text that was not JSON
        raise ImportOptionsError(f"ImportOptions is not valid JSON: {value[:80]!r}")
    if not isinstance(value, Mapping):
        raise ImportOptionsError(f"ImportOptions must be a JSON object, got {value!r}"[:200])
    schema = value.get("schema", 1)
    if schema == 1:
        return _registration(value, "ImportOptions")
    if schema != 2:
        raise ImportOptionsError(
            f"ImportOptions schema {schema!r} is not supported (supported: "
            f"{', '.join(map(str, SCHEMAS))})")
    _keys(value, ENVELOPE_KEYS, "ImportOptions")
    registration = _registration(value.get("registration") or {}, "ImportOptions registration")
    operations = value.get("operations") or []
    if not isinstance(operations, list):
        raise ImportOptionsError(
            f"ImportOptions operations must be a list, got {operations!r}"[:200])
    kinds = tuple(_operation_kind(op, i) for i, op in enumerate(operations))
    return ImportOptions(registration.plate_pixel_source, registration.plate_label_name, kinds)
