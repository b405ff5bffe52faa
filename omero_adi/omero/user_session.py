"""An order's user session on the real OMERO server: the lookups, annotations
and Zarr registrations done as the order's user (omero-py's BlitzGateway)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from omero_adi.omero.boundary import AnnotatedType, FilesetInfo, OmeroError
from omero_adi.omero.omero_py import naming, translated
from omero_adi.orders import DestinationType

if TYPE_CHECKING:
    from omero_adi.importing.zarr_meta import ZarrImage, ZarrPlate

#: Service context that searches every group the session may read.
ALL_GROUPS = {"omero.group": "-1"}
#: Fileset ids in one ``in (:ids)`` query (each is a bound parameter on the server).
IDS_PER_QUERY = 500
#: The ExternalInfo that makes omero-zarr-pixel-buffer serve an Image's pixels
#: from the OME-Zarr multiscales at its ``lsid``.
NGFF_ENTITY_TYPE = "com.glencoesoftware.ngff:multiscales"
NGFF_ENTITY_ID = 3
#: The description of Datasets that watch rules create.
DATASET_DESCRIPTION = "Created by omero-adi for a watched folder"


class BlitzUserSession:
    """A sudo session as the order's user in the order's group."""

    def __init__(self, conn: Any, m: SimpleNamespace, *, user: str, group: str, key: str,
                 where: str):
        self._conn, self._m = conn, m
        self.user, self.group, self.key, self.where = user, group, key, where

    def check_destination(self, kind: DestinationType, object_id: int) -> None:
        with translated(self.where):
            found = self._conn.getObject(kind, object_id)  # looks in the session's group
            if found is None:
                groups = self._project(
                    f"select o.details.group.name from {kind} o where o.id = :id", object_id)
                if not groups:
                    raise OmeroError(
                        f"{kind} {object_id} does not exist (or user {self.user!r} cannot see it)"
                    )
                raise OmeroError(f"{kind} {object_id} is in group {groups[0]!r}, not in the "
                                 f"order's group {self.group!r}")
            if not found.canLink():
                raise OmeroError(
                    f"user {self.user!r} may not add data to {kind} {object_id} "
                    f"(owned by {found.getOwnerOmeName()!r})"
                )

    def _project(self, hql: str, object_id: int) -> list[Any]:
        """The first column of an HQL projection with ``:id``, across the user's groups."""
        params = self._m.omero.sys.ParametersI()
        params.addId(object_id)
        rows = self._conn.getQueryService().projection(hql, params, ALL_GROUPS)
        return [self._m.omero.rtypes.unwrap(row[0]) for row in rows]

    def filesets(self, fileset_ids: Sequence[int]) -> list[FilesetInfo]:
        """The filesets with these ids that the user can see, in that order: four
        queries however many there are (up to :data:`IDS_PER_QUERY` at a time)."""
        found: list[FilesetInfo] = []
        with translated(self.where) as m:
            for start in range(0, len(fileset_ids), IDS_PER_QUERY):
                found += self._filesets(m, fileset_ids[start:start + IDS_PER_QUERY])
        return found

    def _filesets(self, m: SimpleNamespace, fileset_ids: Sequence[int]) -> list[FilesetInfo]:
        params = m.omero.sys.ParametersI()
        params.addIds(list(fileset_ids))

        def rows(hql: str) -> list[list[Any]]:
            found = self._conn.getQueryService().projection(hql, params, ALL_GROUPS)
            return [[m.omero.rtypes.unwrap(cell) for cell in row] for row in found]

        prefixes = dict(rows("select f.id, f.templatePrefix from Fileset f "
                             "where f.id in (:ids)"))
        used: dict[int, list[Path]] = {fid: [] for fid in prefixes}
        images: dict[int, list[int]] = {fid: [] for fid in prefixes}
        plates: dict[int, set[int]] = {fid: set() for fid in prefixes}
        for fid, client_path in rows("select e.fileset.id, e.clientPath from FilesetEntry e "
                                     "where e.fileset.id in (:ids)"):
            used[fid].append(Path("/" + client_path.lstrip("/")))
        for fid, image_id in rows("select i.fileset.id, i.id from Image i "
                                  "where i.fileset.id in (:ids) order by i.id"):
            images[fid].append(image_id)
        for fid, plate_id in rows("select distinct ws.image.fileset.id, ws.well.plate.id "
                                  "from WellSample ws where ws.image.fileset.id in (:ids)"):
            plates[fid].add(plate_id)
        return [FilesetInfo(id=fid, template_prefix=prefixes[fid], used_files=tuple(used[fid]),
                            image_ids=tuple(images[fid]), plate_ids=tuple(sorted(plates[fid])))
                for fid in fileset_ids if fid in prefixes]

    def find_or_create_dataset(self, name: str) -> int:
        with translated(self.where) as m:
            owner = self._conn.getUserId()
            found = sorted(dataset.getId() for dataset in  # in the session's group only
                           self._conn.getObjects("Dataset", attributes={"name": name})
                           if dataset.getDetails().getOwner().getId() == owner)
            if found:
                return int(found[0])
            created = m.ezomero.post_dataset(self._conn, name, description=DATASET_DESCRIPTION,
                                             across_groups=False)
        if created is None:
            raise OmeroError(f"Dataset {name!r} could not be created in group {self.group!r}")
        return int(created)

    def created_filesets(self, key: str) -> tuple[int, ...]:
        with translated(self.where) as m:
            params = m.omero.sys.ParametersI()
            params.add("uuid", m.omero.rtypes.rstring(key))
            rows = self._conn.getQueryService().projection(
                "select f.id from Fileset f where f.details.creationEvent.session.uuid = :uuid "
                "order by f.id", params, self._conn.SERVICE_OPTS)
            return tuple(int(m.omero.rtypes.unwrap(row[0])) for row in rows)

    def annotate(
        self, kind: AnnotatedType, namespace: str, values: Mapping[int, Mapping[str, str]]
    ) -> tuple[int, ...]:
        # One request: the links, each carrying its new MapAnnotation, saved together
        # (all or none). ezomero.post_map_annotation took several per object
        # (getObject, getGroup, save, link) and printed to standard output.
        if not values:
            return ()
        with translated(self.where) as m:
            model, rtypes = m.omero.model, m.omero.rtypes
            links = []
            for object_id, pairs in values.items():
                annotation = model.MapAnnotationI()
                annotation.setNs(rtypes.rstring(namespace))
                annotation.setMapValue([model.NamedValue(k, v) for k, v in pairs.items()])
                link = getattr(model, f"{kind}AnnotationLinkI")()
                link.parent = getattr(model, f"{kind}I")(object_id, False)
                link.child = annotation
                links.append(link)
            saved = self._conn.getUpdateService().saveAndReturnArray(
                links, self._conn.SERVICE_OPTS)
        return tuple(int(link.child.id.val) for link in saved)

    def register_zarr_image(self, image: ZarrImage, dataset_id: int) -> int:
        created: list[str] = []
        with naming(created), translated(self.where) as m:
            model = m.omero.model
            image_id = self._zarr_image(m, image, created)
            link = model.DatasetImageLinkI()
            link.parent = model.DatasetI(dataset_id, False)
            link.child = model.ImageI(image_id, False)
            self._conn.getUpdateService().saveObject(link, self._conn.SERVICE_OPTS)
        return image_id

    def register_zarr_plate(self, plate: ZarrPlate, screen_id: int) -> int:
        created: list[str] = []
        with naming(created), translated(self.where) as m:
            model, rtypes = m.omero.model, m.omero.rtypes
            update, options = self._conn.getUpdateService(), self._conn.SERVICE_OPTS
            new = model.PlateI()
            new.name = rtypes.rstring(plate.name)
            new.rows, new.columns = rtypes.rint(len(plate.rows)), rtypes.rint(len(plate.columns))
            link = model.ScreenPlateLinkI()
            link.parent, link.child = model.ScreenI(screen_id, False), new
            plate_id = int(update.saveAndReturnObject(link, options).child.id.val)
            created.append(f"Plate {plate_id}")
            for zarr_well in plate.wells:
                well = model.WellI()
                well.plate = model.PlateI(plate_id, False)
                well.row, well.column = rtypes.rint(zarr_well.row), rtypes.rint(zarr_well.column)
                for field in zarr_well.fields:
                    sample = model.WellSampleI()
                    sample.image = model.ImageI(self._zarr_image(m, field, created), False)
                    well.addWellSample(sample)
                update.saveObject(well, options)
        return plate_id

    def _zarr_image(self, m: SimpleNamespace, image: ZarrImage, created: list[str]) -> int:
        """A new Image (with Pixels and Channels) reading its pixels from ``image.uri``;
        named in ``created`` as soon as it exists."""
        model, rtypes = m.omero.model, m.omero.rtypes
        conn, options = self._conn, self._conn.SERVICE_OPTS
        params = m.omero.sys.ParametersI()
        params.add("value", rtypes.rstring(image.pixel_type))
        pixels_type = conn.getQueryService().findByQuery(
            "from PixelsType p where p.value = :value", params, options)
        image_id = int(conn.getPixelsService().createImage(
            image.size_x, image.size_y, image.size_z, image.size_t, list(range(image.size_c)),
            pixels_type, image.name, "", options).val)
        created.append(f"Image {image_id}")
        if image.channel_names:
            conn.setChannelNames("Image", [image_id], dict(enumerate(image.channel_names, 1)))
        saved = conn.getQueryService().get("Image", image_id, options)
        info = model.ExternalInfoI()
        info.entityType = rtypes.rstring(NGFF_ENTITY_TYPE)
        info.entityId = rtypes.rlong(NGFF_ENTITY_ID)
        info.lsid = rtypes.rstring(image.uri)
        saved.details.externalInfo = info
        conn.getUpdateService().saveObject(saved, options)
        return image_id

    def close(self) -> None:
        with translated(self.where):
            self._conn.close(hard=True)
