"""The ``notify:`` section of the settings: who is told what, and how.

Declared as frozen dataclasses that :mod:`omero_adi.settings` validates like
its own fields (same types, ``doc`` metadata, errors naming the key) and that
``docs/configuration.md`` lists as ``notify.<key>``. Secrets never live in the
settings file: the SMTP password and each webhook's signing secret are read
from environment variables whose names are configured here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from omero_adi.settings_values import setting

#: Stages an order can be notified for.
NOTIFIABLE_STAGES = ("Import Failed", "Import Completed")
SMTP_SECURITY = ("starttls", "tls", "none")
WEBHOOK_FORMATS = ("chat", "signed")


@dataclass(frozen=True)
class GroupRecipients:
    group: str = setting("", "OMERO group name.")
    recipients: list[str] = setting([], "Facility e-mail addresses told about this group's orders.")

    def __post_init__(self) -> None:
        if not self.group:
            raise ValueError("needs a group name")
        _check_addresses(self.recipients)


@dataclass(frozen=True)
class Webhook:
    url: str = setting("", "http(s) URL the JSON is POSTed to.", secret=True)
    name: str = setting("", "Name in logs and `omero-adi notify` (default: the URL's host).")
    format: str = setting(
        "chat", "`chat`: `{\"text\": …}` as Slack, Mattermost and Teams incoming webhooks "
        "accept; `signed`: the whole notice as JSON, signed with HMAC-SHA256.")
    secret_env: str = setting(
        "", "Environment variable holding the signing secret (`signed` needs one).")
    timeout: float = setting(10.0, "Seconds one POST may take.", minimum=0.1)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if self.format not in WEBHOOK_FORMATS:
            raise ValueError(f"format must be one of {', '.join(WEBHOOK_FORMATS)}, "
                             f"got {self.format!r}")
        if self.format == "signed" and not self.secret_env:
            raise ValueError("format 'signed' needs secret_env, the variable holding the secret")
        if not self.name:
            host = self.url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
            object.__setattr__(self, "name", host)

    @property
    def channel(self) -> str:
        return f"webhook:{self.name}"

    def secret(self, environ: Mapping[str, str] | None = None) -> bytes:
        value = (os.environ if environ is None else environ).get(self.secret_env, "")
        if not value:
            raise LookupError(f"webhook {self.name}: ${self.secret_env} is not set")
        return value.encode()


@dataclass(frozen=True)
class NotifySettings:
    smtp_host: str = setting("", "SMTP server; empty: no e-mail.")
    smtp_port: int = setting(587, "SMTP port (587 for STARTTLS, 465 for TLS).", minimum=1)
    smtp_security: str = setting("starttls", "`starttls`, `tls` (SMTPS) or `none`.")
    smtp_user: str = setting("", "SMTP login; empty: no login.")
    smtp_password_env: str = setting(
        "ADI_SMTP_PASSWORD", "Environment variable holding the SMTP password.")
    smtp_timeout: float = setting(30.0, "Seconds an SMTP conversation may take.", minimum=0.1)
    sender: str = setting("", "From address of the e-mails (needed with smtp_host).")
    notify_user: bool = setting(
        True, "E-mail the ordering user at the address OMERO has for them (Experimenter.email).")
    recipients: list[str] = setting([], "Facility addresses told about every order.")
    group_recipients: list[GroupRecipients] = setting(
        [], "Facility addresses per OMERO group: a list of `{group, recipients}`.")
    stages: list[str] = setting(
        ["Import Failed"], "Stages that are notified: `Import Failed`, `Import Completed`.")
    guard: bool = setting(True, "Notify the in-place guard's findings (files missing, moved "
                                "or changed since their import).")
    watch: bool = setting(True, "Notify watch-folder units that changed after their order "
                                "(not imported again) or that cannot become orders.")
    webhooks: list[Webhook] = setting([], "Webhooks: a list of `{url, name, format, secret_env, "
                                          "timeout}`.")
    omero_web_url: str = setting(
        "", "OMERO.web's address (https://omero.example.org/); messages then link each object.")
    max_files_listed: int = setting(10, "Files named in a message; the rest are counted.",
                                    minimum=1)
    retry_delay: float = setting(
        10.0, "Seconds before the first retry of a failed delivery; doubles each time.",
        minimum=0.01)
    max_retry_delay: float = setting(3600.0, "Longest wait between retries (seconds).",
                                     minimum=0.01)
    max_attempts: int = setting(
        30, "Delivery attempts before a message is given up (recorded as refused).", minimum=1)
    keep_days: int = setting(
        90, "Days a sent or refused message is kept (for `omero-adi notify`); 0: for ever.",
        minimum=0)
    poll_interval: float = setting(
        30.0, "Seconds between looks for messages queued elsewhere (a daemon that stopped, "
        "`omero-adi verify`); a daemon's own messages go at once.", minimum=0.1)

    def __post_init__(self) -> None:
        if self.smtp_security not in SMTP_SECURITY:
            raise ValueError(f"smtp_security must be one of {', '.join(SMTP_SECURITY)}, "
                             f"got {self.smtp_security!r}")
        unknown = [s for s in self.stages if s not in NOTIFIABLE_STAGES]
        if unknown:
            raise ValueError(f"stages may be {' or '.join(NOTIFIABLE_STAGES)}, got {unknown!r}")
        if self.smtp_host and "@" not in self.sender:
            raise ValueError("smtp_host is set, so sender must be an e-mail address")
        _check_addresses(self.recipients)
        names = [w.name for w in self.webhooks]
        if len(set(names)) != len(names):
            raise ValueError(f"webhook names must differ, got {names!r}")

    @property
    def channels(self) -> list[str]:
        """Where each message goes: ``email`` and ``webhook:<name>``."""
        return (["email"] if self.smtp_host else []) + [w.channel for w in self.webhooks]

    def webhook(self, channel: str) -> Webhook:
        return next(w for w in self.webhooks if w.channel == channel)

    def facility(self, group: str | None) -> list[str]:
        """The facility addresses for an order of ``group`` (None: of every group)."""
        found = list(self.recipients)
        for entry in self.group_recipients:
            if group is None or entry.group == group:
                found += [a for a in entry.recipients if a not in found]
        return found


def _check_addresses(addresses: list[str]) -> None:
    bad = [a for a in addresses if "@" not in a or any(c.isspace() for c in a)]
    if bad:
        raise ValueError(f"not e-mail addresses: {bad!r}")
