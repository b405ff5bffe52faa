"""Registering OME-Zarr through a real user session (BlitzUserSession) on the OMERO double."""


from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
import zarr

from omero_adi.import_options import ImportOptions
from omero_adi.importing.results import RegisteredZarr
from omero_adi.importing.zarr_register import (
    register_zarr,
    split_paths,
)
from omero_adi.omero.blitz import BlitzServer
from omero_adi.omero.user_session import BlitzUserSession
from omero_adi.omero.sessions import SessionKeeper
from omero_adi.orders import DestinationType, Order
from omero_adi.pipeline import OrderFailed
from omero_adi.settings import Settings
from tests.omero_double.fixture import OmeroDouble
from tests.test_zarr_meta import (  # noqa: F401  (fake_s3 is a fixture)
    FakeS3,
    fake_s3,
    new_store,
    write_bioformats2raw,
    write_image,
    write_plate,
)


@pytest.fixture
def session(omero_double: OmeroDouble) -> Iterator[BlitzUserSession]:
    """A real user session (researcher in Demo) on the OMERO double."""
    env = omero_double.env
    server = BlitzServer(Settings(omero_host=env["OMERO_HOST"], omero_port=int(env["OMERO_PORT"]),
                                  omero_password=env["OMERO_PASSWORD"]))
    user_session = server.user_session("researcher", "Demo", 600_000)
    yield user_session
    user_session.close()
    server.close()


def make_order(files: list[str | Path], destination_type: DestinationType = "Dataset") -> Order:
    paths = tuple(Path(f) for f in files)
    return Order(event_id=1, uuid="order-1", group="Demo", user="researcher",
                 destination_id=DATASET if destination_type == "Dataset" else SCREEN,
                 destination_type=destination_type, files=paths,
                 file_names=tuple(p.name for p in paths))


def created(double: OmeroDouble) -> tuple[dict[str, Any], dict[str, Any]]:
    """The double's Images and Plates."""
    state = double.state()
    return state["images"], state["plates"]


DATASET, SCREEN = 151, 451  # the double's default world, owned by researcher
SWITCHED_ON = Settings(use_register_zarr=True)
LOG = logging.LoggerAdapter(logging.getLogger("test.zarr_register"), {})


def kept(session: BlitzUserSession) -> SessionKeeper:
    """``session`` for every step (it lives far longer than these tests)."""
    return SessionKeeper(lambda ttl_ms: session, ttl_ms=6_000_000, log=LOG)


# --- split_paths -------------------------------------------------------------
def test_split_paths_sends_zarr_to_registration() -> None:
    order = make_order(["/data/a.ome.zarr", "/data/b.tif", "/data/c.ZARR/", "s3://bucket/d.zarr",
                        "/data/e.zarr.txt"])
    to_register, to_import = split_paths(order)
    assert to_register == ("/data/a.ome.zarr", "/data/c.ZARR", "s3://bucket/d.zarr")
    assert to_import == (Path("/data/b.tif"), Path("/data/e.zarr.txt"))


# --- registration ------------------------------------------------------------
def test_images_and_series_are_created_in_the_dataset(
        tmp_path: Path, omero_double: OmeroDouble, session: BlitzUserSession) -> None:
    single = tmp_path / "single.zarr"
    write_image(new_store(single, 2), channels=["DAPI", "GFP", "RFP"])
    series = tmp_path / "series.zarr"
    write_bioformats2raw(series, 3)
    order = make_order([single, tmp_path / "notes.txt", series])

    to_register, _ = split_paths(order)
    results = register_zarr(order, to_register, SWITCHED_ON, kept(session), LOG)

    images, plates = created(omero_double)
    ids = sorted(int(i) for i in images)
    assert results == [RegisteredZarr(str(single), image_ids=(ids[0],)),
                       RegisteredZarr(str(series), image_ids=(ids[1], ids[2]))]
    assert omero_double.state()["datasets"][str(DATASET)]["children"] == ids
    made = [images[str(i)] for i in ids]
    assert [(i["pixels"]["sizes"]["c"], i["pixels"]["pixel_type"], i["external_info"]["lsid"])
            for i in made] == [(3, "uint16", str(single)), (3, "uint8", f"{series}/0"),
                               (1, "float", f"{series}/1")]
    assert [c["name"] for c in made[0]["pixels"]["channels"]] == ["DAPI", "GFP", "RFP"]
    assert {(i["owner"], i["group"], i["external_info"]["entity_type"]) for i in made} == {
        (2, 3, "com.glencoesoftware.ngff:multiscales")}
    assert plates == {}


