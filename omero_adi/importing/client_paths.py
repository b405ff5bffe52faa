"""The client paths the OMERO importer records, so filesets can be matched to order paths.

The Java importer does not record a file's path as it is: ``ImportLibrary``
passes every component through ``MakePathComponentSafe`` with the rules
``FilePathRestrictionInstance.WINDOWS_REQUIRED`` and ``UNIX_REQUIRED``
(ome/omero-blitz, ``ome/services/blitz/repo/path/``), and
``FilesetEntry.clientPath`` holds the result, without the leading ``/``.
:func:`client_path` applies the same rules, so an acquisition folder named
``2026-11-21 10:30:00`` is found again as ``2026-11-21 10;30;00``.
"""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath

#: Appended to a reserved name, prepended to a reserved prefix, and the
#: replacement of control characters.
SAFE = "_"
_RESERVED = frozenset(
    ["AUX", "CLOCK$", "CON", "NUL", "PRN"]
    + [f"{device}{n}" for device in ("COM", "LPT") for n in range(1, 10)]
)
#: ``CON.txt`` and the like, and NTFS metadata names (``$MFT``).
_RESERVED_PREFIXES = tuple(f"{name}." for name in _RESERVED) + ("$",)
_REPLACE = str.maketrans({
    '"': "'", "*": "x", "/": "!", ":": ";", "<": "[", ">": "]", "?": "%", "\\": "!", "|": "!",
    # every code point below 0x100 that Java's Character.getType calls CONTROL
    **{chr(c): SAFE for c in range(0x100) if unicodedata.category(chr(c)) == "Cc"},
})


def safe_component(name: str) -> str:
    """One path component as ``MakePathComponentSafe.apply`` makes it."""
    upper = name.upper()
    if upper in _RESERVED:
        name += SAFE
    if upper.startswith(_RESERVED_PREFIXES):
        name = SAFE + name
    return name.translate(_REPLACE)


def client_path(path: PurePosixPath) -> PurePosixPath:
    """The absolute ``path`` as the importer records it (with a leading ``/`` again)."""
    parts = [safe_component(part) for part in path.parts if part != "/"]
    return PurePosixPath("/", *parts)
