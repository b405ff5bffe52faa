"""The tables clients read and write (contracts §1) and ADI's own bookkeeping.

``imports`` and ``imports_preprocessing`` are shared with OMERO.biomero,
scripts and dashboards: their columns are fixed (``imports.import_options``
is BIOMERO.importer's addition, nullable, which older clients never set). ``adi_queue`` belongs to the
daemon alone.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

STAGE_NEW_ORDER = "Import Pending"
STAGE_INGEST_STARTED = "Import Started"
STAGE_PREPROCESSING = "Import Preprocessing"
STAGE_IMPORTED = "Import Completed"
STAGE_INGEST_FAILED = "Import Failed"

STAGES = (
    STAGE_NEW_ORDER,
    STAGE_INGEST_STARTED,
    STAGE_PREPROCESSING,
    STAGE_IMPORTED,
    STAGE_INGEST_FAILED,
)
FINAL_STAGES = (STAGE_IMPORTED, STAGE_INGEST_FAILED)


def json_or_text(value: Any) -> Any:
    """Decoded JSON text; anything else (None, text written by hand that is not
    JSON, a value the driver already decoded) as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class JSONList(TypeDecorator[list[Any]]):
    """A Python list stored as JSON text, written as the earlier ADI wrote it
    (``json.dumps`` defaults: non-ASCII escaped), so rows stay identical;
    NULL reads as ``[]``, as its getter did."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):  # already JSON text
            return value
        return json.dumps(list(value))

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return [] if value is None else json_or_text(value)


class JSONDict(TypeDecorator[dict[str, Any]]):
    """A dict stored as JSON text; empty is NULL and NULL reads as ``{}``
    (BIOMERO.importer's ``import_options``)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if not value:
            return None
        if isinstance(value, str):  # already JSON text
            return value
        return json.dumps(dict(value))

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return {} if value is None else json_or_text(value)


class Base(DeclarativeBase):
    pass


class Preprocessing(Base):
    __tablename__ = "imports_preprocessing"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    container: Mapped[str] = mapped_column(String, nullable=False)
    input_file: Mapped[str] = mapped_column(String, nullable=False)
    output_folder: Mapped[str] = mapped_column(String, nullable=False)
    alt_output_folder: Mapped[str | None] = mapped_column(String, nullable=True)
    extra_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class IngestionTracking(Base):
    __tablename__ = "imports"
    __table_args__ = (Index("imports_ix_uuid_timestamp", "uuid", "timestamp"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    group_name: Mapped[str] = mapped_column(String, nullable=False)
    user_name: Mapped[str] = mapped_column(String, nullable=False, index=True)
    destination_id: Mapped[str] = mapped_column(String, nullable=False)
    destination_type: Mapped[str] = mapped_column(String, nullable=False)
    stage: Mapped[str] = mapped_column(String, nullable=False)
    uuid: Mapped[str] = mapped_column(String(36), nullable=False, index=True)
    timestamp: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    files: Mapped[list[str]] = mapped_column(JSONList, nullable=False)
    file_names: Mapped[list[str] | None] = mapped_column(JSONList, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    preprocessing_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("imports_preprocessing.id"), nullable=True
    )
    #: BIOMERO.importer's ``ImportOptions`` (revision 92e8f9e637a1); clients may ignore it.
    import_options: Mapped[dict[str, Any] | None] = mapped_column(JSONDict, nullable=True)

    preprocessing: Mapped[Preprocessing | None] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<IngestionTracking id={self.id} uuid={self.uuid} stage={self.stage!r}>"


class QueueEntry(Base):
    """One Pending event waiting for, or held by, a daemon.

    A trigger on ``imports`` adds an entry for every Pending event; the daemon
    claims entries with row locks, so each is run by exactly one daemon.
    """

    __tablename__ = "adi_queue"

    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    uuid: Mapped[str] = mapped_column(String(36), nullable=False, index=True)
    queued_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    claimed_by: Mapped[str | None] = mapped_column(String, nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String, nullable=True)
