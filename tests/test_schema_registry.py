"""The schema registry in the store, compatibility checks, and validation against stored schemas."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import enum
import types
import uuid
from typing import Annotated, Any, Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventfold
from eventfold import NO_STREAM, NewEvent, TypeRegistry, schema
from eventfold.schema import SchemaRecord, StoredSchemas, diff_schemas, validator_for

_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def event_class(name: str, version: int = 1, **fields: Any) -> type[eventfold.Event]:
    """An event class for the stable name ``name`` with ``fields`` (a type, or a pair of
    type and default).

    Called again with the same name it stands for a later edit of the same code: the same
    module and qualified name, as when a module is reloaded, so the registry takes it.
    """
    annotations = {k: v[0] if isinstance(v, tuple) else v for k, v in fields.items()}
    defaults = {k: v[1] for k, v in fields.items() if isinstance(v, tuple)}

    def body(ns: dict[str, Any]) -> None:
        ns.update(defaults)
        ns["__annotations__"] = annotations
        ns["__event_type__"] = name
        ns["__schema_version__"] = version
        ns["__module__"] = __name__
        ns["__qualname__"] = name.replace(".", "_")

    cls: type[eventfold.Event] = types.new_class(
        name.replace(".", "_"), (eventfold.Event,), {}, body
    )
    return cls


def record(cls: type[eventfold.Event], revision: int = 1) -> SchemaRecord:
    s = schema.schema_of(cls)
    return SchemaRecord(
        type=cls.__event_type__,
        version=cls.__schema_version__,
        schema=s,
        fingerprint=schema.fingerprint(s),
        revision=revision,
        recorded_at=_EPOCH,
    )


def stored(*records: SchemaRecord) -> StoredSchemas:
    by_type: dict[str, list[SchemaRecord]] = {}
    for r in records:
        by_type.setdefault(r.type, []).append(r)
    return StoredSchemas(by_type)


# -- publishing, every backend -------------------------------------------------------------


async def test_publish_records_each_schema_once_with_its_history(store_url: str) -> None:
    first = event_class("reg.Order", order_id=str, total=int)
    async with eventfold.connect(store_url, producer_version="shop 1.0") as store:
        [made] = await schema.publish(store, [first])
        assert (made.type, made.version, made.revision) == ("reg.Order", 1, 1)
        assert made.schema == msgspec.json.schema(first)
        assert made.producer_version == "shop 1.0"
        assert await schema.publish(store, [first]) == []  # idempotent
        [event] = [e async for e in store.read_stream("$schema-reg.Order")]
        assert event.type == "$SchemaRegistered"
        assert event.data.type == "reg.Order"
        assert event.data.fingerprint == schema.fingerprint(made.schema)

        # An added optional field keeps the version: a second record of version 1.
        second = event_class("reg.Order", order_id=str, total=int, note=(str | None, None))
        [made] = await schema.publish(store, [second])
        assert (made.version, made.revision) == (1, 2)

        # A breaking change at the same version is refused, and nothing is recorded.
        third = event_class("reg.Order", order_id=str, note=(str | None, None))
        with pytest.raises(eventfold.IncompatibleSchema, match="breaking change at the same"):
            await schema.publish(store, [third])
        assert len(await schema.history(store, "reg.Order")) == 2

        # A new version needs an upcaster from every stored version.
        fourth = event_class("reg.Order", 2, order_id=str, note=(str | None, None))
        upcasters = TypeRegistry()  # holds only upcasters: the classes checked are the code
        with pytest.raises(eventfold.IncompatibleSchema, match=r"no upcaster from reg\.Order v1"):
            await schema.publish(store, [fourth], registry=upcasters)

        @upcasters.upcaster("reg.Order", from_version=1)
        def drop_total(data: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in data.items() if k != "total"}

        [made] = await schema.publish(store, [fourth], registry=upcasters)
        assert (made.version, made.revision) == (2, 3)
        registry = await schema.load(store)
        assert registry.types() == ["reg.Order"]
        assert list(registry.versions("reg.Order")) == [1, 2]
        assert registry.versions("reg.Order")[1].schema == msgspec.json.schema(second)
        latest = registry.latest("reg.Order")
        assert latest is not None
        assert latest.version == 2
        assert [r.revision for r in registry.history("reg.Order")] == [1, 2, 3]
        streams = [s.stream_id async for s in store.streams(category="$schema")]
        assert streams == ["$schema-reg.Order"]


async def test_concurrent_publishers_record_a_schema_once(store_url: str) -> None:
    cls = event_class("reg.Raced", n=int)
    async with eventfold.connect(store_url) as store:
        await asyncio.gather(*(schema.publish(store, [cls]) for _ in range(4)))
        assert len(await schema.history(store, "reg.Raced")) == 1


async def test_publish_takes_a_registry_and_skips_system_types(store_url: str) -> None:
    registry = TypeRegistry()
    registry.register(event_class("reg.A", a=int))
    registry.register(event_class("reg.B", b=str))
    registry.register(schema.SchemaRegistered)
    async with eventfold.connect(store_url) as store:
        made = await schema.publish(store, registry)
        assert sorted(r.type for r in made) == ["reg.A", "reg.B"]
        with pytest.raises(TypeError, match="Event subclasses"):
            await schema.publish(store, [int])  # type: ignore[list-item]


async def test_raw_json_of_a_type_without_a_class_is_checked_against_the_registry(
    store_url: str,
) -> None:
    parcel = event_class(
        "reg.Parcel",
        parcel_id=str,
        weight_g=Annotated[int, msgspec.Meta(ge=0)],
        tags=(list[str], []),
    )
    # A producer without the Python class: its store's type registry does not know it.
    async with eventfold.connect(store_url, registry=TypeRegistry()) as store:
        await store.append(
            "parcel-0", [NewEvent({"anything": 1}, type="reg.Parcel")], expected_version=NO_STREAM
        )  # no schema loaded yet: not checked
        await schema.publish(store, [parcel])
        await schema.load(store)
        with pytest.raises(eventfold.SchemaViolation) as info:
            await store.append(
                "parcel-1",
                [NewEvent({"parcel_id": 5, "weight_g": -1, "tags": ["a", 2]}, type="reg.Parcel")],
                expected_version=NO_STREAM,
            )
        assert info.value.violations == [
            "`parcel_id`: Expected `str`, got `int`",
            "`weight_g`: Expected `int` >= 0",
            "`tags`: Expected `str`, got `int` - at `$.tags[1]`",
        ]
        with pytest.raises(eventfold.SchemaViolation, match="`parcel_id`: missing required"):
            await store.append(
                "parcel-1",
                [NewEvent({"weight_g": 1}, type="reg.Parcel")],
                expected_version=NO_STREAM,
            )
        with pytest.raises(eventfold.SchemaViolation, match=r"no version 7 of 'reg\.Parcel'"):
            await store.append(
                "parcel-1",
                [NewEvent({"parcel_id": "p", "weight_g": 1}, type="reg.Parcel", schema_version=7)],
                expected_version=NO_STREAM,
            )
        assert await store.stream_version("parcel-1") == 0
        await store.append(
            "parcel-1",
            [NewEvent({"parcel_id": "p", "weight_g": 1}, type="reg.Parcel")],
            expected_version=NO_STREAM,
        )
        [event] = [e async for e in store.read_stream("parcel-1")]
        assert (event.data, event.schema_version) == ({"parcel_id": "p", "weight_g": 1}, 1)


# -- diffing schemas -------------------------------------------------------------------------


class Money(msgspec.Struct):
    cents: int
    currency: str = "EUR"


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, bool]]:
    a = event_class("reg.Diff", **old)
    b = event_class("reg.Diff", **new)
    return [
        (c.field, c.kind, c.breaking)
        for c in diff_schemas("reg.Diff", record(a).schema, record(b).schema)
    ]


def test_an_added_optional_field_is_compatible() -> None:
    assert diff({"a": int}, {"a": int, "b": (str, "x")}) == [("b", "added optional field", False)]


def test_breaking_changes_are_named() -> None:
    assert diff({"a": int, "b": str}, {"a": int}) == [("b", "removed field", True)]
    assert diff({"a": int, "b": str}, {"a": int, "c": str}) == [("b", "renamed field", True)]
    assert diff({"a": int}, {"a": str}) == [("a", "changed type", True)]
    assert diff({"a": int}, {"a": int, "b": str}) == [("b", "added required field", True)]
    assert diff({"a": (int, 0)}, {"a": int}) == [("a", "now required", True)]


def test_widening_and_loosening_are_compatible() -> None:
    assert diff({"a": int}, {"a": int | None}) == [("a", "widened type", False)]
    assert diff({"a": int}, {"a": float}) == [("a", "widened type", False)]
    assert diff({"a": Literal["x"]}, {"a": Literal["x", "y"]}) == [("a", "widened type", False)]
    assert diff({"a": int}, {"a": (int, 0)}) == [("a", "now optional", False)]
    assert diff({"a": (int, 0)}, {"a": (int, 1)}) == [("a", "changed default", False)]


def test_nested_structs_are_compared_field_by_field() -> None:
    class Money2(msgspec.Struct):
        cents: int
        currency: str = "EUR"
        rounded: bool = False

    class Money3(msgspec.Struct):
        amount: int
        currency: str = "EUR"

    assert diff({"m": Money}, {"m": Money2}) == [("m.rounded", "added optional field", False)]
    assert diff({"m": Money}, {"m": Money3}) == [("m.cents", "renamed field", True)]
    assert diff({"m": Money}, {"m": list[Money]}) == [("m", "changed type", True)]


# -- checking code against a registry ------------------------------------------------------


def test_check_reports_new_unchanged_and_removed_types() -> None:
    kept = event_class("reg.Kept", a=int)
    fresh = event_class("reg.Fresh", a=int)
    gone = record(event_class("reg.Gone", a=int))
    report = schema.check([kept, fresh], stored(record(kept), gone), TypeRegistry())
    assert report.ok
    by_type = {t.type: t for t in report.types}
    assert by_type["reg.Kept"].changes == []
    assert [c.kind for c in by_type["reg.Fresh"].changes] == ["new type"]
    assert [c.kind for c in by_type["reg.Gone"].changes] == ["removed type"]


def test_check_fails_a_version_without_a_path_and_passes_with_one() -> None:
    old = record(event_class("reg.Path", a=int, b=str))
    new = event_class("reg.Path", 2, a=int)
    registry = TypeRegistry()
    registry.register(new)
    report = schema.check([new], stored(old), registry)
    assert not report.ok
    assert report.problems == [
        "reg.Path: stored version 1 cannot be read as reg.Path v2: no upcaster from reg.Path v1;"
        " register @registry.upcaster('reg.Path', from_version=1)"
    ]
    assert [(c.field, c.kind) for c in report.changes] == [
        ("", "new version"),
        ("b", "removed field"),
    ]
    registry.upcaster("reg.Path", from_version=1)(lambda d: {"a": d["a"]})
    assert schema.check([new], stored(old), registry).ok


def test_check_fails_code_older_than_the_store() -> None:
    newer = record(event_class("reg.Ahead", 2, a=int))
    older = event_class("reg.Ahead", 1, a=int)
    registry = TypeRegistry()
    registry.register(older)
    report = schema.check([older], stored(newer), registry)
    assert not report.ok
    assert "newer than the code's 1" in report.problems[0]


def test_check_follows_renames() -> None:
    old = record(event_class("reg.Before", a=int))
    after = event_class("reg.After", a=int)
    registry = TypeRegistry()
    registry.register(after)
    registry.rename("reg.Before", to=after)
    report = schema.check([after], stored(old), registry)
    assert report.ok
    assert [t.type for t in report.types] == ["reg.After"]
    assert [(c.kind, c.detail) for c in report.types[0].changes] == [
        ("renamed type", "reg.Before -> reg.After")
    ]
    assert report.types[0].stored_version == 1


# -- validating against a stored schema ---------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Line(msgspec.Struct, forbid_unknown_fields=True):
    sku: str
    quantity: Annotated[int, msgspec.Meta(ge=1)] = 1


class Rich(eventfold.Event, rename="camel"):
    __event_type__ = "reg.Rich"
    order_id: uuid.UUID
    placed_at: dt.datetime
    day: dt.date
    price: decimal.Decimal
    blob: bytes
    colour: Colour
    kind: Literal["web", "shop"]
    pair: tuple[int, str]
    lines: list[Line]
    tags: dict[str, int]
    note: str | None = None
    code: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] = "EUR"


RICH_VALIDATOR = validator_for(schema.schema_of(Rich))

lines = st.lists(st.builds(Line, sku=st.text(max_size=5), quantity=st.integers(1, 10)), max_size=3)
rich = st.builds(
    Rich,
    order_id=st.uuids(),
    placed_at=st.datetimes(timezones=st.just(dt.UTC)),
    day=st.dates(),
    price=st.decimals(allow_nan=False, allow_infinity=False, places=2),
    blob=st.binary(max_size=8),
    colour=st.sampled_from(Colour),
    kind=st.sampled_from(["web", "shop"]),
    pair=st.tuples(st.integers(), st.text(max_size=4)),
    lines=lines,
    tags=st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    note=st.none() | st.text(max_size=8),
    code=st.from_regex("^[A-Z]{3}$", fullmatch=True),
)


@settings(max_examples=100, deadline=None)
@given(rich)
def test_every_valid_payload_passes_its_stored_schema(event: Rich) -> None:
    payload = msgspec.json.decode(msgspec.json.encode(event))
    assert RICH_VALIDATOR(payload) == []
    assert msgspec.convert(payload, Rich) == event


@settings(max_examples=50, deadline=None)
@given(rich, st.sampled_from(["orderId", "colour", "kind", "pair", "lines", "code"]))
def test_a_wrong_field_is_named_by_its_stored_schema(event: Rich, field: str) -> None:
    payload = msgspec.json.decode(msgspec.json.encode(event))
    payload[field] = {
        "orderId": "nope",
        "colour": "green",
        "kind": "fax",
        "pair": [1],
        "lines": [{"sku": "a", "extra": 1}],
        "code": "eur",
    }[field]
    found = RICH_VALIDATOR(payload)
    assert len(found) == 1
    assert found[0].startswith(f"`{field}`: ")


def test_schema_constructs_without_a_msgspec_equivalent_accept_anything() -> None:
    check = validator_for(
        {
            "type": "object",
            "properties": {
                "a": {"not": {"type": "string"}},
                "b": {"anyOf": [{"$ref": "#/$defs/X"}, {"$ref": "#/$defs/Y"}]},
            },
            "required": ["a"],
            "$defs": {
                "X": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "Y": {"type": "object", "properties": {"y": {"type": "integer"}}},
            },
        }
    )
    assert check({"a": "s", "b": {"z": 1}}) == []
    assert check({"b": 1}) == ["`a`: missing required field"]
    assert check([1]) == ["expected a JSON object, got list"]
