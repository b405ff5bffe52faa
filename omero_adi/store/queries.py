"""Load the named SQL of ``queries.sql`` (one place to read and review it)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import BindParameter, Connection, CursorResult, TextClause, bindparam, text

_HEADER = re.compile(r"^-- name: (\S+)\s*$", re.MULTILINE)
_LIST_PARAM = re.compile(r"(?<!:):(\w+_ids)\b")


@cache
def _all() -> dict[str, str]:
    source = resources.files("omero_adi.store").joinpath("queries.sql").read_text("utf-8")
    parts = _HEADER.split(source)[1:]
    return {name: _code(body) for name, body in zip(parts[::2], parts[1::2])}


def _code(body: str) -> str:
    """The SQL without its comment lines (a ``:word`` in prose would become a parameter)."""
    return "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--")).strip()


@cache
def query(name: str, dialect: str) -> TextClause:
    """The query ``name``, in its ``name.<dialect>`` variant when there is one.

    A parameter named ``*_ids`` takes a list (it expands to ``IN (…)``). Built
    once per name and dialect: :func:`run` is on the claim path.
    """
    queries = _all()
    sql = queries.get(f"{name}.{dialect}", queries[name])
    lists: list[BindParameter[Any]] = [bindparam(p, expanding=True) for p in sorted(set(_LIST_PARAM.findall(sql)))]
    return text(sql).bindparams(*lists) if lists else text(sql)


def run(connection: Connection, name: str, **params: Any) -> CursorResult[Any]:
    """Execute the query ``name`` for the connection's database."""
    return connection.execute(query(name, connection.dialect.name), params)
