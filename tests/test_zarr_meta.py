"""Reading OME-Zarr metadata from real stores written here, Zarr v2 (NGFF 0.4) and v3 (0.5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import fsspec
import pytest
import zarr
from fsspec.implementations.memory import MemoryFileSystem

from omero_adi.importing.zarr_meta import ZarrError, ZarrImage, ZarrSource, read_zarr

FORMATS = pytest.mark.parametrize("zarr_format", [2, 3])
ZarrFormat = Literal[2, 3]


# --- store builders (also used by test_zarr_register) ------------------------
def set_ngff(group: zarr.Group, attrs: dict[str, Any]) -> None:
    """NGFF attributes: under "ome" for v3 (0.5), at the top level for v2 (0.4)."""
    if group.metadata.zarr_format == 3:
        group.attrs["ome"] = {"version": "0.5", **attrs}
    else:
        group.attrs.update(attrs)


def write_image(
    root: zarr.Group,
    path: str = "",
    shape: Sequence[int] = (2, 3, 4, 16, 32),
    axes: str = "tczyx",
    dtype: str = "uint16",
    channels: Sequence[str] | None = None,
    name: str | None = None,
) -> None:
    """A two-level multiscales image at ``path`` of ``root``."""
    group = root.require_group(path) if path else root
    group.create_array("0", shape=tuple(shape), dtype=dtype)
    half = tuple(s // 2 if a in "xy" else s for a, s in zip(axes, shape))
    group.create_array("1", shape=half, dtype=dtype)
    multiscale: dict[str, Any] = {
        "axes": [{"name": a, "type": "space" if a in "zyx" else {"t": "time", "c": "channel"}[a]}
                 for a in axes],
        "datasets": [{"path": "0"}, {"path": "1"}],
    }
    if group.metadata.zarr_format == 2:
        multiscale["version"] = "0.4"
    if name:
        multiscale["name"] = name
    attrs: dict[str, Any] = {"multiscales": [multiscale]}
    if channels is not None:
        attrs["omero"] = {"channels": [{"label": c, "color": "FFFFFF"} for c in channels]}
    set_ngff(group, attrs)


def new_store(path: Path, zarr_format: ZarrFormat) -> zarr.Group:
    return zarr.open_group(path, mode="w", zarr_format=zarr_format)


def write_bioformats2raw(path: Path, zarr_format: ZarrFormat, layout: int = 3,
                         ome_xml: str | None = None, series_attr: bool = False) -> None:
    """A collection of two series: 0 (uint8, 3 channels) and 1 (float32, 2D)."""
    root = new_store(path, zarr_format)
    set_ngff(root, {"bioformats2raw.layout": layout})
    write_image(root, "0", shape=(1, 3, 5, 64, 48), dtype="uint8")
    write_image(root, "1", shape=(20, 10), axes="yx", dtype="float32")
    ome = root.require_group("OME")
    if series_attr:
        set_ngff(ome, {"series": ["0", "1"]})
    if ome_xml is not None:
        (path / "OME" / "METADATA.ome.xml").write_text(ome_xml)


def write_plate(path: Path, zarr_format: ZarrFormat, rows: str = "AB", columns: str = "123",
                fields: int = 2) -> None:
    """An HCS plate, every well filled, each field a (c=2, y=8, x=8) int16 image."""
    root = new_store(path, zarr_format)
    wells: list[dict[str, Any]] = [{"path": f"{r}/{c}", "rowIndex": ri, "columnIndex": ci}
             for ri, r in enumerate(rows) for ci, c in enumerate(columns)]
    set_ngff(root, {"plate": {
        "name": "test plate",
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": c} for c in columns],
        "wells": wells,
        "field_count": fields,
    }})
    for well in wells:
        group = root.require_group(well["path"])
        set_ngff(group, {"well": {"images": [{"path": str(f)} for f in range(fields)]}})
        for f in range(fields):
            write_image(root, f"{well['path']}/{f}", shape=(2, 8, 8), axes="cyx", dtype="int16")


def rewrite_wells(store: Path, change: Callable[[list[dict[str, Any]]], list[Any]]) -> None:
    """Replace the plate's well list (a v2 store) by ``change(wells)``."""
    group = zarr.open_group(store, mode="a", zarr_format=2)
    plate: dict[str, Any] = group.attrs.asdict()["plate"]  # type: ignore[assignment]
    plate["wells"] = change(plate["wells"])
    group.attrs["plate"] = plate


