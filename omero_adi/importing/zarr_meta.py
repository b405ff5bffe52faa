"""Read an OME-Zarr's own metadata into what must be created in OMERO to register it.

:func:`read_zarr` opens a store (a local directory or an ``s3://`` URI), reads
Zarr v2 (``.zattrs``/``.zarray``) or v3 (``zarr.json``, NGFF attributes under
``"ome"``) and returns a :class:`ZarrContent`: images (a plain multiscales
image, or the series of a ``bioformats2raw.layout`` collection) or a plate.
Anything it cannot describe raises :class:`ZarrError` with the reason.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.errors import GroupNotFoundError
from zarr.storage import FsspecStore, LocalStore

#: numpy dtype name -> OMERO pixel type.
PIXEL_TYPES = {
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "float32": "float",
    "float64": "double",
}
AXES = "tczyx"
#: The only bioformats2raw layout version there is.
BIOFORMATS2RAW_LAYOUT = 3
#: Where omero-zarr-pixel-buffer looks for s3:// stores without an endpoint.
AWS_DEFAULT_ENDPOINT = "https://s3.us-east-1.amazonaws.com"
OME_XML_KEY = "OME/METADATA.ome.xml"


class ZarrError(Exception):
    """The store cannot be registered; the message says why (the failure description)."""


@dataclass(frozen=True)
class ZarrSource:
    """Where a store lives: a local path or ``s3://bucket/key.zarr``, with S3 access."""

    uri: str
    s3_endpoint: str = ""
    s3_anonymous: bool = True

    def __post_init__(self) -> None:
        scheme = urlsplit(self.uri).scheme
        if scheme not in ("", "s3"):
            raise ZarrError(f"{self.uri}: only local paths and s3:// URIs can be registered")
        if not scheme and not self.uri.startswith("/"):
            raise ZarrError(f"{self.uri}: a local Zarr must be given by its absolute path")

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint with its scheme (``https://`` when the setting has none)."""
        endpoint = self.s3_endpoint or AWS_DEFAULT_ENDPOINT
        return endpoint if "://" in endpoint else f"https://{endpoint}"

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for reading an ``s3://`` store."""
        options: dict[str, Any] = {"anon": self.s3_anonymous}
        if self.s3_endpoint:
            options["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        return options

    def pixels_uri(self, path: str) -> str:
        """Where omero-zarr-pixel-buffer reads the image at ``path`` (its ExternalInfo lsid).

        Local: the image group's absolute path. S3: ``s3://<endpoint host>/<bucket>/<key>/``
        followed by ``?anonymous=true`` for unsigned access.
        """
        location = "/".join(p for p in (self.uri.rstrip("/"), path.strip("/")) if p)
        if not self.is_s3:
            return location
        host = urlsplit(self.endpoint_url).netloc
        uri = f"s3://{host}/{location[len('s3://'):]}/"
        return f"{uri}?anonymous=true" if self.s3_anonymous else uri

    @property
    def name(self) -> str:
        """The store's name: its last path segment."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ZarrImage:
    """One OMERO Image to create, reading its pixels from a multiscales group."""

    name: str
    path: str  # the multiscales group inside the store; "" for the root
    uri: str  # ZarrSource.pixels_uri(path): the ExternalInfo lsid
    size_x: int
    size_y: int
    size_z: int
    size_c: int
    size_t: int
    pixel_type: str  # an OMERO pixel type: int8 … uint32, float, double
    channel_names: tuple[str, ...]  # one per channel, or () without omero metadata
    series: int  # index in the store, in Bio-Formats series order


@dataclass(frozen=True)
class ZarrWell:
    row: int  # 0-based indices into ZarrPlate.rows / .columns
    column: int
    path: str
    fields: tuple[ZarrImage, ...]


@dataclass(frozen=True)
class ZarrPlate:
    name: str
    rows: tuple[str, ...]  # row names, e.g. ("A", "B")
    columns: tuple[str, ...]  # column names, e.g. ("1", "2", "3")
    wells: tuple[ZarrWell, ...]

    @property
    def images(self) -> tuple[ZarrImage, ...]:
        return tuple(field for well in self.wells for field in well.fields)


@dataclass(frozen=True)
class ZarrContent:
    """What one store becomes in OMERO: images, or one plate (then ``images`` is empty)."""

    source: ZarrSource
    images: tuple[ZarrImage, ...] = ()
    plate: ZarrPlate | None = None


def _read_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this store cannot be read" (S3 network errors included)."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return errors
    return (*errors, BotoCoreError)


def open_store(source: ZarrSource) -> Store:
    """A read-only store for ``source`` (nothing is read yet)."""
    if source.is_s3:
        return FsspecStore.from_url(
            source.uri, read_only=True, storage_options=source.storage_options()
        )
    return LocalStore(source.uri, read_only=True)


def read_zarr(source: ZarrSource, plate_label: str | None = None) -> ZarrContent:
    """Describe the images or plate that registering ``source`` creates.

    With ``plate_label``, a plate's images read their pixels from that NGFF
    label of each field (``<field>/labels/<name>``), which every field must have.
    """
    try:
        return _Reader(source, plate_label).content()
    except ZarrError:
        raise
    except _read_errors() as exc:
        raise ZarrError(f"{source.uri}: cannot read the Zarr store ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ome(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    """NGFF attributes: under "ome" in 0.5 (Zarr v3), at the top level before."""
    inner = attrs.get("ome")
    return inner if isinstance(inner, Mapping) else attrs


class _Reader:
    """Walks one store; every method raises :class:`ZarrError` on bad metadata."""

    def __init__(self, source: ZarrSource, plate_label: str | None = None):
        self.source = source
        self.plate_label = plate_label
        self.store = open_store(source)
        try:
            self.root = zarr.open_group(self.store, mode="r")
        except GroupNotFoundError as exc:
            raise ZarrError(f"{source.uri}: not a Zarr store (no .zgroup or zarr.json)") from exc

    def fail(self, path: str, reason: str) -> ZarrError:
        where = f"{self.source.uri}/{path}" if path else self.source.uri
        return ZarrError(f"{where}: {reason}")

    def node(self, path: str) -> zarr.Group | zarr.Array:
        if not path:
            return self.root
        if path not in self.root:
            raise self.fail(path, "is missing from the store")
        return self.root[path]

    def attrs(self, path: str) -> Mapping[str, Any]:
        node = self.node(path)
        if not isinstance(node, zarr.Group):
            raise self.fail(path, "expected a Zarr group, found an array")
        return _ome(node.attrs.asdict())

    def mapping(self, path: str, value: Any, what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"{what} must be a JSON object, got {value!r}"[:200])
        return value

    def content(self) -> ZarrContent:
        attrs = self.attrs("")
        if "plate" in attrs:
            return ZarrContent(self.source, plate=self.plate(attrs["plate"]))
        if self.plate_label:
            raise self.fail("", f"is not a plate, so the plate label {self.plate_label!r} "
                                "(ImportOptions plateLabelName) cannot be used")
        if "bioformats2raw.layout" in attrs:
            version = attrs["bioformats2raw.layout"]
            if version != BIOFORMATS2RAW_LAYOUT:
                raise self.fail("", f"bioformats2raw.layout version {version!r} is not "
                                    f"supported (only {BIOFORMATS2RAW_LAYOUT} is known)")
            return ZarrContent(self.source, images=tuple(self.series()))
        if "multiscales" in attrs:
            return ZarrContent(self.source, images=(self.image("", 0, self.source.name),))
        raise self.fail("", "no OME-Zarr metadata (no multiscales, plate or "
                            "bioformats2raw.layout attributes)")

    # --- images -----------------------------------------------------------
    def image(self, path: str, series: int, fallback_name: str, name: str = "") -> ZarrImage:
        """The image of the multiscales group at ``path``; named ``name``, else by its
        multiscales "name", else ``fallback_name``."""
        attrs = self.attrs(path)
        multiscales = attrs.get("multiscales")
        if not isinstance(multiscales, list) or not multiscales:
            raise self.fail(path, "no multiscales metadata: not an OME-Zarr image")
        multiscale = self.mapping(path, multiscales[0], "multiscales[0]")
        datasets = multiscale.get("datasets")
        if not isinstance(datasets, list) or not datasets:
            raise self.fail(path, "multiscales has no datasets")
        dataset = self.mapping(path, datasets[0], "multiscales datasets[0]")
        array_path = "/".join(p for p in (path, str(dataset.get("path", ""))) if p)
        array = self.node(array_path)
        if not isinstance(array, zarr.Array):
            raise self.fail(array_path, "the full-resolution dataset is not a Zarr array")
        sizes = self.sizes(path, multiscale, array.shape)
        pixel_type = PIXEL_TYPES.get(array.dtype.name)
        if pixel_type is None:
            raise self.fail(array_path, f"pixel type {array.dtype.name} is not supported "
                                        f"by OMERO (supported: {', '.join(PIXEL_TYPES)})")
        return ZarrImage(
            name=name or str(multiscale.get("name") or fallback_name),
            path=path,
            uri=self.source.pixels_uri(path),
            size_x=sizes["x"],
            size_y=sizes["y"],
            size_z=sizes["z"],
            size_c=sizes["c"],
            size_t=sizes["t"],
            pixel_type=pixel_type,
            channel_names=_channel_names(attrs.get("omero"), sizes["c"]),
            series=series,
        )

    def sizes(self, path: str, multiscale: Mapping[str, Any],
              shape: tuple[int, ...]) -> dict[str, int]:
        """Size per axis name; NGFF 0.1/0.2 (no axes) are always t, c, z, y, x."""
        axes = multiscale.get("axes") or list(AXES[-len(shape):])
        if not isinstance(axes, list):
            raise self.fail(path, f"multiscales axes must be a list, got {axes!r}")
        names = [str(a.get("name") if isinstance(a, Mapping) else a).lower() for a in axes]
        if len(names) != len(shape):
            raise self.fail(path, f"multiscales has {len(names)} axes but its array "
                                  f"{len(shape)} dimensions")
        unknown = [n for n in names if n not in AXES]
        if unknown or len(set(names)) != len(names) or not {"x", "y"} <= set(names):
            raise self.fail(path, f"axes {names} are not supported (OMERO needs x and y, "
                                  "and at most z, c and t, each once)")
        sizes = dict.fromkeys(AXES, 1)
        sizes.update(zip(names, (int(s) for s in shape)))
        return sizes

    # --- bioformats2raw.layout -------------------------------------------
    def series(self) -> Iterator[ZarrImage]:
        names = self.ome_xml_names()
        paths = self.series_paths(len(names))
        for index, path in enumerate(paths):
            name = names[index] if index < len(names) else ""
            yield self.image(path, index, f"{self.source.name} [{path}]", name)

    def series_paths(self, xml_count: int) -> list[str]:
        """Series groups: OME/ "series" attribute, else one per OME-XML Image, else 0, 1, 2…"""
        if "OME" in self.root:
            listed = self.attrs("OME").get("series")
            if isinstance(listed, list):
                return [str(p) for p in listed]
        if xml_count:
            return [str(i) for i in range(xml_count)]
        paths: list[str] = []
        while str(len(paths)) in self.root:
            paths.append(str(len(paths)))
        if not paths:
            raise self.fail("", "bioformats2raw.layout collection holds no series")
        return paths

    def ome_xml_names(self) -> list[str]:
        """Image names from OME/METADATA.ome.xml, in series order; [] without one."""
        data = sync(self.store.get(OME_XML_KEY, prototype=default_buffer_prototype()))
        if data is None:
            return []
        try:
            tree = ElementTree.fromstring(data.to_bytes())
        except ElementTree.ParseError as exc:
            raise self.fail(OME_XML_KEY, f"OME-XML is not valid XML ({exc})") from exc
        return [el.get("Name", "") for el in tree if el.tag.rsplit("}", 1)[-1] == "Image"]

    # --- plates -----------------------------------------------------------
    def plate(self, raw: Any) -> ZarrPlate:
        attrs = self.mapping("", raw, "plate")
        rows = self.names(attrs, "rows")
        columns = self.names(attrs, "columns")
        wells_attrs = attrs.get("wells")
        if not isinstance(wells_attrs, list) or not wells_attrs:
            raise self.fail("", "plate metadata lists no wells")
        wells: list[ZarrWell] = []
        series = 0
        for raw_well in wells_attrs:
            well = self.mapping("", raw_well, "plate well")
            path = str(well.get("path", ""))
            row, column = self.well_position(well, rows, columns)
            well_meta = self.mapping(path, self.attrs(path).get("well"), "well metadata")
            samples = well_meta.get("images")
            if not isinstance(samples, list) or not samples:
                raise self.fail(path, "well metadata lists no images")
            fields = []
            for sample in samples:
                sample_path = self.mapping(path, sample, "well image").get("path", "")
                field_path = f"{path}/{sample_path}"
                fields.append(self.field(field_path, series))
                series += 1
            wells.append(ZarrWell(row=row, column=column, path=path, fields=tuple(fields)))
        name = str(attrs.get("name") or self.source.name)
        return ZarrPlate(name=name, rows=rows, columns=columns, wells=tuple(wells))

    def field(self, path: str, series: int) -> ZarrImage:
        """A well's field: its own pixels, or those of the chosen label."""
        if not self.plate_label:
            return self.image(path, series, path)
        label_path = f"{path}/labels/{self.plate_label}"
        if label_path not in self.root:
            raise self.fail(label_path, f"is missing: the plate label {self.plate_label!r} "
                                        "(ImportOptions plateLabelName) must exist on every "
                                        "field of the plate")
        return self.image(label_path, series, path, name=f"{path} [{self.plate_label}]")

    def names(self, attrs: Mapping[str, Any], key: str) -> tuple[str, ...]:
        entries = attrs.get(key)
        if not isinstance(entries, list) or not entries:
            raise self.fail("", f"plate metadata lists no {key}")
        what = f"plate {key} entry"
        return tuple(str(self.mapping("", e, what).get("name", "")) for e in entries)

    def well_position(self, well: Mapping[str, Any], rows: tuple[str, ...],
                      columns: tuple[str, ...]) -> tuple[int, int]:
        """(row, column) from rowIndex/columnIndex (NGFF 0.4+), else from "A/1" paths."""
        path = str(well.get("path", ""))
        if "rowIndex" in well and "columnIndex" in well:
            row, column = well["rowIndex"], well["columnIndex"]
            if not isinstance(row, int) or not isinstance(column, int):
                raise self.fail(path, "well rowIndex and columnIndex must be whole numbers")
        else:
            parts = path.split("/")
            if len(parts) != 2 or parts[0] not in rows or parts[1] not in columns:
                raise self.fail(path, "well path is not <row>/<column> of the plate")
            row, column = rows.index(parts[0]), columns.index(parts[1])
        if not (0 <= row < len(rows) and 0 <= column < len(columns)):
            raise self.fail(path, f"well position ({row}, {column}) is outside the "
                                  f"{len(rows)}x{len(columns)} plate")
        return row, column


def _channel_names(omero: Any, size_c: int) -> tuple[str, ...]:
    """Labels of the omero metadata's channels, the index where one has none."""
    if not isinstance(omero, Mapping) or not isinstance(omero.get("channels"), list):
        return ()
    labels = [c.get("label") if isinstance(c, Mapping) else None for c in omero["channels"]]
    labels += [None] * (size_c - len(labels))
    return tuple(str(label) if label else str(i) for i, label in enumerate(labels[:size_c]))
