"""Upcasting: each step alone, the chains, the codec's read path, every backend, real old data.

The old data is ``tests/fixtures/orders-v1.sqlite``, written by the early versions of a shop
(``tests/fixtures/make_orders_v1.py``) and read here by today's shop
(``tests/fixtures/shop_today.py``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventfold
from eventfold import NO_STREAM, NewEvent, TypeRegistry
from eventfold.store.connect import detect_producer_version
from eventfold.store.kit import Codec, Row
from eventfold.testing import settle
from eventfold.write import Snapshot

FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

import shop_today  # noqa: E402
from shop_today import LineItemAdded, OrderPlaced, OrderShipped  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "schema_bench.py"


def rows_of(codec: Codec, stream_id: str, events: list[Any]) -> list[Row]:
    """Encode ``events`` and lay them out as a backend would return them."""
    return [
        (e.event_id, stream_id, i + 1, e.type, e.schema_version, e.data, e.metadata, 0, 0, i + 1)
        for i, e in enumerate(codec.encode(stream_id, events))
    ]


def v1(order_id: str = "o-1", customer: str = "ann", total: float = 19.99) -> NewEvent:
    return NewEvent(
        {"order_id": order_id, "customer": customer, "total": total},
        type="shop.OrderPlaced",
        schema_version=1,
    )


def v2(order_id: str = "o-1", customer: str = "ann", total_cents: int = 1999) -> NewEvent:
    return NewEvent(
        {"order_id": order_id, "customer": customer, "total_cents": total_cents},
        type="shop.OrderPlaced",
        schema_version=2,
    )


# -- each step alone -----------------------------------------------------------------------


def test_v1_to_v2_turns_the_float_total_into_cents() -> None:
    old = {"order_id": "o-1", "customer": "ann", "total": 19.99}
    assert shop_today.order_placed_v1_to_v2(old) == {
        "order_id": "o-1",
        "customer": "ann",
        "total_cents": 1999,
    }
    assert old == {"order_id": "o-1", "customer": "ann", "total": 19.99}  # pure


def test_v2_to_v3_renames_customer_and_adds_the_currency() -> None:
    old = {"order_id": "o-1", "customer": "ann", "total_cents": 1999}
    assert shop_today.order_placed_v2_to_v3(old) == {
        "order_id": "o-1",
        "customer_id": "ann",
        "total_cents": 1999,
        "currency": "EUR",
    }
    assert "customer" in old


# -- chains ------------------------------------------------------------------------------


def test_a_chain_lifts_every_old_version_to_the_current_one() -> None:
    current = eventfold.default_registry.current_version
    upcasters = eventfold.default_registry.upcasters
    name, version, data = upcasters.upcast(
        "shop.OrderPlaced", 1, {"order_id": "o", "customer": "c", "total": 1.5}, current
    )
    assert (name, version) == ("shop.OrderPlaced", 3)
    assert data == {"order_id": "o", "customer_id": "c", "total_cents": 150, "currency": "EUR"}
    steps, name, version = upcasters.plan("shop.ItemAdded", 1, current)
    assert (name, version) == ("shop.LineItemAdded", 1)
    assert [s.name for s in steps] == ["rename to 'shop.LineItemAdded'"]
    assert upcasters.old_names("shop.LineItemAdded") == ["shop.ItemAdded"]


class Moved(eventfold.Event):
    __event_type__ = "upc.Moved"
    __schema_version__ = 3
    where: str


def test_a_missing_step_is_named() -> None:
    registry = TypeRegistry()
    registry.register(Moved)

    @registry.upcaster(Moved, from_version=1)
    def first(data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(eventfold.MissingUpcaster) as info:
        registry.upcasters.plan("upc.Moved", 1, registry.current_version)
    assert info.value.step == ("upc.Moved", 2)
    assert "no upcaster from 'upc.Moved' version 2" in str(info.value)
    assert "@registry.upcaster('upc.Moved', from_version=2)" in str(info.value)
    with pytest.raises(eventfold.MissingUpcaster, match="newer than this code's version 3"):
        registry.upcasters.plan("upc.Moved", 4, registry.current_version)


def test_one_step_per_version_and_one_target_per_rename() -> None:
    registry = TypeRegistry()

    @registry.upcaster("upc.T", from_version=1)
    def one(data: dict[str, Any]) -> dict[str, Any]:
        return data

    registry.upcaster("upc.T", from_version=1)(one)  # the same function again is fine
    with pytest.raises(eventfold.EventTypeError, match="already has an upcaster"):

        @registry.upcaster("upc.T", from_version=1)
        def other(data: dict[str, Any]) -> dict[str, Any]:
            return data

    registry.rename("upc.Old", to="upc.New")
    with pytest.raises(eventfold.EventTypeError, match="already renamed"):
        registry.rename("upc.Old", to="upc.Other")
    with pytest.raises(eventfold.InvalidInput, match="higher version"):
        registry.upcaster("upc.T", from_version=2, to_version=2)(one)
    with pytest.raises(eventfold.InvalidInput, match="from_version"):
        registry.upcaster("upc.T", from_version=0)(one)


def test_a_step_may_change_the_type_name() -> None:
    registry = TypeRegistry()
    registry.register(Moved)

    @registry.upcaster("upc.Relocated", from_version=1, to_type=Moved, to_version=3)
    def relocated(data: dict[str, Any]) -> dict[str, Any]:
        return {"where": data["to"]}

    codec = Codec(registry)
    row = (uuid.uuid4().bytes, "s", 1, "upc.Relocated", 1, b'{"to":"x"}', b"{}", 0, 0, 1)
    [event] = codec.decode_rows([row])
    assert event.data == Moved(where="x")
    assert (event.type, event.schema_version) == ("upc.Moved", 3)
    assert (event.stored_type, event.stored_schema_version) == ("upc.Relocated", 1)
    assert registry.upcasters.old_names("upc.Moved") == ["upc.Relocated"]
    assert codec.stored_type_names(["upc.Moved"]) == ["upc.Moved", "upc.Relocated"]


def test_a_loop_of_upcasters_is_an_error() -> None:
    registry = TypeRegistry()
    registry.rename("upc.A", to="upc.B")
    registry.rename("upc.B", to="upc.A")
    with pytest.raises(eventfold.EventTypeError, match="loop"):
        registry.upcasters.plan("upc.A", 1, registry.current_version)


# -- the codec's read path ---------------------------------------------------------------


def test_old_rows_are_upcast_and_current_ones_are_not() -> None:
    codec = Codec()
    current = OrderPlaced(order_id="o-2", customer_id="bob", total_cents=5, currency="USD")
    rows = rows_of(codec, "order-1", [v1(), v2(), current])
    assert [r[4] for r in rows] == [1, 2, 3]  # stored as written
    for _ in range(2):  # the second time from the caches
        first, second, third = codec.decode_rows(rows)
        expected = OrderPlaced(order_id="o-1", customer_id="ann", total_cents=1999, currency="EUR")
        assert first.data == expected
        assert second.data == expected
        assert third.data == current
        assert [e.schema_version for e in (first, second, third)] == [3, 3, 3]
        assert [e.stored_schema_version for e in (first, second, third)] == [1, 2, 3]
        assert first.upcast_from == ("shop.OrderPlaced", 1)
        assert third.upcast_from is None
        assert third.stored_type == "shop.OrderPlaced"


def test_missing_required_field_names_type_version_and_field() -> None:
    codec = Codec()
    data = b'{"order_id":"o"}'
    row = (uuid.uuid4().bytes, "s-1", 7, "shop.OrderShipped", 1, data, b"{}", 0, 0, 7)
    with pytest.raises(eventfold.DecodeError) as info:
        codec.decode_rows([row])
    message = str(info.value)
    assert "s-1@7" in message
    assert "'shop.OrderShipped' (schema version 1)" in message
    assert "`carrier`" in message


def test_a_payload_wrong_after_upcasting_names_the_field() -> None:
    codec = Codec()
    row = (
        uuid.uuid4().bytes,
        "s-1",
        2,
        "shop.OrderPlaced",
        2,
        b'{"order_id":"o","customer":"c","total_cents":"lots"}',
        b"{}",
        0,
        0,
        2,
    )
    with pytest.raises(
        eventfold.DecodeError,
        match=r"once upcast to 'shop.OrderPlaced' version 3"
        r".*total_cents",
    ):
        codec.decode_rows([row])


def test_a_failing_upcaster_is_named() -> None:
    codec = Codec()
    row = (uuid.uuid4().bytes, "s-1", 1, "shop.OrderPlaced", 1, b'{"order_id":"o"}', b"{}", 0, 0, 1)
    with pytest.raises(eventfold.UpcastFailed) as info:
        codec.decode_rows([row])
    assert info.value.step == ("shop.OrderPlaced", 1)
    assert "order_placed_v1_to_v2" in str(info.value)
    assert "KeyError" in str(info.value)


def test_an_upcaster_returning_no_dict_is_named() -> None:
    registry = TypeRegistry()
    registry.register(Moved)

    @registry.upcaster(Moved, from_version=2)
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        return [data]  # type: ignore[return-value]

    row = (uuid.uuid4().bytes, "s-1", 1, "upc.Moved", 2, b'{"where":"x"}', b"{}", 0, 0, 1)
    with pytest.raises(eventfold.UpcastFailed, match="returned a list"):
        Codec(registry).decode_rows([row])


def test_an_old_event_without_a_path_fails_naming_the_step() -> None:
    row = (uuid.uuid4().bytes, "s-9", 3, "upc.Moved", 1, b'{"where":"x"}', b"{}", 0, 0, 1)
    registry = TypeRegistry()
    registry.register(Moved)
    with pytest.raises(eventfold.MissingUpcaster, match=r"at s-9@3.*'upc.Moved' version 1"):
        Codec(registry).decode_rows([row])


def test_upcasters_registered_after_a_read_apply_to_the_next() -> None:
    registry = TypeRegistry()
    registry.register(Moved)
    codec = Codec(registry)
    row = (uuid.uuid4().bytes, "s", 1, "upc.Moved", 2, b'{"to":"x"}', b"{}", 0, 0, 1)
    with pytest.raises(eventfold.MissingUpcaster):
        codec.decode_rows([row])

    @registry.upcaster(Moved, from_version=2)
    def to_where(data: dict[str, Any]) -> dict[str, Any]:
        return {"where": data["to"]}

    assert codec.decode_rows([row])[0].data == Moved(where="x")


def test_types_without_a_class_read_as_dicts_at_their_stored_version() -> None:
    codec = Codec(TypeRegistry())
    row = (uuid.uuid4().bytes, "s", 1, "upc.Unknown", 4, b'{"a":1}', b"{}", 0, 0, 1)
    [event] = codec.decode_rows([row, row][:1])
    assert (event.data, event.schema_version, event.upcast_from) == ({"a": 1}, 4, None)


# -- writing old versions ----------------------------------------------------------------


def test_an_old_version_is_stored_as_given_once_it_lifts_cleanly() -> None:
    codec = Codec()
    [enc] = codec.encode("s", [v1(total=2.5)])
    assert (enc.type, enc.schema_version) == ("shop.OrderPlaced", 1)
    assert msgspec.json.decode(enc.data) == {"order_id": "o-1", "customer": "ann", "total": 2.5}
    with pytest.raises(eventfold.SchemaViolation, match="order_placed_v1_to_v2"):
        codec.encode("s", [NewEvent({"order_id": "o"}, type="shop.OrderPlaced", schema_version=1)])
    bad = NewEvent(
        {"order_id": "o", "customer": 5, "total": 1.0}, type="shop.OrderPlaced", schema_version=1
    )
    with pytest.raises(
        eventfold.SchemaViolation,
        match=r"once upcast to shop.OrderPlaced v3.*"
        r"`customer_id`",
    ):
        codec.encode("s", [bad])
    with pytest.raises(eventfold.SchemaViolation, match="newer than this code"):
        codec.encode("s", [NewEvent({}, type="shop.OrderPlaced", schema_version=9)])


def test_an_old_name_needs_its_version() -> None:
    codec = Codec()
    with pytest.raises(eventfold.InvalidEvent, match=r"renamed to 'shop\.LineItemAdded'"):
        codec.encode("s", [NewEvent({"order_id": "o", "sku": "x"}, type="shop.ItemAdded")])
    [enc] = codec.encode(
        "s", [NewEvent({"order_id": "o", "sku": "x"}, type="shop.ItemAdded", schema_version=1)]
    )
    assert enc.type == "shop.ItemAdded"


def test_a_schema_version_must_fit_the_payload() -> None:
    codec = Codec()
    shipped = OrderShipped(order_id="o", carrier="x")
    with pytest.raises(eventfold.InvalidEvent, match="in schema version 1, not 2"):
        codec.encode("s", [NewEvent(shipped, schema_version=2)])
    with pytest.raises(eventfold.InvalidEvent, match="schema_version must be None or an int"):
        codec.encode("s", [NewEvent({"a": 1}, type="upc.X", schema_version=0)])
    [enc] = codec.encode("s", [NewEvent(shipped, schema_version=1)])
    assert enc.schema_version == 1


def test_validation_of_event_instances_can_be_turned_off_for_trusted_bulk_imports() -> None:
    bad = OrderShipped(order_id="o", carrier=5)  # type: ignore[arg-type]
    codec = Codec()
    with pytest.raises(eventfold.SchemaViolation, match="`carrier`"):
        codec.encode("s", [bad])
    codec.validate = False
    [enc] = codec.encode("s", [bad])
    assert enc.data == b'{"order_id":"o","carrier":5,"tracking":null}'
    codec.validate = True
    with pytest.raises(eventfold.SchemaViolation):
        codec.encode("s", [bad])


# -- every backend -----------------------------------------------------------------------


async def test_every_backend_reads_old_versions_in_the_current_shape(store_url: str) -> None:
    async with eventfold.connect(store_url) as store:
        await store.append(
            "order-1",
            [
                v1(),
                NewEvent(
                    {"order_id": "o-1", "sku": "A", "quantity": 2},
                    type="shop.ItemAdded",
                    schema_version=1,
                ),
                v2(total_cents=2000),
                OrderShipped(order_id="o-1", carrier="dhl"),
            ],
            expected_version=NO_STREAM,
        )
        events = [e async for e in store.read_stream("order-1")]
        await settle(store, events[-1].position)
        logged = [e async for e in store.read_all()]
        assert [e.data for e in logged] == [e.data for e in events]
        assert [e.data for e in events] == [
            OrderPlaced(order_id="o-1", customer_id="ann", total_cents=1999, currency="EUR"),
            LineItemAdded(order_id="o-1", sku="A", quantity=2),
            OrderPlaced(order_id="o-1", customer_id="ann", total_cents=2000, currency="EUR"),
            OrderShipped(order_id="o-1", carrier="dhl"),
        ]
        assert [e.type for e in events] == [
            "shop.OrderPlaced",
            "shop.LineItemAdded",
            "shop.OrderPlaced",
            "shop.OrderShipped",
        ]
        assert [e.stored_type for e in events][1] == "shop.ItemAdded"
        assert [e.stored_schema_version for e in events] == [1, 1, 2, 1]
        assert [e.schema_version for e in events] == [3, 1, 3, 1]
        found = await store.find_events("order-1", [events[0].event_id])
        assert found[0].data == events[0].data


async def test_every_backend_rejects_a_payload_of_the_wrong_type(store_url: str) -> None:
    async with eventfold.connect(store_url) as store:
        await store.append(
            "order-1", [OrderShipped(order_id="o", carrier="x")], expected_version=NO_STREAM
        )
        bad = OrderPlaced(order_id="o", customer_id=7, total_cents="x", currency="EUR")  # type: ignore[arg-type]
        with pytest.raises(eventfold.SchemaViolation) as info:
            await store.append(
                "order-1", [OrderShipped(order_id="o", carrier="y"), bad], expected_version=1
            )
        assert info.value.index == 1
        assert info.value.event_type == "shop.OrderPlaced"
        assert len(info.value.violations) == 2
        assert "`customer_id`: Expected `str`, got `int`" in str(info.value)
        assert "`total_cents`: Expected `int`, got `str`" in str(info.value)
        with pytest.raises(eventfold.EncodingError, match="`quantity`"):  # the parent class
            await store.append(
                "order-1",
                [
                    NewEvent(
                        {"order_id": "o", "sku": "s", "quantity": "2"}, type="shop.LineItemAdded"
                    )
                ],
                expected_version=1,
            )
        with pytest.raises(eventfold.SchemaViolation, match="`sku`: missing required field"):
            await store.append(
                "order-1",
                [NewEvent({"order_id": "o"}, type="shop.LineItemAdded")],
                expected_version=1,
            )
        assert await store.stream_version("order-1") == 1
        (stored,) = [e async for e in store.read_stream("order-1")]
        await settle(store, stored.position)
        assert len([e async for e in store.read_all()]) == 1


async def test_the_producer_version_is_in_every_events_metadata(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTFOLD_PRODUCER_VERSION", "shop 3.1.0")
    async with eventfold.connect(store_url) as store:
        await store.append(
            "order-1",
            [
                OrderShipped(order_id="o", carrier="x"),
                NewEvent(OrderShipped(order_id="o", carrier="y"), metadata={"actor": "ann"}),
            ],
            expected_version=NO_STREAM,
        )
        first, second = [e async for e in store.read_stream("order-1")]
        assert first.metadata == {"producer_version": "shop 3.1.0"}
        assert second.metadata == {"producer_version": "shop 3.1.0", "actor": "ann"}
        assert second.producer_version == "shop 3.1.0"
    async with eventfold.connect(store_url, producer_version="") as store:
        await store.append(
            "order-2", [OrderShipped(order_id="o", carrier="x")], expected_version=NO_STREAM
        )
        [event] = [e async for e in store.read_stream("order-2")]
        assert event.producer_version is None


def test_the_producer_version_is_found_from_the_calling_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVENTFOLD_PRODUCER_VERSION", raising=False)
    found = detect_producer_version("click.core")
    assert found is not None
    assert found.startswith("click ")
    assert detect_producer_version("eventfold.cli.store_commands") is None  # the CLI is no producer
    assert detect_producer_version("test_upcasting") is None  # no distribution
    assert detect_producer_version(None) is None
    monkeypatch.setenv("EVENTFOLD_PRODUCER_VERSION", "")
    assert detect_producer_version("click.core") is None
    assert eventfold.connect("memory://").codec.producer_version is None  # type: ignore[attr-defined]


# -- real old data, end to end -------------------------------------------------------------


@pytest.fixture
def old_store(tmp_path: Path) -> str:
    """A copy of the early shop's store (opening migrates it, so never the original)."""
    path = tmp_path / "orders-v1.sqlite"
    shutil.copyfile(FIXTURES / "orders-v1.sqlite", path)
    return f"sqlite:///{path}"


