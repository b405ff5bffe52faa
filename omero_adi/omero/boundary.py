"""What the daemon needs from an OMERO server: a Protocol and its typed results.

The daemon and the importer depend on this module only. The real server is
:class:`omero_adi.omero.blitz.BlitzServer`; tests run it against an Ice-level
OMERO double (``tests/omero_double``) and fail loudly on anything it does not model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping, Protocol, Sequence

from omero_adi.orders import DestinationType

if TYPE_CHECKING:  # zarr_meta needs the optional zarr library at run time
    from omero_adi.importing.zarr_meta import ZarrImage, ZarrPlate

#: What a MapAnnotation can be linked to after an import.
AnnotatedType = Literal["Image", "Plate"]


class OmeroError(Exception):
    """OMERO refused, or cannot do, what an order needs; the message says why."""


class OmeroUnreachable(OmeroError):
    """The server did not answer (down, restarting, wrong host or port): worth a retry."""


class SessionLost(OmeroUnreachable):
    """The session ended on the server (its time-to-live ran out, or the server
    restarted): a new session may carry on."""


class PartlyCreated(OmeroError):
    """A call failed after it had created objects; ``created`` names them
    (``Plate 5``, ``Image 7``) so that the description can say what is left."""

    def __init__(self, message: str, created: tuple[str, ...]):
        super().__init__(message)
        self.created = created


class OmeroNotInstalled(OmeroError):
    """omero-py (or ezomero) is not installed, so nothing can talk to OMERO."""


@dataclass(frozen=True)
class FilesetInfo:
    """One imported fileset, as the server records it."""

    id: int
    #: The fileset's directory, relative to the ManagedRepository root.
    template_prefix: str
    #: The files the importer read (client paths, absolute).
    used_files: tuple[Path, ...]
    image_ids: tuple[int, ...]
    plate_ids: tuple[int, ...]


class UserSession(Protocol):
    """A session as the order's user in the order's group (an admin "sudo" session)."""

    user: str
    group: str
    #: The session key the command-line importer joins with ``-k``.
    key: str

    def check_destination(self, kind: DestinationType, object_id: int) -> None:
        """Raise :class:`OmeroError` unless the user may import into that Dataset/Screen."""

    def filesets(self, fileset_ids: Sequence[int]) -> list[FilesetInfo]:
        """The filesets with these ids that exist (and the user can see), in that
        order; the caller tells which are missing."""

    def find_or_create_dataset(self, name: str) -> int:
        """The id of the user's Dataset called ``name`` in the session's group (the
        oldest, when there are several), created when there is none."""

    def created_filesets(self, key: str) -> tuple[int, ...]:
        """The ids of the filesets created in the session ``key`` (by an importer
        that joined it), whether or not the importer reported them; asked through
        this session, as that one may have ended with the run."""

    def annotate(
        self, kind: AnnotatedType, namespace: str, values: Mapping[int, Mapping[str, str]]
    ) -> tuple[int, ...]:
        """One new MapAnnotation per object id in ``values``, linked to it, all saved
        together (a fixed number of requests, however many objects); their ids."""

    def register_zarr_image(self, image: ZarrImage, dataset_id: int) -> int:
        """Create an Image whose pixels the server reads from ``image.uri``
        (omero-zarr-pixel-buffer), link it to the Dataset, return its id."""

    def register_zarr_plate(self, plate: ZarrPlate, screen_id: int) -> int:
        """Create the Plate, its Wells and one such Image per field, link it to
        the Screen, return the Plate id. :class:`PartlyCreated` names what a
        failure half-way left behind (so does ``register_zarr_image``)."""

    def close(self) -> None:
        """End the session on the server."""


class OmeroServer(Protocol):
    """An admin connection, kept and reused across orders."""

    def user_session(self, user: str, group: str, ttl_ms: int) -> UserSession:
        """Check that ``group`` exists and ``user`` exists and belongs to it, then
        open a session as that user in that group, living at most ``ttl_ms``.

        Raises :class:`OmeroUnreachable` when the server does not answer and
        :class:`OmeroError` with the reason for anything else.
        """

    def user_email(self, user: str) -> str | None:
        """The e-mail address OMERO has for ``user`` (``Experimenter.email``), or
        None when it has none; :class:`OmeroError` when there is no such user."""

    def describe(self) -> str:
        """Log in (or reuse the admin session) and say what server this is."""

    def close(self) -> None:
        """Close the admin session."""
