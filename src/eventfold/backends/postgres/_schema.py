"""The PostgreSQL backend's tables (numbered migrations) and its statements.

Every statement names its tables through `psycopg.sql.Identifier`, so the schema a URL
chooses (``?schema=...``) is quoted by the driver and never pasted into SQL text.
"""

from __future__ import annotations

from psycopg import sql

__all__ = [
    "EVENT_ID_KEY",
    "MIGRATIONS",
    "VERSION_KEY",
    "Statements",
    "lock_key",
]

VERSION_KEY = "events_stream_version_key"
"""The unique constraint on ``(stream_id, version)``: the concurrency backstop."""
EVENT_ID_KEY = "events_stream_event_id_key"
"""The unique constraint on ``(stream_id, event_id)``: what makes retries detectable."""

# Append-only: add a migration for every change, never edit one that has shipped.
MIGRATIONS: tuple[sql.SQL, ...] = (
    sql.SQL(
        """
        CREATE TABLE {schema}.events (
            seq            bigint GENERATED ALWAYS AS IDENTITY,
            -- The writing transaction: rows become readable in the global log only when
            -- every older transaction has finished, so no reader skips a late commit.
            transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
            event_id       uuid NOT NULL,
            stream_id      text COLLATE "C" NOT NULL,
            version        bigint NOT NULL,
            type           text NOT NULL,
            schema_version int NOT NULL,
            data           bytea NOT NULL,
            metadata       bytea NOT NULL,
            recorded_at    timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT events_pkey PRIMARY KEY (transaction_id, seq),
            CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
            CONSTRAINT events_stream_event_id_key UNIQUE (stream_id, event_id)
        );
        CREATE TABLE {schema}.streams (
            stream_id text COLLATE "C" NOT NULL,
            version   bigint NOT NULL,
            CONSTRAINT streams_pkey PRIMARY KEY (stream_id)
        );
        -- Invariant 1: no code path updates or deletes a stored event.
        CREATE FUNCTION {schema}.events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'eventfold events are append-only (% refused)', TG_OP;
        END $$;
        CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON {schema}.events
            FOR EACH ROW EXECUTE FUNCTION {schema}.events_append_only();
        CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON {schema}.events
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.events_append_only();
        """
    ),
    # 2: snapshots (derived and disposable: rows here are replaced and may be deleted).
    sql.SQL(
        """
        CREATE TABLE {schema}.snapshots (
            stream_id      text COLLATE "C" NOT NULL,
            state_type     text NOT NULL,
            version        bigint NOT NULL,
            schema_version int NOT NULL,
            data           bytea NOT NULL,
            event_id       bytea NOT NULL,
            recorded_us    bigint NOT NULL,
            taken_us       bigint NOT NULL,
            CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id, state_type, version)
        );
        """
    ),
    # 3: stream transformation's alias. A replaced stream keeps its events (still in the
    # log) but takes no appends; its reads follow replaced_by, which never names a stream
    # that is itself replaced (the switch re-points older aliases), so one hop suffices.
    # Adding a nullable column without a default rewrites nothing.
    sql.SQL(
        """
        ALTER TABLE {schema}.streams ADD COLUMN replaced_by text COLLATE "C";
        CREATE INDEX streams_replaced_by ON {schema}.streams (replaced_by)
            WHERE replaced_by IS NOT NULL;
        """
    ),
    # 4: epochs of the global log (see `_epoch`). A logical copy of the store on
    # another server (pg_dump / pg_restore, logical replication) keeps the stored
    # transaction ids but not the server's counter; an epoch's base, added to the server's
    # ids, keeps new events after the copied history. Epoch 0 (base 0) is every store so
    # far, so existing rows, positions and checkpoints keep their meaning.
    sql.SQL(
        """
        CREATE TABLE {schema}.epochs (
            epoch      int NOT NULL,
            base       bigint NOT NULL,
            server_xid bigint NOT NULL,
            stored_max bigint NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT epochs_pkey PRIMARY KEY (epoch)
        );
        INSERT INTO {schema}.epochs (epoch, base, server_xid, stored_max)
        VALUES (0, 0, pg_snapshot_xmax(pg_current_snapshot())::text::int8, coalesce(
            (SELECT transaction_id::text::int8 FROM {schema}.events
             ORDER BY transaction_id DESC LIMIT 1), 0));
        """
    ),
    # 5: the outbox (`_outbox`): messages committed by units of work. Like the events,
    # rows carry their writing transaction's id (in the epoch's terms, set by the insert),
    # and readers stop at the horizon, so none skips a message that commits late.
    sql.SQL(
        """
        CREATE TABLE {schema}.outbox (
            seq            bigint GENERATED ALWAYS AS IDENTITY,
            transaction_id xid8 NOT NULL,
            message_id     uuid NOT NULL,
            destination    text COLLATE "C" NOT NULL,
            key            text,
            payload        bytea NOT NULL,
            headers        bytea NOT NULL,
            recorded_at    timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT outbox_pkey PRIMARY KEY (transaction_id, seq)
        );
        CREATE INDEX outbox_by_destination ON {schema}.outbox (destination, transaction_id, seq);
        """
    ),
    # 6: per-subject data keys for crypto-shredding (`_keys`). Rows are deleted: forgetting
    # a subject deletes its keys, which is what makes its encrypted fields unreadable.
    sql.SQL(
        """
        CREATE TABLE {schema}.subject_keys (
            key_id     bytea NOT NULL,
            subject    text COLLATE "C" NOT NULL,
            material   bytea NOT NULL,
            created_us bigint NOT NULL,
            CONSTRAINT subject_keys_pkey PRIMARY KEY (key_id)
        );
        CREATE INDEX subject_keys_by_subject ON {schema}.subject_keys (subject, created_us);
        """
    ),
)


