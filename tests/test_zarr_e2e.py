"""Registering OME-Zarr end to end: PostgreSQL order store → daemon →
DataPackageImporter → the OMERO double (real omero-py), with real Zarr stores
written here; ordinary files go through the real ``omero import`` wrapper."""

from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from omero_adi.settings import Settings, build_settings
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED
from tests.helpers import running_daemon
from tests.importer_standin.fixture import importer_site  # noqa: F401  (fixture)
from tests.test_import_e2e import Site, site  # noqa: F401  (site is a fixture)
from tests.test_zarr_meta import (  # noqa: F401  (fake_s3 is a fixture)
    FakeS3,
    fake_s3,
    new_store,
    set_ngff,
    write_bioformats2raw,
    write_image,
    write_plate,
)


def switched_on(site: Site, **settings: Any) -> Settings:
    return replace(site.settings, use_register_zarr=True, **settings)


def run(site: Site, settings: Settings, orders: dict[str, tuple[list[Path | str], str]]) -> None:
    """Submit ``{uuid: (paths, destination type)}`` to a daemon and wait for all."""
    with running_daemon(settings, site.engine, site.handler):
        for uuid, (paths, kind) in orders.items():
            site.submit(uuid, paths, type=kind)  # type: ignore[arg-type]
        site.wait(*orders)


def outcome(site: Site, uuid: str) -> tuple[str, str]:
    stage, description = site.outcome(uuid)
    return stage, description or ""