def test_plate_is_created_in_the_screen(tmp_path: Path, omero_double: OmeroDouble,
                                        session: BlitzUserSession) -> None:
    store = tmp_path / "plate.zarr"
    write_plate(store, 3)
    order = make_order([store], destination_type="Screen")

    results = register_zarr(order, [str(store)], SWITCHED_ON, kept(session), LOG)

    images, plates = created(omero_double)
    ((plate_id, plate),) = plates.items()
    assert results == [RegisteredZarr(str(store), image_ids=(), plate_ids=(int(plate_id),))]
    assert omero_double.state()["screens"][str(SCREEN)]["children"] == [int(plate_id)]
    assert (plate["rows"], plate["columns"], len(plate["wells"])) == (2, 3, 6)
    assert {len(w["samples"]) for w in plate["wells"]} == {2}
    fields = {s["image"] for w in plate["wells"] for s in w["samples"]}
    assert fields == {int(i) for i in images} and len(fields) == 12
    assert omero_double.state()["datasets"][str(DATASET)]["children"] == []


def test_plate_ordered_into_a_dataset_fails(tmp_path: Path, omero_double: OmeroDouble,
                                            session: BlitzUserSession) -> None:
    write_plate(tmp_path / "plate.zarr", 2)
    order = make_order([tmp_path / "plate.zarr"])
    with pytest.raises(OrderFailed, match="is a plate: order it into a Screen"):
        register_zarr(order, [str(tmp_path / "plate.zarr")], SWITCHED_ON, kept(session), LOG)
    assert created(omero_double) == ({}, {})


def test_image_ordered_into_a_screen_fails(tmp_path: Path, omero_double: OmeroDouble,
                                           session: BlitzUserSession) -> None:
    write_image(new_store(tmp_path / "i.zarr", 3))
    order = make_order([tmp_path / "i.zarr"], destination_type="Screen")
    with pytest.raises(OrderFailed, match="holds images, not a plate"):
        register_zarr(order, [str(tmp_path / "i.zarr")], SWITCHED_ON, kept(session), LOG)
    assert created(omero_double) == ({}, {})


def test_a_malformed_store_fails_the_order_before_anything_is_created(
        tmp_path: Path, omero_double: OmeroDouble, session: BlitzUserSession) -> None:
    good = tmp_path / "good.zarr"
    write_image(new_store(good, 2))
    bad = tmp_path / "bad.zarr"
    write_bioformats2raw(bad, 2, layout=9)

    with pytest.raises(OrderFailed) as failed:
        register_zarr(make_order([good, bad]), [str(good), str(bad)], SWITCHED_ON, kept(session), LOG)

    assert str(failed.value) == (f"cannot register {bad}: bioformats2raw.layout version 9 is not "
                                 "supported (only 3 is known)")
    assert created(omero_double) == ({}, {})


def test_a_refused_destination_fails_with_the_server_s_reason(
        tmp_path: Path, omero_double: OmeroDouble) -> None:
    """``other`` may read researcher's Dataset in the read-annotate group, not link to it."""
    write_image(new_store(tmp_path / "i.zarr", 3))
    env = omero_double.env
    server = BlitzServer(Settings(omero_host=env["OMERO_HOST"], omero_port=int(env["OMERO_PORT"]),
                                  omero_password=env["OMERO_PASSWORD"]))
    other = server.user_session("other", "Demo", 600_000)
    with pytest.raises(OrderFailed, match=f"Cannot link to Dataset:{DATASET}") as failed:
        register_zarr(make_order([tmp_path / "i.zarr"]), [str(tmp_path / "i.zarr")],
                      SWITCHED_ON, kept(other), LOG)
    (orphan,) = created(omero_double)[0].values()  # made before the link was refused (#11)
    assert (orphan["owner"], orphan["external_info"]["lsid"]) == (3, str(tmp_path / "i.zarr"))
    assert (f"Created for {tmp_path / 'i.zarr'} before the failure: Image {orphan['id']}."
            in str(failed.value))  # named, so that it can be deleted
    other.close()
    server.close()


