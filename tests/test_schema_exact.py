"""Raw JSON checked on write accepts exactly what the registered class decodes.

A corpus of event types covers what msgspec decodes: datetimes with a time zone, without,
and either; dates, times, durations, UUIDs, decimals, bytes with a length, str and int
enums, literals, a tagged union of structs, an untagged union, nested and array-like
structs, dicts with int keys, and ``Meta`` constraints. For JSON values generated around
valid payloads, on every backend's write path: what the store accepts, the class decodes
(through the stored schema, for a producer without the class; through the class, for one
with it); and every valid instance is accepted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import enum
import uuid
from typing import Annotated, Any, Literal

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventfold
from eventfold import ANY, NewEvent, TypeRegistry, schema
from eventfold.schema import validator_for


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Cat(msgspec.Struct, tag_field="kind", tag="cat"):
    name: str


class Dog(msgspec.Struct, tag_field="kind", tag="dog"):
    barks: Annotated[int, msgspec.Meta(ge=0)] = 0


class Point(msgspec.Struct, array_like=True):
    x: int
    y: int = 0


class Line(msgspec.Struct, forbid_unknown_fields=True):
    sku: Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=9)] = 1


class Times(eventfold.Event):
    __event_type__ = "exact.Times"
    at: dt.datetime
    aware: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    naive: Annotated[dt.datetime, msgspec.Meta(tz=False)]
    day: dt.date
    clock: dt.time
    span: dt.timedelta


class Values(eventfold.Event):
    __event_type__ = "exact.Values"
    id: uuid.UUID
    price: decimal.Decimal
    blob: Annotated[bytes, msgspec.Meta(max_length=4)]
    colour: Colour
    level: Level
    kind: Literal["a", 1]
    ratio: Annotated[float, msgspec.Meta(gt=0)]


class Shapes(eventfold.Event):
    __event_type__ = "exact.Shapes"
    pet: Cat | Dog
    either: int | str | None
    lines: list[Line]
    counts: dict[int, str]
    point: Point
    note: str = ""


CORPUS: list[type[eventfold.Event]] = [Times, Values, Shapes]

_times = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
_zones = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=2))])
_lines = st.lists(
    st.builds(Line, sku=st.from_regex("^[A-Z]{2}$", fullmatch=True), quantity=st.integers(1, 9)),
    max_size=2,
)
VALID: dict[type[eventfold.Event], st.SearchStrategy[Any]] = {
    Times: st.builds(
        Times,
        at=_times | _times.map(lambda t: t.replace(tzinfo=dt.UTC)),
        aware=st.datetimes(timezones=_zones),
        naive=_times,
        day=st.dates(),
        clock=st.times(),
        span=st.timedeltas(min_value=dt.timedelta(days=-999), max_value=dt.timedelta(days=999)),
    ),
    Values: st.builds(
        Values,
        id=st.uuids(),
        price=st.decimals(allow_nan=False, allow_infinity=False, places=2),
        blob=st.binary(max_size=4),
        colour=st.sampled_from(Colour),
        level=st.sampled_from(Level),
        kind=st.sampled_from(["a", 1]),
        ratio=st.floats(min_value=0.001, max_value=1e6),
    ),
    Shapes: st.builds(
        Shapes,
        pet=st.builds(Cat, name=st.text(max_size=3)) | st.builds(Dog, barks=st.integers(0, 5)),
        either=st.none() | st.integers(-5, 5) | st.text(max_size=3),
        lines=_lines,
        counts=st.dictionaries(st.integers(-3, 3), st.text(max_size=2), max_size=2),
        point=st.builds(Point, x=st.integers(-5, 5), y=st.integers(-5, 5)),
        note=st.text(max_size=3),
    ),
}

# Values a producer might send instead, near misses included.
_STRINGS = [
    "2024-01-01T10:00:00",
    "2024-01-01T10:00:00Z",
    "2024-01-01T10:00:00+02:00",
    "2024-13-01T10:00:00",
    "2024-01-01",
    "10:00:00",
    "10:00:00Z",
    "25:00:00",
    "P1D",
    "PT1H",
    "1 day",
    str(uuid.UUID(int=7)),
    "1.50",
    "NaN",
    "AAAA",
    "AAAAAAAA",
    "not a date",
    "red",
    "green",
    "a",
    "b",
    "AB",
    "ab",
    "cat",
    "dog",
    "",
]
_KEYS = ["kind", "name", "barks", "sku", "quantity", "x", "1", "-1", "one"]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 12)
    | st.floats(-2, 2, allow_nan=False)
    | st.sampled_from(_STRINGS)
)
_strings = st.sampled_from(_STRINGS)
CANDIDATES = st.one_of(
    _strings,
    _strings,
    _scalars,
    st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner),
        max_leaves=6,
    ),
)


@st.composite
def near_misses(draw: st.DrawFn, cls: type[eventfold.Event]) -> dict[str, Any]:
    """A valid payload of ``cls`` with a few fields replaced, nested values included."""
    payload: dict[str, Any] = msgspec.to_builtins(draw(VALID[cls]))
    names = [f.encode_name for f in msgspec.structs.fields(cls)]
    count = draw(st.sampled_from([1, 1, 1, 2]))
    for name in draw(st.lists(st.sampled_from(names), min_size=count, max_size=count)):
        value = payload.get(name)
        if isinstance(value, dict) and value and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(value)))
            payload[name] = {**value, key: draw(CANDIDATES)}
        elif draw(st.integers(0, 9)) == 0:
            payload.pop(name, None)
        else:
            payload[name] = draw(CANDIDATES)
    return payload


def class_decodes(cls: type[eventfold.Event], payload: Any) -> bool:
    try:
        msgspec.json.decode(msgspec.json.encode(payload), type=cls)
    except msgspec.ValidationError:
        return False
    return True


# -- the stored schema's validator alone --------------------------------------------------

VALIDATORS = {cls: validator_for(schema.schema_of(cls)) for cls in CORPUS}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CORPUS).flatmap(lambda c: st.tuples(st.just(c), near_misses(c))))
def test_the_stored_schema_accepts_exactly_what_the_class_decodes(
    case: tuple[type[eventfold.Event], dict[str, Any]],
) -> None:
    cls, payload = case
    assert (VALIDATORS[cls](payload) == []) == class_decodes(cls, payload), payload


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CORPUS).flatmap(lambda c: VALID[c]))
def test_every_valid_instance_passes_its_stored_schema(event: eventfold.Event) -> None:
    payload = msgspec.json.decode(msgspec.json.encode(event))
    assert VALIDATORS[type(event)](payload) == []


# -- every backend's write path ------------------------------------------------------------


class Writers:
    """Two producers on one backend: one without the classes (checked against the stored
    schemas), one with them (checked by the classes)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        with_classes = TypeRegistry()
        for cls in CORPUS:
            with_classes.register(cls)
        self.foreign = eventfold.connect(url, registry=TypeRegistry())
        self.native = eventfold.connect(url, registry=with_classes)
        self.run(self.foreign.open())
        self.run(self.native.open())
        self.run(schema.publish(self.foreign, CORPUS))
        self.run(schema.load(self.foreign))
        self.count = 0

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    def write(self, store: eventfold.EventStore, cls: type[eventfold.Event], data: Any) -> bool:
        """Append ``data``; whether it was accepted (and then, that it decodes)."""
        self.count += 1
        stream = f"exact-{self.count}"
        try:
            self.run(
                store.append(
                    stream, [NewEvent(data, type=cls.__event_type__)], expected_version=ANY
                )
            )
        except eventfold.SchemaViolation:
            return False

        async def stored() -> list[Any]:
            return [e.data async for e in store.read_stream(stream)]

        [read] = self.run(stored())
        if isinstance(read, dict):
            assert class_decodes(cls, read), read
        else:
            assert type(read) is cls
        return True

    def close(self) -> None:
        self.run(self.foreign.close())
        self.run(self.native.close())
        self.loop.close()


