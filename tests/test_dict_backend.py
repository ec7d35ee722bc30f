"""A backend outside eventfold plugs in through the registration table and passes the
store conformance suite (`tests/dict_backend.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

import dict_backend
import eventfold
from eventfold import EventStore
from eventfold.projections import StoreWakeUps, attach_inline, read_models_for
from eventfold.store import backend_of, register_backend, unregister_backend
from eventfold.testing import EventStoreConformance


@pytest.fixture
def dict_url() -> Iterator[str]:
    register_backend(dict_backend.NAME, [dict_backend.SCHEME], dict_backend.BACKEND)
    try:
        yield f"{dict_backend.SCHEME}://"
    finally:
        unregister_backend(dict_backend.NAME)


class TestDictBackendConformance(EventStoreConformance):
    @pytest.fixture
    async def store(self, dict_url: str) -> AsyncIterator[EventStore]:
        async with eventfold.connect(dict_url) as store:
            yield store


async def test_connect_reads_the_table(dict_url: str) -> None:
    store = eventfold.connect(dict_url)
    assert isinstance(store, dict_backend.DictStore)
    assert backend_of(store) is dict_backend.BACKEND


async def test_what_the_backend_does_not_offer_is_refused_by_name(dict_url: str) -> None:
    async with eventfold.connect(dict_url) as store:
        with pytest.raises(eventfold.ConfigurationError, match="no read-model store for DictStore"):
            read_models_for(store)
        with pytest.raises(eventfold.UnsupportedCapability, match="the dict store"):
            await attach_inline(store, [])
        async with StoreWakeUps(store) as wakeups:
            wakeups.subscribe()  # in-process hints only: no background task to start
            assert not wakeups.listening


def test_unregistering_forgets_the_scheme(dict_url: str) -> None:
    unregister_backend(dict_backend.NAME)
    with pytest.raises(eventfold.ConfigurationError, match="unknown store URL scheme 'dict'"):
        eventfold.connect(dict_url)


def test_a_store_that_only_says_it_is_sqlite_is_refused(dict_url: str) -> None:
    store = eventfold.connect(dict_url)
    store.backend = "sqlite"
    with pytest.raises(
        eventfold.ConfigurationError, match="calls itself a sqlite store but is not a SQLiteStore"
    ):
        read_models_for(store)
