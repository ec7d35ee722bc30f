"""``eventfold.connect`` picks a backend from the URL and refuses what it cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest

import eventfold


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/db", "unknown store URL scheme 'mysql'"),
        ("events.db", "cannot read the store URL"),
        ("sqlite://host/x.db", "names a host"),
        ("sqlite:///", "names no file"),
        ("sqlite:///x.db?synchronous=OFF", "synchronous"),
        ("sqlite:///x.db?cache=big", "unknown sqlite URL options"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(eventfold.ConfigurationError, match=message):
        eventfold.connect(url)


def test_password_never_shows_in_errors() -> None:
    with pytest.raises(eventfold.ConfigurationError) as info:
        eventfold.connect("mongodb://ann:s3cret@db:27017/x")
    assert "s3cret" not in str(info.value)


def test_bad_size_limit() -> None:
    with pytest.raises(eventfold.ConfigurationError, match="max_event_size"):
        eventfold.connect("memory://", max_event_size=0)


def test_default_is_the_embedded_sqlite_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("EVENTFOLD_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    store = eventfold.connect()
    assert store.backend == "sqlite"
    monkeypatch.setenv("EVENTFOLD_URL", "memory://")
    assert eventfold.connect().backend == "memory"


async def test_smaller_size_limit_applies(tmp_path: Path) -> None:
    class Sized(eventfold.Event):
        __event_type__ = "test.Sized"
        text: str

    async with eventfold.connect("memory://", max_event_size=100) as store:
        with pytest.raises(eventfold.EventTooLarge, match="limit of 100 bytes"):
            await store.append("s-1", [Sized(text="x" * 100)], expected_version=eventfold.ANY)
        assert await store.head() == eventfold.START
