"""What a notification says: a :class:`Notice`, rendered as text or JSON.

One notice per outbox row. Its :attr:`Notice.key` is stable across delivery
attempts (it comes from the row's id), so a receiver that sees it twice can
drop the second copy: it is the e-mail's ``Message-ID`` and the webhooks'
``Idempotency-Key`` header.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from omero_adi.notify.config import NotifySettings

GUARD = "guard"
WATCH = "watch"
TEST = "test"


@dataclass(frozen=True)
class Finding:
    """One imported file the in-place guard found missing, moved or changed."""

    path: str
    state: str
    detail: str
    images: tuple[int, ...] = ()
    plates: tuple[int, ...] = ()


@dataclass(frozen=True)
class Notice:
    key: str
    #: A stage (``Import Failed``), :data:`GUARD`, :data:`WATCH` or :data:`TEST`.
    kind: str
    uuid: str | None
    user: str
    group: str
    destination: str = ""
    files: tuple[str, ...] = ()
    description: str = ""
    images: tuple[int, ...] = ()
    plates: tuple[int, ...] = ()
    findings: tuple[Finding, ...] = field(default=())
    #: The subject of a :data:`WATCH` notice (what happened to which unit).
    headline: str = ""

    def subject(self) -> str:
        if self.kind == WATCH:
            return self.headline
        if self.kind == GUARD:
            return (f"OMERO: {len(self.findings)} file(s) of import {self.uuid} "
                    "missing, moved or changed")
        if self.kind == TEST:
            return "OMERO import notifications: test message"
        count = f"{len(self.files)} file(s)" if self.files else "order"
        return f"OMERO: {self.kind} — {count} of {self.user} ({self.group}), order {self.uuid}"

    def text(self, settings: NotifySettings) -> str:
        """The message body, the same for e-mail and chat webhooks."""
        if self.kind == TEST:
            return ("This is a test message from omero-adi (`omero-adi notify --test`): "
                    "this channel works.")
        lines = [self.subject(), ""]
        lines += [f"Order: {self.uuid or '(none)'}", f"User: {self.user or '(unknown)'}",
                  f"Group: {self.group or '(unknown)'}"]
        if self.destination:
            lines.append(f"Destination: {self.destination}{_link(settings, self.destination)}")
        if self.files:
            lines += ["", "Files:"] + [f"  {f}" for f in _shortened(self.files, settings)]
        if self.description:
            lines += ["", self.description]
        if self.images or self.plates:
            lines += ["", "Created in OMERO:"] + _objects(settings, self.images, self.plates)
        for finding in self.findings:
            lines += ["", f"{finding.state.upper()}: {finding.path}", f"  {finding.detail}"]
            lines += _objects(settings, finding.images, finding.plates, indent="  backs ")
        if self.findings:
            lines += ["", "OMERO can no longer read these images correctly. Restore the files "
                      "where they were, unchanged, or re-import them."]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        """The notice as a JSON object (the ``signed`` webhook body)."""
        data = asdict(self)
        data["subject"] = self.subject()
        return data


def _shortened(files: tuple[str, ...], settings: NotifySettings) -> list[str]:
    shown = list(files[: settings.max_files_listed])
    if len(files) > len(shown):
        shown.append(f"… and {len(files) - len(shown)} more")
    return shown


def _objects(settings: NotifySettings, images: tuple[int, ...], plates: tuple[int, ...],
             indent: str = "  ") -> list[str]:
    return [f"{indent}{kind} {number}{_link(settings, f'{kind} {number}')}"
            for kind, ids in (("Plate", plates), ("Image", images)) for number in ids]


def _link(settings: NotifySettings, thing: str) -> str:
    """`` <url>`` of an object (``Image 5``) in OMERO.web, when its address is set."""
    if not settings.omero_web_url:
        return ""
    kind, _, number = thing.partition(" ")
    return f" {settings.omero_web_url.rstrip('/')}/webclient/?show={kind.lower()}-{number}"
