"""Registering OME-Zarr through a fake user session that records what it is asked to create."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from omero_adi.importing.results import RegisteredZarr
from omero_adi.importing.zarr_meta import ZarrImage, ZarrPlate
from omero_adi.importing.zarr_register import (
    register_zarr,
    split_paths,
)
from omero_adi.orders import DestinationType, Order
from omero_adi.pipeline import OrderFailed
from omero_adi.settings import Settings
from tests.test_zarr_meta import (  # noqa: F401  (fake_s3 is a fixture)
    FakeS3,
    fake_s3,
    new_store,
    write_bioformats2raw,
    write_image,
    write_plate,
)


@dataclass
class RecordingSession:
    """The Zarr half of a user session: creates nothing, hands out ids, remembers calls."""

    images: list[tuple[ZarrImage, int]] = field(default_factory=list)
    plates: list[tuple[ZarrPlate, int]] = field(default_factory=list)
    next_id: int = 100

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def register_zarr_image(self, image: ZarrImage, dataset_id: int) -> int:
        self.images.append((image, dataset_id))
        return self._new_id()

    def register_zarr_plate(self, plate: ZarrPlate, screen_id: int) -> int:
        self.plates.append((plate, screen_id))
        return self._new_id()


def make_order(files: list[str | Path], destination_type: DestinationType = "Dataset") -> Order:
    paths = tuple(Path(f) for f in files)
    return Order(event_id=1, uuid="order-1", group="lab", user="alice", destination_id=7,
                 destination_type=destination_type, files=paths,
                 file_names=tuple(p.name for p in paths))


SWITCHED_ON = Settings(use_register_zarr=True)
LOG = logging.LoggerAdapter(logging.getLogger("test.zarr_register"), {})


# --- split_paths -------------------------------------------------------------
def test_split_paths_sends_zarr_to_registration() -> None:
    order = make_order(["/data/a.ome.zarr", "/data/b.tif", "/data/c.ZARR/", "s3://bucket/d.zarr",
                        "/data/e.zarr.txt"])
    to_register, to_import = split_paths(order)
    assert to_register == ("/data/a.ome.zarr", "/data/c.ZARR", "s3://bucket/d.zarr")
    assert to_import == (Path("/data/b.tif"), Path("/data/e.zarr.txt"))


# --- registration ------------------------------------------------------------
def test_images_and_series_are_created_in_the_dataset(tmp_path: Path) -> None:
    single = tmp_path / "single.zarr"
    write_image(new_store(single, 2), channels=["DAPI", "GFP", "RFP"])
    series = tmp_path / "series.zarr"
    write_bioformats2raw(series, 3)
    order = make_order([single, tmp_path / "notes.txt", series])
    session = RecordingSession()

    to_register, _ = split_paths(order)
    results = register_zarr(order, to_register, SWITCHED_ON, session, LOG)  # type: ignore[arg-type]

    assert results == [RegisteredZarr(str(single), image_ids=(101,)),
                       RegisteredZarr(str(series), image_ids=(102, 103))]
    assert [dataset for _, dataset in session.images] == [7, 7, 7]
    created = [image for image, _ in session.images]
    assert [(i.size_c, i.pixel_type, i.uri) for i in created] == [
        (3, "uint16", str(single)), (3, "uint8", f"{series}/0"), (1, "float", f"{series}/1")]
    assert created[0].channel_names == ("DAPI", "GFP", "RFP")
    assert session.plates == []


def test_plate_is_created_in_the_screen(tmp_path: Path) -> None:
    store = tmp_path / "plate.zarr"
    write_plate(store, 3)
    order = make_order([store], destination_type="Screen")
    session = RecordingSession()

    results = register_zarr(order, [str(store)], SWITCHED_ON, session, LOG)  # type: ignore[arg-type]

    assert results == [RegisteredZarr(str(store), image_ids=(), plate_ids=(101,))]
    ((plate, screen),) = session.plates
    assert screen == 7
    assert (len(plate.rows), len(plate.columns), len(plate.wells)) == (2, 3, 6)
    assert {len(w.fields) for w in plate.wells} == {2}
    assert session.images == []


def test_plate_ordered_into_a_dataset_fails(tmp_path: Path) -> None:
    write_plate(tmp_path / "plate.zarr", 2)
    order = make_order([tmp_path / "plate.zarr"])
    with pytest.raises(OrderFailed, match="is a plate: order it into a Screen"):
        register_zarr(order, [str(tmp_path / "plate.zarr")], SWITCHED_ON,
                      RecordingSession(), LOG)  # type: ignore[arg-type]


def test_image_ordered_into_a_screen_fails(tmp_path: Path) -> None:
    write_image(new_store(tmp_path / "i.zarr", 3))
    order = make_order([tmp_path / "i.zarr"], destination_type="Screen")
    with pytest.raises(OrderFailed, match="holds images, not a plate"):
        register_zarr(order, [str(tmp_path / "i.zarr")], SWITCHED_ON,
                      RecordingSession(), LOG)  # type: ignore[arg-type]


def test_a_malformed_store_fails_the_order_before_anything_is_created(tmp_path: Path) -> None:
    good = tmp_path / "good.zarr"
    write_image(new_store(good, 2))
    bad = tmp_path / "bad.zarr"
    write_bioformats2raw(bad, 2, layout=9)
    session = RecordingSession()

    with pytest.raises(OrderFailed) as failed:
        register_zarr(make_order([good, bad]), [str(good), str(bad)], SWITCHED_ON,
                      session, LOG)  # type: ignore[arg-type]

    assert str(failed.value) == (f"cannot register {bad}: bioformats2raw.layout version 9 is not "
                                 "supported (only 3 is known)")
    assert session.images == [] and session.plates == []


def test_s3_store_is_registered_with_the_settings_endpoint(tmp_path: Path,
                                                           fake_s3: FakeS3) -> None:  # noqa: F811
    write_image(new_store(tmp_path / "i.zarr", 3), shape=(5, 6), axes="yx")
    fake_s3.put(str(tmp_path / "i.zarr"), "s3://bucket/i.zarr", recursive=True)
    settings = Settings(use_register_zarr=True, zarr_s3_endpoint="https://s3.example.org",
                        zarr_s3_anonymous=False)
    order = make_order(["s3://bucket/i.zarr"])
    session = RecordingSession()

    to_register, _ = split_paths(order)
    register_zarr(order, to_register, settings, session, LOG)  # type: ignore[arg-type]

    ((image, _),) = session.images
    assert (image.size_x, image.size_y, image.uri) == (6, 5, "s3://s3.example.org/bucket/i.zarr/")
    assert FakeS3.opened_with[-1]["anon"] is False