def local(path: Path) -> ZarrSource:
    return ZarrSource(str(path))


def dims(image: ZarrImage) -> tuple[int, int, int, int, int]:
    return image.size_x, image.size_y, image.size_z, image.size_c, image.size_t


# --- images ----------------------------------------------------------------
@FORMATS
def test_single_image_dimensions_pixel_type_and_channels(
    tmp_path: Path, zarr_format: ZarrFormat
) -> None:
    store = tmp_path / "cells.ome.zarr"
    write_image(new_store(store, zarr_format), channels=["DAPI", "GFP", "RFP"], name="cells")

    content = read_zarr(local(store))

    assert content.plate is None
    (image,) = content.images
    assert dims(image) == (32, 16, 4, 3, 2)
    assert image.pixel_type == "uint16"
    assert image.channel_names == ("DAPI", "GFP", "RFP")
    assert (image.name, image.path, image.series) == ("cells", "", 0)
    assert image.uri == str(store)


@pytest.mark.parametrize(
    ("dtype", "pixel_type"),
    [("int8", "int8"), ("uint8", "uint8"), ("int16", "int16"), ("uint16", "uint16"),
     ("int32", "int32"), ("uint32", "uint32"), ("float32", "float"), ("float64", "double")],
)
def test_dtypes_map_to_omero_pixel_types(tmp_path: Path, dtype: str, pixel_type: str) -> None:
    write_image(new_store(tmp_path / "i.zarr", 3), shape=(4, 4), axes="yx", dtype=dtype)
    assert read_zarr(local(tmp_path / "i.zarr")).images[0].pixel_type == pixel_type


def test_missing_axes_default_sizes_and_name(tmp_path: Path) -> None:
    """A 2D image without omero metadata: z, c, t are 1, no channel names, named after the store."""
    write_image(new_store(tmp_path / "flat.zarr", 2), shape=(7, 9), axes="yx")
    (image,) = read_zarr(local(tmp_path / "flat.zarr")).images
    assert dims(image) == (9, 7, 1, 1, 1)
    assert image.channel_names == ()
    assert image.name == "flat.zarr"


def test_missing_channel_labels_fall_back_to_the_index(tmp_path: Path) -> None:
    write_image(new_store(tmp_path / "i.zarr", 2), shape=(3, 4, 4), axes="cyx", channels=["a"])
    assert read_zarr(local(tmp_path / "i.zarr")).images[0].channel_names == ("a", "1", "2")


# --- bioformats2raw.layout ---------------------------------------------------
OME_XML = """<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">
  <Image ID="Image:0" Name="Scene #1"/>
  <Image ID="Image:1" Name="Scene #2"/>
</OME>"""


@FORMATS
@pytest.mark.parametrize("how", ["numbered groups", "OME series attribute", "OME-XML"])
def test_bioformats2raw_layout_one_image_per_series(
    tmp_path: Path, zarr_format: ZarrFormat, how: str
) -> None:
    store = tmp_path / "converted.zarr"
    write_bioformats2raw(store, zarr_format, series_attr=how == "OME series attribute",
                         ome_xml=OME_XML if how == "OME-XML" else None)

    images = read_zarr(local(store)).images

    assert [i.series for i in images] == [0, 1]
    assert [i.path for i in images] == ["0", "1"]
    first, second = images
    assert dims(first) == (48, 64, 5, 3, 1)
    assert (second.size_x, second.size_y, second.size_c) == (10, 20, 1)
    assert (first.pixel_type, second.pixel_type) == ("uint8", "float")
    assert first.uri == f"{store}/0"
    if how == "OME-XML":
        assert [i.name for i in images] == ["Scene #1", "Scene #2"]
    else:
        assert [i.name for i in images] == ["converted.zarr [0]", "converted.zarr [1]"]


def test_bioformats2raw_series_listed_but_missing(tmp_path: Path) -> None:
    store = tmp_path / "c.zarr"
    write_bioformats2raw(store, 2)
    zarr.open_group(store / "OME", mode="a", zarr_format=2).attrs["series"] = ["0", "1", "2"]
    with pytest.raises(ZarrError, match=r"c.zarr/2: is missing"):
        read_zarr(local(store))