async def test_the_early_shops_store_reads_in_todays_shape(old_store: str) -> None:
    async with eventfold.connect(old_store) as store:
        order_1 = [e async for e in store.read_stream("order-1")]
        assert [e.data for e in order_1] == [
            OrderPlaced(order_id="order-1", customer_id="ann", total_cents=1999, currency="EUR"),
            LineItemAdded(order_id="order-1", sku="SKU-0", quantity=1),
            OrderShipped(order_id="order-1", carrier="dhl"),
        ]
        assert [e.producer_version for e in order_1] == ["shop 1.0.0"] * 3
        placed = [e async for e in store.read_all(types=["shop.OrderPlaced"])]
        assert [(e.data.customer_id, e.data.total_cents) for e in placed] == [
            ("ann", 1999),
            ("bob", 550),
            ("cy", 12000),
            ("dee", 4250),
        ]
        assert [e.stored_schema_version for e in placed] == [1, 1, 1, 2]
        assert {e.schema_version for e in placed} == {3}
        assert placed[-1].producer_version == "shop 2.0.0"
        everything = [e async for e in store.read_all() if not e.stream_id.startswith("$")]
        assert len(everything) == 12
        assert all(
            isinstance(e.data, (OrderPlaced, LineItemAdded, OrderShipped)) for e in everything
        )
        shipped = [e.data for e in everything if isinstance(e.data, OrderShipped)]
        assert {s.tracking for s in shipped} == {None}  # added optional field: no code needed
        stored = await eventfold.schema.load(store)
        assert stored.types() == ["shop.ItemAdded", "shop.OrderPlaced", "shop.OrderShipped"]
        assert sorted(stored.versions("shop.OrderPlaced")) == [1, 2]


