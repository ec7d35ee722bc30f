"""Crypto-shredding over HTTP: events say which personal fields were erased, on every
read route (pages built from stored rows and from events, one event, live), and admins
forget a data subject with POST /privacy/forget, recorded in $audit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest

import eventfold
import eventfold.privacy
from eventfold.privacy import AUDIT_STREAM as FORGOTTEN_STREAM
from eventfold.privacy import Personal
from eventfold.web import AUDIT_STREAM
from test_web_live import frames, uvicorn_serving
from web_client import ADMIN, READ, WRITE, Web, bearer, serving


class WebMemberJoined(eventfold.Event):
    member_id: str
    referrer_id: str
    name: Annotated[str, Personal(subject="member_id", replacement="<erased>")]
    email: Annotated[str, Personal(subject="member_id")]
    referrer_name: Annotated[str, Personal(subject="referrer_id", replacement="?")]
    plan: str


def joined(member: str, referrer: str, plan: str = "basic") -> WebMemberJoined:
    return WebMemberJoined(
        member_id=member,
        referrer_id=referrer,
        name=f"name of {member}",
        email=f"{member}@example.org",
        referrer_name=f"name of {referrer}",
        plan=plan,
    )


@pytest.fixture
async def web(sql_url: str) -> AsyncIterator[Web]:
    async with serving(sql_url, privacy=True) as client:
        await client.store.append(
            "member-1",
            [joined("m1", "m2"), eventfold.NewEvent({"n": 1}, type="WebNoted")],
            expected_version=eventfold.NO_STREAM,
        )
        result = await client.store.append(
            "member-2", [joined("m2", "m3", "gold")], expected_version=eventfold.NO_STREAM
        )
        await eventfold.testing.settle(client.store, result.position)
        yield client


async def forget(web: Web, subject: str, token: str = ADMIN, **body: Any) -> httpx.Response:
    return await web.http.post(
        "/privacy/forget", json={"subject": subject, **body}, headers=bearer(token)
    )


def by_stream(events: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(e["stream_id"], e["version"]): e for e in events}


async def test_reads_show_plain_values_and_no_erasure_before_a_forget(web: Web) -> None:
    page = (await web.http.get("/streams/member-1/events")).json()["events"]
    assert page[0]["data"]["name"] == "name of m1"
    assert "erased" not in page[0]
    assert "erased" not in page[1]


async def test_a_forgotten_subjects_fields_read_as_erased_on_every_read_route(web: Web) -> None:
    response = await forget(web, "m2", reason="erasure request 7")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["subject"], body["keys_deleted"]) == ("m2", 1)
    await eventfold.testing.settle(web.store, eventfold.Position.parse(body["position"]))

    # The stream's page, built from stored rows (no filter) and from events (a filter).
    for query in ("", "?type=WebMemberJoined"):
        first = (await web.http.get("/streams/member-1/events" + query)).json()["events"][0]
        assert first["erased"] == ["referrer_name"], query
        assert first["data"]["referrer_name"] == "?"
        assert first["data"]["name"] == "name of m1"  # m1 is not forgotten
        second = (await web.http.get("/streams/member-2/events" + query)).json()["events"][0]
        assert second["erased"] == ["name", "email"], query
        assert (second["data"]["name"], second["data"]["email"]) == ("<erased>", "")
        assert second["data"]["referrer_name"] == "name of m3"

    log = by_stream((await web.http.get("/log")).json()["events"])
    assert log[("member-1", 1)]["erased"] == ["referrer_name"]
    assert log[("member-2", 1)]["erased"] == ["name", "email"]
    assert "erased" not in log[("member-1", 2)]  # not a personal event

    detail = (await web.http.get("/streams/member-2/events/1")).json()
    assert detail["erased"] == ["name", "email"]
    assert detail["position"] == log[("member-2", 1)]["position"]
    by_position = (await web.http.get("/log/" + detail["position"])).json()
    assert by_position["erased"] == ["name", "email"]
    # The stored bytes never held the personal values.
    assert "m2@example.org" not in str(detail["stored"]["json"])


async def test_live_events_say_which_fields_were_erased(web: Web) -> None:
    await forget(web, "m1")
    async with (
        uvicorn_serving(web.store) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        client.stream(
            "GET", "/subscribe", params={"type": "WebMemberJoined", "after": "0"}
        ) as live,
    ):
        assert live.status_code == 200
        seen: list[dict[str, Any]] = []
        async for frame in frames(live):
            seen += [json.loads(text) for text in frame.data]
            if len(seen) == 2:
                break
    assert [e["stream_id"] for e in seen] == ["member-1", "member-2"]
    assert seen[0]["erased"] == ["name", "email"]
    assert "erased" not in seen[1]


async def test_forgetting_is_recorded_in_the_audit_stream_first(web: Web) -> None:
    response = await forget(web, "m3", reason="asked by email")
    assert response.status_code == 200, response.text
    audit = [e async for e in web.store.read_stream(AUDIT_STREAM)]
    assert audit[-1].data["action"] == "forget_subject"
    assert audit[-1].data["target"] == "subject:m3"
    assert audit[-1].data["detail"] == {"reason": "asked by email"}
    forgotten = [e async for e in web.store.read_stream(FORGOTTEN_STREAM)]
    assert forgotten[-1].data.subject == "m3"
    assert forgotten[-1].data.keys_deleted == 1
    assert forgotten[-1].data.actor == audit[-1].metadata["actor"]


@pytest.mark.parametrize(
    ("token", "status"), [(None, 401), ("wrong-token", 401), (READ, 403), (WRITE, 403)]
)
async def test_forgetting_needs_an_admin_token(web: Web, token: str | None, status: int) -> None:
    headers = {} if token is None else bearer(token)
    response = await web.http.post("/privacy/forget", json={"subject": "m1"}, headers=headers)
    assert response.status_code == status, response.text
    page = (await web.http.get("/streams/member-1/events")).json()["events"]
    assert page[0]["data"]["name"] == "name of m1"  # nothing forgotten


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "subject"),
        ({"subject": ""}, "subject"),
        ({"subject": "m1", "reason": 5}, "reason"),
        ({"subject": "m1", "extra": 1}, "extra"),
    ],
)
async def test_a_bad_forget_body_is_400_naming_the_field(
    web: Web, body: dict[str, Any], field: str
) -> None:
    response = await web.http.post("/privacy/forget", json=body, headers=bearer(ADMIN))
    assert response.status_code == 400, response.text
    assert field in response.text
    page = (await web.http.get("/streams/member-1/events")).json()["events"]
    assert page[0]["data"]["name"] == "name of m1"


async def test_forget_without_privacy_on_the_app_is_409_saying_how(sql_url: str) -> None:
    async with serving(sql_url) as client:
        response = await forget(client, "m1")
        assert response.status_code == 409
        assert "eventfold.privacy.enable" in response.json()["message"]
        assert [e async for e in client.store.read_stream(AUDIT_STREAM)] == []
