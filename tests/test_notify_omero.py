"""The ordering user's e-mail address as OMERO knows it, through the real
BlitzServer (omero-py over Ice) against the OMERO double."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path
from typing import Callable

import pytest

from omero_adi.notify.errors import TransientFailure
from omero_adi.notify.sender import AddressBook
from omero_adi.omero.blitz import BlitzServer
from omero_adi.omero.boundary import OmeroError
from omero_adi.settings import Settings, build_settings
from omero_adi.store.models import STAGE_INGEST_FAILED
from omero_adi.store.session import open_store
from tests.helpers import current_stage, insert_order, running_daemon, wait_for
from tests.notify_fixtures import SmtpSink, smtp_sink  # noqa: F401  (fixture)
from tests.omero_double.fixture import OmeroDouble
from tests.test_notify import fail


def server_for(double: OmeroDouble, **values: object) -> tuple[Settings, BlitzServer]:
    settings = build_settings(dict(values), double.env)
    return settings, BlitzServer(settings)


def test_the_address_is_experimenter_email(omero_double: OmeroDouble) -> None:
    omero_double.world({"users": [{"name": "nomail", "groups": ["Demo"], "email": ""}]})
    _, server = server_for(omero_double)
    try:
        assert server.user_email("researcher") == "researcher@example.org"
        assert server.user_email("nomail") is None
        with pytest.raises(OmeroError, match="No such experimenter: nobody"):
            server.user_email("nobody")
    finally:
        server.close()


def test_an_unreachable_server_is_a_transient_failure(omero_double: OmeroDouble) -> None:
    _, server = server_for(omero_double)
    book = AddressBook(server)
    try:
        assert book.email("alice") == "alice@example.org"
        omero_double.stop()
        assert book.email("alice") == "alice@example.org"  # cached
        with pytest.raises(TransientFailure, match="OMERO unreachable"):
            book.email("researcher")
    finally:
        server.close()


def test_a_failed_order_reaches_the_user_at_the_address_in_omero(
    omero_double: OmeroDouble, smtp_sink: SmtpSink,  # noqa: F811
    make_pg_database: Callable[[], str], tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "image.tif").write_bytes(b"pixels")
    settings, _ = server_for(omero_double, ingest_tracking_db=make_pg_database(),
                             base_dir=str(data), guard_interval=0, shutdown_timeout=5, notify={
                                 "smtp_host": "127.0.0.1", "smtp_port": smtp_sink.port,
                                 "smtp_security": "none", "sender": "adi@facility.example.org"})
    engine = open_store(settings)
    uuid = str(uuidlib.uuid4())
    with running_daemon(settings, engine, fail):  # notifications as `omero-adi run` makes them
        insert_order(engine, uuid, [str(data / "image.tif")], user="researcher", group="Demo")
        wait_for(lambda: current_stage(engine, uuid) == STAGE_INGEST_FAILED, what="the order")
        wait_for(smtp_sink.messages, timeout=30, what="the e-mail")
    engine.dispose()
    [(to, message)] = smtp_sink.messages()
    assert to == ["researcher@example.org"] and message["X-OMERO-ADI-Order"] == uuid
