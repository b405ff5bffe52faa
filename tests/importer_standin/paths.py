"""The client path the importer records for each used file (``FilesetEntry.clientPath``).

Modelled on ome/omero-blitz:
- ``ImportLibrary.createImport`` sanitises with the combined rules
  ``WINDOWS_REQUIRED`` + ``UNIX_REQUIRED``, whatever the client's platform;
- ``ImportContainer.fillData`` records, per used file,
  ``ClientFilePathTransformer.getFsFileFromClientFile(file, Integer.MAX_VALUE)``;
- ``FsFile(File)`` splits ``File.getAbsolutePath()`` on the separator and drops
  empty components, so the result has **no leading slash** and ``.``/``..``
  components are kept as they are (``getAbsolutePath`` does not normalise);
- ``MakePathComponentSafe.apply`` changes each component: a reserved name
  gets the safe character appended, a reserved prefix (``CON.``, ``$``, …) gets
  it prepended (both tested on the upper-cased original), then code points are
  substituted;
- ``FilePathRestrictionInstance`` / ``FilePathRestrictions``: the substitutions
  and reserved names below; the safe character is ``_``; every control code
  point below U+0100 (U+0000–U+001F, U+007F–U+009F) becomes ``_``.
"""

from __future__ import annotations

import os

SAFE = "_"

#: FilePathRestrictionInstance: WINDOWS_REQUIRED and UNIX_REQUIRED transformation matrices.
SUBSTITUTES = {
    '"': "'", "*": "x", "/": "!", ":": ";", "<": "[", ">": "]", "?": "%", "\\": "!", "|": "!",
}
#: FilePathRestrictionInstance: WINDOWS_REQUIRED unsafe names.
RESERVED_NAMES = frozenset(
    ["AUX", "CLOCK$", "CON", "NUL", "PRN"]
    + [f"{device}{n}" for device in ("COM", "LPT") for n in range(1, 10)]
)
#: Each reserved name followed by a dot, and NTFS metadata files (``$``).
RESERVED_PREFIXES = tuple(sorted(f"{name}." for name in RESERVED_NAMES)) + ("$",)


def _is_control(code_point: int) -> bool:
    # FilePathRestrictions: Character.getType(c) == CONTROL for c < 0x100
    return code_point < 0x20 or 0x7F <= code_point <= 0x9F


def safe_component(component: str) -> str:
    """``MakePathComponentSafe.apply`` with the portable required rules."""
    upper = component.upper()
    if upper in RESERVED_NAMES:
        component += SAFE
    for prefix in RESERVED_PREFIXES:
        if upper.startswith(prefix):
            component = SAFE + component
    return "".join(SAFE if _is_control(ord(c)) else SUBSTITUTES.get(c, c) for c in component)


def absolute(path: str) -> str:
    """``java.io.File.getAbsolutePath``: joined to the working directory, not normalised."""
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def client_path(path: str) -> str:
    """The ``FilesetEntry.clientPath`` the importer sends for the file at ``path``."""
    return "/".join(safe_component(part) for part in absolute(path).split("/") if part)
