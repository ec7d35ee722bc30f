"""The one boundary where sqlite3's errors become eventfold's.

Every other module of the backend lets this one catch the driver's errors: `driver_errors`
around a block, `translate` where a caller must first act (fail a group's appends, end a
transaction), `statement_error` for a read model's own statement (`unit_statement_error`
for a unit of work's, `inbox_statement_error` and `inbox_error` for the inbox's), and the
predicates below where a caller must decide on one (a duplicate event id, a file that is
not a database, a lock to wait for). On the group commit's and the units' paths they cost
nothing until something fails: ``except Exception`` then `is_driver_error`, no object per
append.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import TypeGuard

from ...errors import ConfigurationError, EventfoldError, InvalidInput, StoreError

__all__ = [
    "driver_errors",
    "inbox_error",
    "inbox_statement_error",
    "is_busy",
    "is_constraint",
    "is_driver_error",
    "is_locked",
    "is_not_a_database",
    "is_operational",
    "statement_error",
    "translate",
    "translated",
    "unit_statement_error",
    "violates",
]

_STORE_TROUBLE = ("locked", "busy", "disk", "i/o", "unable to open")
"""Words of an operational error on a read model's statement that are the database's
trouble (retried), not the statement's (a poison event)."""


def translate(exc: sqlite3.Error, path: str) -> StoreError:
    """The eventfold error for ``exc`` on the store file ``path``, chained to ``exc`` (the
    writer hands errors to callers through futures rather than raising them)."""
    error = _describe(exc, path)
    error.__cause__ = exc
    return error


def translated(exc: BaseException, path: str) -> BaseException:
    """``exc`` translated if it came from the driver, else ``exc`` itself."""
    return translate(exc, path) if isinstance(exc, sqlite3.Error) else exc


def _describe(exc: sqlite3.Error, path: str) -> StoreError:
    message = str(exc)
    lowered = message.lower()
    if "locked" in lowered or "busy" in lowered:
        return StoreError(
            f"the SQLite database {path!r} stayed locked by another connection past the busy "
            f"timeout ({message}); find the process holding a long write transaction, or "
            "retry later"
        )
    if "unable to open" in lowered or "not a database" in lowered or "readonly" in lowered:
        return ConfigurationError(
            f"cannot use the SQLite database file {path!r}: {message}; check that the "
            "directory exists, that the file is an eventfold SQLite database, and that this "
            "process may read and write it"
        )
    if "already exists" in lowered:
        return ConfigurationError(
            f"the SQLite database {path!r} already holds tables eventfold did not create "
            f"({message}); point eventfold at its own file"
        )
    if "disk" in lowered:
        return StoreError(
            f"SQLite cannot write {path!r}: {message}; free disk space or check the device"
        )
    return StoreError(f"SQLite error on {path!r}: {message}")


@contextlib.contextmanager
def driver_errors(path: str) -> Iterator[None]:
    """Raise a driver error of the block as its `translate`-d eventfold error (for work
    done once, not per row or per append: the context is an object per use)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc


def statement_error(exc: sqlite3.Error, query: str, path: str) -> EventfoldError:
    """A read model's statement failed: its own mistake is `InvalidInput` (a poison event
    for the daemon), the database's trouble a `StoreError` (retried)."""
    lowered = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and any(w in lowered for w in _STORE_TROUBLE):
        return translate(exc, path)
    return InvalidInput(
        f"a read model's SQL statement failed: {exc} (statement: {query.strip()[:200]!r}); "
        "fix the statement or its parameters (SQLite takes ? or :name parameters)"
    )


def unit_statement_error(exc: sqlite3.Error, query: str) -> StoreError:
    """A unit of work's own statement failed (the unit rolls back)."""
    return StoreError(
        f"a unit of work's statement failed: {exc} (statement: {query.strip()[:200]!r});"
        " fix the statement or its parameters (SQLite takes ? or :name parameters)"
    )


def inbox_statement_error(exc: sqlite3.Error, query: str) -> InvalidInput:
    """An inbox transaction's statement failed, not for a lock (`is_busy`): the caller's
    mistake."""
    return InvalidInput(
        f"an inbox transaction's SQL statement failed: {exc} (statement: {query.strip()[:200]!r}); "
        "fix the statement or its parameters (SQLite takes ? or :name parameters)"
    )


def inbox_error(what: str, exc: sqlite3.Error, path: str) -> StoreError:
    """The inbox at ``path`` could not do ``what`` (begin, commit, prune, …)."""
    advice = (
        "another connection held the file's write lock too long; retry"
        if is_busy(exc)
        else "check the file and the disk"
    )
    return StoreError(f"cannot {what} in {path}: {exc}; {advice}")


def is_driver_error(exc: BaseException) -> TypeGuard[sqlite3.Error]:
    """Whether ``exc`` came from the driver (and is still to be translated)."""
    return isinstance(exc, sqlite3.Error)


def is_operational(exc: BaseException) -> TypeGuard[sqlite3.OperationalError]:
    """Whether ``exc`` is SQLite failing to do something (open, lock, write), rather than
    refusing a statement."""
    return isinstance(exc, sqlite3.OperationalError)


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite finding the database locked (for work SQLite does not
    apply busy_timeout to, which the caller retries)."""
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite finding the database locked or busy (past the busy
    timeout, or at once for a connection without one): worth waiting and retrying."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    message = str(exc)
    return "locked" in message or "busy" in message


def is_constraint(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite refusing a row for a constraint (unique, check, …)."""
    return isinstance(exc, sqlite3.IntegrityError)


def is_missing_table(exc: BaseException, table: str) -> bool:
    """Whether ``exc`` is a statement naming ``table``, which the file does not have."""
    return is_operational(exc) and f"no such table: {table}" in str(exc)


def is_not_a_database(exc: BaseException) -> bool:
    """Whether ``exc`` says the file is not a SQLite database."""
    return isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc)


def violates(exc: BaseException, key: str) -> bool:
    """Whether ``exc`` is a unique violation of ``key`` (``table.column``)."""
    return isinstance(exc, sqlite3.IntegrityError) and key in str(exc)