def epoch_terms(base: int) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """This transaction's id as int8 and as xid8, and the horizon, in an epoch of ``base``.

    Epoch 0's terms are the server's own, so a store that never moved runs exactly the
    statements it always did; a later epoch adds its base (xid8 has no arithmetic, hence
    the casts through int8).
    """
    if base == 0:
        return (
            sql.SQL("pg_current_xact_id()::text::int8"),
            sql.SQL("pg_current_xact_id()"),
            sql.SQL("pg_snapshot_xmin(pg_current_snapshot())"),
        )
    xact = sql.SQL("(pg_current_xact_id()::text::int8 + {})").format(sql.Literal(base))
    edge = sql.SQL("(pg_snapshot_xmin(pg_current_snapshot())::text::int8 + {})::text::xid8")
    return xact, sql.SQL("{}::text::xid8").format(xact), edge.format(sql.Literal(base))


def lock_key(schema: str) -> str:
    """The text hashed into the advisory lock that serialises migrations of ``schema``."""
    return f"eventfold.migrate:{schema}"


# The stream's base version (its version before this append), one branch per expected
# version mode. Each returns no row when the stream is not where the caller expected.
_BASE = {
    # exact N > 0: the loser of a race waits for the winner's row lock, then re-checks
    # the condition against the new row and matches nothing.
    # A replaced stream's row matches no branch (it always exists: only streams with
    # events are replaced), and the caller learns why from the row.
    "exact": """
        UPDATE {streams} SET version = version + %(k)s
        WHERE stream_id = %(sid)s AND version = %(n)s AND replaced_by IS NULL
        RETURNING version - %(k)s AS base""",
    # NO_STREAM or 0: a concurrent creator makes this a no-op (no row), not an error.
    "new": """
        INSERT INTO {streams} (stream_id, version) VALUES (%(sid)s, %(k)s)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING 0::int8 AS base""",
    "exists": """
        UPDATE {streams} SET version = version + %(k)s
        WHERE stream_id = %(sid)s AND replaced_by IS NULL
        RETURNING version - %(k)s AS base""",
    # ANY: serialises on the stream row, never fails spuriously.
    "any": """
        INSERT INTO {streams} AS s (stream_id, version) VALUES (%(sid)s, %(k)s)
        ON CONFLICT (stream_id) DO UPDATE SET version = s.version + excluded.version
        WHERE s.replaced_by IS NULL
        RETURNING s.version - %(k)s AS base""",
}

