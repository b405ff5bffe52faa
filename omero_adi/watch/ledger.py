"""ADI's record of watched units (``adi_watch_units``) and of each rule's last
scan (``adi_watch_scans``); tables of migration ``c9e6a2f4b325``.

A unit's row and its order's ``Import Pending`` event are written in one
transaction, and the row's ``unit_key`` is unique: whichever daemon commits
first orders the unit; any other one's insert does nothing, and no order is
written for it.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Mapping, Sequence

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from omero_adi.store.models import STAGE_NEW_ORDER
from omero_adi.store.queries import run
from omero_adi.store.tracker import event_from_order_info

metadata = MetaData()
units = Table(
    "adi_watch_units", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("unit_key", String(64), nullable=False, unique=True),
    Column("rule", String, nullable=False),
    Column("path", Text, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("state", String(16), nullable=False),  # ordered | refused
    Column("uuid", String(36)),
    Column("fingerprint", Text, nullable=False),
    Column("reported_fingerprint", Text),
    Column("description", Text),
    Column("daemon", String),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
    Column("changed_at", DateTime(timezone=True)),
)
scans = Table(
    "adi_watch_scans", metadata,
    Column("rule", String, primary_key=True),
    Column("scanned_at", DateTime(timezone=True), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("units", Integer, nullable=False),
    Column("waiting", Integer, nullable=False),
    Column("problems", Text),
    Column("daemon", String),
)


def unit_key(path: str) -> str:
    """The unique key of a unit: its path, hashed (paths may outgrow an index entry)."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class Known:
    """A unit the ledger holds."""

    state: str
    uuid: str | None
    fingerprint: str
    reported: str | None


def known_units(engine: Engine, rule: str) -> dict[str, Known]:
    """Every unit this rule has ordered or refused, by path."""
    query = select(units.c.path, units.c.state, units.c.uuid, units.c.fingerprint,
                   units.c.reported_fingerprint).where(units.c.rule == rule)
    with engine.connect() as connection:
        return {row.path: Known(row.state, row.uuid, row.fingerprint, row.reported_fingerprint)
                for row in connection.execute(query)}


def refused_paths(engine: Engine, rule: str) -> set[str]:
    """The rule's units still recorded as refused (``watch --forget`` removes them)."""
    query = select(units.c.path).where(units.c.rule == rule, units.c.state == "refused")
    with engine.connect() as connection:
        return set(connection.execute(query).scalars())


def known_unit(engine: Engine, path: str) -> Known | None:
    query = select(units).where(units.c.unit_key == unit_key(path))
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return None if row is None else Known(row.state, row.uuid, row.fingerprint,
                                          row.reported_fingerprint)


