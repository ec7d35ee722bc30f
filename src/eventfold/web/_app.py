"""`create_app`: the HTTP API as a Starlette application."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ExceptionHandler, Lifespan, Receive, Scope, Send

from ..metrics import Metrics
from ..privacy import Privacy
from ..projections import ProjectionBase, ReadModelStore, check_unique_names
from ..relay import Relay
from ..store import EventStore
from ._api import Api, Limits, guarded
from ._append import append_target, serve_append
from ._auth import Role, Tokens
from ._console import console_routes
from ._errors import json_response
from ._openapi import openapi_document
from ._routes import ROUTES
from ._types import ErrorOut

__all__ = ["create_app"]


def create_app(
    store: EventStore,
    *,
    projections: Sequence[ProjectionBase] = (),
    tokens: Tokens | Mapping[str, Role | str] | None = None,
    read_token: bool = False,
    limits: Limits | None = None,
    cors_origins: Sequence[str] = (),
    models: ReadModelStore | None = None,
    open_store: bool = True,
    relays: Sequence[Relay] = (),
    metrics: Metrics | None = None,
    stall_seconds: float = 60.0,
    privacy: Privacy | None = None,
) -> Starlette:
    """The HTTP API over ``store`` as an ASGI app (Starlette).

    - ``projections``: those whose status, parked events, replay and rebuild it serves;
    - ``tokens``: the accepted bearer tokens, as `Tokens` or a mapping of `hash_token`
      values to roles. Reads are open and everything else refused without them;
      ``read_token=True`` makes reads need a token too;
    - ``limits``: body, page and subscription bounds (`Limits`);
    - ``cors_origins``: origins allowed to call it from a browser (none by default);
    - ``models``: the read models of the projections (default: `read_models_for(store)`);
    - ``open_store``: whether the app's lifespan opens and closes the store. Mounted
      inside another app (whose lifespan does not run a mounted app's), open the store
      in the host's lifespan instead.
    - ``relays``: those whose lag, parked messages and stalls ``/metrics`` and
      ``/health`` report;
    - ``metrics``: what ``/metrics`` and ``/health`` serve (default: a `Metrics` over
      the store, ``projections`` and ``relays``, instrumenting the store's appends);
    - ``stall_seconds``: how long a projection or relay may be behind without its
      checkpoint moving before ``/health`` reports it stalled (503);
    - ``privacy``: crypto-shredding on ``store`` (`eventfold.privacy.enable`), for
      ``POST /privacy/forget``. The lifespan follows the audit stream with it
      (`Privacy.follow`), so a subject forgotten by any process stops opening here at
      once. Events show which personal fields were erased either way.

    The web console (HTML pages over this API) is served at ``/console/``.
    """
    if projections:
        check_unique_names(list(projections))
    accepted = tokens if isinstance(tokens, Tokens) else Tokens(tokens)
    api = Api(
        store=store,
        projections=tuple(projections),
        tokens=accepted,
        limits=limits or Limits(),
        read_token=read_token,
        models=models,
        privacy=privacy,
    )
    document = msgspec.json.encode(openapi_document(read_token=read_token))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    routes = [Route(r.path, guarded(r.handler, api), methods=[r.method]) for r in ROUTES]
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    if metrics is None:
        if models is None and projections:
            models = api.read_models()  # the routes' own, so memory:// shares it
        metrics = Metrics(
            store, projections=projections, relays=relays, models=models,
            stall_seconds=stall_seconds,
        )  # fmt: skip
        metrics.instrument()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if open_store:
            await store.open()
        try:
            async with contextlib.AsyncExitStack() as following:
                if privacy is not None:
                    await following.enter_async_context(privacy.follow())
                yield
        finally:
            await api.close()
            if open_store:
                await store.close()

    middleware = []
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "If-Match", "Last-Event-ID"],
                expose_headers=["ETag", "Location"],
            )
        )
    app = _App(
        api,
        routes=[*routes, *console_routes()],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.eventfold = api
    app.state.eventfold_metrics = metrics
    return app


class _App(Starlette):
    """Starlette, answering appends itself while nothing is wrapped around the routes.

    Appends are the one route a busy client calls as fast as the server answers; passing
    them by Starlette's middleware stack and router costs about 20 µs per request, more
    than the API's own checks. The answer is the same as the route's (`serve_append`);
    with middleware (``cors_origins``, ``add_middleware``), exception handlers of the
    host's, or a ``root_path`` (a mounted app), every request takes the usual way.
    """

    def __init__(
        self,
        api: Api,
        *,
        routes: Sequence[BaseRoute],
        middleware: Sequence[Middleware],
        lifespan: Lifespan[Starlette],
        exception_handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        super().__init__(
            routes=routes,
            middleware=middleware,
            lifespan=lifespan,
            exception_handlers=exception_handlers,
        )
        self._api = api
        self._own_handlers = len(self.exception_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not self.user_middleware
            and len(self.exception_handlers) == self._own_handlers
        ):
            stream_id = append_target(scope["path"])
            if stream_id is not None:
                scope["app"] = self
                await serve_append(self._api, stream_id, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    messages = {
        404: f"no route {request.url.path!r}; see /openapi.json for the routes",
        405: f"{request.method} is not allowed on {request.url.path!r}; see /openapi.json",
    }
    body = ErrorOut(
        error=codes.get(exc.status_code, "http_error"),
        message=messages.get(exc.status_code, str(exc.detail)),
    )
    return json_response(body, exc.status_code, dict(exc.headers or {}))