# -- snapshots -----------------------------------------------------------------------------


def test_a_snapshot_state_is_lifted_through_its_chain() -> None:
    registry = TypeRegistry()

    @registry.state_upcaster("upc.Account", from_version=1)
    def add_overdraft(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "overdraft": 0}

    @registry.state_upcaster("upc.Account", from_version=2)
    def cents(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "balance": state["balance"] * 100}

    assert eventfold.schema.upcast_state(
        "upc.Account", 1, {"balance": 3}, to_version=3, registry=registry
    ) == {"balance": 300, "overdraft": 0}
    snapshot = Snapshot("acc-1", "upc.Account", 5, 1, b'{"balance":3}', b"0" * 16, 1, 2)
    lifted = eventfold.schema.upcast_snapshot(snapshot, to_version=3, registry=registry)
    assert lifted.schema_version == 3
    assert msgspec.json.decode(lifted.data) == {"balance": 300, "overdraft": 0}
    assert (lifted.stream_id, lifted.version) == ("acc-1", 5)
    assert eventfold.schema.can_upcast_state("upc.Account", 1, 3, registry)
    assert not eventfold.schema.can_upcast_state("upc.Account", 1, 4, registry)
    with pytest.raises(eventfold.MissingUpcaster, match=r"'upc\.Account' version 3"):
        eventfold.schema.upcast_snapshot(snapshot, to_version=4, registry=registry)


