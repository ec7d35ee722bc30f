"""The OpenAPI document: valid, complete, and what the server really answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from schemathesis.core.result import Ok
from starlette.routing import Route

from eventfold.web import create_app, openapi_document
from web_client import Web, serving


@pytest.fixture
async def web(sqlite_url: str) -> AsyncIterator[Web]:
    async with serving(sqlite_url) as client:
        yield client


def refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [r for v in value.values() for r in refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in refs(v)]
    return []


def conforms(document: dict[str, Any], name: str, body: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    jsonschema_rs.validate(schema, body)


async def test_the_served_document_is_the_generated_one(web: Web) -> None:
    response = await web.http.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(openapi_document()))
    assert response.json()["openapi"] == "3.1.0"


def test_every_route_is_documented_and_every_documented_route_exists(sqlite_url: str) -> None:
    import eventfold

    app = create_app(eventfold.connect(sqlite_url))
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.path != "/openapi.json"
        for method in (route.methods or set()) - {"HEAD"}
    }
    document = openapi_document()
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    assert served == documented


def test_the_document_is_valid_openapi_and_json_schema() -> None:
    document = openapi_document()
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    targets = {f"#/components/schemas/{n}" for n in document["components"]["schemas"]}
    assert set(refs(document)) <= targets
    loaded = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in loaded.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == sum(len(ops) for ops in document["paths"].values())
    for path, ops in document["paths"].items():
        for op in ops.values():
            assert op["summary"]
            assert op["responses"]
            if "{" in path:
                assert any(p["in"] == "path" for p in op["parameters"])


async def test_responses_conform_to_the_document(web: Web) -> None:
    document = openapi_document()
    appended = await web.append("doc-1", [{"type": "DocEvent", "data": {"a": [1, "x"]}}])
    conforms(document, "AppendOut", appended.json())
    await web.settled(appended)
    conforms(document, "StreamPage", (await web.http.get("/streams/doc-1/events")).json())
    conforms(document, "LogPage", (await web.http.get("/log")).json())
    conforms(document, "EventDetail", (await web.http.get("/streams/doc-1/events/1")).json())
    conforms(document, "StreamsPage", (await web.http.get("/streams")).json())
    conforms(document, "ErrorOut", (await web.http.get("/log?limit=0")).json())
    stale = await web.append("doc-1", [{"type": "DocEvent", "data": {}}], if_match='W/"0"')
    conforms(document, "ErrorOut", stale.json())
