"""The HTTP API over SQLite and PostgreSQL: reads, paging and filters, appends with
If-Match, authorisation, bounds, projections and the schema registry."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
import pytest

import eventfold
from eventfold.projections import DocumentProjection, PoisonPolicy
from eventfold.store import SupportsRowReads
from eventfold.web import AUDIT_STREAM, Limits
from web_client import ADMIN, READ, WRITE, Web, bearer, serving


def placed(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "WebPlaced", "data": {"n": n}, **extra}


@pytest.fixture
async def web(sql_url: str) -> AsyncIterator[Web]:
    limits = Limits(max_body_bytes=16 * 1024, max_page=50, max_append_events=20)
    async with serving(sql_url, limits=limits) as client:
        yield client


async def events_of(web: Web, stream: str) -> list[eventfold.RecordedEvent]:
    return [e async for e in web.store.read_stream(stream)]


# -- append and ETags ------------------------------------------------------------------------


async def test_append_returns_the_version_as_etag_and_reads_carry_it(web: Web) -> None:
    created = await web.append("order-1", [placed(1), placed(2)], if_match='W/"0"')
    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == 'W/"2"'
    assert created.json()["version"] == 2
    assert created.json()["retry"] is False

    read = await web.http.get("/streams/order-1/events")
    assert read.status_code == 200
    assert read.headers["ETag"] == 'W/"2"'
    body = read.json()
    assert [e["data"] for e in body["events"]] == [{"n": 1}, {"n": 2}]
    assert [e["version"] for e in body["events"]] == [1, 2]

    # The ETag of a read is what the next append sends.
    more = await web.append("order-1", [placed(3)], if_match=read.headers["ETag"])
    assert (more.status_code, more.headers["ETag"]) == (201, 'W/"3"')


async def test_a_stale_if_match_is_412_with_the_actual_version_and_stores_nothing(
    web: Web,
) -> None:
    await web.append("order-2", [placed(1), placed(2)], if_match='W/"0"')
    stale = await web.append("order-2", [placed(3)], if_match='W/"1"')
    assert stale.status_code == 412
    body = stale.json()
    assert (body["error"], body["actual_version"], body["field"]) == (
        "wrong_expected_version",
        2,
        "If-Match",
    )
    assert stale.headers["ETag"] == 'W/"2"'
    assert [e.version for e in await events_of(web, "order-2")] == [1, 2]


async def test_an_append_without_if_match_is_428_unless_the_caller_says_any(web: Web) -> None:
    response = await web.http.post(
        "/streams/order-3/events", json={"events": [placed(1)]}, headers=bearer(WRITE)
    )
    assert response.status_code == 428
    assert "If-Match" in response.json()["message"]
    assert await events_of(web, "order-3") == []

    star = await web.append("order-3", [placed(1)], if_match="*")
    assert star.status_code == 201
    query = await web.http.post(
        "/streams/order-3/events?expected_version=any",
        json={"events": [placed(2)]},
        headers=bearer(WRITE),
    )
    assert (query.status_code, query.json()["version"]) == (201, 2)
    exists = await web.http.post(
        "/streams/order-3/events?expected_version=no_stream",
        json={"events": [placed(3)]},
        headers=bearer(WRITE),
    )
    assert (exists.status_code, exists.json()["actual_version"]) == (412, 2)


async def test_resending_the_same_event_ids_is_a_retry(web: Web) -> None:
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    events = [placed(1, event_id=ids[0]), placed(2, event_id=ids[1])]
    first = await web.append("order-4", events, if_match='W/"0"')
    again = await web.append("order-4", events, if_match='W/"0"')
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {**first.json(), "retry": True}
    assert [str(e.event_id) for e in await events_of(web, "order-4")] == ids


async def test_one_event_with_envelope_and_stored_payload(web: Web) -> None:
    response = await web.append(
        "order-5",
        [placed(7, metadata={"actor": "ann"}, correlation_id="c-1", causation_id="cmd-1")],
    )
    await web.settled(response)
    detail = (await web.http.get("/streams/order-5/events/1")).json()
    assert detail["data"] == {"n": 7}
    assert detail["metadata"]["actor"] == "ann"
    assert (detail["correlation_id"], detail["causation_id"]) == ("c-1", "cmd-1")
    assert detail["stored"]["json"] == {"n": 7}
    assert detail["stored"]["encoding"] == "json"
    by_position = await web.http.get(f"/log/{detail['position']}")
    assert by_position.json() == detail
    missing = await web.http.get("/streams/order-5/events/2")
    assert (missing.status_code, missing.json()["field"]) == (404, "version")


# -- paging and filters ------------------------------------------------------------------------


async def collect(web: Web, path: str, **params: str) -> tuple[list[dict[str, Any]], int]:
    """Every event of a listing, following ``next``; and how many pages it took."""
    found: list[dict[str, Any]] = []
    pages = 0
    cursor: str | None = None
    while True:
        query = dict(params) | ({"cursor": cursor} if cursor else {})
        response = await web.http.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        found += body["events"]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            return found, pages
        assert pages < 100


async def test_a_stream_pages_forwards_and_backwards(web: Web) -> None:
    await web.append("order-6", [placed(i) for i in range(1, 21)], if_match='W/"0"')
    await web.append("order-6", [placed(i) for i in range(21, 26)], if_match='W/"20"')
    forwards, pages = await collect(web, "/streams/order-6/events", limit="10")
    assert [e["version"] for e in forwards] == list(range(1, 26))
    assert pages == 3
    backwards, _ = await collect(web, "/streams/order-6/events", limit="7", backwards="true")
    assert [e["version"] for e in backwards] == list(range(25, 0, -1))
    middle = await web.http.get("/streams/order-6/events", params={"from_version": "24"})
    assert [e["version"] for e in middle.json()["events"]] == [24, 25]


async def test_the_log_pages_and_filters_by_category_type_and_correlation(web: Web) -> None:
    for i in range(12):
        stream = f"{'order' if i % 2 else 'cart'}-{i}"
        event = {"type": "WebPlaced" if i % 3 else "WebNoted", "data": {"n": i}}
        last = await web.append(stream, [event], if_match='W/"0"')
        assert last.status_code == 201
        if i in (4, 9):
            last = await web.append(stream, [placed(100 + i, correlation_id="trace-7")])
    await web.settled(last)

    every, pages = await collect(web, "/log", limit="5")
    assert len(every) == 14
    assert pages == 3
    positions = [eventfold.Position.parse(e["position"]) for e in every]
    assert positions == sorted(positions)

    orders, _ = await collect(web, "/log", limit="4", category="order")
    assert {e["stream_id"].split("-")[0] for e in orders} == {"order"}
    assert len(orders) == 7
    noted, _ = await collect(web, "/log", limit="3", type="WebNoted")
    assert [e["data"]["n"] for e in noted] == [0, 3, 6, 9]
    traced, _ = await collect(web, "/log", limit="1", correlation_id="trace-7")
    assert [e["data"]["n"] for e in traced] == [104, 109]
    in_stream, _ = await collect(web, "/streams/order-9/events", limit="1", type="WebPlaced")
    assert [e["data"]["n"] for e in in_stream] == [109]
    after = await web.http.get("/log", params={"after": every[11]["position"]})
    assert [e["data"]["n"] for e in after.json()["events"]] == [e["data"]["n"] for e in every[12:]]


async def test_the_log_filters_by_time_range(web: Web) -> None:
    first = await web.append("timed-1", [placed(1)])
    await web.settled(first)
    detail = (await web.http.get("/streams/timed-1/events/1")).json()
    recorded = dt.datetime.fromisoformat(detail["recorded_at"])
    await asyncio.sleep(0.01)
    second = await web.append("timed-2", [placed(2)])
    await web.settled(second)
    later = (recorded + dt.timedelta(microseconds=1)).isoformat()
    since, _ = await collect(web, "/log", since=later)
    assert [e["stream_id"] for e in since] == ["timed-2"]
    until, _ = await collect(web, "/log", until=later)
    assert [e["stream_id"] for e in until] == ["timed-1"]
    exact, _ = await collect(web, "/log", since=recorded.isoformat(), until=later)
    assert [e["stream_id"] for e in exact] == ["timed-1"]


async def test_streams_are_listed_by_id_in_pages(web: Web) -> None:
    for name in ("b-1", "a-1", "a-2"):
        await web.append(name, [placed(1)], if_match='W/"0"')
    first = (await web.http.get("/streams", params={"limit": "2"})).json()
    assert [s["stream_id"] for s in first["streams"]] == ["a-1", "a-2"]
    rest = (await web.http.get("/streams", params={"cursor": first["next"]})).json()
    assert [s["stream_id"] for s in rest["streams"]] == ["b-1"]
    assert rest["next"] is None
    only_a = (await web.http.get("/streams", params={"category": "a"})).json()
    assert [s["stream_id"] for s in only_a["streams"]] == ["a-1", "a-2"]


# -- bad input: a 4xx naming what is wrong, nothing stored ---------------------------------


BAD_READS = [
    ("/log?limit=0", "limit"),
    ("/log?limit=51", "limit"),
    ("/log?limit=abc", "limit"),
    ("/log?cursor=nonsense", "cursor"),
    ("/log?after=-3", "after"),
    ("/log?since=yesterday", "since"),
    ("/log?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
    ("/streams/x-1/events?from_version=0", "from_version"),
    ("/streams/x-1/events?backwards=maybe", "backwards"),
    ("/streams/x-1/events/zero", "version"),
    ("/log/1:2:3", "position"),
]


@pytest.mark.parametrize(("path", "field"), BAD_READS)
async def test_bad_read_parameters_are_400_naming_the_parameter(
    web: Web, path: str, field: str
) -> None:
    response = await web.http.get(path)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == field
    assert body["error"] == "invalid_input"
    assert len(body["message"]) > 20


BAD_APPENDS: list[tuple[Any, dict[str, str], int, str]] = [
    (b"{not json", {}, 400, "body"),
    ({"events": []}, {}, 400, "$.events"),
    ({"events": [{"type": "T"}]}, {}, 400, "$.events[0]"),
    ({"events": [{"type": "T", "data": [1]}]}, {}, 400, "$.events[0].data"),
    ({"events": [{"type": "T", "data": {}, "colour": 1}]}, {}, 400, "$.events[0]"),
    ({"events": [{"type": "T", "data": {}, "event_id": "x"}]}, {}, 400, "$.events[0].event_id"),
    ({"events": [{"type": "$T", "data": {}}]}, {}, 400, "events[0].type"),
    ({"events": [placed(1)]}, {"If-Match": "yesterday"}, 400, "If-Match"),
    ({"events": [placed(1)]}, {"If-Match": 'W/"1", W/"2"'}, 400, "If-Match"),
    ({"events": [placed(1)] * 21}, {}, 413, "events"),
    ({"events": [placed(1, metadata={"pad": "x" * 20_000})]}, {}, 413, "body"),
    ({"events": [placed(1)]}, {"Content-Type": "text/plain"}, 415, "Content-Type"),
]


@pytest.mark.parametrize(("body", "headers", "status", "field"), BAD_APPENDS)
async def test_bad_appends_are_refused_naming_the_field_and_store_nothing(
    web: Web, body: Any, headers: dict[str, str], status: int, field: str
) -> None:
    sent = {"If-Match": "*", "Content-Type": "application/json", **bearer(WRITE), **headers}
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    response = await web.http.post("/streams/order-9/events", content=content, headers=sent)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert await events_of(web, "order-9") == []
    assert await web.store.head() == eventfold.START


async def test_a_system_stream_cannot_be_appended_to(web: Web) -> None:
    response = await web.append("$audit", [placed(1)])
    assert (response.status_code, response.json()["field"]) == (400, "stream_id")
    assert await events_of(web, "$audit") == []


async def test_unknown_routes_and_methods_answer_json(web: Web) -> None:
    missing = await web.http.get("/nowhere")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    wrong = await web.http.delete("/log")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")


# -- authorisation ---------------------------------------------------------------------------


WRITE_ROUTES = [
    ("POST", "/streams/order-1/events", {"events": [placed(1)]}, "write"),
    ("POST", "/projections/web_totals/parked/replay", {}, "admin"),
    ("POST", "/projections/web_totals/rebuild", {}, "admin"),
]


def refusals(needed: str) -> list[tuple[dict[str, str], int]]:
    found = [
        ({}, 401),
        (bearer("not-a-token"), 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        (bearer(READ), 403),
    ]
    if needed == "admin":
        found.append((bearer(WRITE), 403))
    return found


@pytest.mark.parametrize(("method", "path", "body", "needed"), WRITE_ROUTES)
async def test_every_write_and_admin_route_refuses_a_missing_wrong_or_weak_token(
    sql_url: str, method: str, path: str, body: dict[str, Any], needed: str
) -> None:
    async with serving(sql_url, projections=(web_totals(),)) as web:
        for headers, status in refusals(needed):
            response = await web.http.request(
                method, path, json=body, headers={**headers, "If-Match": "*"}
            )
            assert response.status_code == status, (headers, response.text)
            assert response.json()["field"] == "Authorization"
            if status == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert await web.store.head() == eventfold.START  # not even an audit record


async def test_reads_are_open_by_default_and_need_a_token_when_asked(sql_url: str) -> None:
    async with serving(sql_url) as web:
        assert (await web.http.get("/log")).status_code == 200
        wrong = await web.http.get("/log", headers=bearer("not-a-token"))
        assert wrong.status_code == 401
    async with serving(sql_url, read_token=True) as web:
        assert (await web.http.get("/log")).status_code == 401
        assert (await web.http.get("/log", headers=bearer(READ))).status_code == 200
        assert (await web.http.get("/projections", headers=bearer(ADMIN))).status_code == 200


# -- projections -----------------------------------------------------------------------------


class Refuse:
    """The amounts the test projection fails on (changed to let a replay succeed)."""

    amounts: frozenset[int] = frozenset({13})


def web_totals(version: int = 1) -> DocumentProjection[dict[str, Any]]:
    p = DocumentProjection(
        "web_totals",
        document=dict,
        version=version,
        poison=PoisonPolicy(action="park", retries=0, backoff=0.0),
    )

    @p.on("WebPlaced")
    def on_placed(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        if event.data["n"] in Refuse.amounts:
            raise ValueError(f"{event.data['n']} is refused")
        return {"total": doc.get("total", 0) + event.data["n"]}

    return p


async def wait_rebuilt(web: Web, name: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        body: dict[str, Any] = (await web.http.get(f"/projections/{name}/rebuild")).json()
        if body["state"] != "running":
            return body
        assert loop.time() < deadline, body
        await asyncio.sleep(0.02)


async def test_projection_status_parked_replay_and_rebuild_are_audited(sql_url: str) -> None:
    Refuse.amounts = frozenset({13})
    async with serving(sql_url, projections=(web_totals(),)) as web:
        last = await web.append("order-1", [placed(5), placed(13), placed(7)])
        await web.settled(last)
        before = (await web.http.get("/projections/web_totals")).json()
        assert (before["state"], before["lag_events"], before["parked"]) == ("new", 3, 0)

        started = await web.http.post("/projections/web_totals/rebuild", headers=bearer(ADMIN))
        assert started.status_code == 202, started.text
        assert started.json()["state"] in ("running", "done")
        done = await wait_rebuilt(web, "web_totals")
        assert done["state"] == "done", done
        assert done["progress"]
        assert done["progress"][-1]["done"] >= 1
        assert done["status"]["state"] == "active"

        status = (await web.http.get("/projections")).json()
        (only,) = status
        assert (only["state"], only["lag_events"], only["parked"]) == ("active", 0, 1)
        assert only["lag_seconds"] == 0
        parked = (await web.http.get("/projections/web_totals/parked")).json()
        assert [(p["stream_id"], p["type"]) for p in parked] == [("order-1", "WebPlaced")]
        assert "13 is refused" in parked[0]["error"]

        again = await web.http.post("/projections/web_totals/rebuild", headers=bearer(ADMIN))
        assert (again.status_code, again.json()["field"]) == (400, "name")

        failing = await web.http.post(
            "/projections/web_totals/parked/replay", json={}, headers=bearer(ADMIN)
        )
        assert failing.status_code == 200
        assert (failing.json()["replayed"], len(failing.json()["failed"])) == ([], 1)

        Refuse.amounts = frozenset()
        replayed = await web.http.post(
            "/projections/web_totals/parked/replay",
            json={"positions": [parked[0]["position"]]},
            headers=bearer(ADMIN),
        )
        assert replayed.json() == {"replayed": [parked[0]["position"]], "failed": []}
        assert (await web.http.get("/projections/web_totals")).json()["parked"] == 0

        audit = [e async for e in web.store.read_stream(AUDIT_STREAM)]
        assert [(e.type, e.data["action"]) for e in audit] == [
            ("$AdminAction", "rebuild"),
            ("$AdminAction", "replay_parked"),
            ("$AdminAction", "replay_parked"),
        ]
        assert all(e.data["target"] == "projection:web_totals" for e in audit)
        assert all(len(e.data["token"]) == 12 for e in audit)
        assert ADMIN not in str([e.metadata for e in audit])

        unknown = await web.http.get("/projections/nope")
        assert unknown.status_code == 404
        assert "web_totals" in unknown.json()["message"]
        bad = await web.http.post(
            "/projections/web_totals/parked/replay",
            json={"positions": ["x"]},
            headers=bearer(ADMIN),
        )
        assert (bad.status_code, bad.json()["field"]) == (400, "positions[0]")


async def test_the_schema_registry_is_readable(web: Web) -> None:
    class WebSchemaEvent(eventfold.Event):
        sku: str

    await eventfold.schema.publish(web.store, [WebSchemaEvent])
    listing = (await web.http.get("/schemas")).json()
    assert [(t["type"], t["version"], t["records"]) for t in listing] == [("WebSchemaEvent", 1, 1)]
    (record,) = (await web.http.get("/schemas/WebSchemaEvent")).json()
    assert "sku" in str(record["schema"])
    assert (await web.http.get("/schemas/Nope")).status_code == 404


async def test_a_raw_append_is_checked_against_the_schema_registry(web: Web) -> None:
    class WebChecked(eventfold.Event):
        sku: str

    await eventfold.schema.publish(web.store, [WebChecked])
    bad = await web.append("checked-1", [{"type": "WebChecked", "data": {"sku": 5}}])
    assert bad.status_code == 400, bad.text
    assert "sku" in bad.json()["message"]
    assert await events_of(web, "checked-1") == []


async def test_an_event_that_no_longer_decodes_is_shown_as_stored(web: Web) -> None:
    name = f"WebShape{uuid.uuid4().hex[:8]}"  # a class outlives the test in the registry
    stored = await web.append("shape-1", [{"type": name, "data": {"size": "large"}}])
    await web.settled(stored)

    class WebShape(eventfold.Event):  # the code now says size is an int
        __event_type__: ClassVar[str] = name
        size: int

    page = (await web.http.get("/log")).json()
    (event,) = page["events"]
    assert event["data"] is None
    assert "size" in event["undecodable"]
    assert "stored_type" not in event  # stored as it reads: nothing was upcast
    detail = (await web.http.get("/streams/shape-1/events/1")).json()
    assert detail["stored"]["json"] == {"size": "large"}
    assert detail["stored"]["exact"] is True


async def test_fields_that_say_nothing_are_left_out_of_pages_and_details_alike(web: Web) -> None:
    name = f"WebMoved{uuid.uuid4().hex[:8]}"  # a class outlives the test in the registry

    class WebMoved(eventfold.Event):
        __event_type__: ClassVar[str] = name
        __schema_version__: ClassVar[int] = 2
        where: str

    eventfold.default_registry.upcaster(name, from_version=1)(lambda d: {"where": d["place"]})
    old = {"type": name, "data": {"place": "dock"}, "schema_version": 1}
    new = {"type": name, "data": {"where": "yard"}, "correlation_id": "c-2"}
    await web.settled(await web.append("moved-1", [old, new]))

    envelope = {
        "event_id", "stream_id", "version", "position", "type", "schema_version", "data",
        "metadata", "recorded_at",
    }  # fmt: skip
    stream = (await web.http.get("/streams/moved-1/events")).json()["events"]
    log = (await web.http.get("/log")).json()["events"]
    assert log == stream
    upcast, plain = stream
    assert set(upcast) == envelope | {"stored_type", "stored_schema_version"}
    assert (upcast["type"], upcast["schema_version"]) == (name, 2)
    assert upcast["data"] == {"where": "dock"}
    assert (upcast["stored_type"], upcast["stored_schema_version"]) == (name, 1)
    assert set(plain) == envelope | {"correlation_id"}
    assert (plain["correlation_id"], plain["data"]) == ("c-2", {"where": "yard"})
    for listed in stream:
        detail = (await web.http.get(f"/streams/moved-1/events/{listed['version']}")).json()
        assert {k: v for k, v in detail.items() if k != "stored"} == listed
        assert (await web.http.get(f"/log/{listed['position']}")).json() == detail


async def test_a_page_written_from_stored_rows_is_the_page_of_the_events(web: Web) -> None:
    assert isinstance(web.store, SupportsRowReads)  # unfiltered pages are written from rows
    name = f"WebKept{uuid.uuid4().hex[:8]}"  # a class outlives the test in the registry

    class WebKept(eventfold.Event):
        __event_type__: ClassVar[str] = name
        __schema_version__: ClassVar[int] = 2
        n: int

    eventfold.default_registry.upcaster(name, from_version=1)(lambda d: {"n": d["count"]})
    events = [
        placed(1, correlation_id="c-1"),
        {"type": name, "data": {"n": 2}},
        {"type": name, "data": {"count": 3}, "schema_version": 1},
        placed(4, metadata={"actor": "ann"}, causation_id="e-3"),
        {"type": name, "data": {"n": 5}},
    ]
    await web.settled(await web.append("mixed-1", events))
    # A time filter is applied above the store, so those pages are written from events.
    everything = {"since": "1970-01-01T00:00:00Z"}
    for path in ("/streams/mixed-1/events", "/log"):
        for query in ({}, {"limit": "2"}, {"limit": "2", "backwards": "true"}):
            from_rows = await web.http.get(path, params=query)
            from_events = await web.http.get(path, params=query | everything)
            assert from_rows.status_code == 200, from_rows.text
            assert from_rows.content == from_events.content
            assert from_rows.json()["events"]