# The same branches for an append in a unit of work whose events have ids the caller
# chose: no row either when the stream already holds one of them (stored before, or
# earlier in the unit's own transaction). Inserting it would fail the statement and so
# abort the unit's transaction; this way the unit learns of a retry, or of a
# `DuplicateEventId`, and goes on.
_GUARDED_BASE = {
    "exact": """
        UPDATE {streams} SET version = version + %(k)s
        WHERE stream_id = %(sid)s AND version = %(n)s AND replaced_by IS NULL
          AND NOT EXISTS ({taken})
        RETURNING version - %(k)s AS base""",
    "new": """
        INSERT INTO {streams} (stream_id, version)
        SELECT %(sid)s, %(k)s WHERE NOT EXISTS ({taken})
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING 0::int8 AS base""",
    "exists": """
        UPDATE {streams} SET version = version + %(k)s
        WHERE stream_id = %(sid)s AND replaced_by IS NULL AND NOT EXISTS ({taken})
        RETURNING version - %(k)s AS base""",
    "any": """
        INSERT INTO {streams} AS s (stream_id, version)
        SELECT %(sid)s, %(k)s WHERE NOT EXISTS ({taken})
        ON CONFLICT (stream_id) DO UPDATE SET version = s.version + excluded.version
        WHERE s.replaced_by IS NULL
        RETURNING s.version - %(k)s AS base""",
}
# Whether the stream holds one of the append's ids (one probe of the (stream_id,
# event_id) key per id).
_TAKEN = """SELECT FROM {events} t WHERE t.stream_id = %(sid)s AND t.event_id = ANY(
            ARRAY(SELECT encode(i, 'hex')::uuid FROM unnest(%(ids)b::bytea[]) AS i))"""
_TAKEN_ONE = """SELECT FROM {events} t WHERE t.stream_id = %(sid)s
            AND t.event_id = encode(%(ids)b::bytea, 'hex')::uuid"""

# One statement, so one round trip and the shortest possible write transaction. Binary
# array parameters (%b) dump about 6x faster than text ones; ids travel as bytea and
# become uuids on the server.
_APPEND = """
    WITH b AS ({base}),
    ins AS (
        INSERT INTO {events} (event_id, stream_id, version, type, schema_version, data, metadata)
        SELECT encode(e.id, 'hex')::uuid, %(sid)s, b.base + e.ord, e.type, e.sv, e.data, e.meta
        FROM b, unnest(%(ids)b::bytea[], %(types)b::text[], %(svs)b::int4[],
                       %(datas)b::bytea[], %(metas)b::bytea[])
             WITH ORDINALITY AS e(id, type, sv, data, meta, ord)
        ORDER BY e.ord
        RETURNING seq
    )
    SELECT (SELECT base FROM b), {xact}, (SELECT max(seq) FROM ins)
"""

# The same for the most common append, one event: scalar parameters save the client about
# 60 us of array dumping per append, and client CPU is what bounds small concurrent appends.
_APPEND_ONE = """
    WITH b AS ({base}),
    ins AS (
        INSERT INTO {events} (event_id, stream_id, version, type, schema_version, data, metadata)
        SELECT encode(%(ids)b::bytea, 'hex')::uuid, %(sid)s, b.base + 1, %(types)s::text,
               %(svs)s::int4, %(datas)b::bytea, %(metas)b::bytea
        FROM b
        RETURNING seq
    )
    SELECT (SELECT base FROM b), {xact}, (SELECT seq FROM ins)
"""

# A stream transformation's copies keep their recorded times (microseconds since the epoch).
_APPEND_AT = """
    WITH b AS ({base}),
    ins AS (
        INSERT INTO {events} (event_id, stream_id, version, type, schema_version, data, metadata,
                              recorded_at)
        SELECT encode(e.id, 'hex')::uuid, %(sid)s, b.base + e.ord, e.type, e.sv, e.data, e.meta,
               'epoch'::timestamptz + e.rec * interval '1 microsecond'
        FROM b, unnest(%(ids)b::bytea[], %(types)b::text[], %(svs)b::int4[],
                       %(datas)b::bytea[], %(metas)b::bytea[], %(recs)b::int8[])
             WITH ORDINALITY AS e(id, type, sv, data, meta, rec, ord)
        ORDER BY e.ord
        RETURNING seq
    )
    SELECT (SELECT base FROM b), {xact}, (SELECT max(seq) FROM ins)
"""

# The stream a read of %(sid)s goes to: its replacement, if a transformation replaced it.
_FOLLOW = "coalesce((SELECT r.replaced_by FROM {streams} r WHERE r.stream_id = %(sid)s), %(sid)s)"

# Columns in `eventfold.store.kit.Row` order. ORDER BY names the table's columns (e.*): the
# output column `transaction_id::text::int8` is also called transaction_id, and ordering
# by it would sort instead of walking the index.
_ROW = """uuid_send(e.event_id), e.stream_id, e.version, e.type, e.schema_version, e.data,
    e.metadata, (extract(epoch FROM e.recorded_at) * 1000000)::int8,
    e.transaction_id::text::int8, e.seq"""