@contextmanager
def locked(engine: Engine, name: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock on ``name`` for the block: one daemon at a
    time does what it guards (SQLite serves one machine: nothing to lock)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.begin() as connection:
        run(connection, "lock_order", uuid=name)  # the queue's per-order lock, by any name
        yield


def order_units(
    engine: Engine, *, rule: str, kind: str, daemon: str,
    orders: Sequence[tuple[str, str, Mapping[str, Any]]],
) -> set[str]:
    """Record units and write their orders in one transaction; return the paths
    ordered now. ``orders`` holds (path, fingerprint, the client API's order
    dict). A unit already in the ledger (ordered by another daemon, even one
    whose transaction commits while this one waits) gets nothing written.
    """
    rows = sorted(  # in key order: two daemons' inserts wait for each other, never deadlock
        (dict(unit_key=unit_key(path), rule=rule, path=path, kind=kind, state="ordered",
              uuid=str(info["UUID"]), fingerprint=look, daemon=daemon)
         for path, look, info in orders), key=lambda row: row["unit_key"])
    if not rows:
        return set()
    with Session(engine) as session, session.begin():
        dialect = session.get_bind().dialect.name
        insert_into = sqlite_insert if dialect == "sqlite" else postgresql_insert
        statement = (insert_into(units).values(rows)
                     .on_conflict_do_nothing(index_elements=["unit_key"])
                     .returning(units.c.path))
        ordered = set(session.execute(statement).scalars())
        session.add_all([event_from_order_info(info, STAGE_NEW_ORDER)
                         for path, _, info in orders if path in ordered])
    return ordered


def refuse_unit(engine: Engine, *, rule: str, path: str, kind: str, fingerprint: str,
                daemon: str, description: str) -> bool:
    """Record that the unit cannot become an order; False when it was already recorded."""
    try:
        with engine.begin() as connection:
            connection.execute(insert(units).values(
                unit_key=unit_key(path), rule=rule, path=path, kind=kind, state="refused",
                fingerprint=fingerprint, daemon=daemon, description=description))
    except IntegrityError:
        return False
    return True


def report_change(engine: Engine, path: str, fingerprint: str) -> bool:
    """Note that an ordered unit now looks like ``fingerprint``; True for the one
    daemon that notes it first (each new look is reported once)."""
    reported = units.c.reported_fingerprint
    with engine.begin() as connection:
        changed = connection.execute(
            update(units)
            .where(units.c.unit_key == unit_key(path), units.c.state == "ordered",
                   (reported.is_(None)) | (reported != fingerprint))
            .values(reported_fingerprint=fingerprint, changed_at=func.now()))
        return changed.rowcount == 1


def forget(engine: Engine, path: str) -> str | None:
    """Remove a refused unit from the ledger so that it is looked at afresh;
    its state when it was not refused (ordered units stay), None when unknown."""
    with engine.begin() as connection:
        row = connection.execute(select(units.c.state).where(
            units.c.unit_key == unit_key(path))).first()
        if row is not None and row.state == "refused":
            connection.execute(units.delete().where(units.c.unit_key == unit_key(path)))
            return "refused"
    return None if row is None else str(row.state)


def save_scan(engine: Engine, *, rule: str, seconds: float, units_seen: int, waiting: int,
              problems: str | None, daemon: str) -> None:
    """The rule's latest scan, whichever daemon made it."""
    values = dict(scanned_at=func.now(), seconds=seconds, units=units_seen, waiting=waiting,
                  problems=problems, daemon=daemon)
    with engine.begin() as connection:
        if connection.execute(update(scans).where(scans.c.rule == rule).values(**values)).rowcount:
            return
    try:
        with engine.begin() as connection:
            connection.execute(insert(scans).values(rule=rule, **values))
    except IntegrityError:  # another daemon wrote the first row meanwhile: it will do
        pass


@dataclass(frozen=True)
class RuleSummary:
    rule: str
    scanned_at: datetime | None
    seconds: float | None
    units: int | None
    waiting: int | None
    problems: str | None
    ordered: int
    refused: int
    changed: int


def summaries(engine: Engine) -> list[RuleSummary]:
    """Every rule the database knows of: its last scan and its units by state."""
    counts = select(
        units.c.rule,
        func.count().filter(units.c.state == "ordered").label("ordered"),
        func.count().filter(units.c.state == "refused").label("refused"),
        func.count().filter(units.c.reported_fingerprint.is_not(None)).label("changed"),
    ).group_by(units.c.rule)
    with engine.connect() as connection:
        scanned = {row.rule: row for row in connection.execute(select(scans))}
        tallies = {row.rule: row for row in connection.execute(counts)}
    out = []
    for rule in sorted(scanned.keys() | tallies.keys()):
        scan, tally = scanned.get(rule), tallies.get(rule)
        out.append(RuleSummary(
            rule=rule,
            scanned_at=scan.scanned_at if scan is not None else None,
            seconds=scan.seconds if scan is not None else None,
            units=scan.units if scan is not None else None,
            waiting=scan.waiting if scan is not None else None,
            problems=scan.problems if scan is not None else None,
            ordered=tally.ordered if tally is not None else 0,
            refused=tally.refused if tally is not None else 0,
            changed=tally.changed if tally is not None else 0,
        ))
    return out
