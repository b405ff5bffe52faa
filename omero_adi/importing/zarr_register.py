"""Register OME-Zarr stores in OMERO instead of importing them (``use_register_zarr``).

:func:`split_paths` picks the ``.zarr`` paths of an order; :func:`register_zarr`
reads every store first (a bad one fails the order before anything is
created), then creates images or plates through the order's
:class:`~omero_adi.omero.boundary.UserSession`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from omero_adi.importing.results import RegisteredZarr, describe_registered
from omero_adi.importing.zarr_meta import (
    ZarrContent,
    ZarrError,
    ZarrSource,
    read_zarr,
)
from omero_adi.omero.boundary import OmeroError, PartlyCreated
from omero_adi.omero.sessions import SessionKeeper
from omero_adi.orders import Order, is_zarr
from omero_adi.pipeline import OrderFailed
from omero_adi.settings import Settings


def split_paths(order: Order) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    """(``.zarr`` stores to register, as the order wrote them, paths to import)."""
    paths = list(zip(order.file_texts, order.files))
    return (
        tuple(text for text, _ in paths if is_zarr(text)),
        tuple(path for text, path in paths if not is_zarr(text)),
    )


def read_contents(order: Order, uris: Sequence[str], settings: Settings) -> list[ZarrContent]:
    """Read every store and check it fits the order's destination, or fail the order."""
    contents = []
    options = order.import_options
    label = options.plate_label_name if options.uses_label else None  # ImportOptions
    for uri in uris:
        source = ZarrSource(uri, settings.zarr_s3_endpoint, settings.zarr_s3_anonymous)
        try:
            content = read_zarr(source, label)
        except ZarrError as exc:
            raise OrderFailed(f"cannot register {exc}") from exc
        if content.plate is not None and order.destination_type != "Screen":
            raise OrderFailed(f"{uri} is a plate: order it into a Screen, not a Dataset")
        if content.plate is None and order.destination_type != "Dataset":
            raise OrderFailed(f"{uri} holds images, not a plate: order it into a Dataset")
        contents.append(content)
    return contents


def register_zarr(
    order: Order,
    uris: Sequence[str],
    settings: Settings,
    sessions: SessionKeeper,
    log: logging.LoggerAdapter[logging.Logger],
) -> list[RegisteredZarr]:
    """Create the OMERO objects for each store, linked to the order's destination;
    each store is logged as it is registered, in a session that outlives its
    registration. A failure half-way fails the order naming, in the log and the
    description, every object already created."""
    results: list[RegisteredZarr] = []
    for content in read_contents(order, uris, settings):
        uri = content.source.uri
        created: list[str] = []  # of this store, so far
        try:
            session = sessions.for_step()  # a new one may be refused: said as any failure
            if content.plate is not None:
                plate_id = session.register_zarr_plate(content.plate, order.destination_id)
                results.append(RegisteredZarr(uri, image_ids=(), plate_ids=(plate_id,)))
                log.info("registered %s as Plate:%d", uri, plate_id)
                continue
            ids = []
            for image in content.images:
                ids.append(session.register_zarr_image(image, order.destination_id))
                created.append(f"Image {ids[-1]}")
            results.append(RegisteredZarr(uri, image_ids=tuple(ids)))
            log.info("registered %s as Image:%s", uri, ",".join(map(str, ids)))
        except OmeroError as exc:
            created += exc.created if isinstance(exc, PartlyCreated) else ()
            raise OrderFailed(_half_way(uri, exc, results, created, log)) from exc
    return results


def _half_way(uri: str, exc: OmeroError, results: Sequence[RegisteredZarr], created: list[str],
              log: logging.LoggerAdapter[logging.Logger]) -> str:
    """The description (also logged) of a registration that failed at ``uri``."""
    lines = [f"registering Zarr failed at {uri}: {exc}"]
    if results:
        lines.append(f"Registered before it (not annotated): {describe_registered(results)}.")
    if created:
        lines.append(f"Created for {uri} before the failure: {', '.join(created)}.")
    if results or created:
        lines.append("Delete these objects in OMERO before retrying the order.")
    else:
        lines.append("Nothing was created.")
    log.error("%s", " ".join(lines))
    return "\n".join(lines)
