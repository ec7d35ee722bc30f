"""The web console: HTML pages over the HTTP API, served by the same app at ``/console``.

One page, a small script and a style sheet, shipped in the package (no CDN). The script
calls the API's routes relative to the console, so the app may be mounted anywhere. Event
data is only ever set as text (``textContent``), and every console response carries a
Content-Security-Policy that allows no inline script and no other origin.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

__all__ = ["CONSOLE_HEADERS", "console_routes"]

CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
"""The headers of every console response."""

_ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


def _asset(name: str) -> bytes:
    return resources.files("eventfold.web").joinpath("static", name).read_bytes()


async def _index(request: Request) -> Response:
    return Response(_asset("console.html"), media_type="text/html; charset=utf-8",
                    headers=CONSOLE_HEADERS)  # fmt: skip


async def _static(request: Request) -> Response:
    name: str = request.path_params["name"]
    media = _ASSETS.get(name)
    if media is None:
        return Response(
            f"no console asset {name!r}", status_code=404, media_type="text/plain",
            headers=CONSOLE_HEADERS,
        )  # fmt: skip
    return Response(_asset(name), media_type=media, headers=CONSOLE_HEADERS)


def console_routes() -> list[Mount]:
    """The console: ``/console/`` and its assets under ``/console/static/`` (``/console``
    is redirected to ``/console/``). Not API routes: they are not in the OpenAPI
    document."""
    return [
        Mount(
            "/console",
            routes=[
                Route("/", _index, methods=["GET"]),
                Route("/static/{name}", _static, methods=["GET"]),
            ],
        )
    ]
