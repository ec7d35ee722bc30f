"""``eventfold.connect`` picks a backend from the URL and refuses what it cannot use."""

from __future__ import annotations

import subprocess
import sys
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


_WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # what an environment without the driver looks like
sys.modules["psycopg_pool"] = None
"""


def _run_without_psycopg(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_PSYCOPG + code], capture_output=True, text=True
    )


def test_postgresql_without_its_driver_says_how_to_install_it() -> None:
    code = """
import eventfold
try:
    eventfold.connect("postgresql://ann@localhost/db")
except eventfold.ConfigurationError as exc:
    print(type(exc).__name__, exc)
"""
    out = _run_without_psycopg(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ConfigurationError the postgresql backend needs psycopg")
    assert "pip install 'eventfold[postgres]'" in out.stdout


def test_the_cli_without_the_postgresql_driver_gives_the_hint_not_a_traceback() -> None:
    code = """
from eventfold.cli import cli
cli(["--url", "postgres://ann@localhost/db", "info"])
"""
    out = _run_without_psycopg(code)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "error: " in out.stderr
    assert "pip install 'eventfold[postgres]'" in out.stderr


def test_a_registered_backend_whose_module_is_missing_names_it() -> None:
    from eventfold.store import register_backend, unregister_backend

    register_backend(
        "nowhere", ["nowhere"], "eventfold_missing_backend:BACKEND", install="pip install it"
    )
    try:
        with pytest.raises(eventfold.ConfigurationError, match="needs eventfold_missing_backend"):
            eventfold.connect("nowhere://x")
    finally:
        unregister_backend("nowhere")
    with pytest.raises(eventfold.ConfigurationError, match="unknown store URL scheme 'nowhere'"):
        eventfold.connect("nowhere://x")
