"""The OpenAPI 3.1 document of the HTTP API, built from the route table and the msgspec
types (`msgspec.json.schema_components`), so it says what the server checks."""

from __future__ import annotations

from typing import Any, get_args

import msgspec

from .._version import __version__
from ._routes import ROUTES, RouteSpec
from ._types import ErrorOut

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{name}"

_ERRORS = {
    400: "A bad parameter, header, cursor or body (the body names it).",
    401: "No bearer token, or one this server does not know.",
    403: "The token's role does not allow this route.",
    404: "Nothing there.",
    409: "A conflict: a duplicate event id, a replaced stream, an undecodable event.",
    412: "The stream is not at the version of If-Match (the body has the actual one).",
    413: "The body, an event or the number of events is over its limit.",
    415: "The body is not application/json.",
    428: "An append without If-Match or expected_version.",
    503: "The store cannot be reached, or too many live subscriptions.",
}


def _types() -> list[Any]:
    found: list[Any] = [ErrorOut]
    for route in ROUTES:
        for t in (route.body, route.returns):
            if t is None or t is str:
                continue
            inner = get_args(t)
            for candidate in inner or (t,):
                if candidate not in found:
                    found.append(candidate)
    return found


def _ref(t: Any) -> dict[str, Any]:
    inner = get_args(t)
    if inner:
        return {"type": "array", "items": {"$ref": _REF.format(name=inner[0].__name__)}}
    return {"$ref": _REF.format(name=t.__name__)}


def _errors_for(route: RouteSpec, read_token: bool) -> list[int]:
    codes = [400, 503]
    if route.role.value != "read" or read_token:
        codes += [401, 403]
    else:
        codes += [401]  # a token that is sent must be valid
    if "{" in route.path:
        codes.append(404)
    if route.body is not None:
        codes += [413, 415]
    if route.method == "POST":
        codes.append(409)
    if route.handler.__name__ == "append":
        codes += [412, 428]
    return sorted(set(codes))


def _operation(route: RouteSpec, read_token: bool) -> dict[str, Any]:
    open_read = " (reads are open unless the server requires a token)."
    note = open_read if route.role.value == "read" else "."
    op: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag],
        "description": (route.handler.__doc__ or "").strip()
        + f"\n\nNeeds the `{route.role}` role{note}",
    }
    if route.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in route.params
        ]
    if route.body is not None:
        op["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    responses: dict[str, Any] = {}
    if route.returns is str:
        responses[str(route.ok)] = {
            "description": "Success.",
            "content": {route.media_type: {"schema": {"type": "string"}}},
        }
    elif route.returns is None:
        responses[str(route.ok)] = {
            "description": "A stream of events: `id` is the position, `data` an EventOut.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    else:
        ok: dict[str, Any] = {
            "description": "Success.",
            "content": {"application/json": {"schema": _ref(route.returns)}},
        }
        if route.returns.__name__ in ("StreamPage", "AppendOut"):
            ok["headers"] = {
                "ETag": {"description": "The stream's version.", "schema": {"type": "string"}}
            }
        responses[str(route.ok)] = ok
        if route.handler.__name__ == "append":
            responses["200"] = {
                "description": "A retry: every event was already stored; nothing appended.",
                "content": {"application/json": {"schema": _ref(route.returns)}},
            }
    error = {"$ref": _REF.format(name="ErrorOut")}
    for code in _errors_for(route, read_token):
        responses[str(code)] = {
            "description": _ERRORS[code],
            "content": {"application/json": {"schema": error}},
        }
    if route.handler.__name__ == "health":
        responses["503"] = {
            "description": "Something is stalled or failed (the body names it), or the "
            "store cannot be reached.",
            "content": {"application/json": {"schema": {"oneOf": [_ref(route.returns), error]}}},
        }
    op["responses"] = responses
    if route.role.value == "read" and not read_token:
        op["security"] = [{}, {"bearer": []}]
    else:
        op["security"] = [{"bearer": []}]
    return op


def openapi_document(*, read_token: bool = False, title: str = "eventfold") -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app's API."""
    _, components = msgspec.json.schema_components(_types(), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, read_token)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{title} HTTP API",
            "version": __version__,
            "description": "The event store over HTTP: streams, the global log, live "
            "subscriptions, projections and the schema registry.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
