"""An in-process stand-in for :class:`omero_adi.omero.boundary.OmeroServer`.

It reads and writes the same state as the fake ``omero`` CLI, so a test can
set up users, groups and destinations, run an order, and then ask what "the
server" holds: filesets, images, plates, annotations, sessions.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from omero_adi.omero.boundary import (
    AnnotatedType,
    FilesetInfo,
    OmeroError,
    OmeroUnreachable,
)
from omero_adi.orders import DestinationType
from tests.omero_standin.state import StandinState, new_id

if TYPE_CHECKING:  # as in the boundary: zarr only when registering
    from omero_adi.importing.zarr_meta import ZarrImage, ZarrPlate

WHERE = "standin:4064"


class StandinServer:
    def __init__(self, state: StandinState):
        self.state = state
        self._admin_logged_in = False

    # --- the boundary Protocol ---------------------------------------------
    def user_session(self, user: str, group: str, ttl_ms: int) -> StandinSession:
        with self.state.edit() as data:
            data["login_attempts"] += 1
            if not data["reachable"] or data["unreachable_for"] > 0:
                data["unreachable_for"] = max(0, data["unreachable_for"] - 1)
                down = True
            else:
                down = False
                if not self._admin_logged_in:
                    data["admin_logins"] += 1
                    self._admin_logged_in = True
                key = self._open(data, user, group, ttl_ms)
        if down:
            self._admin_logged_in = False
            raise OmeroUnreachable(f"OMERO unreachable at {WHERE} (ConnectionRefusedException)")
        return StandinSession(self.state, user=user, group=group, key=key)

    @staticmethod
    def _open(data: dict[str, Any], user: str, group: str, ttl_ms: int) -> str:
        if group not in data["groups"]:
            raise OmeroError(f"group {group!r} does not exist in OMERO")
        if user not in data["users"]:
            raise OmeroError(f"user {user!r} does not exist in OMERO")
        if group not in data["users"][user]["groups"]:
            raise OmeroError(f"user {user!r} is not a member of group {group!r}")
        key = str(uuid.uuid4())
        data["sessions"][key] = {"user": user, "group": group, "ttl_ms": ttl_ms, "closed": False}
        return key

    def describe(self) -> str:
        return f"OMERO stand-in at {WHERE}"

    def close(self) -> None:
        self._admin_logged_in = False

    # --- setting up "the server" -------------------------------------------
    def add_group(self, name: str) -> int:
        with self.state.edit() as data:
            data["groups"][name] = new_id(data)
            return int(data["groups"][name])

    def add_user(self, name: str, groups: list[str]) -> int:
        with self.state.edit() as data:
            user_id = new_id(data)
            data["users"][name] = {"id": user_id, "groups": groups}
            return user_id

    def add_container(self, kind: DestinationType, group: str, owner: str,
                      writable: bool = True) -> int:
        with self.state.edit() as data:
            object_id = new_id(data)
            data[_table(kind)][str(object_id)] = {"group": group, "owner": owner,
                                                  "writable": writable}
            return object_id

    def set_unreachable(self, logins: int) -> None:
        """The next ``logins`` logins fail as if the server were down."""
        with self.state.edit() as data:
            data["unreachable_for"] = logins


class StandinSession:
    def __init__(self, state: StandinState, *, user: str, group: str, key: str):
        self.state, self.user, self.group, self.key = state, user, group, key

    def check_destination(self, kind: DestinationType, object_id: int) -> None:
        found = self.state.read()[_table(kind)].get(str(object_id))
        if found is None:
            raise OmeroError(
                f"{kind} {object_id} does not exist (or user {self.user!r} cannot see it)")
        if found["group"] != self.group:
            raise OmeroError(f"{kind} {object_id} is in group {found['group']!r}, not in the "
                             f"order's group {self.group!r}")
        if not found["writable"]:
            raise OmeroError(f"user {self.user!r} may not add data to {kind} {object_id} "
                             f"(owned by {found['owner']!r})")

    def fileset(self, fileset_id: int) -> FilesetInfo:
        found = self.state.read()["filesets"].get(str(fileset_id))
        if found is None:
            raise OmeroError(f"Fileset {fileset_id} does not exist")
        return FilesetInfo(
            id=fileset_id,
            template_prefix=found["template_prefix"],
            used_files=tuple(Path(p) for p in found["used_files"]),
            image_ids=tuple(found["images"]),
            plate_ids=tuple(found["plates"]),
        )

    def annotate(self, kind: AnnotatedType, object_id: int, namespace: str,
                 values: Mapping[str, str]) -> int:
        with self.state.edit() as data:
            if str(object_id) not in data["images" if kind == "Image" else "plates"]:
                raise OmeroError(f"{kind} {object_id} does not exist")
            annotation_id = new_id(data)
            data["annotations"].append({
                "id": annotation_id, "kind": kind, "object_id": object_id,
                "namespace": namespace, "values": [list(kv) for kv in values.items()],
            })
            return annotation_id

    def register_zarr_image(self, image: ZarrImage, dataset_id: int) -> int:
        self.check_destination("Dataset", dataset_id)
        with self.state.edit() as data:
            return self._zarr_image(data, image, dataset_id)

    def register_zarr_plate(self, plate: ZarrPlate, screen_id: int) -> int:
        self.check_destination("Screen", screen_id)
        with self.state.edit() as data:
            plate_id = new_id(data)
            fields = [[self._zarr_image(data, f, None) for f in well.fields]
                      for well in plate.wells]
            data["plates"][str(plate_id)] = {
                "fileset": None, "screen": screen_id,
                "images": [image_id for ids in fields for image_id in ids],
                "name": plate.name, "rows": len(plate.rows), "columns": len(plate.columns),
                "wells": [{"row": well.row, "column": well.column, "fields": ids}
                          for well, ids in zip(plate.wells, fields)],
                "owner": self.user, "group": self.group,
            }
            return plate_id

    def _zarr_image(self, data: dict[str, Any], image: ZarrImage, dataset_id: int | None) -> int:
        """Record an Image whose pixels come from ``image.uri`` (its ExternalInfo lsid)."""
        image_id = new_id(data)
        data["images"][str(image_id)] = {
            "fileset": None, "dataset": dataset_id, "name": image.name,
            "sizes": {"x": image.size_x, "y": image.size_y, "z": image.size_z,
                      "c": image.size_c, "t": image.size_t},
            "pixel_type": image.pixel_type, "channel_names": list(image.channel_names),
            "lsid": image.uri, "owner": self.user, "group": self.group,
        }
        return image_id

    def close(self) -> None:
        with self.state.edit() as data:
            data["sessions"][self.key]["closed"] = True


def _table(kind: DestinationType) -> str:
    return "datasets" if kind == "Dataset" else "screens"