# The horizon: the oldest transaction still running (its id in this epoch's terms).
_HORIZON = "e.transaction_id < {edge}"

# Resume after (x, s). The condition is the OR form, as Watermill writes it, because the
# planner misestimates a bare row comparison (transaction_id, seq) > (x, s). The row
# comparison in front of it is redundant for the result: it is there only to hand the
# index scan its exact two-column start key. With `transaction_id >= x` instead, every page
# that resumes inside a transaction would first re-walk that transaction's rows already
# read, which is quadratic in the size of one transaction (a 1M-event import would make
# each page skip up to 1M rows). The misestimate cannot pick a sort: see `_configure`.
_READ_ALL = """
    SELECT {row} FROM {events} e
    WHERE (e.transaction_id, e.seq) > (%(x)s::xid8, %(s)s::int8)
      AND ((e.transaction_id = %(x)s::xid8 AND e.seq > %(s)s::int8)
           OR e.transaction_id > %(x)s::xid8)
      AND {horizon}{filters}
    ORDER BY e.transaction_id, e.seq
    LIMIT %(n)s
"""
_TYPES = "\n      AND e.type = ANY(%(types)s::text[])"
_CATEGORIES = "\n      AND split_part(e.stream_id, '-', 1) = ANY(%(cats)s::text[])"


# A handler's load in one round trip. First a header row, marked by a NULL first column:
# the stream the load reads (its replacement, if a transformation replaced it), the newest
# snapshot within the bounds (NULLs without one) and the id of the event stored at the
# snapshot's version in the stream read (the snapshot is used only if it is its own). Then
# the stream's first page of events after the snapshot (from 1 without one), with only
# what a fold reads: `_LOAD_ROW`, the recorded time only for a load bounded by time. Both
# follow a replaced stream's alias: only the replacement's snapshots count. The last
# column of an event row is, for a sealed row (metadata holding the bytes '"$personal"',
# the hex below), its event id and metadata, which opening it needs (`Codec.decode_loaded`).
_LOAD_ROW = """e.version, e.type, e.schema_version, e.data,
    CASE WHEN %(timed)s THEN (extract(epoch FROM e.recorded_at) * 1000000)::int8 ELSE 0 END,
    NULL::int8, NULL::bytea, NULL::int8,
    CASE WHEN position('\\x2224706572736f6e616c22'::bytea IN e.metadata) > 0
        THEN uuid_send(e.event_id) || e.metadata END"""
_READ_FOR_LOAD = """
    WITH t AS (SELECT {follow} AS sid),
    s AS (
        SELECT version, schema_version, data, event_id, recorded_us, taken_us
        FROM {snapshots}
        WHERE stream_id = (SELECT sid FROM t) AND state_type = %(type)s
          AND version <= %(version)s AND recorded_us <= %(recorded)s
        ORDER BY stream_id DESC, state_type DESC, version DESC LIMIT 1
    )
    SELECT NULL::int8, t.sid, s.schema_version, s.data, s.recorded_us, s.version, s.event_id,
        s.taken_us,
        (SELECT uuid_send(a.event_id) FROM {events} a
         WHERE a.stream_id = t.sid AND a.version = s.version)
    FROM t LEFT JOIN s ON true
    UNION ALL
    (SELECT {load_row} FROM {events} e
    WHERE e.stream_id = (SELECT sid FROM t) AND e.version > coalesce((SELECT version FROM s), 0)
      AND e.version <= %(version)s
    ORDER BY e.version LIMIT %(n)s)
"""


