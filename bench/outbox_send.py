"""The outbox sender: database statements, transactions and time per delivered message.

MESSAGES failed orders are written as the daemon writes them (the final
``imports`` row and its outbox message in one transaction), then one sender
delivers them all to a webhook on loopback; a second run delivers as many
again through a channel that costs nothing, which leaves the outbox's own
cost. Every statement and transaction of the sender's engine is counted
(the events ``before_cursor_execute`` and ``begin``). With psycopg2 each
transaction costs two round trips besides its statements (``BEGIN`` before
its first statement, then ``COMMIT`` or ``ROLLBACK``).

Run: python -m bench.outbox_send [MESSAGES]   (default 2000)
Target: each message delivered exactly once; at most 1.1 statements per message (its
outcome is written as soon as it is known, plus one claim per batch of 50).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from bench.common import scratch_database, table, verdict
from omero_adi.notify import sender as sender_module
from omero_adi.notify.outbox import Outbox
from omero_adi.notify.service import Notifications
from omero_adi.settings import Settings, build_settings
from tests.notify_fixtures import WebhookReceiver
from tests.notify_site import NoOmero, queue_failed_order


def queue_failed_orders(settings: Settings, engine: sa.Engine, count: int, prefix: str) -> None:
    outbox = Outbox(settings.notify)
    with engine.begin() as connection:
        for n in range(count):
            queue_failed_order(connection, outbox, f"{prefix}-{n}")


def send_all(settings: Settings, engine: sa.Engine) -> dict[str, Any]:
    """Deliver every due message with one sender; what it cost."""
    sender = Notifications(settings, engine=engine, server=lambda s: NoOmero()).sender  # type: ignore[arg-type,return-value]
    assert sender is not None
    counts: Counter[str] = Counter()

    def statement(*args: Any) -> None:
        counts["statements"] += 1

    def transaction(*args: Any) -> None:
        counts["transactions"] += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "begin", transaction)
    started = time.perf_counter()
    try:
        counts["delivered"] = sender.deliver_due()
    finally:
        seconds = time.perf_counter() - started
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "begin", transaction)
    return {**counts, "seconds": seconds}


def rows(title: str, result: dict[str, Any], count: int) -> list[tuple[str, str, str, str]]:
    per = result["statements"] / count
    return [
        (f"{title}: messages delivered", str(result["delivered"]), str(count),
         verdict(result["delivered"] == count)),
        (f"{title}: statements per message", f"{per:.2f}", "≤ 1.1", verdict(per <= 1.1)),
        (f"{title}: transactions per message", f"{result['transactions'] / count:.2f}", "", ""),
        (f"{title}: time per message", f"{result['seconds'] / count * 1000:.2f} ms", "", ""),
    ]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    receiver = WebhookReceiver()
    try:
        with scratch_database() as (url, engine):
            settings = build_settings({"ingest_tracking_db": url, "notify": {
                "webhooks": [{"url": receiver.url, "name": "bench"}]}}, {})
            queue_failed_orders(settings, engine, count, "hook")
            webhook = send_all(settings, engine)
            keys = Counter(r.headers["Idempotency-Key"] for r in receiver.requests)
            queue_failed_orders(settings, engine, count, "free")
            real_deliver = sender_module.deliver
            sender_module.deliver = lambda *args: ""  # type: ignore[assignment]
            try:
                free = send_all(settings, engine)
            finally:
                sender_module.deliver = real_deliver  # type: ignore[assignment]
            with engine.connect() as connection:
                unsent = connection.execute(sa.text(
                    "SELECT count(*) FROM adi_notify_outbox WHERE sent_at IS NULL")).scalar_one()
    finally:
        receiver.close()
    once = len(keys) == count and set(keys.values()) == {1}
    table(f"outbox sender, {count} messages per run (one sender, PostgreSQL)", [
        *rows("webhook", webhook, count),
        ("webhook: each key received once", str(once), "True", verdict(once)),
        *rows("no-cost channel", free, count),
        ("messages left unsent", str(unsent), "0", verdict(unsent == 0)),
    ])


if __name__ == "__main__":
    main()
