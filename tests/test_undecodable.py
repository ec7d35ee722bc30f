"""Stored events that do not decode, the nesting limit on write, and non-finite floats."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventfold
from eventfold import (
    MAX_NESTING_DEPTH,
    NO_STREAM,
    NewEvent,
    TypeRegistry,
    UndecodedPayload,
    keep_undecodable,
)
from eventfold._nesting import nesting_depth_exceeds
from eventfold.store.kit import Codec
from eventfold.testing.conformance import settle


class Paid(eventfold.Event):
    __event_type__ = "und.Paid"
    order_id: str
    amount: float


class Tree(eventfold.Event):
    __event_type__ = "und.Tree"
    root: dict[str, Any]


def nest(levels: int) -> dict[str, Any]:
    """A JSON object that nests exactly ``levels`` objects (itself included)."""
    top: dict[str, Any] = {}
    inner = top
    for _ in range(levels - 1):
        inner["a"] = {}
        inner = inner["a"]
    return top


def registry_with(*classes: type[eventfold.Event]) -> TypeRegistry:
    registry = TypeRegistry()
    for cls in classes:
        registry.register(cls)
    return registry


def row(data: bytes, typ: str = "und.Paid", version: int = 3, seq: int = 9) -> Any:
    return (uuid.uuid4().bytes, "order-1", version, typ, 1, data, b"{}", 0, 0, seq)


# -- reading what does not decode ----------------------------------------------------------


async def test_every_read_path_names_the_undecodable_event(store_url: str) -> None:
    registry = TypeRegistry()
    async with eventfold.connect(store_url, registry=registry) as store:
        # Written while the code had no class for the type, so nothing checked it.
        await store.append(
            "order-1",
            [NewEvent({"order_id": "1", "amount": 2.5}, type="und.Paid")],
            expected_version=NO_STREAM,
        )
        result = await store.append(
            "order-1",
            [NewEvent({"order_id": "1", "amount": "lots"}, type="und.Paid")],
            expected_version=1,
        )
        registry.register(Paid)
        with pytest.raises(eventfold.UndecodableEvent) as info:
            _ = [e async for e in store.read_stream("order-1")]
        error = info.value
        assert (error.stream_id, error.version, error.type) == ("order-1", 2, "und.Paid")
        assert (error.position, error.field) == (result.position, "amount")
        assert error.detail == "Expected `float`, got `str`"
        assert error.raw == b'{"order_id":"1","amount":"lots"}'
        assert "order-1@2" in str(error)
        assert "field `amount`" in str(error)
        assert isinstance(error, eventfold.DecodeError)

        await settle(store, result.position)
        with pytest.raises(eventfold.UndecodableEvent) as info:
            _ = [e async for e in store.read_all()]
        assert (info.value.version, info.value.position) == (2, result.position)

        decider: eventfold.Decider[int, Any, Paid] = eventfold.Decider(
            initial_state=0, evolve=lambda s, e: s + 1, decide=lambda c, s: []
        )
        with pytest.raises(eventfold.UndecodableEvent) as info:
            await eventfold.CommandHandler(store, decider).load("order-1")
        assert (info.value.stream_id, info.value.version, info.value.field) == (
            "order-1",
            2,
            "amount",
        )

        with keep_undecodable():
            events = [e async for e in store.read_stream("order-1")]
        assert isinstance(events[0].data, Paid)
        kept = events[1].data
        assert isinstance(kept, UndecodedPayload)
        assert kept.text == '{"order_id":"1","amount":"lots"}'
        assert kept.error.version == 2
        # Outside the block, reads fail loudly again.
        with pytest.raises(eventfold.UndecodableEvent):
            _ = [e async for e in store.read_stream("order-1")]


@pytest.mark.parametrize("registered", [True, False])
def test_a_payload_too_deep_to_decode_is_an_undecodable_event(registered: bool) -> None:
    codec = Codec(registry_with(Tree) if registered else TypeRegistry())
    # Deeper than any supported interpreter decodes (3.13 follows a few thousand levels).
    deep = b'{"root":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}"
    with pytest.raises(eventfold.UndecodableEvent, match="nested too deeply") as info:
        codec.decode_rows([row(deep, "und.Tree")])
    assert info.value.position == eventfold.Position(0, 9)
    with pytest.raises(eventfold.UndecodableEvent, match="nested too deeply"):
        codec.decode_loaded("order-1", [(3, "und.Tree", 1, deep, 0)])
    with keep_undecodable():
        [event] = codec.decode_rows([row(deep, "und.Tree")])
    assert isinstance(event.data, UndecodedPayload)
    assert event.data.raw == deep


def test_a_reader_deep_in_its_stack_gets_an_undecodable_event_not_a_recursion_error() -> None:
    codec = Codec(TypeRegistry())
    payload = msgspec.json.encode(nest(MAX_NESTING_DEPTH))

    def at_depth(frames: int) -> Any:
        if frames:
            return at_depth(frames - 1)
        return codec.decode_rows([row(payload, "und.Any")])

    limit = sys.getrecursionlimit()
    if sys.version_info < (3, 12):
        # msgspec's recursion shares Python's limit: little stack left, the payload fails.
        with pytest.raises(eventfold.UndecodableEvent):
            at_depth(limit - 60)
    else:
        # From 3.12 C code has a budget of its own: a deep caller does not shrink it.
        assert at_depth(limit - 60)[0].data == nest(MAX_NESTING_DEPTH)
    assert at_depth(10)[0].data == nest(MAX_NESTING_DEPTH)


def test_keep_undecodable_nests_and_decorates() -> None:
    """Each block restores what it found, as a `with` block or as a decorator."""
    from eventfold._undecodable import keeping_undecodable

    @keep_undecodable()
    def inside() -> bool:
        return keeping_undecodable()

    assert not keeping_undecodable()
    with keep_undecodable():
        with keep_undecodable():
            assert keeping_undecodable()
        assert keeping_undecodable()
    assert not keeping_undecodable()
    assert inside()
    assert inside()
    assert not keeping_undecodable()
    with pytest.raises(ValueError, match="left by an error"), keep_undecodable():
        raise ValueError("left by an error")
    assert not keeping_undecodable()


def test_a_payload_that_is_not_json_is_an_undecodable_event() -> None:
    with pytest.raises(eventfold.UndecodableEvent, match="order-1@3") as info:
        Codec(registry_with(Paid)).decode_rows([row(b'{"order_id":')])
    assert info.value.field is None


# -- the nesting limit on write ------------------------------------------------------------


async def test_the_nesting_limit_is_checked_on_write(store_url: str) -> None:
    async with eventfold.connect(store_url, registry=registry_with(Tree)) as store:
        for too_deep in (
            [NewEvent(nest(MAX_NESTING_DEPTH + 1), type="und.Deep")],
            [NewEvent(nest(3000), type="und.Deep")],
            [NewEvent({}, type="und.Deep", metadata={"x": nest(MAX_NESTING_DEPTH)})],
            [Tree(root=nest(MAX_NESTING_DEPTH))],  # the event's own object is one level
            [Tree(root=nest(3000))],
        ):
            with pytest.raises(eventfold.InvalidEvent, match=f"more than {MAX_NESTING_DEPTH} lev"):
                await store.append("deep-1", too_deep, expected_version=NO_STREAM)
        assert await store.stream_version("deep-1") == 0
        await store.append(
            "deep-1",
            [
                NewEvent(nest(MAX_NESTING_DEPTH), type="und.Deep"),
                Tree(root=nest(MAX_NESTING_DEPTH - 1)),
            ],
            expected_version=NO_STREAM,
        )
        first, second = [e async for e in store.read_stream("deep-1")]
        assert first.data == nest(MAX_NESTING_DEPTH)
        assert second.data == Tree(root=nest(MAX_NESTING_DEPTH - 1))


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


_TRICKY = st.sampled_from(['"', "\\", '\\"', "[{", "}]", "\n", "é", '""', '"[', "{}", "a"])
_JSON = st.recursive(
    st.none() | st.integers() | _TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY, inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.integers(1, 6))
def test_nesting_depth_matches_the_structure(value: Any, limit: int) -> None:
    data = msgspec.json.encode(value)
    assert nesting_depth_exceeds(data, limit) == (depth_of(value) > limit)


def test_nesting_depth_ignores_brackets_inside_strings() -> None:
    assert not nesting_depth_exceeds(msgspec.json.encode({"s": "[{" * 300 + '\\"'}), 3)
    assert nesting_depth_exceeds(msgspec.json.encode([[[[1]]]]), 3)
    assert not nesting_depth_exceeds(msgspec.json.encode([[[1]]] * 50), 3)


# -- floats JSON cannot hold -----------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
async def test_a_non_finite_float_is_refused_by_name(store_url: str, value: float) -> None:
    async with eventfold.connect(store_url, registry=registry_with(Paid)) as store:
        for event in (
            Paid(order_id="1", amount=value),
            NewEvent({"order_id": "1", "amount": value}, type="und.Paid"),
        ):
            with pytest.raises(eventfold.SchemaViolation) as info:
                await store.append("order-1", [event], expected_version=NO_STREAM)
            [violation] = info.value.violations
            assert violation.startswith(f"`amount`: {value} cannot be stored")
            assert "null" not in violation.partition("(")[0]
        assert await store.stream_version("order-1") == 0