def test_s3_store_is_registered_with_the_settings_endpoint(
        tmp_path: Path, fake_s3: FakeS3, omero_double: OmeroDouble,  # noqa: F811
        session: BlitzUserSession) -> None:
    write_image(new_store(tmp_path / "i.zarr", 3), shape=(5, 6), axes="yx")
    fake_s3.put(str(tmp_path / "i.zarr"), "s3://bucket/i.zarr", recursive=True)
    settings = Settings(use_register_zarr=True, zarr_s3_endpoint="https://s3.example.org",
                        zarr_s3_anonymous=False)
    order = make_order(["s3://bucket/i.zarr"])

    to_register, _ = split_paths(order)
    register_zarr(order, to_register, settings, kept(session), LOG)

    ((image),) = created(omero_double)[0].values()
    assert (image["pixels"]["sizes"]["x"], image["pixels"]["sizes"]["y"],
            image["external_info"]["lsid"]) == (6, 5, "s3://s3.example.org/bucket/i.zarr/")
    assert FakeS3.opened_with[-1]["anon"] is False


# --- ImportOptions: a plate registered from an NGFF label (contracts §8) --------------------
def write_labels(store: Path, name: str, skip: str | None = None) -> None:
    """A uint32 (y, x) label ``name`` on every field of a v2 plate, except ``skip``."""
    root = zarr.open_group(store, mode="a", zarr_format=2)
    for row in "AB":
        for column in "123":
            for field_index in range(2):
                field = f"{row}/{column}/{field_index}"
                if field == skip:
                    continue
                labels = root.require_group(f"{field}/labels")
                labels.attrs["labels"] = [name]
                write_image(root, f"{field}/labels/{name}", shape=(8, 8), axes="yx",
                            dtype="uint32")


def label_order(store: Path, label: str = "nuclei") -> Order:
    return replace(make_order([store], destination_type="Screen"),
                   import_options=ImportOptions("label", label))


def test_label_plate_reads_every_field_from_the_label(
        tmp_path: Path, omero_double: OmeroDouble, session: BlitzUserSession) -> None:
    store = tmp_path / "plate.zarr"
    write_plate(store, 2)
    write_labels(store, "nuclei")

    results = register_zarr(label_order(store), [str(store)], SWITCHED_ON, kept(session), LOG)

    images, plates = created(omero_double)
    ((plate_id, plate),) = plates.items()
    assert results == [RegisteredZarr(str(store), image_ids=(), plate_ids=(int(plate_id),))]
    assert (plate["rows"], plate["columns"], len(plate["wells"])) == (2, 3, 6)
    assert len(images) == 12
    assert {i["external_info"]["lsid"] for i in images.values()} == {
        f"{store}/{well}/{field}/labels/nuclei"
        for well in ("A/1", "A/2", "A/3", "B/1", "B/2", "B/3") for field in (0, 1)}
    assert {(i["pixels"]["pixel_type"], i["pixels"]["sizes"]["c"], i["pixels"]["sizes"]["x"])
            for i in images.values()} == {("uint32", 1, 8)}


def test_label_plate_with_a_field_lacking_the_label_fails(
        tmp_path: Path, omero_double: OmeroDouble, session: BlitzUserSession) -> None:
    store = tmp_path / "plate.zarr"
    write_plate(store, 2)
    write_labels(store, "nuclei", skip="B/2/1")
    with pytest.raises(OrderFailed, match=r"B/2/1/labels/nuclei: is missing: the plate label "
                                          r"'nuclei' \(ImportOptions plateLabelName\)"):
        register_zarr(label_order(store), [str(store)], SWITCHED_ON, kept(session), LOG)
    assert created(omero_double) == ({}, {})
