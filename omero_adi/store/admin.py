"""Operator actions on orders: status, retry, cancel, submit."""

from __future__ import annotations

import getpass
import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from omero_adi.progress import ImportProgress
from omero_adi.store.models import (
    FINAL_STAGES,
    STAGE_INGEST_FAILED,
    STAGE_NEW_ORDER,
    json_or_text,
)
from omero_adi.store.queries import run
from omero_adi.store.queue import copy_event, latest_event
from omero_adi.store.tracker import event_from_order_info


class AdminError(Exception):
    """An operator asked for something the order's state does not allow."""


@dataclass(frozen=True)
class OrderStatus:
    event_id: int
    uuid: str
    stage: str
    group: str
    user: str
    destination: str
    timestamp: datetime | None
    #: As the client wrote them: a list of paths (text only if it is not JSON).
    files: list[str] | str
    description: str | None
    #: How far the import is, while a daemon runs the order.
    progress: ImportProgress | None = None

    def as_dict(self) -> dict[str, Any]:
        values = dict(self.__dict__)
        values["timestamp"] = self.timestamp.isoformat() if self.timestamp else None
        values["progress"] = self.progress.__dict__ if self.progress else None
        return values


def _current(connection: Connection, uuid: str) -> Any:
    latest = latest_event(connection, uuid)
    if latest is None:
        raise AdminError(f"no order with uuid {uuid!r}")
    return latest


def recent_orders(
    engine: Engine, *, uuid: str | None = None, user: str | None = None,
    group: str | None = None, stage: str | None = None, limit: int = 20,
) -> list[OrderStatus]:
    params = {"uuid": uuid, "user": user, "group": group, "stage": stage, "limit": limit}
    with engine.connect() as connection:
        rows = run(connection, "recent_orders", **params).all()
    return [
        OrderStatus(
            event_id=r.id, uuid=r.uuid, stage=r.stage, group=r.group_name, user=r.user_name,
            destination=f"{r.destination_type}:{r.destination_id}",
            timestamp=r.timestamp if isinstance(r.timestamp, datetime) else None,
            files=json_or_text(r.files), description=r.description,
            progress=None if r.step is None else ImportProgress(
                r.step, r.filesets_done, r.filesets_total),
        )
        for r in rows
    ]


def progress_of(engine: Engine, uuid: str) -> ImportProgress | None:
    """The progress of the order's run under way, if it has reported any."""
    with engine.connect() as connection:
        row = run(connection, "order_progress", uuid=uuid).first()
    return None if row is None else ImportProgress(row.step, row.filesets_done, row.filesets_total)


def daemons_busy(engine: Engine, stale_after: float = 60.0) -> int:
    """Orders that daemons are running now, by claims with a recent heartbeat
    (an idle daemon leaves no trace in the tables)."""
    with engine.connect() as connection:
        claims = run(connection, "running_claims", stale_after=stale_after).all()
    return sum(not claim.expired for claim in claims)


def history(engine: Engine, uuid: str) -> list[Any]:
    with engine.connect() as connection:
        return list(run(connection, "order_history", uuid=uuid))


def retry(engine: Engine, uuid: str, by: str | None = None) -> int:
    """Re-queue a finished order with a new Pending event."""
    with engine.begin() as connection:
        latest = _current(connection, uuid)
        if latest.stage not in FINAL_STAGES:
            raise AdminError(
                f"order {uuid} is {latest.stage!r}; only finished orders can be retried")
        return copy_event(connection, latest.id, STAGE_NEW_ORDER,
                          f"retried by {by or getpass.getuser()}")


def cancel(engine: Engine, uuid: str, by: str | None = None) -> int:
    """Turn a Pending order that no daemon has claimed into ``Import Failed``."""
    with engine.begin() as connection:
        latest = _current(connection, uuid)
        if latest.stage != STAGE_NEW_ORDER:
            raise AdminError(
                f"order {uuid} is {latest.stage!r}; only Pending orders can be cancelled")
        run(connection, "drop_entry", event_id=latest.id)
        return copy_event(connection, latest.id, STAGE_INGEST_FAILED,
                          f"cancelled by {by or getpass.getuser()}")


def submit(engine: Engine, order_info: Mapping[str, Any]) -> str:
    """Create an order (and its preprocessing row) from an ``order_info`` dict."""
    info = dict(order_info)
    info.setdefault("UUID", str(uuidlib.uuid4()))
    event = event_from_order_info(info, STAGE_NEW_ORDER)
    with Session(engine) as session, session.begin():
        session.add(event)
    return str(info["UUID"])