@pytest.fixture
def writers(store_url: str) -> Any:
    w = Writers(store_url)
    yield w
    w.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(CORPUS).flatmap(lambda c: st.tuples(st.just(c), near_misses(c))))
def test_what_a_backend_accepts_as_raw_json_its_readers_decode(
    writers: Writers, case: tuple[type[eventfold.Event], dict[str, Any]]
) -> None:
    cls, payload = case
    expected = class_decodes(cls, payload)
    assert writers.write(writers.foreign, cls, payload) == expected
    assert writers.write(writers.native, cls, payload) == expected


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(CORPUS).flatmap(lambda c: VALID[c]))
def test_every_valid_instance_is_accepted_as_raw_json(
    writers: Writers, event: eventfold.Event
) -> None:
    payload = msgspec.json.decode(msgspec.json.encode(event))
    assert writers.write(writers.foreign, type(event), payload)
    assert writers.write(writers.native, type(event), payload)


def test_the_issue_reproduction_is_refused_naming_the_field(writers: Writers) -> None:
    with pytest.raises(eventfold.SchemaViolation, match="`at`: Invalid RFC3339"):
        writers.run(
            writers.foreign.append(
                "t-1", [NewEvent({"at": "not a date"}, type="exact.Times")], expected_version=ANY
            )
        )
    with pytest.raises(eventfold.SchemaViolation, match="`pet`"):
        writers.run(
            writers.foreign.append(
                "t-1", [NewEvent({"pet": 42}, type="exact.Shapes")], expected_version=ANY
            )
        )
