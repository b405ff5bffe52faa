"""The outbox sender on its own, against a real database of each kind and a real
HTTP receiver: what a batch of messages costs the database, that several
senders never deliver one message twice, and what is recorded for each message
of a batch (sent, due again, refused, released untried)."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from omero_adi.notify import sender as sender_module
from omero_adi.notify.outbox import Outbox
from omero_adi.notify.sender import AddressBook, Sender
from omero_adi.store.queue import new_owner_id
from tests.helpers import wait_for
from tests.notify_fixtures import WebhookReceiver, webhook  # noqa: F401  (fixture)
from tests.notify_site import LAB_DATASET, Site, queue_failed_order, site_factory  # noqa: F401

SECRET = "s3cret-for-signing"
#: What the orders' imports created: two files of fileset 20, one of fileset 10.
GUARD_FILES = [(20, "a.tif", "[201, 202]", "[]"), (20, "b.tif", "[201, 202]", "[]"),
               (10, "c.tif", "[101]", "[7]")]


def webhook_site(make: Callable[..., Site], url: str | None, hook: WebhookReceiver,
                 **notify: Any) -> Site:
    """A site whose one channel is a signed webhook (None: on PostgreSQL)."""
    return make({"webhooks": [{"url": hook.url, "format": "signed",
                               "secret_env": "ADI_HOOK_SECRET"}], **notify}, url=url)


def new_sender(site: Site, batch: int = sender_module.BATCH) -> Sender:
    return Sender(site.settings.notify, site.engine, Outbox(site.settings.notify),
                  AddressBook(site.server(site.settings)), new_owner_id(), batch=batch)


def queue_failed_orders(site: Site, count: int) -> list[str]:
    uuids = [f"order-{n:03d}" for n in range(count)]
    outbox = Outbox(site.settings.notify)
    with site.engine.begin() as connection:
        for uuid in uuids:
            queue_failed_order(connection, outbox, uuid)
    return uuids


def outbox_rows(site: Site) -> list[Any]:
    with site.engine.connect() as connection:
        return list(connection.execute(sa.text(
            "SELECT o.*, due_at > CURRENT_TIMESTAMP AS later FROM adi_notify_outbox o "
            "ORDER BY id")).all())


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    """Every statement the engine sends meanwhile."""
    sent: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)


def keys_received(hook: WebhookReceiver) -> Counter[str]:
    return Counter(r.headers["Idempotency-Key"] for r in hook.requests)


@pytest.mark.parametrize("batch", [sender_module.BATCH, 5])
def test_a_batch_costs_one_claim_and_one_record_per_message(
    db_url: str, site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, batch: int,
) -> None:
    """One statement claims a batch with all its messages say, one per message
    records what became of it: 12 messages of three kinds cost 13 statements
    (15 by batches of 5), where holding, reading and marking each cost 5."""
    monkeypatch.setenv("ADI_HOOK_SECRET", SECRET)
    site = webhook_site(site_factory, db_url, webhook)
    outbox = Outbox(site.settings.notify)
    uuids = queue_failed_orders(site, 10)
    with site.engine.begin() as connection:
        for fileset, name, images, plates in GUARD_FILES:
            connection.execute(sa.text(
                "INSERT INTO adi_guard_files (uuid, path, fileset_id, image_ids, plate_ids, "
                "size, mtime_ns, inode) VALUES (:uuid, :path, :fileset, :images, :plates, 1, 1, 1)"),
                {"uuid": uuids[0], "path": f"/data/{name}", "fileset": fileset,
                 "images": images, "plates": plates})
        outbox.add_findings(connection, uuids[1], {"user": "alice", "group": "lab", "findings": [
            {"path": "/data/c.tif", "state": "missing", "detail": "gone", "images": [101],
             "plates": [7]}]})
        outbox.add_watch(connection, None, {"user": "", "group": "", "path": "/data/x/run1",
                                            "detail": "no such user", "headline": "refused"})
    with statements(site.engine) as sent:
        assert new_sender(site, batch).deliver_due() == 12
    assert len(sent) == math.ceil(12 / batch) + 12, sent
    rows = outbox_rows(site)
    assert keys_received(webhook) == Counter({f"omero-adi-{r.id}": 1 for r in rows})
    assert all(r.sent_at is not None and r.attempts == 1 and r.lease_until is None for r in rows)
    notices = {n["key"]: n for n in (r.json() for r in webhook.requests)}
    first = notices[f"omero-adi-{rows[0].id}"]
    assert (first["kind"], first["uuid"], first["user"], first["group"], first["destination"],
            first["files"], first["description"], first["images"], first["plates"]) == (
        "Import Failed", uuids[0], "alice", "lab", f"Dataset {LAB_DATASET}",
        [f"/data/alice/{uuids[0]}.tif"], "the converter exited with status 3",
        [101, 201, 202], [7])
    assert (notices[f"omero-adi-{rows[1].id}"]["images"],
            notices[f"omero-adi-{rows[1].id}"]["plates"]) == ([], [])
    guard, watch = notices[f"omero-adi-{rows[10].id}"], notices[f"omero-adi-{rows[11].id}"]
    assert (guard["kind"], guard["uuid"], guard["user"]) == ("guard", uuids[1], "alice")
    assert [f["path"] for f in guard["findings"]] == ["/data/c.tif"]
    assert (watch["kind"], watch["files"], watch["description"]) == (
        "watch", ["/data/x/run1"], "no such user")


def test_a_sender_killed_mid_batch_can_send_again_only_the_message_in_flight(
    db_url: str, site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When each delivery starts, every earlier message of its batch is already
    recorded as sent: a daemon killed at that moment leaves only that one."""
    monkeypatch.setenv("ADI_HOOK_SECRET", SECRET)
    site = webhook_site(site_factory, db_url, webhook)
    queue_failed_orders(site, 5)
    recorded_before: list[int] = []
    real_deliver = sender_module.deliver

    def deliver(*args: Any) -> str:
        recorded_before.append(sum(r.sent_at is not None for r in outbox_rows(site)))
        return real_deliver(*args)

    monkeypatch.setattr(sender_module, "deliver", deliver)
    assert new_sender(site).deliver_due() == 5
    assert recorded_before == [0, 1, 2, 3, 4]


