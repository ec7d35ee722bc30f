"""The HTTP API fuzzed from its own OpenAPI document (schemathesis), over uvicorn and
SQLite: no 5xx, every response as documented, and a refused append stores nothing.

The live subscription (an endless response) is left out; tests/test_web_live.py covers it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import eventfold
from eventfold.web import create_app
from web_client import ADMIN, TOKENS

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    """The API over a fresh SQLite store, served by uvicorn in a thread of its own."""
    app = create_app(eventfold.connect(f"sqlite:///{tmp_path / 'fuzz.db'}"), tokens=TOKENS)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def stream_state(base_url: str, case: Any) -> tuple[int, str]:
    """The store's head and the stream's version, as the API reports them."""
    head = requests.get(f"{base_url}/log", params={"limit": "1"}, timeout=10).json()["head"]
    stream = case.path_parameters.get("stream_id") if case.path_parameters else None
    if not isinstance(stream, str):
        return 0, head
    response = requests.get(
        f"{base_url}/streams/{quote(stream, safe='')}/events",
        params={"limit": "1"},
        timeout=10,
    )
    version = response.json()["version"] if response.status_code == 200 else -1
    return version, head


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_never_fail_the_server_and_refused_appends_store_nothing(
    base_url: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    document = requests.get(f"{base_url}/openapi.json", timeout=10).json()
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    fuzzed: set[str] = set()
    assert len(operations) >= 14
    for operation in operations:
        if operation.path == "/subscribe":
            continue
        spec = document["paths"][operation.path][operation.method.lower()]
        if mode is GenerationMode.NEGATIVE and not (spec.get("parameters") or
                                                    spec.get("requestBody")):  # fmt: skip
            continue  # nothing in the request to make invalid
        label = f"{operation.method.upper()} {operation.path}"

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            appending = case.method == "POST" and case.path == "/streams/{stream_id}/events"
            before = stream_state(base_url, case) if appending else None
            headers = {"Authorization": f"Bearer {ADMIN}", **(case.headers or {})}
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            case.validate_response(response, checks=CHECKS)
            if appending and response.status_code >= 400:
                assert stream_state(base_url, case) == before, response.text

        try:
            run()
        except Unsatisfiable:
            # Only strings in the path, say: nothing a request can carry is invalid.
            assert mode is GenerationMode.NEGATIVE, label
            continue
        fuzzed.add(label)
    assert {"POST /streams/{stream_id}/events", "GET /log"} <= fuzzed
