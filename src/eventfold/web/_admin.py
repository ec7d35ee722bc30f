"""Projections (status, lag, parked events, replay, rebuild with progress) and the schema
registry, and forgetting a data subject. Replay, rebuild and forgetting need the admin role
and are recorded in ``$audit`` first."""

from __future__ import annotations

import asyncio
import datetime as _dt
import time
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from .. import schema
from ..errors import EventfoldError
from ..projections import (
    BuildProgress,
    Leases,
    MemoryLeases,
    ProjectionStatus,
    projection_status,
    projection_statuses,
    rebuild,
    replay_parked,
)
from ..store import backend_of
from ._api import Api, RebuildJob
from ._auth import Role
from ._errors import ApiError, json_response
from ._params import bad, position, read_body
from ._render import iso, parked_out, progress_out, projection_out, schema_record_out
from ._types import (
    ForgetIn,
    ForgetOut,
    RebuildIn,
    RebuildOut,
    ReplayIn,
    ReplayOut,
    SchemaTypeOut,
)

__all__ = [
    "forget_subject",
    "parked",
    "projection",
    "projections",
    "rebuild_progress",
    "replay",
    "schema_type",
    "schemas",
    "start_rebuild",
]


async def projections(api: Api, request: Request) -> Response:
    """GET /projections: every projection's status."""
    api.authorize(request, Role.READ)
    models = api.read_models()
    statuses = await projection_statuses(api.store, models, api.projections)
    found = [projection_out(status) for status in statuses]
    return json_response(found)


async def projection(api: Api, request: Request) -> Response:
    """GET /projections/{name}: one projection's status, lag and last error."""
    api.authorize(request, Role.READ)
    p = api.projection(request.path_params["name"])
    status = await projection_status(api.store, api.read_models(), p)
    return json_response(projection_out(status))


async def parked(api: Api, request: Request) -> Response:
    """GET /projections/{name}/parked: the events its handler kept failing on."""
    api.authorize(request, Role.READ)
    p = api.projection(request.path_params["name"])
    found = await api.read_models().parked(p.name, p.version)
    return json_response([parked_out(e) for e in found])


T = TypeVar("T")


async def _optional_body(api: Api, request: Request, body_type: type[T], empty: T) -> T:
    if request.headers.get("content-length") in (None, "0") and "chunked" not in (
        request.headers.get("transfer-encoding", "")
    ):
        return empty
    return await read_body(request, api.limits.max_body_bytes, body_type)


async def replay(api: Api, request: Request) -> Response:
    """POST /projections/{name}/parked/replay: apply parked events again (admin)."""
    caller = api.authorize(request, Role.ADMIN)
    p = api.projection(request.path_params["name"])
    body = await _optional_body(api, request, ReplayIn, ReplayIn())
    wanted = None
    if body.positions is not None:
        wanted = {position(text, f"positions[{i}]") for i, text in enumerate(body.positions)}
    await api.audit(
        caller,
        "replay_parked",
        f"projection:{p.name}",
        version=p.version,
        positions=None if wanted is None else sorted(str(w) for w in wanted),
    )
    result = await replay_parked(api.store, api.read_models(), p, positions=wanted)
    return json_response(
        ReplayOut(
            replayed=[str(r) for r in result.replayed],
            failed=[parked_out(f) for f in result.failed],
        )
    )


def _now_us() -> int:
    return time.time_ns() // 1000


def _leases(api: Api) -> Leases:
    backend = backend_of(api.store)
    if backend is None or backend.leases is None:
        return MemoryLeases()
    return backend.leases(api.store)


