"""The HQL the double answers: exact strings, each the one a real caller sends.

Sources of the strings: ``omero_adi/omero/blitz.py`` (BlitzUserSession), and
omero-py's ``omero/gateway/__init__.py`` (``BlitzObjectWrapper._getQueryString``
and ``_PlateWrapper._getQueryString`` for ``getObject``/``getObjects``;
``BlitzGateway.setChannelNames``). Any other query raises
``omero.ApiUsageException`` naming it: the double never answers a query it
does not understand with an empty result.
"""

from __future__ import annotations

from typing import Any, Callable

import omero
import omero.model
from omero.rtypes import rlong, rstring, unwrap

from tests.omero_double import convert
from tests.omero_double.world import DoubleError

#: Pixel types the server knows (PixelsType enumeration, ids as in a fresh database).
PIXELS_TYPES = ("bit", "int8", "int16", "int32", "uint8", "uint16", "uint32", "float", "double")

_BASE = ("select obj from {cls} obj join fetch obj.details.owner as owner "
         "left outer join fetch obj.details.externalInfo join fetch obj.details.creationEvent")
_PLATE = ("select obj from Plate as obj join fetch obj.details.owner as owner "
          "join fetch obj.details.creationEvent left outer join fetch obj.screenLinks spl "
          "left outer join fetch spl.parent sc")

Handler = Callable[[convert.Caller, dict[str, Any]], list[Any]]
QUERIES: dict[str, Handler] = {}


def _param(params: dict[str, Any], name: str, query: str) -> Any:
    if name not in params:
        raise DoubleError("omero.ApiUsageException",
                          f"query parameter :{name} not given for {query!r}")
    return params[name]


def _visible(caller: convert.Caller, table: str, ids: list[int] | None = None,
             **equal: Any) -> list[dict[str, Any]]:
    rows = [r for r in caller.world.table(table).values() if caller.sees(r)]
    if ids is not None:
        rows = [r for r in rows if r["id"] in ids]
    for key, value in equal.items():
        rows = [r for r in rows if r.get(key) == value]
    return sorted(rows, key=lambda r: r["id"])


