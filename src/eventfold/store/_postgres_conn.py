"""The PostgreSQL backend's connection settings: eventfold's own URL options, hiding a
password in messages, and how each pooled session is configured."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import unquote, urlsplit

import psycopg

from ..errors import ConfigurationError

__all__ = ["OPTIONS", "configure", "int_option", "scalar", "scrub", "split_url"]

OPTIONS: Final = ("schema", "pool_min_size", "pool_max_size")
"""URL options eventfold takes for itself (libpq never sees them)."""


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Take eventfold's own options out of the URL's query; libpq gets the rest as is."""
    if not isinstance(url, str):
        raise ConfigurationError(f"the PostgreSQL URL must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    keep: list[str] = []
    options: dict[str, str] = {}
    for piece in parts.query.split("&") if parts.query else ():
        key, _, value = piece.partition("=")
        if unquote(key) in OPTIONS:
            options[unquote(key)] = unquote(value)
        else:
            keep.append(piece)
    return parts._replace(query="&".join(keep)).geturl(), options


def int_option(options: dict[str, str], name: str, default: int) -> int:
    text = options.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise ConfigurationError(f"{name}={text!r} in the PostgreSQL URL must be an int >= 0")
    return int(text)


def scrub(text: str, secret: str) -> str:
    """``text`` with any occurrence of ``secret`` (a password or a whole URL) hidden."""
    if not secret:
        return text
    password = urlsplit(secret).password if "://" in secret else secret
    return text.replace(password, "***") if password else text


async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # Every statement here walks one index in the order it returns rows, a page at a
    # time. Row estimates for one stream or for the log's tail are often far off (and
    # generic plans of prepared statements average them away), which made the planner
    # pick a bitmap scan plus a sort that spills to disk: 1 s for a page instead of 5 ms.
    # So these sessions discourage sorts (a statement with no other plan still sorts),
    # parallel plans (worker start-up costs more than a page) and JIT (which the huge
    # cost of a discouraged plan would otherwise switch on).
    await conn.execute(
        "SET enable_sort = off; SET max_parallel_workers_per_gather = 0; SET jit = off"
    )


async def scalar(cur: psycopg.AsyncCursor[Any]) -> int:
    row = await cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0
