"""IQuery, IUpdate and IPixels of the double: the data the daemon reads and writes.

IUpdate accepts only the object graphs real callers send (omero_adi's Zarr
registration, ezomero's ``post_map_annotation`` through BlitzGateway, a new
Dataset), checking rights as the server does: a new object goes into the
call's group, which must be a real group (ome/security/basic/BasicSecuritySystem
refuses writes with ``omero.group=-1`` unless the graph names the group);
links need LINK (ANNOTATE for annotation links) on the parent
(BasicACLVoter.allowUpdateOrDelete). Anything else raises, naming the class.
"""

from __future__ import annotations

import copy
from typing import Any

import omero
import omero.api
import omero.model
import omero.all  # noqa: F401  (every generated class: clients may send any of them)
from omero.rtypes import rlong, unwrap

from tests.omero_double import convert, hql
from tests.omero_double.dispatch import WorldServant, amd, void
from tests.omero_double.world import DoubleError, World

_LINKS = {  # link class → (parent table, child table, right needed on the parent)
    "DatasetImageLinkI": ("datasets", "images", "w"),
    "ScreenPlateLinkI": ("screens", "plates", "w"),
    "ImageAnnotationLinkI": ("images", "annotations", "a"),
    "PlateAnnotationLinkI": ("plates", "annotations", "a"),
    "DatasetAnnotationLinkI": ("datasets", "annotations", "a"),
    "ScreenAnnotationLinkI": ("screens", "annotations", "a"),
}


def _caller(world: World, current: Any) -> convert.Caller:
    return convert.Caller.of(world, current.id.category, current.ctx)


@amd
class QueryService(WorldServant, omero.api.IQuery):
    def findAllByQuery(self, query: str, params: Any, current: Any = None) -> list[Any]:
        with self.world.lock:
            return hql.run(_caller(self.world, current), query, params)

    def findByQuery(self, query: str, params: Any, current: Any = None) -> Any:
        with self.world.lock:
            found = hql.run(_caller(self.world, current), query, params)
        if len(found) > 1:  # QueryImpl.findByQuery: uniqueResult()
            raise DoubleError("omero.ApiUsageException",
                              f"query returned {len(found)} results: {query!r}")
        return found[0] if found else None

    def projection(self, query: str, params: Any, current: Any = None) -> list[Any]:
        with self.world.lock:
            return hql.run(_caller(self.world, current), query, params)

    def get(self, klass: str, oid: int, current: Any = None) -> Any:
        with self.world.lock:
            caller = _caller(self.world, current)
            # omero/util/IceMapper.omeroClass: "Dataset", "DatasetI" (as the importer's
            # ModelImportTarget.load sends it), with or without "omero.model."
            name = klass.removeprefix("omero.model.")
            table = convert.TABLES.get(name) or convert.TABLES.get(name.removesuffix("I"))
            if table is None:
                raise DoubleError("omero.ApiUsageException",
                                  f"omero-double does not serve IQuery.get({klass!r})")
            record = self.world.get(table, oid)
            if record is None or not caller.sees(record):  # QueryImpl.get: ValidationException
                raise DoubleError("omero.ValidationException",
                                  f"No row with the given identifier exists: {klass}:{oid}")
            return convert.model_object(caller, table, record)


@amd
class PixelsService(WorldServant, omero.api.IPixels):
    def createImage(self, size_x: int, size_y: int, size_z: int, size_t: int,
                    channels: list[int], pixels_type: Any, name: str, description: str,
                    current: Any = None) -> Any:
        """PixelsImpl.createImage: an Image with Pixels and one Channel per entry."""
        world = self.world
        with world.lock:
            caller = _caller(world, current)
            if pixels_type is None or unwrap(pixels_type.value) not in hql.PIXELS_TYPES:
                raise DoubleError("omero.ValidationException", "unknown PixelsType")
            image = _new(caller, "images", name=name, fileset=None)
            image["pixels"] = {
                "id": world.new_id(), "pixel_type": unwrap(pixels_type.value),
                "sizes": {"x": size_x, "y": size_y, "z": size_z, "c": len(channels),
                          "t": size_t},
                "channels": [{"id": world.new_id(), "logical_channel": world.new_id(),
                              "name": None} for _ in channels]}
            world.save()
            return rlong(image["id"])


@amd
class UpdateService(WorldServant, omero.api.IUpdate):
    @void
    def saveObject(self, obj: Any, current: Any = None) -> None:
        self._save([obj], current)

    def saveAndReturnObject(self, obj: Any, current: Any = None) -> Any:
        return self._save([obj], current)[0]

    @void
    def saveArray(self, objs: list[Any], current: Any = None) -> None:
        self._save(objs, current)

    @void
    def saveCollection(self, objs: list[Any], current: Any = None) -> None:
        self._save(objs, current)

    def saveAndReturnArray(self, objs: list[Any], current: Any = None) -> list[Any]:
        return self._save(objs, current)

    def _save(self, objs: list[Any], current: Any) -> list[Any]:
        """One call, one transaction (UpdateImpl): all of ``objs`` are saved, or none."""
        world = self.world
        with world.lock:
            caller = _caller(world, current)
            before = copy.deepcopy(world.data)
            try:
                saver = _Saver(caller)
                saved = [saver.save(obj) for obj in objs]
            except BaseException:
                world.data = before
                raise
            world.save()
            return saved


def _writable_group(caller: convert.Caller, linked: int | None = None) -> int:
    """The group of a new object: the call's; with ``omero.group=-1`` the group of
    the object it is linked to, and without one a refusal
    (ome/security/basic/OmeroInterceptor.java, ticket:3529)."""
    if caller.group >= 0:
        return caller.group
    if linked is None:
        raise DoubleError("omero.SecurityViolation",
                          "Cannot create an object with omero.group=-1 and nothing it links to")
    return linked