class Statements:
    """Every statement the store runs, rendered once for one schema."""

    def __init__(self, schema: str, base: int = 0) -> None:
        self.schema = schema
        self.base = base
        """The epoch's base the statements add to transaction ids (`epoch_terms`)."""
        ident = sql.Identifier(schema)
        xact, tx, edge = epoch_terms(base)
        names = {
            "xact": xact,
            "tx": tx,
            "edge": edge,
            "schema": ident,
            "events": sql.Identifier(schema, "events"),
            "streams": sql.Identifier(schema, "streams"),
            "migrations": sql.Identifier(schema, "schema_migrations"),
            "snapshots": sql.Identifier(schema, "snapshots"),
            "epochs": sql.Identifier(schema, "epochs"),
            "outbox": sql.Identifier(schema, "outbox"),
        }

        def fragment(text: str) -> sql.Composed:
            return sql.SQL(text).format(**names)

        def render(text: str, **extra: str) -> bytes:
            parts = {key: fragment(value) for key, value in extra.items()}
            return sql.SQL(text).format(**names, **parts).as_bytes(None)

        self.migrations = [m.format(**names).as_bytes(None) for m in MIGRATIONS]
        self.create_schema = render("CREATE SCHEMA IF NOT EXISTS {schema}")
        self.create_migrations = render(
            """CREATE TABLE IF NOT EXISTS {migrations} (
                version    int PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
        )
        self.lock = b"SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
        self.has_migrations = b"SELECT to_regclass(%s) IS NOT NULL"
        self.migrations_table = f"{sql.Identifier(schema).as_string(None)}.schema_migrations"
        self.schema_version = render("SELECT coalesce(max(version), 0) FROM {migrations}")
        self.record_migration = render("INSERT INTO {migrations} (version) VALUES (%s)")
        self.append = {mode: render(_APPEND, base=base) for mode, base in _BASE.items()}
        self.append_one = {mode: render(_APPEND_ONE, base=base) for mode, base in _BASE.items()}
        self.append_at = {mode: render(_APPEND_AT, base=base) for mode, base in _BASE.items()}
        self.unit_append = {
            mode: render(_APPEND, base=base.replace("{taken}", _TAKEN))
            for mode, base in _GUARDED_BASE.items()
        }
        self.unit_append_one = {
            mode: render(_APPEND_ONE, base=base.replace("{taken}", _TAKEN_ONE))
            for mode, base in _GUARDED_BASE.items()
        }
        self.find_ids = render(
            """SELECT uuid_send(event_id), version, type, data, transaction_id::text::int8, seq
            FROM {events} WHERE stream_id = %s AND event_id = ANY(%s::uuid[])"""
        )
        # No ORDER BY: with sorts discouraged (see postgres._configure) the planner would
        # rather walk the whole stream in version order; the caller sorts the few rows.
        self.find_events = render(
            """SELECT {row} FROM {events} e
            WHERE e.stream_id = {follow} AND e.event_id = ANY(%(ids)s::uuid[])""",
            row=_ROW,
            follow=_FOLLOW,
        )
        self.stream_version = render(
            "SELECT version FROM {streams} WHERE stream_id = {follow}", follow=_FOLLOW
        )
        self.stream_info = render(
            "SELECT version, replaced_by FROM {streams} WHERE stream_id = %(sid)s"
        )
        # The switch, in one transaction: lock both rows (in id order), check, update.
        self.lock_streams = render(
            """SELECT stream_id, version, replaced_by FROM {streams}
            WHERE stream_id = ANY(%(ids)s::text[]) ORDER BY stream_id FOR UPDATE"""
        )
        self.replace_stream = render(
            "UPDATE {streams} SET replaced_by = %(target)s WHERE stream_id = %(sid)s"
        )
        # Aliases to the source now lead to the target (keeps every alias one hop long).
        self.repoint_aliases = render(
            "UPDATE {streams} SET replaced_by = %(target)s WHERE replaced_by = %(sid)s"
        )
        self.read_forwards = render(
            """SELECT {row} FROM {events} e WHERE e.stream_id = %(sid)s AND e.version >= %(at)s
            ORDER BY e.version LIMIT %(n)s""",
            row=_ROW,
        )
        self.read_backwards = render(
            """SELECT {row} FROM {events} e WHERE e.stream_id = %(sid)s AND e.version <= %(at)s
            ORDER BY e.version DESC LIMIT %(n)s""",
            row=_ROW,
        )
        # The first page of a read that follows a replaced stream's alias (the later pages
        # read the stream the first one found, by id).
        self.follow_forwards = render(
            """SELECT {row} FROM {events} e WHERE e.stream_id = {follow} AND e.version >= %(at)s
            ORDER BY e.version LIMIT %(n)s""",
            row=_ROW,
            follow=_FOLLOW,
        )
        self.follow_backwards = render(
            """SELECT {row} FROM {events} e WHERE e.stream_id = {follow} AND e.version <= %(at)s
            ORDER BY e.version DESC LIMIT %(n)s""",
            row=_ROW,
            follow=_FOLLOW,
        )
        self.read_all = {
            (bool(t), bool(c)): render(_READ_ALL, row=_ROW, horizon=_HORIZON, filters=(t + c))
            for t in ("", _TYPES)
            for c in ("", _CATEGORIES)
        }
        # Every committed row, with no horizon: for a reader whose locks keep the appends
        # that matter out (a transaction participant's attach). With the horizon, one open
        # transaction anywhere in the cluster would hide what committed before it.
        self.read_committed = render(_READ_ALL, row=_ROW, horizon="TRUE", filters="")
        self.head = render(
            """SELECT e.transaction_id::text::int8, e.seq FROM {events} e WHERE {horizon}
            ORDER BY e.transaction_id DESC, e.seq DESC LIMIT 1""",
            horizon=_HORIZON,
        )
        self.streams = render(
            """SELECT stream_id, version, replaced_by FROM {streams} WHERE stream_id > %(after)s
            ORDER BY stream_id LIMIT %(n)s"""
        )
        # The range lets the primary key narrow the scan; split_part is the exact test.
        self.streams_in_category = render(
            """SELECT stream_id, version, replaced_by FROM {streams}
            WHERE stream_id > %(after)s AND stream_id >= %(cat)s AND stream_id < %(cat)s || '.'
              AND split_part(stream_id, '-', 1) = %(cat)s
            ORDER BY stream_id LIMIT %(n)s"""
        )
        self.save_snapshot = render(
            """INSERT INTO {snapshots} AS s (stream_id, state_type, version, schema_version,
                data, event_id, recorded_us, taken_us)
            VALUES (%s, %s, %s, %s, %b, %b, %s, %s)
            ON CONFLICT (stream_id, state_type, version) DO UPDATE SET
                schema_version = excluded.schema_version, data = excluded.data,
                event_id = excluded.event_id, recorded_us = excluded.recorded_us,
                taken_us = excluded.taken_us
            RETURNING s.version"""
        )
        self.load_snapshot = render(
            """SELECT stream_id, state_type, version, schema_version, data, event_id,
                recorded_us, taken_us
            FROM {snapshots}
            WHERE stream_id = %(sid)s AND state_type = %(type)s
              AND version <= %(version)s AND recorded_us <= %(recorded)s
            ORDER BY stream_id DESC, state_type DESC, version DESC LIMIT 1"""
        )
        self.counts = render("SELECT count(*), coalesce(sum(version), 0)::int8 FROM {streams}")
        self.read_for_load = render(_READ_FOR_LOAD, load_row=_LOAD_ROW, follow=_FOLLOW)
        self.load_page = render(
            """SELECT {load_row} FROM {events} e WHERE e.stream_id = %(sid)s
            AND e.version >= %(at)s AND e.version <= %(upto)s ORDER BY e.version LIMIT %(n)s""",
            load_row=_LOAD_ROW,
        )
        # Epochs (see `_epoch`). Both read the newest stored row by the index.
        self.epoch_state = render(
            """SELECT ep.epoch, ep.base, pg_snapshot_xmax(pg_current_snapshot())::text::int8,
                greatest((SELECT e.transaction_id::text::int8 FROM {events} e
                 ORDER BY e.transaction_id DESC, e.seq DESC LIMIT 1),
                 (SELECT o.transaction_id::text::int8 FROM {outbox} o
                 ORDER BY o.transaction_id DESC, o.seq DESC LIMIT 1))
            FROM {epochs} ep ORDER BY ep.epoch DESC LIMIT 1"""
        )
        self.start_epoch = render(
            """INSERT INTO {epochs} (epoch, base, server_xid, stored_max)
            VALUES (%s, %s, %s, %s)"""
        )
        self._events = names["events"]
        # The oldest row the horizon hides, the server's counter and the newest epoch's
        # base: what tells a long transaction from ids ahead of the counter.
        self.hidden = render(
            """SELECT (SELECT e.transaction_id::text::int8 FROM {events} e
                    WHERE e.transaction_id >= {edge} ORDER BY e.transaction_id, e.seq LIMIT 1),
                pg_snapshot_xmax(pg_current_snapshot())::text::int8,
                (SELECT ep.epoch FROM {epochs} ep ORDER BY ep.epoch DESC LIMIT 1)"""
        )
        # The events this transaction inserted, in order (inline projections apply them).
        self.this_transaction = render(
            """SELECT {row} FROM {events} e WHERE e.transaction_id = {tx}
            ORDER BY e.transaction_id, e.seq""",
            row=_ROW,
        )

    def epoch_default(self, base: int) -> bytes:
        """Makes new rows take the transaction id of an epoch of ``base``."""
        statement = "ALTER TABLE {} ALTER COLUMN transaction_id SET DEFAULT {}"
        return sql.SQL(statement).format(self._events, epoch_terms(base)[1]).as_bytes(None)
