"""A page written from stored rows is the page written from the events they decode to."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec
import pytest

from eventfold import Event, MissingUpcaster, TypeRegistry
from eventfold._undecodable import keep_undecodable
from eventfold.store.kit import Codec, Row
from eventfold.web._render import _iso_us, events_out, rows_out


class Placed(Event):
    __event_type__ = "render.Placed"
    __schema_version__ = 2
    sku: str
    qty: int


def registry() -> TypeRegistry:
    found = TypeRegistry()
    found.register(Placed)
    found.upcaster("render.Placed", from_version=1)(lambda d: {"sku": d["item"], "qty": 1})
    found.rename("render.Ordered", to="render.Placed")
    found.upcaster("render.Noted", from_version=1)(lambda d: {**d, "lifted": True})
    return found


def row(n: int, type: str, version: int, data: bytes, meta: bytes = b"{}", tx: int = 0) -> Row:
    return (uuid.uuid4().bytes, "s-1", n, type, version, data, meta, 1_700_000_000_000_000 + n // 2,
            tx, n)  # fmt: skip


ROWS = [
    row(1, "render.Free", 1, '{"a":1,"b":[true,null,"é"]}'.encode()),
    row(2, "render.Free", 1, b'{"a":2}', b'{"correlation_id":"c-1","causation_id":"e-0"}'),
    row(3, "render.Free", 1, b'{"a":3}', b'{"actor":"ann"}', tx=812),
    row(4, "render.Placed", 2, b'{"sku":"x","qty":2}'),
    row(5, "render.Placed", 1, b'{"item":"y"}'),  # upcast
    row(6, "render.Ordered", 1, b'{"item":"z"}'),  # renamed, then upcast
    row(7, "render.Noted", 1, b'{"text":"hi"}'),  # a type with no class, upcast
    row(8, "render.Noted", 2, b'{"text":"hi","lifted":true}'),
    row(9, "render.Placed", 2, b'{"sku":"x","qty":"two"}'),  # does not fit its class
    row(10, "render.Free", 1, b'{"a":'),  # not JSON
    row(11, "render.Free", 1, b'{"a":1} {"b":2}'),  # two values
    row(12, "render.Free", 1, b"[1,2]"),  # JSON, not an object: read as it is
    row(13, "render.Free", 1, b'{"a":13}'),
]


def test_rows_and_events_write_the_same_page() -> None:
    codec = Codec(registry())
    encode = msgspec.json.encode
    with keep_undecodable():
        from_events = encode(events_out(codec.decode_rows(ROWS)))
        from_rows = encode(rows_out(codec, ROWS))
    assert from_rows == from_events
    page = msgspec.json.decode(from_rows)
    assert [e["version"] for e in page] == [r[2] for r in ROWS]
    assert page[0]["data"] == {"a": 1, "b": [True, None, "é"]}
    assert (page[1]["correlation_id"], page[1]["causation_id"]) == ("c-1", "e-0")
    assert page[2]["position"] == "812:3"
    assert page[4]["data"] == {"sku": "y", "qty": 1}
    assert (page[5]["type"], page[5]["stored_type"]) == ("render.Placed", "render.Ordered")
    assert page[6]["data"] == {"text": "hi", "lifted": True}
    for bad in (8, 9, 10):
        assert page[bad]["data"] is None
        assert page[bad]["undecodable"]
    assert page[11]["data"] == [1, 2]


def test_json_stored_in_another_spelling_is_passed_on_as_stored() -> None:
    codec = Codec(registry())
    spelled = [row(1, "render.Free", 1, b'{ "a" : 1, "b" : "\\u00e9" }')]
    with keep_undecodable():
        from_events = msgspec.json.encode(events_out(codec.decode_rows(spelled)))
        from_rows = msgspec.json.encode(rows_out(codec, spelled))
    assert b'"data":{ "a" : 1, "b" : "\\u00e9" }' in from_rows
    assert msgspec.json.decode(from_rows) == msgspec.json.decode(from_events)
    assert msgspec.json.decode(from_rows)[0]["data"] == {"a": 1, "b": "é"}


def test_a_row_newer_than_the_code_fails_the_page_either_way() -> None:
    codec = Codec(registry())
    newer = [*ROWS[:2], row(3, "render.Placed", 7, b'{"sku":"x","qty":1}')]
    with keep_undecodable():
        with pytest.raises(MissingUpcaster):
            events_out(codec.decode_rows(newer))
        with pytest.raises(MissingUpcaster):
            rows_out(codec, newer)


@pytest.mark.parametrize(
    ("type", "version", "as_stored"),
    [
        ("render.Free", 1, True),  # no class, no upcaster
        ("render.Free", 3, True),
        ("render.Noted", 2, True),  # past its upcasters
        ("render.Noted", 1, False),
        ("render.Placed", 2, False),  # a class
        ("render.Placed", 1, False),
        ("render.Ordered", 1, False),  # renamed
        ("render.Placed", 7, False),  # no upcaster: the codec's read says so
    ],
)
def test_the_codec_says_which_payloads_read_as_stored(
    type: str, version: int, as_stored: bool
) -> None:
    assert Codec(registry()).reads_as_stored(type, version) is as_stored


def test_what_reads_as_stored_follows_the_registry() -> None:
    found = TypeRegistry()
    codec = Codec(found)
    assert codec.reads_as_stored("render.Later", 1)

    class Later(Event):
        __event_type__ = "render.Later"
        n: int

    found.register(Later)
    assert not codec.reads_as_stored("render.Later", 1)


@pytest.mark.parametrize(
    "us",
    [0, 1, -1, 999_999, 1_000_000, 1_700_000_000_120_000, 1_700_000_059_999_999, -86_400_000_001,
     253_402_300_799_999_999],
)  # fmt: skip
def test_recorded_times_are_written_as_isoformat_writes_them(us: int) -> None:
    when = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)
    assert _iso_us(us) == when.isoformat() + "Z"