def _new(caller: convert.Caller, table: str, linked: int | None = None,
         **fields: Any) -> dict[str, Any]:
    record = {"id": caller.world.new_id(), "owner": caller.user["id"],
              "group": _writable_group(caller, linked), **fields}
    caller.world.table(table)[str(record["id"])] = record
    return record


class _Saver:
    """Walks one incoming object graph the way the server would persist it."""

    def __init__(self, caller: convert.Caller):
        self.caller, self.world = caller, caller.world

    def save(self, obj: Any) -> Any:
        name = type(obj).__name__
        if name in _LINKS:
            return self._link(obj, *_LINKS[name])
        if obj.id is None and name in ("DatasetI", "MapAnnotationI", "PlateI"):
            return convert.model_object(self.caller, *self._create(obj))
        if name == "WellI" and obj.id is None:
            return self._well(obj)
        if name == "ImageI" and obj.id is not None:
            return self._image_update(obj)
        if name == "LogicalChannelI" and obj.id is not None:
            return self._logical_channel(obj)
        raise DoubleError("omero.ApiUsageException",
                          f"omero-double does not save {name} (id={unwrap(obj.id)})")

    def _create(self, obj: Any, linked: int | None = None) -> tuple[str, dict[str, Any]]:
        """A new Dataset, Plate or MapAnnotation; ``linked``: the group of what it links to."""
        name = type(obj).__name__
        if name == "DatasetI":
            return "datasets", _new(self.caller, "datasets", linked, name=unwrap(obj.name),
                                    description=unwrap(obj.description), children=[])
        if name == "PlateI":
            return "plates", _new(self.caller, "plates", linked, name=unwrap(obj.name),
                                  rows=unwrap(obj.rows), columns=unwrap(obj.columns), wells=[])
        if name == "MapAnnotationI":
            values = [[nv.name, nv.value] for nv in (obj.getMapValue() or [])]
            return "annotations", _new(self.caller, "annotations", linked, ns=unwrap(obj.ns),
                                       values=values, links=[])
        raise DoubleError("omero.ApiUsageException", f"omero-double does not create {name}")

    def _existing(self, table: str, obj: Any) -> dict[str, Any]:
        record = self.world.get(table, unwrap(obj.id))
        if record is None or not self.caller.sees(record):
            raise DoubleError("omero.SecurityViolation",
                              f"Cannot read {convert.CLASSES[table]}:{unwrap(obj.id)}")
        return record

    def _child(self, table: str, obj: Any, linked: int) -> tuple[dict[str, Any], Any]:
        if obj.id is None:
            table_created, record = self._create(obj, linked)
            return record, convert.model_object(self.caller, table_created, record)
        record = self._existing(table, obj)
        return record, convert.model_object(self.caller, table, record)

    def _link(self, link: Any, parent_table: str, child_table: str, right: str) -> Any:
        parent = self._existing(parent_table, link.parent)
        if not self.world.may_link(self.caller.user, parent, right):
            raise DoubleError("omero.SecurityViolation",
                              f"Cannot link to {convert.CLASSES[parent_table]}:{parent['id']}: "
                              f"{self.caller.user['name']} may not "
                              f"{'annotate' if right == 'a' else 'link'} it")
        child, child_obj = self._child(child_table, link.child, parent["group"])
        if child["group"] != parent["group"]:  # the server forbids links across groups
            raise DoubleError("omero.GroupSecurityViolation",
                              f"{convert.CLASSES[child_table]}:{child['id']} and "
                              f"{convert.CLASSES[parent_table]}:{parent['id']} are in "
                              "different groups")
        if child_table == "annotations":
            child["links"].append([convert.CLASSES[parent_table], parent["id"]])
        else:
            parent["children"].append(child["id"])
        saved = type(link)(self.world.new_id(), True)
        saved.parent = convert.model_object(self.caller, parent_table, parent)
        saved.child = child_obj
        return convert.with_details(self.caller, saved, child)

    def _well(self, well: Any) -> Any:
        plate = self._existing("plates", well.plate)
        if not self.world.may_link(self.caller.user, plate):
            raise DoubleError("omero.SecurityViolation", f"Cannot add a Well to Plate:{plate['id']}")
        samples = []
        for sample in well.copyWellSamples():
            image = self._existing("images", sample.image)
            samples.append({"id": self.world.new_id(), "image": image["id"]})
        record = {"id": self.world.new_id(), "row": unwrap(well.row),
                  "column": unwrap(well.column), "samples": samples}
        plate["wells"].append(record)
        saved = omero.model.WellI(record["id"], True)
        return convert.with_details(self.caller, saved, plate)

    def _image_update(self, image: Any) -> Any:
        record = self._existing("images", image)
        if not self.world.may_link(self.caller.user, record):  # EDIT: same rule as LINK here
            raise DoubleError("omero.SecurityViolation", f"Cannot update Image:{record['id']}")
        info = image.details.externalInfo
        if info is not None:
            record["external_info"] = {"entity_type": unwrap(info.entityType),
                                       "entity_id": unwrap(info.entityId),
                                       "lsid": unwrap(info.lsid)}
        record["name"] = unwrap(image.name) if image.name is not None else record["name"]
        return convert.model_object(self.caller, "images", record)

    def _logical_channel(self, lc: Any) -> Any:
        lcid = unwrap(lc.id)
        for image in self.world.table("images").values():
            for channel in (image.get("pixels") or {}).get("channels", []):
                if channel["logical_channel"] == lcid and self.caller.sees(image):
                    channel["name"] = unwrap(lc.name)
                    return lc
        raise DoubleError("omero.ValidationException", f"No LogicalChannel:{lcid}")