# -- properties ----------------------------------------------------------------------------

names = st.text(min_size=1, max_size=12)
totals = st.integers(min_value=0, max_value=10**9).map(lambda cents: cents / 100)


@st.composite
def old_orders(draw: st.DrawFn) -> tuple[int, dict[str, Any], OrderPlaced]:
    """A valid payload of a random version, and the current event it must read back as."""
    version = draw(st.sampled_from([1, 2, 3]))
    order_id, customer = draw(names), draw(names)
    cents = draw(st.integers(min_value=0, max_value=10**9))
    currency = "EUR" if version < 3 else draw(st.sampled_from(["EUR", "USD", "JPY"]))
    expected = OrderPlaced(
        order_id=order_id, customer_id=customer, total_cents=cents, currency=currency
    )
    if version == 1:
        return 1, {"order_id": order_id, "customer": customer, "total": cents / 100}, expected
    if version == 2:
        return 2, {"order_id": order_id, "customer": customer, "total_cents": cents}, expected
    return 3, msgspec.structs.asdict(expected), expected


@settings(max_examples=200, deadline=None)
@given(st.lists(old_orders(), min_size=1, max_size=5))
def test_valid_payloads_of_any_version_upcast_validate_and_round_trip(
    cases: list[tuple[int, dict[str, Any], OrderPlaced]],
) -> None:
    codec = Codec()
    written = [
        NewEvent(payload, type="shop.OrderPlaced", schema_version=v) for v, payload, _ in cases
    ]
    rows = rows_of(codec, "order-1", written)
    assert [r[4] for r in rows] == [v for v, _, _ in cases]
    events = codec.decode_rows(rows)
    assert [e.data for e in events] == [expected for _, _, expected in cases]
    again = codec.decode_rows(rows_of(codec, "order-1", [e.data for e in events]))
    assert [e.data for e in again] == [e.data for e in events]
    assert {e.schema_version for e in again} == {3}


# -- the benchmark runs ----------------------------------------------------------------------


def test_the_schema_benchmark_prints_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--scale", "0.002", "--runs", "1", "--no-fail"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["benchmark"] for line in lines] == ["bulk_append_validation", "read_all_upcast"]
    assert lines[0]["rate"] > 0
    assert lines[0]["rate_without_validation"] > 0
    assert lines[1]["upcast_events"] == lines[1]["events"] // 2
    assert {"ratio", "target_ratio", "meets_target"} <= lines[1].keys()
