"""The one place errors become HTTP statuses and JSON bodies (`ErrorOut`).

| error | status |
|---|---|
| `InvalidInput` (and a bad parameter, header, cursor or body) | 400 |
| `EventTooLarge`, a body over the limit | 413 |
| `WrongExpectedVersion` | 412, with the stream's actual version |
| missing ``If-Match`` | 428 |
| other `ConcurrencyError` | 409 |
| `DecodeError`, `IncompatibleSchema`, `ProjectionError` | 409 |
| no or unknown token / a token without the role | 401 / 403 |
| `StoreUnavailable`, `StoreClosed` | 503 |
| `StoreReadOnly` | 403 |
| any other `EventfoldError` | 409 |
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from ..errors import (
    ConcurrencyError,
    DecodeError,
    EventfoldError,
    EventTooLarge,
    IncompatibleSchema,
    InvalidInput,
    ProjectionError,
    StoreClosed,
    StoreReadOnly,
    StoreUnavailable,
    WrongExpectedVersion,
)
from ._types import ErrorOut

__all__ = ["ApiError", "encode_json", "error_response", "json_response", "status_of"]

_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """A request the API refuses: a status and an `ErrorOut` body."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorOut(error=error, message=message, field=field, **extra)
        self.headers = headers or {}


_STATUSES: tuple[tuple[type[EventfoldError], int, str], ...] = (
    (EventTooLarge, 413, "event_too_large"),
    (InvalidInput, 400, "invalid_input"),
    (WrongExpectedVersion, 412, "wrong_expected_version"),
    (ConcurrencyError, 409, "conflict"),
    (DecodeError, 409, "undecodable"),
    (IncompatibleSchema, 409, "incompatible_schema"),
    (ProjectionError, 409, "projection_error"),
    (StoreUnavailable, 503, "store_unavailable"),
    (StoreClosed, 503, "store_closed"),
    (StoreReadOnly, 403, "store_read_only"),
)


def status_of(exc: EventfoldError) -> tuple[int, str]:
    """The status and error code for ``exc``; first match wins."""
    for cls, status, code in _STATUSES:
        if isinstance(exc, cls):
            return status, code
    return 409, "refused"


def from_eventfold(exc: EventfoldError) -> ApiError:
    """``exc`` as an `ApiError`."""
    status, code = status_of(exc)
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, WrongExpectedVersion):
        actual = exc.actual if isinstance(exc.actual, int) else None
        return ApiError(
            status,
            code,
            message,
            field="If-Match",
            expected=str(exc.expected),
            actual_version=actual,
            headers={} if actual is None else {"ETag": etag(actual)},
        )
    return ApiError(status, code, message)


def etag(version: int) -> str:
    """A stream version as an ETag (weak: it names the version, not the bytes)."""
    return f'W/"{version}"'


def encode_json(body: Any) -> bytes:
    """``body`` (msgspec types, builtins) as JSON."""
    return _encoder.encode(body)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` (msgspec types, builtins) as a JSON response."""
    return Response(
        _encoder.encode(body), status_code=status, headers=headers, media_type="application/json"
    )


def error_response(err: ApiError) -> Response:
    """``err`` as its JSON response."""
    return json_response(err.body, err.status, err.headers)
