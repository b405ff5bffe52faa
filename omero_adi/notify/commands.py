"""``omero-adi notify`` and ``omero-adi verify``, and the guard's lines in ``status``."""

from __future__ import annotations

import uuid as uuidlib
from datetime import datetime

from sqlalchemy import Engine, inspect

from omero_adi.notify.errors import DeliveryFailed
from omero_adi.notify.guard import Guard, Problem
from omero_adi.notify.message import TEST, Notice
from omero_adi.notify.outbox import outbox_for
from omero_adi.notify.sender import AddressBook, deliver
from omero_adi.notify.service import blitz_server
from omero_adi.settings import Settings
from omero_adi.store.queries import run


def send_tests(settings: Settings) -> int:
    """A test message on every channel; print what happened; 1 if any failed."""
    channels = settings.notify.channels
    if not channels:
        print("no notification channel is configured (notify.smtp_host, notify.webhooks); "
              "see docs/notifications.md")
        return 1
    addresses = AddressBook(blitz_server(settings))
    failures = 0
    for channel in channels:
        notice = Notice(f"omero-adi-test-{uuidlib.uuid4().hex}", TEST, None, "", "")
        try:
            note = deliver(settings.notify, addresses, channel, notice)
        except DeliveryFailed as exc:
            failures += 1
            print(f"FAIL {channel}: {exc}")
        else:
            print(f"ok   {channel}: test message accepted{' ' + note if note else ''}")
    return 1 if failures else 0


def show_outbox(engine: Engine, limit: int = 20) -> int:
    """Messages by channel and state, then the latest that were refused or are retried."""
    with engine.connect() as connection:
        summary = run(connection, "outbox_summary").all()
        problems = run(connection, "outbox_problems", limit=limit).all()
    if not summary:
        print("no notifications yet")
    for row in summary:
        print(f"{row.channel:30} {row.state:8} {row.messages}")
    for row in problems:
        what = "refused" if row.refused else f"retrying (attempt {row.attempts})"
        print(f"#{row.id} {row.kind} of {row.uuid} by {row.channel}: {what}: {row.detail}")
    return 0


def verify(engine: Engine, settings: Settings, uuid: str | None,
           since: datetime | None) -> int:
    """Check the recorded files now; print each problem; 1 if there is any."""
    guard = Guard(settings, engine, outbox_for(settings.notify))  # the daemon sends them
    problems = guard.check(uuid=uuid, since=since)
    print_problems(problems)
    if not problems:
        print("all imported files are where they were, unchanged")
    return 1 if problems else 0


def print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        f = problem.finding
        backs = ", ".join([f"Plate {i}" for i in f.plates] + [f"Image {i}" for i in f.images])
        print(f"{f.state.upper():10} {f.path} (order {problem.uuid}; backs {backs or 'nothing'}): "
              f"{f.detail}")


def status_lines(engine: Engine, settings: Settings, uuid: str | None) -> None:
    """Below ``omero-adi status``: imported files the guard last found broken
    (nothing before ``omero-adi migrate`` has made the guard's table)."""
    if not inspect(engine).has_table("adi_guard_files"):
        return
    problems = Guard(settings, engine, None).problems(uuid)
    if problems:
        print(f"\nIn-place files missing, moved or changed since import ({len(problems)} shown; "
              "`omero-adi verify` checks again):")
        print_problems(problems)
