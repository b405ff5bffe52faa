"""Load the named SQL of ``queries.sql`` (one place to read and review it)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from sqlalchemy import TextClause, text

_HEADER = re.compile(r"^-- name: (\S+)\s*$", re.MULTILINE)


@cache
def _all() -> dict[str, str]:
    source = resources.files("omero_adi.store").joinpath("queries.sql").read_text("utf-8")
    parts = _HEADER.split(source)[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2])}


def query(name: str, dialect: str) -> TextClause:
    """The query ``name``, in its ``name.<dialect>`` variant when there is one."""
    queries = _all()
    return text(queries.get(f"{name}.{dialect}", queries[name]))
