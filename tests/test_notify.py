"""Notifications end to end: a real daemon, a real database, a real SMTP
server (aiosmtpd) and a real HTTP receiver on loopback. Whatever asks OMERO
(the user's address, the orders' imports) goes to the OMERO double through
the real omero-py and the real ``omero import`` wrapper with the importer
stand-in; tests of delivery to webhooks and of the outbox alone have no OMERO."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import sqlalchemy as sa

from omero_adi.cli import main as cli_main
from omero_adi.notify.service import Notifications
from omero_adi.pipeline import OrderContext, OrderFailed
from omero_adi.settings import SettingsError, build_settings
from omero_adi.store.models import STAGE_IMPORTED, STAGE_INGEST_FAILED
from omero_adi.watch import events as watch_events
from omero_adi.watch.events import WatchEvent
from tests.helpers import wait_for
from tests.importer_standin.fixture import importer_site  # noqa: F401  (fixture)
from tests.notify_fixtures import SmtpSink, WebhookReceiver, self_signed, smtp_sink, webhook  # noqa: F401
from tests.notify_site import LAB_DATASET, Site, site_factory  # noqa: F401  (fixture)

SECRET = "s3cret-for-signing"


def fail(ctx: OrderContext) -> str:
    raise OrderFailed("the converter exited with status 3: unsupported pixel type")


def smtp_settings(sink: SmtpSink, **more: Any) -> dict[str, Any]:
    return {"smtp_host": "127.0.0.1", "smtp_port": sink.port, "smtp_security": "none",
            "sender": "omero-imports@facility.example.org",
            "group_recipients": [{"group": "lab", "recipients": ["imaging@facility.example.org"]}],
            "retry_delay": 0.2, **more}


def test_a_failed_order_mails_the_user_and_the_facility(
    db_url: str, site_factory: Callable[..., Site], smtp_sink: SmtpSink,  # noqa: F811
) -> None:
    site = site_factory(smtp_settings(smtp_sink, omero_web_url="https://omero.example.org/"),
                        url=db_url, omero=True)
    with site.daemon():
        uuid, files = site.order(count=12)
        assert site.wait(uuid) == STAGE_INGEST_FAILED
        wait_for(smtp_sink.messages, what="the e-mail")
        [(to, message)] = smtp_sink.messages()
    assert to == ["alice@lab.example.org", "imaging@facility.example.org"]
    assert message["To"] == "alice@lab.example.org, imaging@facility.example.org"
    assert message["Subject"] == (f"OMERO: Import Failed — 12 file(s) of alice (lab), "
                                  f"order {uuid}")
    [row] = site.outbox()
    assert message["Message-ID"] == f"<omero-adi-{row.id}@facility.example.org>"
    assert message["X-OMERO-ADI-Order"] == uuid
    body = message.get_content()
    assert f"Order: {uuid}" in body and "User: alice" in body and "Group: lab" in body
    # what the importer said about the file the server refused
    assert "Import failed" in site.description(uuid) and site.description(uuid) in body
    assert (f"Destination: Dataset {LAB_DATASET} "
            f"https://omero.example.org/webclient/?show=dataset-{LAB_DATASET}") in body
    listed = [f for f in files if f"  {f}\n" in body]
    assert listed == files[:10] and "… and 2 more" in body
    assert row.sent_at is not None and row.kind == STAGE_INGEST_FAILED and row.attempts == 1


def test_completed_orders_are_told_only_when_asked_and_name_what_was_created(
    site_factory: Callable[..., Site], smtp_sink: SmtpSink,  # noqa: F811
) -> None:
    settings = smtp_settings(smtp_sink, omero_web_url="https://omero.example.org")
    site = site_factory({**settings, "stages": ["Import Completed"]}, omero=True)
    with site.daemon():
        uuid, [path] = site.order(failing=False, series=2)  # one fileset, two images
        assert site.wait(uuid) == STAGE_IMPORTED, site.description(uuid)
        wait_for(smtp_sink.messages, what="the e-mail")
        failed, _ = site.order()
        assert site.wait(failed) == STAGE_INGEST_FAILED
    [(_, message)] = smtp_sink.messages()  # the failure was not asked for
    assert [row.uuid for row in site.outbox()] == [uuid]
    body = message.get_content()
    assert "Created in OMERO:" in body
    [fileset] = [i for i, f in site.omero.filesets().items()  # type: ignore[union-attr]
                 if f["entries"][0]["original"] == path]
    images = site.omero.images_of(fileset)  # type: ignore[union-attr]
    assert len(images) == 2
    for image in images:
        assert f"  Image {image} https://omero.example.org/webclient/?show=image-{image}" in body


def test_smtp_down_then_up_delivers_once(
    site_factory: Callable[..., Site],
) -> None:
    sink = SmtpSink()  # not started: nothing listens on its port
    site = site_factory(smtp_settings(sink), omero=True)
    with site.daemon():
        uuid, _ = site.order()
        assert site.wait(uuid) == STAGE_INGEST_FAILED
        wait_for(lambda: site.outbox()[0].attempts >= 2, what="a retry")
        [row] = site.outbox()
        assert row.sent_at is None and row.refused_at is None
        assert "ConnectionRefusedError" in row.detail
        sink.start()
        try:
            wait_for(lambda: site.outbox()[0].sent_at is not None, what="delivery")
        finally:
            sink.stop()
    assert len(sink.messages()) == 1


def test_a_refused_address_is_recorded_and_not_retried(
    site_factory: Callable[..., Site], smtp_sink: SmtpSink,  # noqa: F811
) -> None:
    smtp_sink.refuse = {"alice@lab.example.org", "imaging@facility.example.org"}
    site = site_factory(smtp_settings(smtp_sink), omero=True)
    with site.daemon():
        uuid, _ = site.order()
        site.wait(uuid)
        wait_for(lambda: site.outbox()[0].refused_at is not None, what="the refusal")
        sender = site_sender(site)
        assert sender.deliver_due() == 0  # nothing is due any more
    [row] = site.outbox()
    assert row.attempts == 1 and row.sent_at is None
    assert "refused every recipient" in row.detail and "550" in row.detail
    assert smtp_sink.messages() == []


def test_one_refused_address_does_not_stop_the_others(
    site_factory: Callable[..., Site], smtp_sink: SmtpSink,  # noqa: F811
) -> None:
    smtp_sink.refuse = {"alice@lab.example.org"}
    site = site_factory(smtp_settings(smtp_sink), omero=True)
    with site.daemon():
        uuid, _ = site.order()
        site.wait(uuid)
        wait_for(lambda: site.outbox()[0].sent_at is not None, what="delivery")
    [(to, _)] = smtp_sink.messages()
    assert to == ["imaging@facility.example.org"]
    assert "refused: alice@lab.example.org (550" in site.outbox()[0].detail


#: A fault that does nothing but count the calls it is taken by.
LOOKUPS = 1000


def site_sender(site: Site) -> Any:
    sender = Notifications(site.settings, engine=site.engine, server=site.server).sender
    assert sender is not None
    return sender


def test_webhooks_chat_and_signed_with_one_idempotency_key_per_message(
    site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADI_HOOK_SECRET", SECRET)
    webhook.answers = [503]  # the first POST fails for now
    site = site_factory({"retry_delay": 0.2, "webhooks": [
        {"url": f"{webhook.url}/chat", "name": "chat"},
        {"url": f"{webhook.url}/signed", "name": "audit", "format": "signed",
         "secret_env": "ADI_HOOK_SECRET"},
    ]})
    with site.daemon(fail):
        uuid, _ = site.order()
        site.wait(uuid)
        wait_for(lambda: all(r.sent_at for r in site.outbox()), what="both webhooks")
    by_path: dict[str, list[Any]] = {}
    for request in webhook.requests:
        by_path.setdefault(request.path, []).append(request)
    retried = by_path[webhook.requests[0].path]
    assert len(retried) == 2  # answered 503, then delivered with the same key
    assert retried[0].headers["Idempotency-Key"] == retried[1].headers["Idempotency-Key"]
    [chat] = by_path["/chat"][-1:]
    assert set(chat.json()) == {"text"} and uuid in chat.json()["text"]
    assert "unsupported pixel type" in chat.json()["text"]
    [signed] = by_path["/signed"][-1:]
    expected = "sha256=" + hmac.new(SECRET.encode(), signed.body, hashlib.sha256).hexdigest()
    assert signed.headers["X-OMERO-ADI-Signature"] == expected
    notice = signed.json()
    assert (notice["kind"], notice["uuid"], notice["user"], notice["group"]) == (
        STAGE_INGEST_FAILED, uuid, "alice", "lab")
    keys = {r.headers["Idempotency-Key"] for r in webhook.requests}
    assert keys == {f"omero-adi-{r.id}" for r in site.outbox()}


def test_a_webhook_answering_404_is_refused_for_good(
    site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
) -> None:
    webhook.answers = [404]
    site = site_factory({"retry_delay": 0.05, "webhooks": [{"url": webhook.url}]})
    with site.daemon(fail):
        uuid, _ = site.order()
        site.wait(uuid)
        wait_for(lambda: site.outbox()[0].refused_at is not None, what="the refusal")
        assert site_sender(site).deliver_due() == 0
    [row] = site.outbox()
    assert row.attempts == 1 and len(webhook.requests) == 1
    assert "HTTP 404" in row.detail and "no such hook" in row.detail


def test_a_slow_webhook_does_not_delay_orders(
    site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
) -> None:
    webhook.gate.clear()  # every POST hangs until the test ends
    site = site_factory({"webhooks": [{"url": webhook.url, "timeout": 60}]})
    with site.daemon(fail):
        first, _ = site.order()
        site.wait(first)
        assert webhook.arrived.acquire(timeout=10)  # the sender is stuck in its first POST
        later = [site.order()[0] for _ in range(6)]
        for uuid in later:
            assert site.wait(uuid) == STAGE_INGEST_FAILED
        assert len(webhook.requests) == 1  # still stuck: no other message went out
        webhook.gate.set()
    with site.engine.connect() as connection:
        pickups = connection.execute(sa.text(
            "SELECT extract(epoch FROM claimed_at - queued_at) FROM adi_queue "
            "WHERE uuid IN :uuids").bindparams(sa.bindparam("uuids", expanding=True)),
            {"uuids": later}).scalars().all()
    assert len(pickups) == 6 and max(pickups) < 2.0, pickups


def test_the_users_address_is_looked_up_once_and_cached(
    site_factory: Callable[..., Site], smtp_sink: SmtpSink,  # noqa: F811
) -> None:
    site = site_factory(smtp_settings(smtp_sink), omero=True)
    double = site.omero.double  # type: ignore[union-attr]
    double.fault("IAdmin.lookupExperimenter", times=LOOKUPS)  # counts the lookups
    with site.daemon(fail):  # orders that ask OMERO nothing: every lookup is the sender's
        for _ in range(3):
            site.wait(site.order()[0])
        wait_for(lambda: len(smtp_sink.messages()) == 3, what="three e-mails")
    assert all(to[0] == "alice@lab.example.org" for to, _ in smtp_sink.messages())
    [counter] = [f for f in double.state()["faults"] if f["call"] == "IAdmin.lookupExperimenter"]
    assert LOOKUPS - counter["times"] == 1


def test_a_user_without_an_address_still_reaches_the_facility(
    site_factory: Callable[..., Site], smtp_sink: SmtpSink,  # noqa: F811
) -> None:
    site = site_factory(smtp_settings(smtp_sink), omero=True)  # bob: no e-mail in OMERO
    with site.daemon():
        site.wait(site.order(user="bob")[0])
        wait_for(smtp_sink.messages, what="the e-mail")
    assert [to for to, _ in smtp_sink.messages()] == [["imaging@facility.example.org"]]


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_and_login(site_factory: Callable[..., Site], tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch, security: str) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = SmtpSink(tls_context=context, implicit=security == "tls",
                    login=("adi", "right password"))
    sink.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this certificate
    monkeypatch.setenv("ADI_SMTP_PASSWORD", "wrong password")
    try:
        site = site_factory({**smtp_settings(sink), "smtp_host": "localhost",
                             "smtp_security": security, "smtp_user": "adi"}, omero=True)
        with site.daemon():
            site.wait(site.order()[0])
            wait_for(lambda: site.outbox()[0].detail, what="the refused login")
            assert "refused the login of 'adi': 535" in site.outbox()[0].detail
            assert site.outbox()[0].refused_at is None  # a setting to fix: kept, retried
            monkeypatch.setenv("ADI_SMTP_PASSWORD", "right password")
            wait_for(sink.messages, what=f"the e-mail over {security}")
    finally:
        sink.stop()
    assert site.outbox()[0].sent_at is not None


def test_notify_test_says_what_happened_per_channel(
    smtp_sink: SmtpSink, webhook: WebhookReceiver, tmp_path: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    webhook.answers = [200, 404]
    config = tmp_path / "settings.yml"
    config.write_text(json.dumps({"notify": {
        **smtp_settings(smtp_sink), "recipients": ["ops@facility.example.org"],
        "webhooks": [{"url": f"{webhook.url}/good", "name": "good"},
                     {"url": f"{webhook.url}/gone", "name": "gone"}]}}))
    assert cli_main(["--config", str(config), "notify", "--test"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("ok   email: test message accepted to ops@facility.example.org, "
                      "imaging@facility.example.org")
    assert out[1] == "ok   webhook:good: test message accepted"
    assert out[2].startswith("FAIL webhook:gone: webhook gone answered HTTP 404")
    [(to, message)] = smtp_sink.messages()
    assert message["Subject"] == "OMERO import notifications: test message"


@pytest.mark.parametrize("notify, complaint", [
    ({"smtp_security": "ssl"}, "smtp_security must be one of starttls, tls, none"),
    ({"smtp_host": "mail"}, "sender must be an e-mail address"),
    ({"stages": ["Import Started"]}, "stages may be Import Failed or Import Completed"),
    ({"webhooks": [{"url": "hooks.example.org"}]}, "url must start with http"),
    ({"webhooks": [{"url": "https://x", "format": "signed"}]}, "needs secret_env"),
    ({"recipients": ["not an address"]}, "not e-mail addresses"),
    ({"smpt_host": "mail"}, "unknown setting notify.smpt_host"),
    ({"smtp_port": "twenty-five"}, "'notify.smtp_port' must be a whole number"),
])
def test_bad_notify_settings_are_named(notify: dict[str, Any], complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint.replace(".", r"\.")):
        build_settings({"notify": notify}, {})


def test_messages_held_by_a_dead_sender_of_this_host_are_freed_at_start(
    site_factory: Callable[..., Site], smtp_sink: SmtpSink,  # noqa: F811
) -> None:
    import socket
    import subprocess

    site = site_factory(smtp_settings(smtp_sink))
    dead = subprocess.Popen(["true"])  # a pid that has just ended
    dead.wait()
    holder = f"{socket.gethostname()}:{dead.pid}:feedbeef"
    alive = f"{socket.gethostname()}:{os.getpid()}:cafe0000"
    with site.engine.begin() as connection:
        for owner in (holder, alive):
            connection.execute(sa.text(
                "INSERT INTO adi_notify_outbox (kind, channel, lease_owner, lease_until) "
                "VALUES ('test', 'email', :owner, CURRENT_TIMESTAMP + interval '1 hour')"),
                {"owner": owner})
    site_sender(site).release_dead()
    assert [(r.lease_owner, r.lease_until is None) for r in site.outbox()] == [
        (holder, True), (alive, False)]


def test_a_message_for_a_channel_no_longer_configured_is_refused(
    site_factory: Callable[..., Site], smtp_sink: SmtpSink,  # noqa: F811
) -> None:
    site = site_factory(smtp_settings(smtp_sink))
    with site.engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO adi_notify_outbox (uuid, kind, channel, payload) VALUES "
            "('u', 'guard', 'webhook:removed', :payload)"),
            {"payload": json.dumps({"user": "alice", "group": "lab", "findings": []})})
    assert site_sender(site).deliver_due() == 1
    [row] = site.outbox()
    assert row.refused_at is not None and row.detail == (
        "channel webhook:removed is no longer configured")


def test_old_delivered_and_refused_messages_are_purged(db_url: str,
                                                      site_factory: Callable[..., Site]) -> None:
    site = site_factory({"webhooks": [{"url": "http://127.0.0.1:9/"}], "keep_days": 30},
                        url=db_url)
    long_ago = datetime.now(timezone.utc) - timedelta(days=31)
    recently = datetime.now(timezone.utc) - timedelta(days=29)
    with site.engine.begin() as connection:
        for kind, sent, refused in (("old sent", long_ago, None), ("old refused", None, long_ago),
                                    ("recent", recently, None), ("unsent", None, None)):
            connection.execute(sa.text(
                "INSERT INTO adi_notify_outbox (kind, channel, sent_at, refused_at, created_at) "
                "VALUES (:kind, 'webhook:127.0.0.1:9', :sent, :refused, :created)"),
                {"kind": kind, "sent": sent, "refused": refused, "created": long_ago})
    site_sender(site).purge()
    assert [row.kind for row in site.outbox()] == ["recent", "unsent"]


def test_watch_folder_units_that_changed_or_were_refused_are_told(
    site_factory: Callable[..., Site], webhook: WebhookReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watcher's events reach the outbox: a unit changed after its order (with
    the order's user and group) and a refused one; an ordered unit is not news."""
    monkeypatch.setenv("ADI_HOOK_SECRET", SECRET)
    site = site_factory({"webhooks": [{"url": webhook.url, "format": "signed",
                                       "secret_env": "ADI_HOOK_SECRET"}]})
    notifications = Notifications(site.settings, engine=site.engine, server=site.server)
    uuid, files = site.order()
    notifications.start()
    try:
        watch_events.publish(WatchEvent("ordered", "scope", files[0], uuid, "ordered"))
        watch_events.publish(WatchEvent("changed", "scope", files[0], uuid, "its size changed"))
        watch_events.publish(WatchEvent("refused", "scope", "/data/x/run1", None,
                                        "OMERO has no user 'x'"))
        wait_for(lambda: len(site.outbox()) == 2 and all(r.sent_at for r in site.outbox()),
                 what="two watch messages sent")
    finally:
        notifications.stop()
    changed, refused = sorted((r.json() for r in webhook.requests), key=lambda n: n["files"])[::-1]
    assert (changed["kind"], changed["uuid"], changed["user"], changed["group"]) == (
        "watch", uuid, "alice", "lab")
    assert changed["subject"].startswith(f"OMERO watch folder: {files[0]} changed after order")
    assert changed["description"] == "Watch rule 'scope': its size changed"
    assert (refused["uuid"], refused["user"], refused["files"]) == (None, "", ["/data/x/run1"])
    assert "cannot become an order" in refused["subject"]
    assert "OMERO has no user 'x'" in refused["description"]
