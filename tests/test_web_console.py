"""The console's server side: its pages and assets with their security headers, and the
projection stepper route, on SQLite and PostgreSQL (in process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import eventfold
from eventfold.projections import DocumentProjection, Projection, ProjectionTransaction
from eventfold.web import Limits
from eventfold.web._stepper import ChangeOut, diff
from web_client import Web, serving


def cart() -> DocumentProjection[dict[str, Any]]:
    p = DocumentProjection("carts", document=dict)

    @p.on("ConsoleItemAdded")
    def added(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        if event.data["sku"] == "bad":
            raise ValueError("no such sku")
        items = {**doc.get("items", {}), event.data["sku"]: event.data["qty"]}
        return {"items": items, "count": doc.get("count", 0) + 1}

    @p.on("ConsoleCartEmptied")
    def emptied(doc: dict[str, Any], event: eventfold.RecordedEvent) -> None:
        return None

    return p


def free_form() -> Projection:
    p = Projection("free")

    @p.on("ConsoleItemAdded")
    async def added(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None:
        return None

    return p


def item(sku: str, qty: int = 1) -> dict[str, Any]:
    return {"type": "ConsoleItemAdded", "data": {"sku": sku, "qty": qty}}


@pytest.fixture
async def web(sql_url: str) -> AsyncIterator[Web]:
    async with serving(sql_url, projections=(cart(), free_form())) as web:
        yield web


async def test_the_console_page_and_assets_carry_a_content_security_policy(web: Web) -> None:
    moved = await web.http.get("/console")
    assert moved.status_code in (307, 308)
    assert moved.headers["location"] == "http://api/console/"
    page = await web.http.get("/console/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script src="static/console.js"' in page.text
    script = await web.http.get("/console/static/console.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "content-security-policy" in script.headers
    # The script never parses strings as HTML.
    assert "innerHTML" not in script.text
    assert "insertAdjacentHTML" not in script.text
    assert "document.write" not in script.text
    style = await web.http.get("/console/static/console.css")
    assert style.headers["content-type"].startswith("text/css")
    missing = await web.http.get("/console/static/..%2Fconsole.html")
    assert missing.status_code == 404
    assert (await web.http.get("/console/static/other.js")).status_code == 404


async def test_the_stepper_gives_the_state_and_changes_at_each_event(web: Web) -> None:
    noted = {"type": "ConsoleCartNoted", "data": {}}
    done = await web.append("cart-1", [item("a"), noted, item("b", 2)])
    assert done.status_code == 201, done.text
    got = await web.http.get("/projections/carts/steps/cart-1")
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["projection"], body["doc_id"], body["complete"]) == ("carts", "cart-1", True)
    steps = body["steps"]
    assert [(s["version"], s["type"], s["handled"]) for s in steps] == [
        (1, "ConsoleItemAdded", True),
        (2, "ConsoleCartNoted", False),
        (3, "ConsoleItemAdded", True),
    ]
    assert steps[0]["state"] == {"items": {"a": 1}, "count": 1}
    assert steps[0]["changes"] == [
        {"path": "", "before": None, "after": {"items": {"a": 1}, "count": 1}, "op": "add"}
    ]
    assert steps[1]["state"] == steps[0]["state"]
    assert steps[1]["changes"] == []
    assert steps[2]["state"] == {"items": {"a": 1, "b": 2}, "count": 2}
    assert steps[2]["changes"] == [
        {"path": "items.b", "before": None, "after": 2, "op": "add"},
        {"path": "count", "before": 1, "after": 2, "op": "replace"},
    ]

    upto = (await web.http.get("/projections/carts/steps/cart-1", params={"upto": "2"})).json()
    assert [s["version"] for s in upto["steps"]] == [1, 2]
    assert upto["complete"] is True


async def test_the_stepper_stops_at_a_failing_event_and_shows_a_deletion(web: Web) -> None:
    await web.append("cart-2", [item("a"), item("bad"), item("c")])
    body = (await web.http.get("/projections/carts/steps/cart-2")).json()
    assert [s["version"] for s in body["steps"]] == [1, 2]
    assert body["steps"][1]["error"] == "ValueError: no such sku"
    assert body["steps"][1]["state"] == {"items": {"a": 1}, "count": 1}
    assert body["complete"] is False

    await web.append("cart-3", [item("a"), {"type": "ConsoleCartEmptied", "data": {}}])
    body = (await web.http.get("/projections/carts/steps/cart-3")).json()
    assert body["steps"][1]["state"] is None
    assert body["steps"][1]["changes"] == [
        {"path": "", "before": {"items": {"a": 1}, "count": 1}, "after": None, "op": "remove"}
    ]


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/projections/nope/steps/cart-1", {}, 404, "name"),
        ("/projections/free/steps/cart-1", {}, 400, "name"),
        ("/projections/carts/steps/no-such-stream", {}, 404, "stream_id"),
        ("/projections/carts/steps/cart-1", {"upto": "0"}, 400, "upto"),
        ("/projections/carts/steps/cart-1", {"upto": "x"}, 400, "upto"),
    ],
)
async def test_bad_stepper_requests_are_refused_naming_the_parameter(
    web: Web, path: str, params: dict[str, str], status: int, field: str
) -> None:
    await web.append("cart-1", [item("a")])
    got = await web.http.get(path, params=params)
    assert got.status_code == status, got.text
    assert got.json()["field"] == field
    assert got.json()["message"]


async def test_the_stepper_is_bounded_by_the_page_size(sql_url: str) -> None:
    async with serving(sql_url, projections=(cart(),), limits=Limits(max_page=3)) as web:
        await web.append("cart-1", [item(str(i)) for i in range(5)])
        body = (await web.http.get("/projections/carts/steps/cart-1")).json()
        assert [s["version"] for s in body["steps"]] == [1, 2, 3]
        assert body["complete"] is False


def test_diff_walks_objects_and_same_length_lists() -> None:
    assert diff({"a": [1, 2], "b": 1}, {"a": [1, 3], "c": 2}) == [
        ChangeOut(path="a.1", before=2, after=3, op="replace"),
        ChangeOut(path="b", before=1, op="remove"),
        ChangeOut(path="c", after=2, op="add"),
    ]
    assert diff([1], [1, 2]) == [ChangeOut(path="", before=[1], after=[1, 2], op="replace")]
    assert diff({"a": 1}, {"a": 1}) == []
    assert diff(1, 1.0) == [ChangeOut(path="", before=1, after=1.0, op="replace")]


async def test_the_console_page_needs_no_token_when_reads_do(sql_url: str) -> None:
    async with serving(sql_url, read_token=True) as web:
        assert (await web.http.get("/console/")).status_code == 200
        assert (await web.http.get("/console/static/console.js")).status_code == 200
        assert (await web.http.get("/log")).status_code == 401