# --- plates ------------------------------------------------------------------
@FORMATS
def test_plate_geometry_wells_and_fields(tmp_path: Path, zarr_format: ZarrFormat) -> None:
    store = tmp_path / "plate.zarr"
    write_plate(store, zarr_format)

    content = read_zarr(local(store))

    assert content.images == ()
    plate = content.plate
    assert plate is not None
    assert (plate.name, plate.rows, plate.columns) == ("test plate", ("A", "B"), ("1", "2", "3"))
    positions = sorted((w.row, w.column) for w in plate.wells)
    assert positions == [(r, c) for r in range(2) for c in range(3)]
    assert all(len(w.fields) == 2 for w in plate.wells)
    assert [i.series for i in plate.images] == list(range(12))
    field = plate.wells[4].fields[1]
    assert (field.path, field.name, field.uri) == ("B/2/1", "B/2/1", f"{store}/B/2/1")
    assert (field.size_x, field.size_y, field.size_c, field.pixel_type) == (8, 8, 2, "int16")


def test_plate_wells_without_indices_are_placed_by_path(tmp_path: Path) -> None:
    store = tmp_path / "plate.zarr"
    write_plate(store, 2)
    rewrite_wells(store, lambda wells: [{"path": w["path"]} for w in wells])
    wells = read_zarr(local(store)).plate.wells  # type: ignore[union-attr]
    assert [(w.path, w.row, w.column) for w in wells][-1] == ("B/3", 1, 2)


# --- malformed or unsupported -----------------------------------------------
@FORMATS
def test_no_multiscales(tmp_path: Path, zarr_format: ZarrFormat) -> None:
    store = tmp_path / "empty.zarr"
    new_store(store, zarr_format).attrs["something"] = "else"
    with pytest.raises(ZarrError, match="no OME-Zarr metadata"):
        read_zarr(local(store))


@FORMATS
def test_unknown_bioformats2raw_layout_version(tmp_path: Path, zarr_format: ZarrFormat) -> None:
    store = tmp_path / "future.zarr"
    write_bioformats2raw(store, zarr_format, layout=9)
    with pytest.raises(ZarrError, match=r"bioformats2raw.layout version 9 .*only 3 is known"):
        read_zarr(local(store))


def test_not_a_zarr_directory(tmp_path: Path) -> None:
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "image.tif").write_bytes(b"II*\0")
    with pytest.raises(ZarrError, match=r"plain.zarr: not a Zarr store"):
        read_zarr(local(tmp_path / "plain.zarr"))


def test_missing_store(tmp_path: Path) -> None:
    with pytest.raises(ZarrError, match=r"gone.zarr: cannot read"):
        read_zarr(local(tmp_path / "gone.zarr"))


def test_corrupt_zarr_json_is_unreadable(tmp_path: Path) -> None:
    store = tmp_path / "corrupt.zarr"
    write_image(new_store(store, 3))
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')
    with pytest.raises(ZarrError, match=r"corrupt.zarr: cannot read the Zarr store \(JSONDecode"):
        read_zarr(local(store))


def test_multiscales_without_datasets(tmp_path: Path) -> None:
    store = tmp_path / "i.zarr"
    set_ngff(new_store(store, 2), {"multiscales": [{"axes": ["y", "x"], "datasets": []}]})
    with pytest.raises(ZarrError, match="multiscales has no datasets"):
        read_zarr(local(store))


def test_axes_that_omero_cannot_show(tmp_path: Path) -> None:
    store = tmp_path / "i.zarr"
    root = new_store(store, 2)
    root.create_array("0", shape=(3, 4, 4), dtype="uint8")
    set_ngff(root, {"multiscales": [{"axes": ["angle", "y", "x"], "datasets": [{"path": "0"}]}]})
    with pytest.raises(ZarrError, match=r"axes \['angle', 'y', 'x'\] are not supported"):
        read_zarr(local(store))


def test_pixel_type_omero_lacks(tmp_path: Path) -> None:
    write_image(new_store(tmp_path / "i.zarr", 3), shape=(4, 4), axes="yx", dtype="int64")
    with pytest.raises(ZarrError, match="pixel type int64 is not supported"):
        read_zarr(local(tmp_path / "i.zarr"))


