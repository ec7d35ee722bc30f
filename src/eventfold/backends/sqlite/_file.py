"""The SQLite store's file: noticing that it was deleted or replaced under an open store,
and checking that a file opened read-only holds an eventfold store.

SQLite keeps writing to the file it opened. Once that file is unlinked (an operator's
``rm``, a restore that moves a backup over it), every commit lands in a file nobody can
open again: appends would be acknowledged and lost when the store closes. So the writer
compares the path's (device, inode) with the file it opened before each commit.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from ...errors import StoreError, StoreNotFound
from ...store._common import check_unmigrated
from . import _schema as sql
from ._errors import is_not_a_database

__all__ = ["FileGuard", "check_store"]


class FileGuard:
    """Raises `StoreError` when ``path`` no longer names the file the store opened.

    Called by the writer before each commit (one ``stat``, about a microsecond): a
    commit refused here is rolled back, so nothing is acknowledged that is not in the file
    the path names. Replacing the file in place (writing over its bytes) keeps its inode
    and is not noticed; SQLite's documentation warns that it corrupts the database.
    """

    __slots__ = ("_identity", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        found = os.stat(path)
        self._identity = (found.st_dev, found.st_ino)

    def __call__(self) -> None:
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            what = "was deleted or moved away"
        except OSError as exc:
            what = f"cannot be checked ({exc.strerror})"
        else:
            if (found.st_dev, found.st_ino) == self._identity:
                return
            what = "was replaced by another file (a move or a restore over it)"
        raise StoreError(
            f"the SQLite database file {self.path!r} {what} while this store had it open; "
            "nothing more is written, since it would be lost with the old file: close the "
            "store and open it again (on the restored file, or a new one)"
        )


def check_store(path: str, open_reader: Callable[[], sqlite3.Connection]) -> None:
    """Raise unless ``path`` holds an eventfold store this code can read as is.

    For a store opened read-only, which neither creates nor migrates: `StoreNotFound` for
    a missing file or one without eventfold's tables, `SchemaTooNew` or `StoreError` for
    one at another migration than this code's. ``open_reader`` opens a read-only
    connection (sqlite3 errors it raises are the caller's to translate).
    """
    if not os.path.exists(path):
        raise StoreNotFound(
            repr(path),
            "the file does not exist; check the path (a store opened read-only is never created)",
        )
    try:
        conn = open_reader()
        try:
            found = sql.schema_number(conn)
        finally:
            conn.close()
    except Exception as exc:
        if not is_not_a_database(exc):
            raise
        raise StoreNotFound(repr(path), "the file is not a SQLite database") from None
    known = len(sql.MIGRATIONS)
    if found == 0:
        raise StoreNotFound(
            repr(path),
            "the file holds no eventfold tables (an empty file, or another application's "
            "database); check the path",
        )
    check_unmigrated(found, known, repr(path))
