"""The one boundary where psycopg's errors become eventfold's.

Every other module of the backend lets this one catch the driver's errors: `driver_errors`
around the calls, `translate` where a caller must first act (fail a transaction, wait for
a stream's version), and the predicates below where it must decide on one (retry a read
on a dropped connection, tell a duplicate event id from a version conflict).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from ..._position import ExpectedVersion
from ...errors import (
    ConfigurationError,
    EventfoldError,
    InvalidInput,
    StoreError,
    StoreReadOnly,
    StoreUnavailable,
    WrongExpectedVersion,
)
from ._conn import scrub
from ._schema import VERSION_KEY

__all__ = [
    "KeyCollision",
    "Where",
    "driver_errors",
    "driver_errors_ignored",
    "dropped",
    "is_driver_error",
    "read_conninfo",
    "recheck",
    "translate",
]

# SQLSTATE classes and codes that mean "the server is not there for us".
_UNAVAILABLE: Final = ("08", "28", "3D", "57P01", "57P02", "57P03", "53300")
# SQLSTATE classes of a read model's statement that are the server's trouble, not the
# statement's: connection, rollback (serialization, deadlock), resources, operator,
# system and internal errors.
_INFRASTRUCTURE: Final = ("08", "40", "53", "57", "58", "XX")


@dataclass(frozen=True, slots=True)
class Where:
    """The store an error happened in, for the messages."""

    label: str
    """How the store names itself (its ``repr``)."""
    backend: str
    host: str
    port: int | None
    schema: str
    password: str
    """Hidden from every message."""


class KeyCollision(Exception):
    """A unique violation, left for the append to decide on (`driver_errors` with
    ``collisions=True``): ``key`` names the constraint, ``error`` is the driver's."""

    def __init__(self, key: str, error: psycopg.Error) -> None:
        super().__init__(key)
        self.key = key
        self.error = error


def read_conninfo(conninfo: str, url: str) -> dict[str, Any]:
    """libpq's parameters of ``conninfo``, or `ConfigurationError` (the URL hidden)."""
    try:
        return conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise ConfigurationError(
            f"cannot read the PostgreSQL URL: {scrub(str(exc), url)}; use "
            "postgresql://user@host:5432/dbname"
        ) from None


def translate(
    exc: psycopg.Error,
    where: Where,
    *,
    connecting: bool = False,
    conflict: tuple[str, ExpectedVersion, int] | None = None,
    query: str | None = None,
) -> EventfoldError:
    """Map a psycopg error to an eventfold error (raise it ``from exc``).

    ``conflict``: the append's stream, expected and actual version, for a violation of
    the version key. ``query``: the error is a read model's own statement failing.
    """
    state = exc.sqlstate or ""
    if query is not None and not (
        state.startswith(_INFRASTRUCTURE)
        or (not state and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError))
    ):
        message = " ".join(str(exc).split()) or type(exc).__name__
        code = f" ({state})" if state else ""
        return InvalidInput(
            f"a read model's SQL statement failed{code}: {message} (statement: "
            f"{query.strip()[:200]!r}); fix the statement or its parameters (PostgreSQL "
            "takes %s or %(name)s parameters)"
        )
    if (
        isinstance(exc, pg_errors.UniqueViolation)
        and conflict is not None
        and exc.diag.constraint_name == VERSION_KEY
    ):
        return WrongExpectedVersion(*conflict)
    if state == "25006":  # read_only_sql_transaction
        return StoreReadOnly(where.label)
    message = scrub(" ".join(str(exc).split()) or type(exc).__name__, where.password)
    if isinstance(exc, psycopg.ProgrammingError) and not state and connecting:
        return ConfigurationError(f"cannot use the PostgreSQL URL: {message}")
    if connecting or (
        isinstance(exc, psycopg.OperationalError) and (not state or state.startswith(_UNAVAILABLE))
    ):
        return StoreUnavailable(where.backend, where.host, where.port, message)
    code = f" {state}" if state else ""
    return StoreError(
        f"PostgreSQL error{code} in schema {where.schema!r}: {message}; if it persists, "
        "check the server log and that this schema belongs to eventfold"
    )


@contextlib.contextmanager
def driver_errors(
    where: Where,
    *,
    connecting: bool = False,
    query: str | None = None,
    collisions: bool = False,
) -> Iterator[None]:
    """Raise a driver error of the block as its `translate`-d eventfold error.

    ``collisions``: raise a unique violation as `KeyCollision` instead, for the caller.
    """
    try:
        yield
    except psycopg.Error as exc:
        if collisions and isinstance(exc, pg_errors.UniqueViolation):
            raise KeyCollision(exc.diag.constraint_name or "", exc) from exc
        raise translate(exc, where, connecting=connecting, query=query) from exc


def driver_errors_ignored() -> contextlib.AbstractContextManager[None]:
    """Ignore a driver error of the block (a best-effort ROLLBACK on a failing connection)."""
    return contextlib.suppress(psycopg.Error)


def is_driver_error(exc: BaseException) -> TypeGuard[psycopg.Error]:
    """Whether ``exc`` came from the driver (and is still to be translated)."""
    return isinstance(exc, psycopg.Error)


def is_missing_table(exc: BaseException) -> bool:
    """Whether ``exc`` is a statement naming a table the schema does not have."""
    return isinstance(exc, pg_errors.UndefinedTable)


def dropped(
    exc: BaseException, conn: psycopg.AsyncConnection[Any] | None
) -> TypeGuard[psycopg.Error]:
    """Whether ``exc`` is the server dropping ``conn`` (a restart, a failover), so that
    whatever ran on it may or may not have committed."""
    return isinstance(exc, psycopg.Error) and conn is not None and conn.broken


async def recheck(pool: AsyncConnectionPool[Any]) -> None:
    """Let the pool replace every connection the server dropped (after `dropped`)."""
    with contextlib.suppress(psycopg.Error):
        await pool.check()
