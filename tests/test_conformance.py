"""Every backend runs the whole conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import eventfold
from eventfold import EventStore
from eventfold.testing import EventStoreConformance, SharedStoreConformance


class TestConformance(EventStoreConformance):
    @pytest.fixture
    async def store(self, store_url: str) -> AsyncIterator[EventStore]:
        async with eventfold.connect(store_url) as store:
            yield store

    @pytest.fixture
    async def other_store(self, store: EventStore, store_url: str) -> AsyncIterator[EventStore]:
        if store_url == "memory://":
            yield store
            return
        async with eventfold.connect(store_url) as other:
            yield other


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


class TestSharedConformance(SharedStoreConformance):
    @pytest.fixture
    def store_url(self, shared_url: str) -> str:
        return shared_url

    @pytest.fixture
    async def store(self, store_url: str) -> AsyncIterator[EventStore]:
        async with eventfold.connect(store_url) as store:
            yield store
