"""The SQLite read-model tables: their own numbered migrations, and their constant SQL.

The read models live in the event store's file, in tables prefixed ``ef_``, migrated on
a track of their own (``ef_read_model_migrations``) so the event store's migration
numbers never depend on whether read models are used.
"""

from __future__ import annotations

import sqlite3

from . import _schema as events_schema

__all__ = ["MIGRATIONS", "ensure_schema_sync", "schema_number"]

# Append-only: add a migration for every change, never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: documents, checkpoints, parked events, versions and the readers' pointer.
    (
        # A rowid table: documents may be large, and WITHOUT ROWID suits small rows only.
        """
        CREATE TABLE ef_documents (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            id TEXT NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (name, version, id)
        )
        """,
        """
        CREATE TABLE ef_checkpoints (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            part INTEGER NOT NULL,
            tx INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            state TEXT NOT NULL,
            error TEXT,
            updated_us INTEGER NOT NULL,
            PRIMARY KEY (name, version, part)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE ef_parked (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            tx INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            part INTEGER NOT NULL,
            stream_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            type TEXT NOT NULL,
            error TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            parked_us INTEGER NOT NULL,
            PRIMARY KEY (name, version, tx, seq)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE ef_versions (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            state TEXT NOT NULL,
            changed_us INTEGER NOT NULL,
            PRIMARY KEY (name, version)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE ef_active (
            name TEXT PRIMARY KEY,
            version INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
    ),
)
"""Migration N is ``MIGRATIONS[N - 1]``: statements applied in one transaction."""

MIGRATIONS_TABLE = "ef_read_model_migrations"


def schema_number(conn: sqlite3.Connection) -> int:
    """The highest read-model migration applied to the database (0 for none)."""
    return events_schema.schema_number(conn, MIGRATIONS_TABLE)


def ensure_schema_sync(conn: sqlite3.Connection) -> int:
    """Create or migrate the read-model tables on a writer connection; return the number
    reached. Idempotent, and safe when several processes open one file at once; inside
    the caller's transaction (an append on the writer's thread) it becomes part of it
    (see `_schema.apply_migrations`)."""
    return events_schema.apply_migrations(conn, MIGRATIONS, MIGRATIONS_TABLE)


# -- documents -----------------------------------------------------------------------

# Ids travel as one JSON array, so the statement text never depends on how many there are.
LOAD_DOCUMENTS = (
    "SELECT id, data FROM ef_documents WHERE name = ? AND version = ? "
    "AND id IN (SELECT value FROM json_each(?))"
)
PUT_DOCUMENT = (
    "INSERT INTO ef_documents (name, version, id, data) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (name, version, id) DO UPDATE SET data = excluded.data"
)
DELETE_DOCUMENT = "DELETE FROM ef_documents WHERE name = ? AND version = ? AND id = ?"
ITER_DOCUMENTS = (
    "SELECT id, data FROM ef_documents WHERE name = ? AND version = ? AND id > ? "
    "ORDER BY id LIMIT ?"
)
ITER_DOCUMENTS_FIRST = (
    "SELECT id, data FROM ef_documents WHERE name = ? AND version = ? ORDER BY id LIMIT ?"
)

# -- checkpoints ---------------------------------------------------------------------

_CHECKPOINT_COLUMNS = "name, version, part, tx, seq, state, error, updated_us"
GET_CHECKPOINT = (
    f"SELECT {_CHECKPOINT_COLUMNS} FROM ef_checkpoints WHERE name = ? AND version = ? AND part = ?"
)
CHECKPOINTS = (
    f"SELECT {_CHECKPOINT_COLUMNS} FROM ef_checkpoints WHERE name = ? AND version = ? ORDER BY part"
)
INSERT_CHECKPOINT = (
    f"INSERT INTO ef_checkpoints ({_CHECKPOINT_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, 'running', NULL, ?) ON CONFLICT DO NOTHING"
)
# An inline projection's checkpoint: its writers take turns (the write lock).
PUT_INLINE_CHECKPOINT = (
    f"INSERT INTO ef_checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, 0, ?, ?, 'inline', NULL, ?) "
    "ON CONFLICT (name, version, part) DO UPDATE SET tx = excluded.tx, seq = excluded.seq, "
    "state = 'inline', error = NULL, updated_us = excluded.updated_us"
)
MOVE_CHECKPOINT = (
    "UPDATE ef_checkpoints SET tx = ?, seq = ?, state = 'running', error = NULL, "
    "updated_us = ? WHERE name = ? AND version = ? AND part = ? AND tx = ? AND seq = ?"
)
SET_STATE = (
    f"INSERT INTO ef_checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, 0, 0, ?, ?, ?) "
    "ON CONFLICT (name, version, part) DO UPDATE SET state = excluded.state, "
    "error = excluded.error, updated_us = excluded.updated_us"
)

# -- parked events -------------------------------------------------------------------

_PARKED_COLUMNS = (
    "name, version, part, tx, seq, stream_id, event_id, type, error, attempts, parked_us"
)
PARK = (
    f"INSERT OR REPLACE INTO ef_parked ({_PARKED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UNPARK = "DELETE FROM ef_parked WHERE name = ? AND version = ? AND tx = ? AND seq = ?"
PARKED = f"SELECT {_PARKED_COLUMNS} FROM ef_parked WHERE name = ? AND version = ? ORDER BY tx, seq"

# -- versions ------------------------------------------------------------------------

GET_VERSION = (
    "SELECT name, version, state, changed_us FROM ef_versions WHERE name = ? AND version = ?"
)
VERSIONS = "SELECT name, version, state, changed_us FROM ef_versions ORDER BY name, version"
VERSIONS_OF = (
    "SELECT name, version, state, changed_us FROM ef_versions WHERE name = ? ORDER BY version"
)
INSERT_VERSION = (
    "INSERT INTO ef_versions (name, version, state, changed_us) VALUES (?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
CHANGE_VERSION = (
    "UPDATE ef_versions SET state = ?, changed_us = ? WHERE name = ? AND version = ? AND state = ?"
)
PUT_VERSION = (
    "INSERT INTO ef_versions (name, version, state, changed_us) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (name, version) DO UPDATE SET state = excluded.state, "
    "changed_us = excluded.changed_us"
)
RETIRE_VERSION = (
    "UPDATE ef_versions SET state = 'retired', changed_us = ? WHERE name = ? AND version = ?"
)
ACTIVE = "SELECT version FROM ef_active WHERE name = ?"
SET_ACTIVE = (
    "INSERT INTO ef_active (name, version) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET version = excluded.version"
)

# -- summaries -----------------------------------------------------------------------

SUMMARIES_CHUNK = 300
"""Slots per summaries query (three parameters each, under SQLite's oldest limit of 999)."""


def summaries_query(n: int) -> str:
    """Checkpoints, parked counts, records and pointers of ``n`` slots in one query,
    with ``(ord, name, version)`` parameters per slot (the rows `summaries_of` reads)."""
    values = ", ".join(["(?, ?, ?)"] * n)
    return (
        f"WITH k(ord, name, version) AS (VALUES {values}) "
        "SELECT k.ord, 0, c.part, c.tx, c.seq, c.state, c.error, c.updated_us "
        "FROM k JOIN ef_checkpoints c ON c.name = k.name AND c.version = k.version "
        "UNION ALL SELECT k.ord, 1, count(*), min(p.parked_us), NULL, NULL, NULL, NULL "
        "FROM k JOIN ef_parked p ON p.name = k.name AND p.version = k.version GROUP BY k.ord "
        "UNION ALL SELECT k.ord, 2, NULL, NULL, NULL, v.state, NULL, v.changed_us "
        "FROM k JOIN ef_versions v ON v.name = k.name AND v.version = k.version "
        "UNION ALL SELECT k.ord, 3, a.version, NULL, NULL, NULL, NULL, NULL "
        "FROM k JOIN ef_active a ON a.name = k.name"
    )


# -- drop ----------------------------------------------------------------------------

DROP = (
    "DELETE FROM ef_documents WHERE name = ? AND version = ?",
    "DELETE FROM ef_checkpoints WHERE name = ? AND version = ?",
    "DELETE FROM ef_parked WHERE name = ? AND version = ?",
    "DELETE FROM ef_versions WHERE name = ? AND version = ?",
    "DELETE FROM ef_active WHERE name = ? AND version = ?",
)
