"""The stand-in's "Bio-Formats": a small file format of our own, and helpers that write it.

A file is importable when a line of its first 64 KiB holds ``ADI-STANDIN``
followed by a kind and ``key=value`` words (anything may come before the
marker, so a converter that prefixes the input still yields a sample)::

    ADI-STANDIN image series=2
    ADI-STANDIN image files=ch1.raw,ch2.raw      (a multi-file image)
    ADI-STANDIN plate fields=4                    (an HCS plate: 4 images)
    ADI-STANDIN damaged                           (the reader throws)

Kinds: ``image`` (``series`` images), ``plate`` (one plate of ``fields``
images), ``damaged`` (``setId`` fails: a ``FILE_EXCEPTION`` while scanning).
``files=`` names further used files, relative to this file's folder; this
file comes first (Bio-Formats lists the files ``usedToInitialize`` first,
``ImportCandidates.getOrderedFiles``). What happens later, per fileset:
``on-import=fail`` (the server's import fails), ``on-import=crash`` (the JVM
dies), ``on-import=hang`` (never returns), ``wait=PATH`` (the fileset's import
starts only once PATH exists), ``hold=PATH`` (the server has imported it, but
``IMPORT_DONE`` is reported only once PATH exists: the importer may stop first).
A file without the marker is an unknown format, as Bio-Formats would find it.
A malformed marker line is a mistake in a test: the stand-in stops loudly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MARKER = "ADI-STANDIN"
KINDS = ("image", "plate", "damaged")
BEHAVIOURS = ("fail", "crash", "hang")
#: How much of a file the stand-in reader looks at.
HEAD = 65536


class SampleError(Exception):
    """A marker line the stand-in does not understand (a bug in the test)."""


@dataclass(frozen=True)
class Sample:
    kind: str
    #: Images: the series of an image, the fields of a plate.
    count: int = 1
    #: Further used files, relative to the sample's folder.
    files: tuple[str, ...] = ()
    on_import: str | None = None
    wait: str | None = None
    hold: str | None = None

    def line(self) -> str:
        words = [MARKER, self.kind]
        if self.count != 1:
            words.append(f"{'fields' if self.kind == 'plate' else 'series'}={self.count}")
        if self.files:
            words.append("files=" + ",".join(self.files))
        for key, value in (("on-import", self.on_import), ("wait", self.wait), ("hold", self.hold)):
            if value is not None:
                words.append(f"{key}={value}")
        return " ".join(words) + "\n"


def read_sample(path: str) -> Sample | None:
    """The sample ``path`` holds, or None for an unknown format."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD).decode("utf-8", "replace")
    for line in head.splitlines():
        if MARKER in line:
            return _parse(line[line.index(MARKER) + len(MARKER):].split(), path)
    return None


def _parse(words: list[str], path: str) -> Sample:
    if not words or words[0] not in KINDS:
        raise SampleError(f"{path}: {MARKER} needs a kind out of {KINDS}, got {words[:1]}")
    fields: dict[str, object] = {"kind": words[0]}
    for word in words[1:]:
        key, _, value = word.partition("=")
        if key in ("series", "fields") and value.isdigit() and int(value) > 0:
            fields["count"] = int(value)
        elif key == "files" and value:
            fields["files"] = tuple(value.split(","))
        elif key == "on-import" and value in BEHAVIOURS:
            fields["on_import"] = value
        elif key in ("wait", "hold") and os.path.isabs(value):
            fields[key] = value
        else:
            raise SampleError(f"{path}: {MARKER} does not understand {word!r}")
    return Sample(**fields)  # type: ignore[arg-type]


def write(path: Path, sample: Sample, *, prefix: str = "") -> Path:
    """Write ``sample`` at ``path`` (``prefix`` first: something that is not the marker)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prefix + sample.line())
    return path


def image(path: Path, *, series: int = 1, **behaviour: str) -> Path:
    return write(path, Sample("image", series, **behaviour))  # type: ignore[arg-type]


def plate(path: Path, *, fields: int = 1, **behaviour: str) -> Path:
    return write(path, Sample("plate", fields, **behaviour))  # type: ignore[arg-type]


def multifile(path: Path, members: dict[str, str], *, series: int = 1) -> Path:
    """A multi-file image: ``path`` names its ``members`` (relative name → content)."""
    for name, content in members.items():
        member = path.parent / name
        member.parent.mkdir(parents=True, exist_ok=True)
        member.write_text(content)
    return write(path, Sample("image", series, files=tuple(members)))


def damaged(path: Path) -> Path:
    return write(path, Sample("damaged"))
