"""The PostgreSQL read-model tables: their own numbered migrations, and their statements.

The tables live in the event store's schema, prefixed ``ef_``, migrated on a track of
their own (``ef_read_model_migrations``) so the event store's migration numbers never
depend on whether read models are used. Every statement names its tables through
`psycopg.sql.Identifier`, so the schema is quoted by the driver, never pasted into SQL.
Ids and names use the "C" collation: documents list in code point order, as on the
other backends.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ._conn import MigrationTrack, migrate

__all__ = ["MIGRATIONS", "Statements", "ensure_schema", "lock_key"]

# Append-only: add a migration for every change, never edit one that has shipped.
MIGRATIONS: tuple[sql.SQL, ...] = (
    # 1: documents, checkpoints, parked events, versions and the readers' pointer.
    # Documents are bytea: the JSON bytes come back exactly as they were written.
    sql.SQL(
        """
        CREATE TABLE {documents} (
            name    text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            id      text COLLATE "C" NOT NULL,
            data    bytea NOT NULL,
            CONSTRAINT ef_documents_pkey PRIMARY KEY (name, version, id)
        );
        CREATE TABLE {checkpoints} (
            name       text COLLATE "C" NOT NULL,
            version    bigint NOT NULL,
            part       int NOT NULL,
            tx         bigint NOT NULL,
            seq        bigint NOT NULL,
            state      text NOT NULL,
            error      text,
            updated_us bigint NOT NULL,
            CONSTRAINT ef_checkpoints_pkey PRIMARY KEY (name, version, part)
        );
        CREATE TABLE {parked} (
            name      text COLLATE "C" NOT NULL,
            version   bigint NOT NULL,
            tx        bigint NOT NULL,
            seq       bigint NOT NULL,
            part      int NOT NULL,
            stream_id text NOT NULL,
            event_id  text NOT NULL,
            type      text NOT NULL,
            error     text NOT NULL,
            attempts  int NOT NULL,
            parked_us bigint NOT NULL,
            CONSTRAINT ef_parked_pkey PRIMARY KEY (name, version, tx, seq)
        );
        CREATE TABLE {versions} (
            name       text COLLATE "C" NOT NULL,
            version    bigint NOT NULL,
            state      text NOT NULL,
            changed_us bigint NOT NULL,
            CONSTRAINT ef_versions_pkey PRIMARY KEY (name, version)
        );
        CREATE TABLE {active} (
            name    text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            CONSTRAINT ef_active_pkey PRIMARY KEY (name)
        );
        """
    ),
)


def lock_key(schema: str) -> str:
    """The text hashed into the advisory lock that serialises read-model migrations."""
    return f"eventfold.read-models.migrate:{schema}"


_CHECKPOINT = "name, version, part, tx, seq, state, error, updated_us"
_PARKED = "name, version, part, tx, seq, stream_id, event_id, type, error, attempts, parked_us"
_VERSION = "name, version, state, changed_us"
_SLOT = "name = %s AND version = %s"


class Statements:
    """Every read-model statement, rendered once for one schema."""

    def __init__(self, schema: str) -> None:
        names = {
            "documents": sql.Identifier(schema, "ef_documents"),
            "checkpoints": sql.Identifier(schema, "ef_checkpoints"),
            "parked": sql.Identifier(schema, "ef_parked"),
            "versions": sql.Identifier(schema, "ef_versions"),
            "active": sql.Identifier(schema, "ef_active"),
            "migrations": sql.Identifier(schema, "ef_read_model_migrations"),
        }

        def render(text: str) -> bytes:
            return sql.SQL(text).format(**names).as_bytes(None)

        self.schema = schema
        self.migrations = [m.format(**names).as_bytes(None) for m in MIGRATIONS]
        self.migrations_table = sql.Identifier(schema, "ef_read_model_migrations").as_string(None)
        self.has_migrations = b"SELECT to_regclass(%s) IS NOT NULL"
        self.create_migrations = render(
            """CREATE TABLE IF NOT EXISTS {migrations} (
                version    int PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
        )
        self.lock = b"SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
        self.schema_version = render("SELECT coalesce(max(version), 0) FROM {migrations}")
        self.record_migration = render("INSERT INTO {migrations} (version) VALUES (%s)")

        # Documents. A lookup by a list of ids is one index probe per id (the LIMIT keeps
        # the planner from flattening it): with ``id = ANY(...)`` a young table's stale
        # statistics made it walk every document of the version and filter, a cost that
        # grew with the table (5 ms for 32 ids among 10,000).
        by_ids = """(SELECT %s::text AS name, %s::int8 AS version) k, unnest(%s::text[]) AS u(id)
            CROSS JOIN LATERAL (SELECT d.ctid, d.data FROM {documents} d
                WHERE d.name = k.name AND d.version = k.version AND d.id = u.id LIMIT 1) d"""
        self.load_documents = render(f"SELECT u.id, d.data FROM {by_ids}")
        self.put_documents = render(
            """INSERT INTO {documents} (name, version, id, data)
            SELECT %s, %s, u.id, u.data FROM unnest(%s::text[], %b::bytea[]) AS u(id, data)
            ON CONFLICT (name, version, id) DO UPDATE SET data = excluded.data"""
        )
        self.delete_documents = render(
            f"DELETE FROM {{documents}} WHERE ctid = ANY(ARRAY(SELECT d.ctid FROM {by_ids}))"
        )
        self.iter_first = render(
            f"SELECT id, data FROM {{documents}} WHERE {_SLOT} ORDER BY id LIMIT %s"
        )
        self.iter_after = render(
            f"SELECT id, data FROM {{documents}} WHERE {_SLOT} AND id > %s ORDER BY id LIMIT %s"
        )

        # Checkpoints.
        self.get_checkpoint = render(
            f"SELECT {_CHECKPOINT} FROM {{checkpoints}} WHERE {_SLOT} AND part = %s"
        )
        self.checkpoints = render(
            f"SELECT {_CHECKPOINT} FROM {{checkpoints}} WHERE {_SLOT} ORDER BY part"
        )
        self.insert_checkpoint = render(
            f"""INSERT INTO {{checkpoints}} ({_CHECKPOINT})
            VALUES (%s, %s, %s, %s, %s, 'running', NULL, %s) ON CONFLICT DO NOTHING"""
        )
        # An inline projection's checkpoint: its writers take turns (an advisory lock).
        self.put_checkpoint = render(
            f"""INSERT INTO {{checkpoints}} ({_CHECKPOINT})
            VALUES (%s, %s, %s, %s, %s, 'inline', NULL, %s)
            ON CONFLICT (name, version, part) DO UPDATE SET tx = excluded.tx,
                seq = excluded.seq, state = 'inline', error = NULL,
                updated_us = excluded.updated_us"""
        )
        self.move_checkpoint = render(
            f"""UPDATE {{checkpoints}}
            SET tx = %s, seq = %s, state = 'running', error = NULL, updated_us = %s
            WHERE {_SLOT} AND part = %s AND tx = %s AND seq = %s"""
        )
        self.set_state = render(
            f"""INSERT INTO {{checkpoints}} ({_CHECKPOINT}) VALUES (%s, %s, %s, 0, 0, %s, %s, %s)
            ON CONFLICT (name, version, part) DO UPDATE SET state = excluded.state,
                error = excluded.error, updated_us = excluded.updated_us"""
        )

        # Parked events.
        self.park = render(
            f"""INSERT INTO {{parked}} ({_PARKED})
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (name, version, tx, seq) DO UPDATE SET part = excluded.part,
                stream_id = excluded.stream_id, event_id = excluded.event_id,
                type = excluded.type, error = excluded.error, attempts = excluded.attempts,
                parked_us = excluded.parked_us"""
        )
        self.unpark = render(f"DELETE FROM {{parked}} WHERE {_SLOT} AND tx = %s AND seq = %s")
        self.parked = render(f"SELECT {_PARKED} FROM {{parked}} WHERE {_SLOT} ORDER BY tx, seq")

        # Versions and the readers' pointer.
        self.get_version = render(f"SELECT {_VERSION} FROM {{versions}} WHERE {_SLOT}")
        self.versions = render(f"SELECT {_VERSION} FROM {{versions}} ORDER BY name, version")
        self.versions_of = render(
            f"SELECT {_VERSION} FROM {{versions}} WHERE name = %s ORDER BY name, version"
        )
        self.insert_version = render(
            f"INSERT INTO {{versions}} ({_VERSION}) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
        )
        self.change_version = render(
            f"UPDATE {{versions}} SET state = %s, changed_us = %s WHERE {_SLOT} AND state = %s"
        )
        self.put_version = render(
            f"""INSERT INTO {{versions}} ({_VERSION}) VALUES (%s, %s, %s, %s)
            ON CONFLICT (name, version) DO UPDATE SET state = excluded.state,
                changed_us = excluded.changed_us"""
        )
        self.retire_version = render(
            f"UPDATE {{versions}} SET state = 'retired', changed_us = %s WHERE {_SLOT}"
        )
        self.active = render("SELECT version FROM {active} WHERE name = %s")
        self.lock_active = render("SELECT version FROM {active} WHERE name = %s FOR UPDATE")
        self.insert_active = render(
            "INSERT INTO {active} (name, version) VALUES (%s, %s) ON CONFLICT DO NOTHING"
        )
        self.update_active = render("UPDATE {active} SET version = %s WHERE name = %s")

        # Many versions' checkpoints, parked counts, records and pointers in one round
        # trip: one row per checkpoint (kind 0), per version with parked events (1), per
        # record (2) and per pointer (3), tagged with the slot's place in the list asked.
        self.summaries = render(
            """WITH k AS (SELECT u.name, u.version, u.ord
                FROM unnest(%s::text[], %s::int8[]) WITH ORDINALITY AS u(name, version, ord))
            SELECT k.ord, 0, c.part::int8, c.tx, c.seq, c.state, c.error, c.updated_us
                FROM k JOIN {checkpoints} c ON c.name = k.name AND c.version = k.version
            UNION ALL SELECT k.ord, 1, count(*), min(p.parked_us), NULL, NULL, NULL, NULL
                FROM k JOIN {parked} p ON p.name = k.name AND p.version = k.version
                GROUP BY k.ord
            UNION ALL SELECT k.ord, 2, NULL, NULL, NULL, v.state, NULL, v.changed_us
                FROM k JOIN {versions} v ON v.name = k.name AND v.version = k.version
            UNION ALL SELECT k.ord, 3, a.version, NULL, NULL, NULL, NULL, NULL
                FROM k JOIN {active} a ON a.name = k.name"""
        )

        # Drop: one round trip (every data-modifying WITH runs to completion).
        self.drop = render(
            """WITH d AS (DELETE FROM {documents} WHERE name = %(n)s AND version = %(v)s),
            c AS (DELETE FROM {checkpoints} WHERE name = %(n)s AND version = %(v)s),
            p AS (DELETE FROM {parked} WHERE name = %(n)s AND version = %(v)s),
            r AS (DELETE FROM {versions} WHERE name = %(n)s AND version = %(v)s)
            DELETE FROM {active} WHERE name = %(n)s AND version = %(v)s"""
        )


async def ensure_schema(conn: psycopg.AsyncConnection[Any], st: Statements) -> int:
    """Create or migrate the read-model tables on an autocommit connection; return the
    number reached (see `_conn.migrate`)."""
    track = MigrationTrack(
        st.migrations_table,
        st.has_migrations,
        st.schema_version,
        st.lock,
        lock_key(st.schema),
        [st.create_migrations],
        st.migrations,
        st.record_migration,
    )
    return await migrate(conn, track)
