"""Projection definitions: names, versions, handlers, declared types, dependencies."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

import eventfold
from eventfold.projections import (
    DocumentProjection,
    HandlerFailed,
    InvalidProjection,
    MemoryReadModelStore,
    PoisonPolicy,
    Projection,
    ProjectionTransaction,
    check_projections,
)


class DefOpened(eventfold.Event):
    owner: str


class DefDeposited(eventfold.Event):
    amount: int


def recorded(stream_id: str, data: eventfold.Event, position: int = 1) -> eventfold.RecordedEvent:
    return eventfold.RecordedEvent(
        stream_id=stream_id,
        version=1,
        type=type(data).__event_type__,
        schema_version=1,
        data=data,
        raw_event_id=uuid.uuid4().bytes,
        raw_tx=0,
        raw_seq=position,
        raw_metadata=b"{}",
        recorded_us=0,
    )


@pytest.mark.parametrize("name", ["", "Orders", "1orders", "or-ders", "x" * 64, 7])
def test_bad_names_are_refused_naming_the_rule(name: Any) -> None:
    with pytest.raises(InvalidProjection, match="lowercase"):
        Projection(name)


@pytest.mark.parametrize("version", [0, -1, True, 1.5, "2"])
def test_bad_versions_are_refused(version: Any) -> None:
    with pytest.raises(InvalidProjection, match="version must be an int >= 1"):
        Projection("orders", version=version)


@pytest.mark.parametrize("partitions", [0, 1025, True, "4"])
def test_bad_partitions_are_refused(partitions: Any) -> None:
    with pytest.raises(InvalidProjection, match="partitions"):
        Projection("orders", partitions=partitions)


def test_event_types_come_from_the_handlers() -> None:
    p = Projection("accounts", version=3)

    @p.on(DefOpened)
    async def opened(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None: ...

    @p.on(DefDeposited, "LegacyDeposit")
    async def deposited(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None: ...

    assert p.event_types == ("DefDeposited", "DefOpened", "LegacyDeposit")
    assert repr(p) == "Projection('accounts', version=3)"
    with pytest.raises(InvalidProjection, match="already handles 'DefOpened'"):
        p.on(DefOpened)
    with pytest.raises(InvalidProjection, match="at least one event type"):
        p.on()
    with pytest.raises(InvalidProjection, match="not an event type"):
        p.on(int)  # type: ignore[arg-type]


def test_a_projection_without_handlers_cannot_run() -> None:
    with pytest.raises(InvalidProjection, match=r"handles no event types.*@idle.on"):
        check_projections([Projection("idle")])


def test_categories_narrow_what_is_handled() -> None:
    p = DocumentProjection("balances", document=dict, categories="account")

    @p.on(DefDeposited)
    def deposited(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        return doc

    assert p.handles(recorded("account-1", DefDeposited(amount=1)))
    assert not p.handles(recorded("savings-1", DefDeposited(amount=1)))
    assert not p.handles(recorded("account-1", DefOpened(owner="ann")))


def test_evolve_with_types_or_per_type_evolvers() -> None:
    def evolve(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        return {**doc, "n": doc.get("n", 0) + 1}

    p = DocumentProjection("counts", document=dict, evolve=evolve, types=[DefOpened, DefDeposited])
    assert p.event_types == ("DefDeposited", "DefOpened")
    docs = p.fold(
        {}, [recorded("a-1", DefOpened(owner="x")), recorded("a-1", DefDeposited(amount=2))]
    )
    assert docs == {"a-1": {"n": 2}}
    with pytest.raises(InvalidProjection, match="types"):
        DocumentProjection("counts", document=dict, evolve=evolve)
    with pytest.raises(InvalidProjection, match="evolve"):
        DocumentProjection("counts", document=dict, types=[DefOpened])


def test_id_of_may_fan_out_or_skip() -> None:
    p = DocumentProjection(
        "owners",
        document=dict,
        id_of=lambda e: None if e.data.owner == "nobody" else [e.data.owner, "all"],
    )

    @p.on(DefOpened)
    def opened(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        return {"accounts": doc.get("accounts", 0) + 1}

    assert not p.per_stream
    docs = p.fold(
        {},
        [
            recorded("a-1", DefOpened(owner="ann")),
            recorded("a-2", DefOpened(owner="bob")),
            recorded("a-3", DefOpened(owner="nobody")),
        ],
    )
    assert docs == {"ann": {"accounts": 1}, "bob": {"accounts": 1}, "all": {"accounts": 2}}
    with pytest.raises(InvalidProjection, match="partitions=1"):
        DocumentProjection("owners", document=dict, id_of=lambda e: "all", partitions=2)


def test_evolve_returning_none_deletes_and_a_later_event_starts_afresh() -> None:
    class Doc(msgspec.Struct):
        opened: int = 0

    p = DocumentProjection("lifecycle", document=Doc)

    @p.on(DefOpened)
    def opened(doc: Doc, event: eventfold.RecordedEvent) -> Doc:
        return Doc(opened=doc.opened + 1)

    @p.on(DefDeposited)
    def closed(doc: Doc, event: eventfold.RecordedEvent) -> Doc | None:
        return None

    events = [recorded("a-1", DefOpened(owner="x")), recorded("a-1", DefDeposited(amount=0))]
    assert p.fold({}, events) == {"a-1": None}
    assert p.fold({}, [*events, recorded("a-1", DefOpened(owner="x"))]) == {"a-1": Doc(opened=1)}


def test_an_evolver_error_names_the_event() -> None:
    p = DocumentProjection("fragile", document=dict)

    @p.on(DefDeposited)
    def deposited(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        return {"x": 1 // event.data.amount}

    poison = recorded("a-9", DefDeposited(amount=0), position=42)
    with pytest.raises(HandlerFailed) as info:
        p.fold({}, [recorded("a-1", DefDeposited(amount=1)), poison])
    assert info.value.position == poison.position
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "DefDeposited at position 42 (stream 'a-9'" in str(info.value)


async def test_store_errors_in_handlers_are_not_poison() -> None:
    p = Projection("flaky")

    @p.on(DefOpened)
    async def opened(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None:
        raise eventfold.StoreError("connection reset")

    models = MemoryReadModelStore()
    with pytest.raises(eventfold.StoreError):
        async with models.transaction() as tx:
            await p.apply([recorded("a-1", DefOpened(owner="x"))], tx)


async def test_the_transaction_handle_reads_and_writes_documents() -> None:
    class Doc(msgspec.Struct):
        n: int

    models = MemoryReadModelStore()
    async with models.transaction() as raw:
        tx = ProjectionTransaction(raw, "docs", 2)
        await tx.put("a", Doc(n=1))
        await tx.put("b", {"n": 2})
        assert await tx.get("a", Doc) == Doc(n=1)
        assert await tx.get("b") == {"n": 2}
        assert await tx.get_many(["a", "b", "c"]) == {"a": {"n": 1}, "b": {"n": 2}}
        await tx.delete("b")
        assert await tx.get("b") is None
        assert tx.table("orders") == '"orders_v2"'
        with pytest.raises(InvalidProjection):
            tx.table('orders"; drop table x; --')
        with pytest.raises(eventfold.ConfigurationError, match="SQL read models"):
            await tx.execute("select 1")
    assert await models.get_documents("docs", 2, ["a", "b"]) == {"a": b'{"n":1}'}


def test_check_projections_finds_duplicates_missing_dependencies_and_cycles() -> None:
    def make(name: str, *deps: str) -> Projection:
        p = Projection(name, depends_on=deps)
        p.on(DefOpened)(_noop)
        return p

    with pytest.raises(InvalidProjection, match="two projections are named 'a'"):
        check_projections([make("a"), make("a")])
    with pytest.raises(InvalidProjection, match=r"depends on \['b'\]"):
        check_projections([make("a", "b")])
    with pytest.raises(InvalidProjection, match="cycle: a -> b -> c -> a"):
        check_projections([make("a", "b"), make("b", "c"), make("c", "a")])
    with pytest.raises(InvalidProjection, match="itself"):
        make("a", "a")
    assert list(check_projections([make("a", "b"), make("b")])) == ["a", "b"]


async def _noop(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None:
    return None


def test_poison_policy_validates_and_backs_off_exponentially() -> None:
    policy = PoisonPolicy(action="park", retries=5, backoff=0.5, max_backoff=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(InvalidProjection, match="'stop' or 'park'"):
        PoisonPolicy(action="skip")  # type: ignore[arg-type]
    with pytest.raises(InvalidProjection, match="retries"):
        PoisonPolicy(retries=-1)
