"""The SQLite backend's two boundaries: every write transaction begins and ends in `_tx`,
and every sqlite3 error becomes an eventfold error in `_errors`."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventfold
from eventfold.backends.sqlite import _errors, _tx

SRC = Path(eventfold.__file__).parent
SQLITE = SRC / "backends" / "sqlite"


def sources(root: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(root.rglob("*.py")):
        yield path, path.read_text()


def test_only_the_tx_module_begins_transactions() -> None:
    found = [
        f"{path.relative_to(SRC)}:{n}"
        for path, text in sources(SQLITE)
        if path.name != "_tx.py"
        for n, line in enumerate(text.splitlines(), 1)
        # A trigger's body (CREATE TRIGGER … BEGIN … END) is SQL text, not a transaction.
        if "BEGIN" in line and "RAISE(" not in line
    ]
    assert found == []


def test_only_the_tx_module_ends_transactions() -> None:
    # A statement in a string literal (not a docstring that starts with the word).
    statement = re.compile(r"""(?<!["'])["'](COMMIT|ROLLBACK|SAVEPOINT|RELEASE|END)\b""")
    found = [
        f"{path.relative_to(SRC)}:{n}"
        for path, text in sources(SQLITE)
        if path.name != "_tx.py"
        for n, line in enumerate(text.splitlines(), 1)
        if statement.search(line)
    ]
    assert found == []


def test_only_the_boundary_modules_catch_sqlite3_errors() -> None:
    catch = re.compile(r"except\s*\(?[^:]*\bsqlite3\.")
    found = [
        f"{path.relative_to(SRC)}:{n}"
        for path, text in sources(SRC)
        if path.parent != SQLITE or path.name not in ("_errors.py", "_tx.py")
        for n, line in enumerate(text.splitlines(), 1)
        if catch.search(line)
    ]
    assert found == []


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None, timeout=0)
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    yield conn
    conn.close()


def rows(conn: sqlite3.Connection) -> list[str]:
    return [k for (k,) in conn.execute("SELECT k FROM t ORDER BY k")]


def test_transaction_commits_its_block(db: sqlite3.Connection) -> None:
    with _tx.transaction(db):
        assert db.in_transaction
        db.execute("INSERT INTO t VALUES ('a')")
    assert not db.in_transaction
    assert rows(db) == ["a"]


def test_transaction_rolls_back_what_raised(db: sqlite3.Connection) -> None:
    def fail() -> None:
        with _tx.transaction(db):
            db.execute("INSERT INTO t VALUES ('a')")
            raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="no"):
        fail()
    assert not db.in_transaction
    assert rows(db) == []


def test_transaction_ends_one_already_begun(db: sqlite3.Connection) -> None:
    _tx.begin(db)
    db.execute("INSERT INTO t VALUES ('a')")
    with _tx.transaction(db, begun=True):
        db.execute("INSERT INTO t VALUES ('b')")
    assert rows(db) == ["a", "b"]


def test_a_savepoint_undoes_one_append_only(db: sqlite3.Connection) -> None:
    _tx.begin(db)
    db.execute("INSERT INTO t VALUES ('a')")
    _tx.savepoint(db)
    db.execute("INSERT INTO t VALUES ('b')")
    _tx.undo(db)
    _tx.savepoint(db)
    db.execute("INSERT INTO t VALUES ('c')")
    _tx.release(db)
    _tx.commit(db)
    assert rows(db) == ["a", "c"]


