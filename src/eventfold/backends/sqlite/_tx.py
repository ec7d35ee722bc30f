"""The one transaction context of the SQLite backend: every write transaction on the writer
connection begins, commits and rolls back here.

Every write transaction is ``BEGIN IMMEDIATE``: it takes the write lock at once, so
busy_timeout applies (a deferred transaction that reads first fails at once with
SQLITE_BUSY when it tries to upgrade while another process writes). The group commit
calls the plain functions (`begin`, `commit`, and a savepoint per append on its careful
path), so that it makes no object per group or append; so do units of work (a savepoint
per unit: `hold_unit`, `keep_unit`, `undo_unit`) and the inbox (a transaction across its
thread's calls); every other writer job uses `transaction`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

__all__ = [
    "CONTROL",
    "abandon",
    "begin",
    "commit",
    "hold_unit",
    "keep_unit",
    "release",
    "rollback",
    "savepoint",
    "transaction",
    "try_begin",
    "undo",
    "undo_unit",
]

_BEGIN = "BEGIN IMMEDIATE"
_COMMIT = "COMMIT"
_ROLLBACK = "ROLLBACK"
_SAVEPOINT = "SAVEPOINT append"
_UNDO = "ROLLBACK TO append"
_RELEASE = "RELEASE append"
_HOLD_UNIT = "SAVEPOINT unit_of_work"
_UNDO_UNIT = "ROLLBACK TO unit_of_work"
_KEEP_UNIT = "RELEASE unit_of_work"

CONTROL = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"})
"""The first words of the statements that begin or end a transaction or a savepoint: a
caller's SQL inside a transaction of this module may not run them."""

Executor = sqlite3.Connection | sqlite3.Cursor


def begin(cur: Executor) -> None:
    """Begin a write transaction, waiting up to busy_timeout for the write lock."""
    cur.execute(_BEGIN)


def try_begin(cur: Executor) -> bool:
    """`begin`, or False when SQLite refuses (with a busy timeout of 0: another process
    holds the write lock)."""
    try:
        cur.execute(_BEGIN)
    except sqlite3.OperationalError:
        return False
    return True


def commit(cur: Executor) -> None:
    cur.execute(_COMMIT)


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the connection's transaction, if it has one."""
    if conn.in_transaction:
        conn.execute(_ROLLBACK)


def abandon(conn: sqlite3.Connection) -> None:
    """`rollback` after a failure: an error rolling back is dropped (the failure that
    led here is the one to report; SQLite may already have rolled back)."""
    with contextlib.suppress(sqlite3.Error):
        rollback(conn)


def savepoint(cur: Executor) -> None:
    """Mark the start of one append inside the group's transaction."""
    cur.execute(_SAVEPOINT)


def release(cur: Executor) -> None:
    """Keep the append since `savepoint`."""
    cur.execute(_RELEASE)


def undo(cur: Executor) -> None:
    """Undo the append since `savepoint`; the group's transaction goes on."""
    cur.execute(_UNDO)
    cur.execute(_RELEASE)


def hold_unit(cur: Executor) -> None:
    """Mark the start of one unit of work inside the units' transaction."""
    cur.execute(_HOLD_UNIT)


def keep_unit(cur: Executor) -> None:
    """Keep the unit of work since `hold_unit`."""
    cur.execute(_KEEP_UNIT)


def undo_unit(cur: Executor) -> None:
    """Undo the unit of work since `hold_unit`; the units' transaction goes on."""
    cur.execute(_UNDO_UNIT)
    cur.execute(_KEEP_UNIT)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, *, begun: bool = False) -> Iterator[None]:
    """A write transaction around the block: committed at its end, rolled back when it
    raises. ``begun``: the transaction is already open (a read-model session's), only
    end it."""
    if not begun:
        conn.execute(_BEGIN)
    try:
        yield
        conn.execute(_COMMIT)
    except BaseException:
        rollback(conn)
        raise