def annotations(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The double's MapAnnotations as (kind, object_id, values)."""
    found = []
    for annotation in state["annotations"].values():
        for kind, object_id in annotation["links"]:
            found.append({"kind": kind, "object_id": object_id,
                          "values": dict(annotation["values"])})
    return found


def registered_images(site: Site) -> dict[int, dict[str, Any]]:
    """The double's Images made by registration (imported ones have a fileset), as
    name, sizes, pixel type, channel names, lsid, owner and group names, Dataset."""
    state = site.omero.state()
    users = {u["id"]: u["name"] for u in state["users"].values()}
    groups = {g["id"]: g["name"] for g in state["groups"].values()}
    in_dataset = {i: int(d) for d, ds in state["datasets"].items() for i in ds["children"]}
    found = {}
    for key, image in state["images"].items():
        if image["fileset"] is not None:
            continue
        pixels = image["pixels"]
        found[int(key)] = {
            "name": image["name"], "sizes": pixels["sizes"], "pixel_type": pixels["pixel_type"],
            "channel_names": [c["name"] for c in pixels["channels"] if c["name"] is not None],
            "lsid": (image.get("external_info") or {}).get("lsid"),
            "owner": users[image["owner"]], "group": groups[image["group"]],
            "dataset": in_dataset.get(int(key)),
        }
    return found


def images_of(site: Site, uuid: str) -> list[dict[str, Any]]:
    """The registered Images an order's annotations point at, in order."""
    images = registered_images(site)
    return [images[a["object_id"]] for a in annotations(site.omero.state())
            if a["values"]["UUID"] == uuid and a["object_id"] in images]


def plates_of(state: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Plates with their Screen, and each Well's field Images."""
    in_screen = {p: int(s) for s, sc in state["screens"].items() for p in sc["children"]}
    found = {}
    for key, plate in state["plates"].items():
        wells = [{"row": w["row"], "column": w["column"],
                  "fields": [sample["image"] for sample in w["samples"]]}
                 for w in plate["wells"]]
        found[int(key)] = {**plate, "screen": in_screen.get(int(key)), "wells": wells,
                           "images": [i for w in wells for i in w["fields"]]}
    return found


def sizes(x: int, y: int, z: int = 1, c: int = 1, t: int = 1) -> dict[str, int]:
    return {"x": x, "y": y, "z": z, "c": c, "t": t}


def test_images_series_and_plates_are_registered(site: Site) -> None:  # noqa: F811
    v2, v3 = site.data / "v2" / "cells.zarr", site.data / "v3" / "cells.ome.zarr"
    write_image(new_store(v2, 2), shape=(1, 2, 3, 40, 50), dtype="uint8", channels=["A", "B"])
    write_image(new_store(v3, 3), shape=(5, 3, 1, 16, 32), dtype="float32", name="timelapse")
    (v3 / "metadata.csv").write_text("key,value\nstain,DAPI\n")  # inside, as for folders
    series = site.data / "series.zarr"
    write_bioformats2raw(series, 3)
    plate = site.data / "plate.zarr"
    write_plate(plate, 2, rows="AB", columns="123", fields=2)
    plate_v3 = site.data / "plate3.zarr"
    write_plate(plate_v3, 3, rows="A", columns="12", fields=1)

    run(site, switched_on(site), {
        "v2": ([v2], "Dataset"), "v3": ([v3], "Dataset"), "series": ([series], "Dataset"),
        "plate": ([plate], "Screen"), "plate3": ([plate_v3], "Screen"),
    })

    for uuid in ("v2", "v3", "series", "plate", "plate3"):
        stage, description = outcome(site, uuid)
        assert stage == STAGE_IMPORTED, description
    (image,) = images_of(site, "v2")
    assert (image["sizes"], image["pixel_type"], image["channel_names"], image["lsid"]) == (
        sizes(50, 40, 3, 2, 1), "uint8", ["A", "B"], str(v2))
    (image,) = images_of(site, "v3")
    assert (image["name"], image["sizes"], image["pixel_type"], image["lsid"]) == (
        "timelapse", sizes(32, 16, 1, 3, 5), "float", str(v3))
    assert [(i["sizes"], i["pixel_type"], i["lsid"]) for i in images_of(site, "series")] == [
        (sizes(48, 64, 5, 3), "uint8", f"{series}/0"), (sizes(10, 20), "float", f"{series}/1")]
    for image in registered_images(site).values():
        assert (image["owner"], image["group"]) == ("researcher", "Demo")
        assert image["dataset"] in (site.dataset, None)  # plate fields are in no Dataset

    state = site.omero.state()
    all_plates = plates_of(state)
    plates = {uuid: all_plates[a["object_id"]] for a in annotations(state)
              for uuid in ("plate", "plate3")
              if a["kind"] == "Plate" and a["values"]["UUID"] == uuid}
    big = plates["plate"]
    assert (big["rows"], big["columns"], big["screen"]) == (2, 3, site.screen)
    assert sorted((w["row"], w["column"]) for w in big["wells"]) == [
        (r, c) for r in range(2) for c in range(3)]
    assert {len(w["fields"]) for w in big["wells"]} == {2}
    fields = [registered_images(site)[i] for w in big["wells"] for i in w["fields"]]
    assert len(fields) == 12 == len(big["images"])
    assert all((f["pixel_type"], f["sizes"]) == ("int16", sizes(8, 8, c=2)) for f in fields)
    assert f"{plate}/B/3/1" in {f["lsid"] for f in fields}
    small = plates["plate3"]
    assert (small["rows"], small["columns"], len(small["images"])) == (1, 2, 2)

    values = {uuid: site.annotations(uuid) for uuid in ("v2", "v3", "series", "plate")}
    assert [len(v) for v in values.values()] == [1, 1, 2, 1]
    (v3_values,) = values["v3"]
    assert (v3_values["Filepath"], v3_values["csv_stain"]) == (str(v3), "DAPI")
    assert [a["Filepath"] for a in values["series"]] == [str(series)] * 2
    (plate_values,) = values["plate"]
    assert (plate_values["Filepath"], plate_values["DestinationType"],
            plate_values["DestinationID"]) == (str(plate), "Screen", str(site.screen))
    assert "Import_Timestamp" in plate_values
    series_ids = ", ".join(str(a["object_id"]) for a in annotations(state)
                           if a["values"]["UUID"] == "series")
    assert outcome(site, "series")[1] == (
        f"Registered 1 Zarr store(s) in Dataset {site.dataset}: {series} → Image {series_ids}")
    assert site.omero.java_calls() == []
    root = next(u["id"] for u in state["users"].values() if u["name"] == "root")
    assert all(s["closed"] for s in state["sessions"].values() if s["user"] != root)


def test_orders_mixing_zarr_and_ordinary_files(site: Site) -> None:  # noqa: F811
    store = site.data / "mixed" / "a.zarr"
    write_image(new_store(store, 3))
    tifs = [site.file("mixed/b.tif"), site.file("mixed/c.tif")]
    other = site.data / "broken" / "d.zarr"
    write_image(new_store(other, 2))
    broken = site.file("broken/e.tif", on_import="fail")
    before = site.checksums()

    run(site, switched_on(site), {"mixed": ([store, *tifs], "Dataset"),
                                  "broken": ([other, broken], "Dataset")})

    stage, description = outcome(site, "mixed")
    assert stage == STAGE_IMPORTED, description
    # a transient importer failure adds a line saying which run imported what (runs.py)
    lines = description.split("\n")
    registered = next(line for line in lines if line.startswith("Registered "))
    imported = next(line for line in lines if line.startswith("Imported "))
    assert registered.startswith(f"Registered 1 Zarr store(s) in Dataset {site.dataset}: {store}")
    assert imported.startswith(f"Imported 2 fileset(s) into Dataset {site.dataset}: {tifs[0]}")
    assert sorted(a["Filepath"] for a in site.annotations("mixed")) == sorted(
        map(str, [store, *tifs]))
    (image,) = images_of(site, "mixed")
    assert image["lsid"] == str(store)

    # one importer run per order (either may run first), holding only its ordinary files
    ordered = {str(p) for p in [store, *tifs, other, broken]}
    runs = sorted(sorted(ordered.intersection(call)) for call in site.omero.java_calls())
    assert runs == sorted([sorted(map(str, tifs)), [str(broken)]])
    stage, description = outcome(site, "broken")
    assert stage == STAGE_INGEST_FAILED
    # the server's import failed: its image-less fileset stays, and is not imported again
    assert description.startswith("Import failed: these filesets hold no Image (the server's "
                                  "import of them failed"), description
    assert f"Not imported: {broken}.\nFilesets without any Image: Fileset " in description
    (annotation,) = [a for a in annotations(site.omero.state())
                     if a["values"]["UUID"] == "broken"]
    assert description.endswith(
        f"Registered (annotated): {other} → Image {annotation['object_id']}.")
    assert annotation["values"]["Filepath"] == str(other)
    assert site.checksums() == before


def test_switched_off_zarr_goes_to_the_importer(site: Site) -> None:  # noqa: F811
    store = site.data / "off.zarr"
    write_image(new_store(store, 3))
    run(site, site.settings, {"off": ([store], "Dataset")})
    # (whether the stand-in finds anything importable in a store does not matter here)
    (call,) = site.omero.java_calls()
    assert call[-1] == str(store)
    assert registered_images(site) == {}


def test_use_register_zarr_from_the_environment(site: Site) -> None:  # noqa: F811
    values = {k: v for k, v in asdict(site.settings).items() if v is not None}
    settings = build_settings(values, {"USE_REGISTER_ZARR": "true"})
    assert settings.use_register_zarr
    store = site.data / "env.zarr"
    write_image(new_store(store, 2))
    run(site, settings, {"env": ([store], "Dataset")})
    assert outcome(site, "env")[0] == STAGE_IMPORTED
    assert [i["lsid"] for i in registered_images(site).values()] == [str(store)]
    assert site.omero.java_calls() == []


def test_s3_store_is_registered_with_its_uri(site: Site, fake_s3: FakeS3) -> None:  # noqa: F811
    local = site.data / "upload.zarr"
    write_bioformats2raw(local, 3)
    fake_s3.put(str(local), "s3://bucket/data/c.zarr", recursive=True)
    settings = switched_on(site, zarr_s3_endpoint="https://minio.example.org:9000")

    run(site, settings, {"s3": (["s3://bucket/data/c.zarr"], "Dataset"),
                         "gone": (["s3://bucket/data/gone.zarr"], "Dataset")})

    assert outcome(site, "s3")[0] == STAGE_IMPORTED
    assert [i["lsid"] for i in images_of(site, "s3")] == [
        f"s3://minio.example.org:9000/bucket/data/c.zarr/{n}/?anonymous=true" for n in (0, 1)]
    assert {a["Filepath"] for a in site.annotations("s3")} == {"s3://bucket/data/c.zarr"}
    stage, description = outcome(site, "gone")
    assert stage == STAGE_INGEST_FAILED
    assert description == "cannot register s3://bucket/data/gone.zarr: not a Zarr store " \
                          "(no .zgroup or zarr.json)"


def test_bad_stores_and_refused_orders_create_nothing(site: Site) -> None:  # noqa: F811
    good = site.data / "good.zarr"
    write_image(new_store(good, 3))
    empty = site.data / "empty.zarr"
    set_ngff(new_store(empty, 2), {"something": "else"})
    future = site.data / "future.zarr"
    write_bioformats2raw(future, 3, layout=9)
    corrupt = site.data / "corrupt.zarr"
    write_image(new_store(corrupt, 3))
    (corrupt / "zarr.json").write_text('{"zarr_format": 3, "node_ty')
    plate = site.data / "plate.zarr"
    write_plate(plate, 2)
    tif = site.file("x.tif")

    run(site, switched_on(site), {
        "empty": ([good, empty, tif], "Dataset"),
        "future": ([future], "Dataset"),
        "corrupt": ([corrupt], "Dataset"),
        "plate-in-dataset": ([plate], "Dataset"),
        "images-in-screen": ([good], "Screen"),
    })
    with running_daemon(switched_on(site), site.engine, site.handler):
        site.submit("outsider", [good], user="alice")
        site.wait("outsider")

    reasons = {
        "empty": f"cannot register {empty}: no OME-Zarr metadata",
        "future": "bioformats2raw.layout version 9",
        "corrupt": f"cannot register {corrupt}: cannot read the Zarr store (JSONDecode",
        "plate-in-dataset": f"{plate} is a plate: order it into a Screen, not a Dataset",
        "images-in-screen": f"{good} holds images, not a plate: order it into a Dataset",
        "outsider": "user 'alice' is not a member of group 'Demo'; nothing was imported",
    }
    for uuid, reason in reasons.items():
        stage, description = outcome(site, uuid)
        assert stage == STAGE_INGEST_FAILED
        assert reason in description, description
    state = site.omero.state()
    assert (state["images"], state["plates"], state["annotations"]) == ({}, {}, {})
    assert site.omero.java_calls() == []


def test_missing_zarr_library_fails_the_order_saying_what_to_install(
    site: Site, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    store = site.data / "a.zarr"
    write_image(new_store(store, 2))
    monkeypatch.setitem(sys.modules, "zarr", None)  # `import zarr` now raises ImportError
    for module in ("omero_adi.importing.zarr_register", "omero_adi.importing.zarr_meta"):
        monkeypatch.delitem(sys.modules, module)

    run(site, switched_on(site), {"nozarr": ([store], "Dataset")})

    stage, description = outcome(site, "nozarr")
    assert stage == STAGE_INGEST_FAILED
    assert "the zarr library is missing" in description
    assert "pip install 'omero-adi[zarr]'" in description
    assert registered_images(site) == {} and site.omero.java_calls() == []
