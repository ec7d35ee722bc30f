"""The conformance suite of read-model stores (`eventfold.projections.ReadModelStore`).

Subclass `ReadModelStoreConformance` in a test module and provide a ``models`` fixture
that yields a `ReadModelStore` with nothing in it yet (for a store kept beside the
events, the one `read_models_for` gives for a fresh event store). Async tests need
pytest-asyncio with ``asyncio_mode = "auto"``.

What a SQL read-model store also offers (``execute`` and ``write`` on a transaction)
depends on its dialect, so it is not part of this suite. Reading many versions' summaries
at once (`SupportsProjectionSummaries`) is an optional port: its test is skipped for a
store that does not declare it.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

import eventfold
from eventfold import Position
from eventfold.projections import (
    CheckpointConflict,
    ParkedEvent,
    PartitionState,
    ProjectionSummary,
    ReadModelStore,
    ReadModelTransaction,
    SupportsProjectionSummaries,
    VersionState,
)
from eventfold.projections._status import summary_of

__all__ = ["ProjectionSummariesConformance", "ReadModelStoreConformance"]


def P(seq: int, tx: int = 0) -> Position:
    return Position(tx, seq)


def _parked(position: Position, error: str = "boom", version: int = 1) -> ParkedEvent:
    return ParkedEvent(
        name="docs",
        version=version,
        partition=0,
        position=position,
        stream_id="a-1",
        event_id="00000000-0000-0000-0000-000000000001",
        type="Deposited",
        error=error,
        attempts=3,
        parked_us=1,
    )


class ReadModelStoreConformance:
    """Behaviour every `ReadModelStore` shares: documents, checkpoints, parked events and
    versions, each written only by a transaction that commits."""

    # -- documents -----------------------------------------------------------------

    async def test_writes_are_visible_only_after_commit(self, models: ReadModelStore) -> None:
        odd = b'{ "b": 1,  "a" : [1, 2.50, "\\u00e9"] }'
        async with models.transaction() as tx:
            await tx.put_document("docs", 1, "a", odd)
            await tx.put_document("docs", 1, "b", b'{"n":2}')
            assert await tx.get_documents("docs", 1, ["b", "a", "c"]) == {"b": b'{"n":2}', "a": odd}
            assert await models.get_documents("docs", 1, ["a"]) == {}
        found = await models.get_documents("docs", 1, ["b", "a"])
        assert found == {"a": odd, "b": b'{"n":2}'}
        assert list(found) == ["b", "a"]  # in the order asked for
        assert found["a"] == odd  # byte for byte
        assert await models.get_documents("docs", 2, ["a"]) == {}  # versions are apart
        assert await models.get_documents("other", 1, ["a"]) == {}  # so are names
        assert await models.get_documents("docs", 1, []) == {}
        async with models.transaction() as tx:
            await tx.delete_document("docs", 1, "a")
            await tx.delete_document("docs", 1, "missing")
            assert await tx.get_documents("docs", 1, ["a", "b"]) == {"b": b'{"n":2}'}
            await tx.put_document("docs", 1, "b", b'{"n":3}')
            await tx.put_document("docs", 1, "b", b'{"n":4}')  # the last write wins
            assert await tx.get_documents("docs", 1, ["b"]) == {"b": b'{"n":4}'}
        assert await models.get_documents("docs", 1, ["a", "b"]) == {"b": b'{"n":4}'}
        with pytest.raises(eventfold.InvalidInput, match="must be bytes"):
            async with models.transaction() as tx:
                await tx.put_document("docs", 1, "c", '{"n":1}')  # type: ignore[arg-type]

    async def test_iter_documents_orders_by_code_point_and_pages(
        self, models: ReadModelStore
    ) -> None:
        async with models.transaction() as tx:
            for i in range(2500):
                await tx.put_document("docs", 1, f"{i:05}", b"%d" % i)
            for doc_id in ("b", "B", "a", "\u00e9", "Z", "a b", "a-b", "\U0001f600"):
                await tx.put_document("odd", 1, doc_id, b"{}")
            await tx.put_document("docs", 2, "00001", b"{}")
        ids = [i async for i, _ in models.iter_documents("docs", 1)]
        assert ids == [f"{i:05}" for i in range(2500)]
        page = [item async for item in models.iter_documents("docs", 1, after="00010", limit=3)]
        assert page == [("00011", b"11"), ("00012", b"12"), ("00013", b"13")]
        assert [i async for i, _ in models.iter_documents("docs", 1, limit=0)] == []
        tail = [i async for i, _ in models.iter_documents("docs", 1, after="02497")]
        assert tail == ["02498", "02499"]
        odd = [i async for i, _ in models.iter_documents("odd", 1)]
        assert odd == sorted(odd)
        assert len(odd) == 8
        with pytest.raises(eventfold.InvalidInput):
            [i async for i in models.iter_documents("docs", 1, limit=-1)]

    # -- transactions --------------------------------------------------------------

    async def test_an_exception_rolls_everything_back(self, models: ReadModelStore) -> None:
        ended: list[ReadModelTransaction] = []

        async def crash() -> None:
            async with models.transaction() as tx:
                ended.append(tx)
                await tx.put_document("docs", 1, "a", b"{}")
                await tx.set_checkpoint("docs", 1, 0, P(5), expected=None)
                await tx.set_state("docs", 1, 1, PartitionState.FAILED, "boom")
                await tx.park(_parked(P(3)))
                await tx.set_version("docs", 1, VersionState.BUILDING, expected=None)
                await tx.activate("docs", 1)
                raise RuntimeError("crash before commit")

        with pytest.raises(RuntimeError):
            await crash()
        assert await models.get_documents("docs", 1, ["a"]) == {}
        assert await models.checkpoints("docs", 1) == []
        assert await models.parked("docs", 1) == []
        assert await models.active_version("docs") is None
        assert await models.versions() == []
        with pytest.raises(eventfold.InvalidInput, match="has ended"):
            await ended[0].put_document("docs", 1, "a", b"{}")

    async def test_reads_inside_a_transaction_see_its_own_writes(
        self, models: ReadModelStore
    ) -> None:
        async with models.transaction() as tx:
            await tx.set_checkpoint("docs", 1, 0, P(10), expected=None)
            await tx.set_version("docs", 1, VersionState.BUILDING, expected=None)
            await tx.put_document("docs", 1, "a", b"1")
        async with models.transaction() as tx:
            await tx.set_checkpoint("docs", 1, 0, P(11), expected=P(10))
            await tx.set_state("docs", 1, 0, PartitionState.FAILED, "stuck")
            await tx.set_version("docs", 1, VersionState.RETIRED, expected=VersionState.BUILDING)
            await tx.delete_document("docs", 1, "a")
            await tx.put_document("docs", 1, "b", b"2")
            row = await tx.get_checkpoint("docs", 1, 0)
            assert row is not None
            assert (row.position, row.state, row.error) == (P(11), PartitionState.FAILED, "stuck")
            assert await tx.get_checkpoint("docs", 1, 1) is None
            record = await tx.get_version("docs", 1)
            assert record is not None
            assert record.state is VersionState.RETIRED
            assert await tx.get_version("docs", 2) is None
            assert await tx.get_documents("docs", 1, ["a", "b"]) == {"b": b"2"}
            # Others still see the committed state.
            (committed,) = await models.checkpoints("docs", 1)
            assert committed.position == P(10)
            assert [r.state for r in await models.versions("docs")] == [VersionState.BUILDING]
        (row,) = await models.checkpoints("docs", 1)
        assert (row.position, row.state) == (P(11), PartitionState.FAILED)

    async def test_checkpoints_are_compare_and_set(self, models: ReadModelStore) -> None:
        async with models.transaction() as tx:
            await tx.set_checkpoint("docs", 1, 0, P(10, tx=7), expected=None)
            assert (await tx.get_checkpoint("docs", 1, 0)) is not None

        async def stale(expected: Position | None) -> None:
            async with models.transaction() as tx:
                await tx.put_document("docs", 1, "a", b"{}")
                await tx.park(_parked(P(1)))
                await tx.set_checkpoint("docs", 1, 0, P(20), expected=expected)

        with pytest.raises(CheckpointConflict) as info:
            await stale(P(5))
        assert (info.value.expected, info.value.actual, info.value.partition) == (
            P(5),
            P(10, tx=7),
            0,
        )
        assert "another worker" in str(info.value)
        with pytest.raises(CheckpointConflict):
            await stale(None)  # a row exists already
        assert await models.get_documents("docs", 1, ["a"]) == {}
        assert await models.parked("docs", 1) == []
        async with models.transaction() as tx:
            await tx.set_checkpoint("docs", 1, 0, P(20), expected=P(10, tx=7))
            await tx.set_checkpoint("docs", 1, 0, P(30), expected=P(20))  # its own write
        (row,) = await models.checkpoints("docs", 1)
        assert (row.position, row.state, row.error) == (P(30), PartitionState.RUNNING, None)
        assert row.updated_us > 0

    async def test_two_transactions_from_one_checkpoint_commit_once(
        self, models: ReadModelStore
    ) -> None:
        """The fence: both start from checkpoint 10 at once; one commits, the other is
        rolled back whole, whichever way the backend finds out (at write or at commit)."""
        async with models.transaction() as tx:
            await tx.set_checkpoint("docs", 1, 0, P(10), expected=None)

        async def attempt(n: int) -> int:
            async with models.transaction() as tx:
                await tx.put_document("docs", 1, "n", b"%d" % n)
                await tx.put_document("docs", 1, f"only-{n}", b"{}")
                await tx.set_checkpoint("docs", 1, 0, P(20), expected=P(10))
                await asyncio.sleep(0.05)  # both are in flight together
            return n

        results = await asyncio.gather(attempt(1), attempt(2), return_exceptions=True)
        winners = [r for r in results if isinstance(r, int)]
        losers = [r for r in results if isinstance(r, CheckpointConflict)]
        assert len(winners) == 1, results
        assert len(losers) == 1, results
        (winner,) = winners
        assert (await models.checkpoints("docs", 1))[0].position == P(20)
        docs = await models.get_documents("docs", 1, ["n", "only-1", "only-2"])
        assert docs == {"n": b"%d" % winner, f"only-{winner}": b"{}"}

    async def test_partition_states_and_listing(self, models: ReadModelStore) -> None:
        async with models.transaction() as tx:
            await tx.set_checkpoint("docs", 1, 2, P(7), expected=None)
            await tx.set_state("docs", 1, 0, PartitionState.FAILED, "boom")
            await tx.set_checkpoint("docs", 2, 0, P(1), expected=None)
        rows = await models.checkpoints("docs", 1)
        assert [(r.partition, r.position, r.state, r.error) for r in rows] == [
            (0, eventfold.START, PartitionState.FAILED, "boom"),
            (2, P(7), PartitionState.RUNNING, None),
        ]
        async with models.transaction() as tx:  # a state keeps the position
            await tx.set_state("docs", 1, 2, PartitionState.FAILED, "again")
        assert (await models.checkpoints("docs", 1))[1].position == P(7)
        async with models.transaction() as tx:  # a successful checkpoint clears the failure
            await tx.set_checkpoint("docs", 1, 0, P(3), expected=eventfold.START)
        first = (await models.checkpoints("docs", 1))[0]
        assert (first.state, first.error) == (PartitionState.RUNNING, None)
        assert await models.checkpoints("docs", 3) == []

    async def test_parked_events_in_log_order(self, models: ReadModelStore) -> None:
        async with models.transaction() as tx:
            await tx.park(_parked(P(9)))
            await tx.park(_parked(P(4)))
            await tx.park(_parked(P(2, tx=5)))
            await tx.park(_parked(P(9), error="again"))  # replaces
            await tx.park(_parked(P(1), version=2))
        parked = await models.parked("docs", 1)
        assert [(p.position, p.error) for p in parked] == [
            (P(4), "boom"),
            (P(9), "again"),
            (P(2, tx=5), "boom"),
        ]
        assert parked[0] == _parked(P(4))  # every field comes back
        async with models.transaction() as tx:
            await tx.unpark("docs", 1, P(4))
            await tx.unpark("docs", 1, P(404))  # missing: not an error
        assert [p.position for p in await models.parked("docs", 1)] == [P(9), P(2, tx=5)]
        assert [p.position for p in await models.parked("docs", 2)] == [P(1)]

    # -- versions ------------------------------------------------------------------

    async def test_set_version_is_compare_and_set(self, models: ReadModelStore) -> None:
        async with models.transaction() as tx:
            await tx.set_version("docs", 1, VersionState.BUILDING, expected=None)

        async def change(expected: VersionState | None) -> None:
            async with models.transaction() as tx:
                await tx.put_document("docs", 1, "a", b"{}")
                await tx.set_version("docs", 1, VersionState.RETIRED, expected=expected)

        with pytest.raises(CheckpointConflict, match="state of projection 'docs' v1") as info:
            await change(None)
        assert (info.value.partition, info.value.expected, info.value.actual) == (
            None,
            None,
            VersionState.BUILDING,
        )
        with pytest.raises(CheckpointConflict):
            await change(VersionState.ACTIVE)
        assert await models.get_documents("docs", 1, ["a"]) == {}
        await change(VersionState.BUILDING)
        (record,) = await models.versions("docs")
        assert (record.name, record.version, record.state) == ("docs", 1, VersionState.RETIRED)
        assert record.changed_us > 0

    async def test_activate_returns_the_previous_version_and_retires_it(
        self,
        models: ReadModelStore,
    ) -> None:
        async with models.transaction() as tx:
            await tx.set_version("docs", 1, VersionState.BUILDING, expected=None)
            await tx.set_version("other", 1, VersionState.BUILDING, expected=None)
        async with models.transaction() as tx:
            assert await tx.activate("docs", 1) is None
        assert await models.active_version("docs") == 1
        assert await models.active_version("other") is None
        async with models.transaction() as tx:
            await tx.set_version("docs", 2, VersionState.BUILDING, expected=None)
        async with models.transaction() as tx:
            assert await tx.activate("docs", 2) == 1
            record = await tx.get_version("docs", 1)
            assert record is not None
            assert record.state is VersionState.RETIRED
        assert await models.active_version("docs") == 2
        states = [(r.version, r.state) for r in await models.versions("docs")]
        assert states == [(1, VersionState.RETIRED), (2, VersionState.ACTIVE)]
        everything = [(r.name, r.version, r.state) for r in await models.versions()]
        assert everything == [
            ("docs", 1, VersionState.RETIRED),
            ("docs", 2, VersionState.ACTIVE),
            ("other", 1, VersionState.BUILDING),
        ]
        async with models.transaction() as tx:  # a rollback to the retired one
            assert await tx.activate("docs", 1) == 2
            assert await tx.activate("docs", 1) == 1  # again: nothing retires
        assert [r.state for r in await models.versions("docs")] == [
            VersionState.ACTIVE,
            VersionState.RETIRED,
        ]
        assert await models.versions("nothing") == []

    async def test_drop_deletes_one_version_entirely(self, models: ReadModelStore) -> None:
        async with models.transaction() as tx:
            for v in (1, 2):
                await tx.put_document("docs", v, "a", b"{}")
                await tx.set_checkpoint("docs", v, 0, P(v), expected=None)
                await tx.set_checkpoint("docs", v, 1, P(v), expected=None)
                await tx.park(_parked(P(1), version=v))
                await tx.set_version("docs", v, VersionState.BUILDING, expected=None)
            await tx.activate("docs", 1)
        async with models.transaction() as tx:
            await tx.drop("docs", 1)
            assert await tx.get_documents("docs", 1, ["a"]) == {}
            assert await tx.get_checkpoint("docs", 1, 0) is None
            assert await tx.get_version("docs", 1) is None
            await tx.put_document("docs", 1, "b", b"{}")  # writes after a drop survive it
            await tx.set_checkpoint("docs", 1, 0, P(9), expected=None)
        assert await models.get_documents("docs", 1, ["a", "b"]) == {"b": b"{}"}
        assert [c.position for c in await models.checkpoints("docs", 1)] == [P(9)]
        assert await models.parked("docs", 1) == []
        assert await models.active_version("docs") is None
        assert [r.version for r in await models.versions("docs")] == [2]
        assert await models.get_documents("docs", 2, ["a"]) == {"a": b"{}"}
        assert len(await models.checkpoints("docs", 2)) == 2
        assert len(await models.parked("docs", 2)) == 1

    async def test_documents_round_trip_as_json(self, models: ReadModelStore) -> None:
        doc = {"name": "caf\u00e9", "items": [1, 2.5, None, True], "nested": {"k": "v"}}
        async with models.transaction() as tx:
            await tx.put_document("docs", 1, "x", msgspec.json.encode(doc))
        found = await models.get_documents("docs", 1, ["x"])
        assert msgspec.json.decode(found["x"]) == doc


class ProjectionSummariesConformance:
    """The contract of the optional `SupportsProjectionSummaries` port: many projection
    versions' summaries in one read, each equal to what the single reads give. Subclass it
    in a test module over a ``models`` fixture whose store offers the port (as for
    `ReadModelStoreConformance`)."""

    async def test_summaries_read_many_versions_as_their_single_reads_do(
        self, models: ReadModelStore
    ) -> None:
        assert isinstance(models, SupportsProjectionSummaries), (
            f"{type(models).__name__} does not offer SupportsProjectionSummaries; run "
            "this suite only over read-model stores that do"
        )
        async with models.transaction() as tx:
            await tx.set_checkpoint("docs", 1, 1, P(7), expected=None)
            await tx.set_checkpoint("docs", 1, 0, P(3, tx=2), expected=None)
            await tx.set_state("docs", 1, 2, PartitionState.FAILED, "boom")
            await tx.park(_parked(P(9)))
            await tx.park(msgspec.structs.replace(_parked(P(4)), parked_us=5))
            await tx.set_version("docs", 1, VersionState.BUILDING, expected=None)
            await tx.set_version("docs", 2, VersionState.BUILDING, expected=None)
            await tx.activate("docs", 2)
            await tx.set_checkpoint("docs", 2, 0, P(11), expected=None)
            await tx.park(_parked(P(1), version=2))
            await tx.set_checkpoint("other", 1, 0, P(2), expected=None)
        slots = [("docs", 1), ("none", 1), ("docs", 2), ("other", 1), ("docs", 1), ("docs", 3)]
        found = await models.summaries(slots)
        assert [(s.name, s.version) for s in found] == slots  # in the order asked for
        for summary in found:  # what the single reads give
            assert summary == await summary_of(models, summary.name, summary.version)
        docs = found[0]
        assert [c.partition for c in docs.checkpoints] == [0, 1, 2]
        assert (docs.parked, docs.oldest_parked_us, docs.active_version) == (2, 1, 2)
        assert docs.record is not None
        assert docs.record.state is VersionState.BUILDING
        assert found[1] == ProjectionSummary("none", 1, (), 0, None, None, None)
        assert found[5].active_version == 2
        assert found[5].record is None
        assert await models.summaries([]) == []
        many = [(f"v{i}", 1) for i in range(700)]  # more than one query's worth on SQLite
        assert [(s.name, s.version) for s in await models.summaries(many)] == many
