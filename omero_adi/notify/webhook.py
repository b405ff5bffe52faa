"""Webhooks (urllib): a chat message, or the whole notice signed with HMAC-SHA256.

``chat`` POSTs ``{"text": …}``, which Slack, Mattermost and Microsoft Teams
incoming webhooks accept. ``signed`` POSTs the notice as JSON with
``X-OMERO-ADI-Signature: sha256=<hex HMAC-SHA256 of the body>`` under the
configured secret. Both carry ``Idempotency-Key``. HTTP 4xx (except 408, 425 and
429) is a permanent refusal; 5xx, 408, 425, 429 and network errors are transient.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from typing import Mapping

from omero_adi import __version__
from omero_adi.notify.config import NotifySettings, Webhook
from omero_adi.notify.errors import PermanentFailure, TransientFailure
from omero_adi.notify.message import Notice

SIGNATURE_HEADER = "X-OMERO-ADI-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRYABLE_4XX = frozenset({408, 425, 429})


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def webhook_request(
    hook: Webhook, notice: Notice, settings: NotifySettings,
    environ: Mapping[str, str] | None = None,
) -> urllib.request.Request:
    payload = {"text": notice.text(settings)} if hook.format == "chat" else notice.as_json()
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: notice.key,
               "User-Agent": f"omero-adi/{__version__}"}
    if hook.format == "signed":
        try:
            headers[SIGNATURE_HEADER] = signature(hook.secret(environ), body)
        except LookupError as exc:
            raise TransientFailure(str(exc)) from exc
    return urllib.request.Request(hook.url, data=body, headers=headers, method="POST")


def post_webhook(
    hook: Webhook, notice: Notice, settings: NotifySettings,
    environ: Mapping[str, str] | None = None,
) -> None:
    request = webhook_request(hook, notice, settings, environ)
    where = f"webhook {hook.name}"
    try:
        with urllib.request.urlopen(request, timeout=hook.timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        text = f"{where} answered HTTP {exc.code} {exc.reason}: {_body(exc)}"
        if 400 <= exc.code < 500 and exc.code not in RETRYABLE_4XX:
            raise PermanentFailure(text) from exc
        raise TransientFailure(text) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TransientFailure(f"{where}: {type(exc).__name__}: {exc}") from exc


def _body(error: urllib.error.HTTPError) -> str:
    try:
        return error.read(300).decode(errors="replace").strip()
    except OSError:
        return ""