def test_what_became_of_each_message_of_a_batch_is_recorded_at_once(
    db_url: str, site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Accepted, answered 503 (due again after the delay), 404 (refused for good),
    503 on the last allowed attempt (given up): each written by one statement."""
    monkeypatch.setenv("ADI_HOOK_SECRET", SECRET)
    site = webhook_site(site_factory, db_url, webhook, retry_delay=600, max_attempts=3)
    queue_failed_orders(site, 4)
    with site.engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE adi_notify_outbox SET attempts = 2 WHERE id = (SELECT max(id) "
            "FROM adi_notify_outbox)"))
    webhook.answers = [200, 503, 404, 503]
    with statements(site.engine) as sent:
        assert new_sender(site).deliver_due() == 4
    assert len(sent) == 1 + 4
    delivered, retried, refused, given_up = outbox_rows(site)
    assert (delivered.sent_at is not None, delivered.detail, delivered.attempts) == (True, None, 1)
    assert (retried.sent_at, retried.refused_at, retried.attempts, bool(retried.later)) == (
        None, None, 1, True)
    assert "HTTP 503" in retried.detail
    assert refused.refused_at is not None and "HTTP 404" in refused.detail
    assert given_up.refused_at is not None and given_up.attempts == 3
    assert given_up.detail.startswith("gave up after 3 attempts: ")
    assert all(r.lease_until is None for r in (delivered, retried, refused, given_up))
    assert new_sender(site).deliver_due() == 0  # the 503 is not due for 600 s
    assert len(webhook.requests) == 4


def test_several_senders_deliver_each_message_once(
    db_url: str, site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four senders (four daemons) claim small batches of the same outbox at the
    same moment: every message is delivered, by one of them, once."""
    monkeypatch.setenv("ADI_HOOK_SECRET", SECRET)
    site = webhook_site(site_factory, db_url, webhook)
    queue_failed_orders(site, 80)
    senders = [new_sender(site, batch=3) for _ in range(4)]
    start = threading.Barrier(len(senders))
    delivered: dict[str, int] = {}

    def work(sender: Sender) -> None:
        start.wait()
        delivered[sender.owner] = sender.deliver_due()

    threads = [threading.Thread(target=work, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a sender did not finish"
    rows = outbox_rows(site)
    assert sum(delivered.values()) == 80 and len(delivered) == 4
    assert keys_received(webhook) == Counter({f"omero-adi-{r.id}": 1 for r in rows})
    assert all(r.sent_at is not None and r.attempts == 1 for r in rows)
    assert {r.lease_owner for r in rows} <= {s.owner for s in senders}


def test_a_claim_passes_over_messages_another_sender_is_claiming(
    site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL: a message locked by another sender's claim in progress is
    skipped, not waited for, and not taken; the rest go out."""
    monkeypatch.setenv("ADI_HOOK_SECRET", SECRET)
    site = webhook_site(site_factory, None, webhook)
    queue_failed_orders(site, 3)
    first = outbox_rows(site)[0].id
    delivered: list[int] = []
    with site.engine.connect() as other:
        other.execute(sa.text("SELECT id FROM adi_notify_outbox WHERE id = :id FOR UPDATE"),
                      {"id": first})
        thread = threading.Thread(target=lambda: delivered.append(new_sender(site).deliver_due()))
        thread.start()
        thread.join(timeout=20)
        blocked = thread.is_alive()
        other.rollback()
    thread.join(timeout=20)
    assert not blocked, "the claim waited for the other sender's lock"
    assert delivered == [2]
    assert [(r.id, r.sent_at is None, r.attempts) for r in outbox_rows(site)][0] == (first, True, 0)
    assert new_sender(site).deliver_due() == 1
    assert sorted(keys_received(webhook)) == sorted(f"omero-adi-{r.id}" for r in outbox_rows(site))


def test_a_message_leased_by_a_live_sender_is_left_to_it(
    db_url: str, site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message another sender claimed is not due for anyone else while its lease runs."""
    monkeypatch.setenv("ADI_HOOK_SECRET", SECRET)
    site = webhook_site(site_factory, db_url, webhook)
    queue_failed_orders(site, 2)
    holder = new_sender(site, batch=1)
    [held] = holder._claim()  # the holder claimed the first message, and is still at it
    assert new_sender(site).deliver_due() == 1
    rows = outbox_rows(site)
    assert (rows[0].id, rows[0].sent_at, rows[0].lease_owner) == (held.id, None, holder.owner)
    assert rows[1].sent_at is not None
    assert list(keys_received(webhook)) == [f"omero-adi-{rows[1].id}"]


def test_a_claim_slower_than_the_window_still_delivers(
    db_url: str, site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every claim outlasting the batch's window (a database under load), each
    batch still delivers its first message, so the outbox drains instead of
    claiming and releasing the same messages for ever."""
    monkeypatch.setenv("ADI_HOOK_SECRET", SECRET)
    monkeypatch.setattr(sender_module, "BATCH_WINDOW", 0.0)  # every claim is too slow
    site = webhook_site(site_factory, db_url, webhook)
    queue_failed_orders(site, 3)
    sender, stop, claims = new_sender(site, batch=2), threading.Event(), []
    claim = sender._claim

    def counted() -> Any:
        claims.append(1)
        if len(claims) > 10:  # claiming and releasing without end: stop, and fail below
            stop.set()
        return claim()

    monkeypatch.setattr(sender, "_claim", counted)
    assert sender.deliver_due(stop) == 3
    assert len(claims) == 3  # 2 claimed, the first delivered; 2 again; the last alone
    assert all(r.sent_at is not None and r.attempts == 1 for r in outbox_rows(site))


@pytest.mark.parametrize("why", ["stop", "window"])
def test_messages_a_sender_did_not_start_go_back_untried(
    db_url: str, site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, why: str,
) -> None:
    """A sender told to stop, or whose batch's window has passed (so the lease
    would not cover another delivery), releases the rest of its batch with their
    attempt taken back; another sender delivers them at once."""
    monkeypatch.setenv("ADI_HOOK_SECRET", SECRET)
    window = 0.5
    if why == "window":
        monkeypatch.setattr(sender_module, "BATCH_WINDOW", window)
    site = webhook_site(site_factory, db_url, webhook)
    queue_failed_orders(site, 3)
    sender, stop = new_sender(site), threading.Event()
    webhook.gate.clear()  # the first POST waits
    delivered: list[int] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: delivered.append(sender.deliver_due(stop)))
    thread.start()
    assert webhook.arrived.acquire(timeout=10), "the first POST did not arrive"
    if why == "stop":
        stop.set()
    else:
        wait_for(lambda: time.monotonic() > started + window, what="the batch's window to pass")
    webhook.gate.set()
    thread.join(timeout=20)
    assert delivered == [1]
    first, *rest = outbox_rows(site)
    assert first.sent_at is not None and first.attempts == 1
    assert [(r.sent_at, r.refused_at, r.lease_until, r.attempts, r.detail) for r in rest] == [
        (None, None, None, 0, None)] * 2
    assert new_sender(site).deliver_due() == 2
    assert keys_received(webhook) == Counter({f"omero-adi-{r.id}": 1 for r in outbox_rows(site)})