@pytest.mark.parametrize(
    ("extra_well", "reason"),
    [({"path": "A/2", "rowIndex": 0, "columnIndex": 1}, r"A/2: well position \(0, 1\) is outside"),
     ({"path": "A/1x", "rowIndex": 0, "columnIndex": 0}, r"plate.zarr/A/1x: is missing")],
)
def test_plate_well_outside_the_plate_or_missing(tmp_path: Path, extra_well: dict[str, Any],
                                                 reason: str) -> None:
    store = tmp_path / "plate.zarr"
    write_plate(store, 2, rows="A", columns="1", fields=1)
    rewrite_wells(store, lambda wells: [*wells, extra_well])
    with pytest.raises(ZarrError, match=reason):
        read_zarr(local(store))


def test_only_local_and_s3_sources() -> None:
    with pytest.raises(ZarrError, match="only local paths and s3:// URIs"):
        ZarrSource("https://example.org/x.zarr")
    with pytest.raises(ZarrError, match="absolute path"):
        ZarrSource("data/x.zarr")


# --- s3:// -------------------------------------------------------------------
class FakeS3(MemoryFileSystem):
    """An in-memory ``s3://`` filesystem that records the options it was opened with."""

    protocol = ("s3",)
    opened_with: list[dict[str, Any]] = []

    def __init__(self, *args: Any, **options: Any):
        FakeS3.opened_with.append(options)
        super().__init__(*args, **options)


@pytest.fixture
def fake_s3() -> Iterator[FakeS3]:
    original = fsspec.get_filesystem_class("s3")
    fsspec.register_implementation("s3", FakeS3, clobber=True)
    FakeS3.opened_with.clear()
    fs = FakeS3(skip_instance_cache=True)
    try:
        yield fs
    finally:
        if fs.exists("s3://bucket"):
            fs.rm("s3://bucket", recursive=True)
        fsspec.register_implementation("s3", original, clobber=True)


def test_s3_store_is_read_with_endpoint_and_anonymous_access(
    tmp_path: Path, fake_s3: FakeS3
) -> None:
    write_bioformats2raw(tmp_path / "c.zarr", 3)
    fake_s3.put(str(tmp_path / "c.zarr"), "s3://bucket/data/c.zarr", recursive=True)
    source = ZarrSource("s3://bucket/data/c.zarr", s3_endpoint="https://minio.example.org:9000")

    images = read_zarr(source).images

    assert [(i.size_x, i.size_y) for i in images] == [(48, 64), (10, 20)]
    options = FakeS3.opened_with[-1]
    assert options["anon"] is True
    assert options["client_kwargs"] == {"endpoint_url": "https://minio.example.org:9000"}
    assert images[1].uri == "s3://minio.example.org:9000/bucket/data/c.zarr/1/?anonymous=true"


def test_s3_missing_store(fake_s3: FakeS3) -> None:
    with pytest.raises(ZarrError, match=r"s3://bucket/none.zarr: not a Zarr store"):
        read_zarr(ZarrSource("s3://bucket/none.zarr"))


@pytest.mark.parametrize(
    ("endpoint", "anonymous", "options", "uri"),
    [
        ("", True, {"anon": True}, "s3://s3.us-east-1.amazonaws.com/b/k.zarr/0/?anonymous=true"),
        ("minio:9000", False,
         {"anon": False, "client_kwargs": {"endpoint_url": "https://minio:9000"}},
         "s3://minio:9000/b/k.zarr/0/"),
        ("http://10.0.0.5:9000", True,
         {"anon": True, "client_kwargs": {"endpoint_url": "http://10.0.0.5:9000"}},
         "s3://10.0.0.5:9000/b/k.zarr/0/?anonymous=true"),
    ],
)
def test_s3_storage_options_and_pixels_uri(endpoint: str, anonymous: bool,
                                            options: dict[str, Any], uri: str) -> None:
    source = ZarrSource("s3://b/k.zarr/", s3_endpoint=endpoint, s3_anonymous=anonymous)
    assert source.storage_options() == options
    assert source.pixels_uri("0") == uri