def _get_objects(cls: str, table: str) -> None:
    """getObject/getObjects(cls, ids) and getObjects(cls, attributes={"name": …})."""
    base = _PLATE if cls == "Plate" else _BASE.format(cls=cls)

    def by_ids(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
        ids = _param(params, "ids", base)
        return [convert.model_object(caller, table, r) for r in _visible(caller, table, ids)]

    def by_name(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
        name = _param(params, "name", base)
        return [convert.model_object(caller, table, r)
                for r in _visible(caller, table, name=name)]

    QUERIES[base + " where obj.id in (:ids)"] = by_ids
    QUERIES[base + " where obj.name=:name"] = by_name


for _cls, _table in (("Dataset", "datasets"), ("Screen", "screens"), ("Image", "images"),
                     ("Plate", "plates")):
    _get_objects(_cls, _table)


def _experimenters(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
    """Experimenters and groups are system types: every user may read them
    (BasicACLVoter.allowLoad)."""
    ids = _param(params, "ids", "Experimenter")
    return [convert.experimenter_with_groups(caller.world, i) for i in sorted(ids)
            if caller.world.get("users", i) is not None]


def _groups(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
    ids = _param(params, "ids", "ExperimenterGroup")
    return [convert.group_with_members(caller.world, i) for i in sorted(ids)
            if caller.world.get("groups", i) is not None]


QUERIES[("select obj from Experimenter as obj left outer join fetch obj.groupExperimenterMap "
         "as groupExperimenterMap left outer join fetch groupExperimenterMap.parent g "
         "where obj.id in (:ids)")] = _experimenters
QUERIES[("select obj from ExperimenterGroup as obj left outer join fetch "
         "obj.groupExperimenterMap as map left outer join fetch map.child e "
         "where obj.id in (:ids)")] = _groups


def _group_name(table: str) -> Handler:
    def run(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
        rows = _visible(caller, table, [_param(params, "id", table)])
        return [[rstring(caller.world.group(r["group"])["name"])] for r in rows]
    return run


QUERIES["select o.details.group.name from Dataset o where o.id = :id"] = _group_name("datasets")
QUERIES["select o.details.group.name from Screen o where o.id = :id"] = _group_name("screens")


def _filesets(caller: convert.Caller, params: dict[str, Any], query: str
              ) -> list[dict[str, Any]]:
    ids = _param(params, "ids", query)
    if not isinstance(ids, list) or not ids:  # "in ()" is not valid SQL
        raise DoubleError("omero.ApiUsageException", f":ids must be a non-empty list in {query!r}")
    return _visible(caller, "filesets", ids)


def _template_prefixes(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
    return [[rlong(f["id"]), rstring(f["template_prefix"])]
            for f in _filesets(caller, params, "Fileset")]


def _client_paths(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
    return [[rlong(f["id"]), rstring(e["client_path"])]
            for f in _filesets(caller, params, "FilesetEntry") for e in f["entries"]]


def _fileset_images(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
    ids = {f["id"] for f in _filesets(caller, params, "Image")}
    return [[rlong(i["fileset"]), rlong(i["id"])] for i in _visible(caller, "images")
            if i.get("fileset") in ids]


def _fileset_plates(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
    ids = {f["id"] for f in _filesets(caller, params, "WellSample")}
    fileset_of = {i["id"]: i["fileset"] for i in _visible(caller, "images")
                  if i.get("fileset") in ids}
    return [[rlong(fid), rlong(pid)] for fid, pid in sorted({
        (fileset_of[s["image"]], p["id"]) for p in _visible(caller, "plates")
        for w in p["wells"] for s in w["samples"] if s["image"] in fileset_of})]


def _session_filesets(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
    """Filesets whose creation event belongs to the session (Event.session)."""
    uuid = _param(params, "uuid", "Fileset")
    return [[rlong(f["id"])] for f in _visible(caller, "filesets") if f.get("session") == uuid]


QUERIES.update({
    ("select f.id from Fileset f where f.details.creationEvent.session.uuid = :uuid "
     "order by f.id"): _session_filesets,
    "select f.id, f.templatePrefix from Fileset f where f.id in (:ids)": _template_prefixes,
    "select e.fileset.id, e.clientPath from FilesetEntry e where e.fileset.id in (:ids)":
        _client_paths,
    "select i.fileset.id, i.id from Image i where i.fileset.id in (:ids) order by i.id":
        _fileset_images,
    ("select distinct ws.image.fileset.id, ws.well.plate.id from WellSample ws "
     "where ws.image.fileset.id in (:ids)"): _fileset_plates,
})


def _pixels_type(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
    value = _param(params, "value", "PixelsType")
    if value not in PIXELS_TYPES:
        return []
    found = omero.model.PixelsTypeI(PIXELS_TYPES.index(value) + 1, True)
    found.value = rstring(value)
    found.bitSize = omero.rtypes.rint(1 if value == "bit" else 64 if value == "double" else
                                      32 if value in ("float", "int32", "uint32") else
                                      16 if "16" in value else 8)
    return [found]


def _channel_pixels(caller: convert.Caller, params: dict[str, Any]) -> list[Any]:
    """BlitzGateway.setChannelNames: Pixels with Channels, LogicalChannels, Image."""
    ids = _param(params, "ids", "Pixels")
    out = []
    for image in _visible(caller, "images", ids):
        pixels = image.get("pixels")
        if pixels is None:
            continue
        p = omero.model.PixelsI(pixels["id"], True)
        p.sizeC = omero.rtypes.rint(pixels["sizes"]["c"])
        p.image = convert.model_object(caller, "images", image)
        for channel in pixels["channels"]:
            c = omero.model.ChannelI(channel["id"], True)
            lc = omero.model.LogicalChannelI(channel["logical_channel"], True)
            lc.name = rstring(channel["name"]) if channel["name"] is not None else None
            c.logicalChannel = lc
            p.addChannel(c)
        convert.with_details(caller, p, image)
        out.append(p)
    return out


QUERIES["from PixelsType p where p.value = :value"] = _pixels_type
QUERIES[("select p from Pixels p left outer join fetch p.channels as c "
         "join fetch c.logicalChannel as lc join fetch p.image as i where i.id in (:ids)")] = \
    _channel_pixels


def run(caller: convert.Caller, query: str, params: Any) -> list[Any]:
    """The rows (or objects) of ``query``; ApiUsageException for any other query."""
    handler = QUERIES.get(query)
    if handler is None:
        raise DoubleError("omero.ApiUsageException",
                          f"omero-double does not understand the query {query!r}")
    values = {k: unwrap(v) for k, v in ((params.map or {}) if params else {}).items()}
    return handler(caller, values)
