"""E-mail through an SMTP server (smtplib): STARTTLS, TLS or plain, optional login.

The SMTP answer decides what happens next: 5xx refusals are permanent, 4xx
answers, timeouts and connection failures transient. A message some
recipients refused still counts as sent to the others; the refusal is noted.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Mapping, Sequence

from omero_adi.notify.config import NotifySettings
from omero_adi.notify.errors import PermanentFailure, TransientFailure
from omero_adi.notify.message import Notice


def message_id(notice: Notice, sender: str) -> str:
    """``<key@sender's domain>``: the same for every attempt of one message."""
    return f"<{notice.key}@{sender.rpartition('@')[2] or 'omero-adi'}>"


def build_email(settings: NotifySettings, notice: Notice, to: Sequence[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = notice.subject()
    message["From"] = settings.sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(notice, settings.sender)
    if notice.uuid:
        message["X-OMERO-ADI-Order"] = notice.uuid
    message.set_content(notice.text(settings))
    return message


def _connect(settings: NotifySettings) -> smtplib.SMTP:
    host, port, timeout = settings.smtp_host, settings.smtp_port, settings.smtp_timeout
    if settings.smtp_security == "tls":
        return smtplib.SMTP_SSL(host, port, timeout=timeout,
                                context=ssl.create_default_context())
    smtp = smtplib.SMTP(host, port, timeout=timeout)
    if settings.smtp_security == "starttls":
        try:
            smtp.starttls(context=ssl.create_default_context())
        except BaseException:
            smtp.close()
            raise
    return smtp


def send_email(
    settings: NotifySettings, notice: Notice, to: Sequence[str],
    environ: Mapping[str, str] | None = None,
) -> str:
    """Send ``notice`` to ``to``; return a note on recipients that were refused."""
    environ = os.environ if environ is None else environ
    where = f"SMTP server {settings.smtp_host}:{settings.smtp_port}"
    message = build_email(settings, notice, to)
    try:
        with _connect(settings) as smtp:
            if settings.smtp_user:
                password = environ.get(settings.smtp_password_env, "")
                if not password:
                    raise TransientFailure(f"no SMTP password: set ${settings.smtp_password_env}")
                smtp.login(settings.smtp_user, password)
            refused = smtp.send_message(message, to_addrs=list(to))
    except smtplib.SMTPRecipientsRefused as exc:
        reasons = _refusals(exc.recipients)
        if all(code >= 500 for code, _ in exc.recipients.values()):
            raise PermanentFailure(f"{where} refused every recipient: {reasons}") from exc
        raise TransientFailure(f"{where} refused the recipients for now: {reasons}") from exc
    except smtplib.SMTPAuthenticationError as exc:  # a setting to fix; keep the message
        raise TransientFailure(f"{where} refused the login of {settings.smtp_user!r}: "
                               f"{exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except smtplib.SMTPResponseException as exc:
        text = f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}"
        if exc.smtp_code >= 500:
            raise PermanentFailure(text) from exc
        raise TransientFailure(text) from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise TransientFailure(f"{where}: {type(exc).__name__}: {exc}") from exc
    return f"refused: {_refusals(refused)}" if refused else ""


def _text(error: bytes | str) -> str:
    return error.decode(errors="replace") if isinstance(error, bytes) else error


def _refusals(recipients: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{address} ({code} {_text(reason)})"
                     for address, (code, reason) in recipients.items())