def test_a_unit_savepoint_undoes_that_unit_only(db: sqlite3.Connection) -> None:
    _tx.begin(db)
    _tx.hold_unit(db)
    db.execute("INSERT INTO t VALUES ('a')")
    _tx.keep_unit(db)
    _tx.hold_unit(db)
    db.execute("INSERT INTO t VALUES ('b')")
    _tx.savepoint(db)  # an append's savepoint inside the unit's goes with it
    db.execute("INSERT INTO t VALUES ('c')")
    _tx.undo_unit(db)
    assert db.in_transaction
    _tx.commit(db)
    assert rows(db) == ["a"]
    assert {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"} <= _tx.CONTROL


def test_try_begin_does_not_wait_for_another_writer(tmp_path: Path, db: sqlite3.Connection) -> None:
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    try:
        _tx.begin(other)
        assert _tx.try_begin(db) is False
        assert not db.in_transaction
        _tx.rollback(other)
        assert _tx.try_begin(db) is True
        _tx.rollback(db)
        _tx.abandon(db)  # nothing open: nothing to do
    finally:
        other.close()


def test_a_locked_database_says_what_to_do(tmp_path: Path, db: sqlite3.Connection) -> None:
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    try:
        _tx.begin(other)
        with pytest.raises(sqlite3.OperationalError) as info:
            _tx.begin(db)
    finally:
        other.close()
    error = _errors.translate(info.value, "t.db")
    assert type(error) is eventfold.StoreError
    assert error.__cause__ is info.value
    assert "'t.db' stayed locked by another connection" in str(error)
    assert _errors.is_locked(info.value)
    assert _errors.is_busy(info.value)
    assert not _errors.is_busy(RuntimeError("database is locked"))
    busy = _errors.inbox_error("commit an inbox transaction", info.value, "t.db")
    assert type(busy) is eventfold.StoreError
    assert str(busy) == (
        "cannot commit an inbox transaction in t.db: database is locked; another connection "
        "held the file's write lock too long; retry"
    )
    assert _errors.is_operational(info.value)
    # A read model's statement that meets the lock is the database's trouble (retried).
    assert type(_errors.statement_error(info.value, "SELECT 1", "t.db")) is eventfold.StoreError


def test_a_read_only_file_is_a_configuration_error(tmp_path: Path, db: sqlite3.Connection) -> None:
    ro = sqlite3.connect(f"file:{tmp_path / 't.db'}?mode=ro", uri=True, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError) as info:
            ro.execute("INSERT INTO t VALUES ('a')")
    finally:
        ro.close()
    error = _errors.translate(info.value, "t.db")
    assert type(error) is eventfold.ConfigurationError
    assert "may read and write it" in str(error)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    conn = sqlite3.connect(junk)
    try:
        with pytest.raises(sqlite3.DatabaseError) as info:
            conn.execute("SELECT * FROM sqlite_master").fetchall()
    finally:
        conn.close()
    assert _errors.is_not_a_database(info.value)
    assert type(_errors.translate(info.value, "junk.db")) is eventfold.ConfigurationError


def test_a_unique_violation_names_its_key(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO t VALUES ('a')")
    with pytest.raises(sqlite3.IntegrityError) as info:
        db.execute("INSERT INTO t VALUES ('a')")
    assert _errors.violates(info.value, "t.k")
    assert _errors.is_constraint(info.value)
    assert not _errors.is_busy(info.value)
    assert "check the file and the disk" in str(_errors.inbox_error("prune", info.value, "t.db"))
    assert not _errors.violates(info.value, "t.other")
    assert not _errors.violates(RuntimeError("t.k"), "t.k")


def test_a_bad_statement_is_the_read_models_mistake(db: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.OperationalError) as info:
        db.execute("SELEC k FROM t")
    error = _errors.statement_error(info.value, "SELEC k FROM t", "t.db")
    assert type(error) is eventfold.InvalidInput
    assert "SELEC k FROM t" in str(error)
    assert "fix the statement" in str(error)
    assert not _errors.is_constraint(info.value)
    unit = _errors.unit_statement_error(info.value, " SELEC k FROM t ")
    assert type(unit) is eventfold.StoreError
    assert str(unit) == (
        'a unit of work\'s statement failed: near "SELEC": syntax error (statement: '
        "'SELEC k FROM t'); fix the statement or its parameters (SQLite takes ? or :name "
        "parameters)"
    )
    inbox = _errors.inbox_statement_error(info.value, "SELEC k FROM t")
    assert type(inbox) is eventfold.InvalidInput
    assert str(inbox).startswith("an inbox transaction's SQL statement failed: near ")


def test_driver_errors_translates_only_the_drivers(db: sqlite3.Connection) -> None:
    def bind_an_object() -> None:
        with _errors.driver_errors("t.db"):
            db.execute("INSERT INTO t VALUES (?)", (object(),))

    with pytest.raises(eventfold.StoreError, match=r"SQLite error on 't\.db'") as info:
        bind_an_object()
    cause = info.value.__cause__
    assert cause is not None
    assert _errors.is_driver_error(cause)
    with pytest.raises(KeyError), _errors.driver_errors("t.db"):
        raise KeyError("x")
    other = KeyError("x")
    assert _errors.translated(other, "t.db") is other
