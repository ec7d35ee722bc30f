"""Event types, the registry and the codec."""

from __future__ import annotations

import uuid

import msgspec
import pytest

import eventfold
from eventfold import Event, NewEvent, TypeRegistry
from eventfold.store.kit import Codec


class ItemAdded(Event):
    sku: str
    quantity: int = 1


class Renamed(Event):
    __event_type__ = "catalog.ItemRenamed"
    __schema_version__ = 3
    name: str


def test_type_name_defaults_to_class_name_never_import_path() -> None:
    assert eventfold.event_type_name(ItemAdded) == "ItemAdded"
    assert eventfold.event_type_name(Renamed) == "catalog.ItemRenamed"
    assert eventfold.default_registry.resolve("ItemAdded") is ItemAdded
    assert eventfold.default_registry.resolve("catalog.ItemRenamed") is Renamed


def test_events_are_frozen_and_keyword_only() -> None:
    event = ItemAdded(sku="a")
    with pytest.raises(AttributeError):
        event.sku = "b"
    with pytest.raises(TypeError):
        ItemAdded("a")


def test_name_clash_is_refused() -> None:
    with pytest.raises(eventfold.EventTypeError, match="taken by"):

        class Clash(Event):
            __event_type__ = "ItemAdded"
            other: int


def test_bad_schema_version_is_refused() -> None:
    with pytest.raises(eventfold.EventTypeError, match="__schema_version__"):

        class Bad(Event):
            __event_type__ = "test.Bad"
            __schema_version__ = 0


def test_separate_registries() -> None:
    registry = TypeRegistry()
    codec = Codec(registry)
    [encoded] = codec.encode("s-1", [ItemAdded(sku="x")])
    assert registry.resolve("ItemAdded") is ItemAdded
    assert encoded.type == "ItemAdded"
    assert msgspec.json.decode(encoded.data) == {"sku": "x", "quantity": 1}


def test_codec_round_trip_and_envelope() -> None:
    codec = Codec(producer_version="shop 2.1.0")
    eid = uuid.uuid4()
    encoded = codec.encode(
        "s-1",
        [Renamed(name="n"), NewEvent(ItemAdded(sku="x"), event_id=eid, correlation_id="c")],
    )
    assert [e.schema_version for e in encoded] == [3, 1]
    assert [e.explicit_id for e in encoded] == [False, True]
    assert encoded[1].event_id == eid.bytes
    assert uuid.UUID(bytes=encoded[0].event_id).version == 4
    assert msgspec.json.decode(encoded[0].metadata) == {"producer_version": "shop 2.1.0"}
    assert msgspec.json.decode(encoded[1].metadata) == {
        "producer_version": "shop 2.1.0",
        "correlation_id": "c",
    }
    rows = [
        (e.event_id, "s-1", i + 1, e.type, e.schema_version, e.data, e.metadata, 0, 0, i + 1)
        for i, e in enumerate(encoded)
    ]
    decoded = codec.decode_rows(rows)
    assert [d.data for d in decoded] == [Renamed(name="n"), ItemAdded(sku="x")]
    assert decoded[1].event_id == eid
    assert decoded[1].correlation_id == "c"
    assert decoded[0].recorded_at.isoformat() == "1970-01-01T00:00:00+00:00"


def test_stored_payload_that_no_longer_decodes_is_a_clear_error() -> None:
    codec = Codec()
    row = (uuid.uuid4().bytes, "s-1", 4, "ItemAdded", 1, b'{"quantity": 2}', b"{}", 0, 0, 9)
    with pytest.raises(eventfold.DecodeError, match=r"s-1@4.*ItemAdded.*sku") as info:
        codec.decode_rows([row])
    assert info.value.event_type == "ItemAdded"


def test_additive_change_decodes_old_payloads() -> None:
    codec = Codec()
    row = (uuid.uuid4().bytes, "s-1", 1, "ItemAdded", 1, b'{"sku": "a"}', b"{}", 0, 0, 1)
    [event] = codec.decode_rows([row])
    assert event.data == ItemAdded(sku="a", quantity=1)
