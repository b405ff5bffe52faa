"""A daemon process killed (SIGKILL) after recording an event but before its
message went out: the restarted daemon sends it, once."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, Sequence

import sqlalchemy as sa

from omero_adi.store.models import STAGE_IMPORTED
from tests.helpers import current_stage, insert_order, wait_for
from tests.notify_fixtures import SmtpSink
from tests.test_daemon_processes import Daemons, setup  # noqa: F401  (fixture)


def outbox(engine: sa.Engine) -> Sequence[Any]:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT * FROM adi_notify_outbox ORDER BY id")).fetchall()


def test_kill_9_between_the_event_and_its_message_sends_it_once_after_restart(
    setup: tuple[sa.Engine, Path, Daemons],  # noqa: F811
) -> None:
    engine, base, daemons = setup
    sink = SmtpSink()  # down until the daemon is dead
    settings = json.dumps({"guard_interval": 0, "notify": {
        "smtp_host": "127.0.0.1", "smtp_port": sink.port, "smtp_security": "none",
        "sender": "adi@facility.example.org", "notify_user": False,
        "recipients": ["ops@facility.example.org"], "stages": ["Import Completed"],
        "retry_delay": 0.2, "max_retry_delay": 0.5, "smtp_timeout": 5}})
    first = daemons.start("--settings", settings)
    insert_order(engine, "victim", [str(base / "image.tif")])
    wait_for(lambda: current_stage(engine, "victim") == STAGE_IMPORTED, what="the event")
    wait_for(lambda: outbox(engine)[0].attempts >= 1, what="a failed delivery")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    [row] = outbox(engine)
    assert row.sent_at is None and row.refused_at is None  # recorded, not sent
    sink.start()
    try:
        daemons.start("--settings", settings)
        wait_for(lambda: outbox(engine)[0].sent_at is not None, what="delivery after restart")
        # Another order's message goes out after it: the first is not sent again.
        insert_order(engine, "next", [str(base / "image.tif")])
        wait_for(lambda: [r.sent_at is not None for r in outbox(engine)] == [True, True],
                 what="the next message")
    finally:
        sink.stop()
    orders = [message["X-OMERO-ADI-Order"] for _, message in sink.messages()]
    assert orders == ["victim", "next"]