async def start_rebuild(api: Api, request: Request) -> Response:
    """POST /projections/{name}/rebuild: build the definition's version beside the live
    one, then swap readers to it (admin). Returns at once; GET the same path for progress."""
    caller = api.authorize(request, Role.ADMIN)
    p = api.projection(request.path_params["name"])
    body = await _optional_body(api, request, RebuildIn, RebuildIn())
    running = api.rebuilds.get(p.name)
    if running is not None and running.task is not None and not running.task.done():
        raise ApiError(
            409,
            "rebuild_running",
            f"projection {p.name!r} v{running.version} is already being rebuilt; follow it "
            f"with GET /projections/{p.name}/rebuild",
        )
    active = await api.read_models().active_version(p.name)
    if active == p.version:
        raise bad(
            "name",
            f"projection {p.name!r} v{p.version} is already the active version; deploy a "
            "definition with a higher version to rebuild it beside the live one",
        )
    await api.audit(caller, "rebuild", f"projection:{p.name}", version=p.version,
                    restart=body.restart)  # fmt: skip
    job = RebuildJob(name=p.name, version=p.version, started_us=_now_us())
    dependencies = [d for d in api.projections if d.name in p.depends_on]

    def report(progress: BuildProgress) -> None:
        if progress.name == p.name:
            job.progress[progress.partition] = progress

    async def run() -> ProjectionStatus:
        leases = _leases(api)
        try:
            status = await rebuild(
                api.store,
                api.read_models(),
                p,
                dependencies=dependencies,
                progress=report,
                restart=body.restart,
                leases=leases,
            )
            job.status = status
            return status
        except EventfoldError as exc:
            job.error = " ".join(str(exc).split())
            raise
        except Exception as exc:
            job.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            job.finished_us = _now_us()
            close = getattr(leases, "close", None)
            if close is not None:
                await close()

    job.task = asyncio.create_task(run(), name=f"eventfold.web rebuild {p.name}")
    # The outcome is read from the job; retrieving it here keeps asyncio quiet.
    job.task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
    api.rebuilds[p.name] = job
    return json_response(_job_out(job), 202, headers={"Location": f"projections/{p.name}/rebuild"})


def _job_out(job: RebuildJob) -> RebuildOut:
    if job.task is None or not job.task.done():
        state = "running"
    elif job.status is not None:
        state = "done"
    else:
        state = "failed"
    epoch = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
    return RebuildOut(
        name=job.name,
        version=job.version,
        state=state,
        started_at=iso(epoch + _dt.timedelta(microseconds=job.started_us)),
        finished_at=None
        if job.finished_us is None
        else iso(epoch + _dt.timedelta(microseconds=job.finished_us)),
        error=job.error if state == "failed" else None,
        progress=[progress_out(job.progress[k]) for k in sorted(job.progress)],
        status=None if job.status is None else projection_out(job.status),
    )


async def rebuild_progress(api: Api, request: Request) -> Response:
    """GET /projections/{name}/rebuild: the progress of the rebuild this server started."""
    api.authorize(request, Role.READ)
    p = api.projection(request.path_params["name"])
    job = api.rebuilds.get(p.name)
    if job is None:
        raise ApiError(
            404,
            "not_found",
            f"this server has not rebuilt projection {p.name!r}; start one with POST "
            f"/projections/{p.name}/rebuild",
        )
    return json_response(_job_out(job))


async def schemas(api: Api, request: Request) -> Response:
    """GET /schemas: the types in the store's schema registry, with their newest version."""
    api.authorize(request, Role.READ)
    stored = await schema.load(api.store, install=False)
    rows = []
    for name in stored.types():
        latest = stored.latest(name)
        if latest is None:
            continue
        rows.append(
            SchemaTypeOut(
                type=name,
                version=latest.version,
                records=len(stored.history(name)),
                recorded_at=iso(latest.recorded_at),
            )
        )
    return json_response(rows)


async def schema_type(api: Api, request: Request) -> Response:
    """GET /schemas/{type}: every recorded schema of one type, oldest first."""
    api.authorize(request, Role.READ)
    name: str = request.path_params["type"]
    records = await schema.history(api.store, name)
    if not records:
        raise ApiError(404, "not_found", f"no schema is recorded for type {name!r}", field="type")
    return json_response([schema_record_out(r) for r in records])


async def forget_subject(api: Api, request: Request) -> Response:
    """POST /privacy/forget: forget a data subject (crypto-shredding; admin)."""
    caller = api.authorize(request, Role.ADMIN)
    body = await read_body(request, api.limits.max_body_bytes, ForgetIn)
    if api.privacy is None:
        raise ApiError(
            409,
            "privacy_not_enabled",
            "crypto-shredding is not enabled on this app; pass "
            "privacy=eventfold.privacy.enable(store) to create_app",
        )
    await api.audit(caller, "forget_subject", f"subject:{body.subject}", reason=body.reason)
    result = await api.privacy.forget(
        body.subject, reason=body.reason, actor=f"token:{caller.token}"
    )
    return json_response(
        ForgetOut(
            subject=result.subject,
            keys_deleted=result.keys_deleted,
            position=str(result.audit.position),
        )
    )
