"""The HTTP API: the event store, its projections and its schema registry over HTTP.

::

    from eventfold.web import create_app, hash_token

    app = create_app(store, projections=[orders], tokens={hash_token(secret): "write"})
    # uvicorn mymodule:app, or `eventfold serve --app mymodule`, or mount it:
    # Starlette(routes=[Mount("/events", app)])

Reads are open and writing and admin routes need a bearer token with a role (`Role`);
tokens are stored hashed (`hash_token`). Every admin action is first recorded as an
``$AdminAction`` event in the ``$audit`` stream. ``/openapi.json`` describes every route.
Needs the ``web`` extra: ``pip install "eventfold[web]"``. See docs/http-api.md.
"""

from __future__ import annotations

from ._api import AUDIT_EVENT_TYPE, AUDIT_STREAM, Limits
from ._app import create_app
from ._auth import Role, Tokens, hash_token, new_token
from ._errors import status_of
from ._openapi import openapi_document

__all__ = [
    "AUDIT_EVENT_TYPE",
    "AUDIT_STREAM",
    "Limits",
    "Role",
    "Tokens",
    "create_app",
    "hash_token",
    "new_token",
    "openapi_document",
    "status_of",
]
