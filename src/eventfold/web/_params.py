"""Reading a request's parameters, cursors and body, each refusal naming what is wrong."""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from .._nesting import MAX_NESTING_DEPTH
from .._position import Position
from ..errors import InvalidPosition
from ._errors import ApiError

__all__ = [
    "check_body_head",
    "decode_body",
    "decode_cursor",
    "encode_cursor",
    "flag",
    "limit",
    "position",
    "read_body",
    "receive_body",
    "timestamp",
    "values",
]

T = TypeVar("T")


def bad(field: str, message: str) -> ApiError:
    """A 400 naming ``field``."""
    return ApiError(400, "invalid_input", message, field=field)


def limit(request: Request, default: int, maximum: int) -> int:
    """The ``limit`` query parameter: 1 to ``maximum``."""
    text = request.query_params.get("limit")
    if text is None:
        return min(default, maximum)
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= maximum:
        raise bad("limit", f"limit must be an integer from 1 to {maximum}, got {text[:40]!r}")
    return int(text)


def flag(request: Request, name: str) -> bool:
    """A boolean query parameter: true/false/1/0 (absent: false)."""
    text = request.query_params.get(name)
    if text is None:
        return False
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise bad(name, f"{name} must be true or false, got {text[:40]!r}")


def values(request: Request, name: str) -> list[str] | None:
    """A repeatable query parameter (``type=A&type=B`` or ``type=A,B``); None if absent."""
    raw = request.query_params.getlist(name)
    if not raw:
        return None
    found = [v.strip() for item in raw for v in item.split(",") if v.strip()]
    if not found:
        raise bad(name, f"{name} is empty; give one or more values, e.g. {name}=A,B")
    if len(found) > 100:
        raise bad(name, f"{name} lists {len(found)} values; give at most 100")
    return found


def timestamp(request: Request, name: str) -> int | None:
    """An ISO 8601 time query parameter as microseconds since the epoch (UTC)."""
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise bad(
            name, f"{name} must be an ISO 8601 time such as 2026-01-31T12:00:00Z, got {text[:40]!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    delta = when - _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
    return delta // _dt.timedelta(microseconds=1)


def position(text: str, field: str) -> Position:
    """A global position in its string form."""
    try:
        return Position.parse(text)
    except InvalidPosition as exc:
        raise bad(field, f"{field}: {exc}") from None


def encode_cursor(kind: str, value: str) -> str:
    """An opaque cursor: what the next page starts after, for ``kind`` of page."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(request: Request, kind: str) -> str | None:
    """The ``cursor`` query parameter of a ``kind`` page, decoded; None when absent."""
    text = request.query_params.get("cursor")
    if text is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, ValueError):
        raw = ""
    prefix = kind + ":"
    if not raw.startswith(prefix):
        raise bad(
            "cursor",
            f"cursor {text[:40]!r} is not a cursor of this listing; pass the `next` value of "
            "the page before, or leave it out to start at the beginning",
        )
    return raw[len(prefix) :]


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def _decoder(body_type: type[T]) -> msgspec.json.Decoder[T]:
    """One decoder per body type, made once (cheaper per request than ``decode(type=)``)."""
    found = _DECODERS.get(body_type)
    if found is None:
        found = _DECODERS[body_type] = msgspec.json.Decoder(body_type)
    return found


async def read_body(request: Request, maximum: int, body_type: type[T]) -> T:
    """The request's JSON body as ``body_type``: 413 over ``maximum`` bytes, 400 when it
    is not JSON or not the type (the message names the field)."""
    headers = request.headers
    check_body_head(headers.get("content-type"), headers.get("content-length"), maximum)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > maximum:
            raise _too_large(maximum)
        chunks.append(chunk)
    return decode_body(b"".join(chunks), body_type)


def check_body_head(content_type: str | None, content_length: str | None, maximum: int) -> None:
    """Refuse a body by its headers: 415 when it is not JSON, 413 when it says it is over
    ``maximum`` bytes."""
    if content_type is None:
        content_type = "application/json"
    if content_type.split(";")[0].strip().lower() not in ("application/json", ""):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be application/json, got {content_type[:80]!r}",
            field="Content-Type",
        )
    if content_length is not None and content_length.isdigit() and int(content_length) > maximum:
        raise _too_large(maximum)


async def receive_body(receive: Receive, maximum: int) -> bytes:
    """A request's body from its ASGI ``receive``: 413 once over ``maximum`` bytes."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # the usual case: one message
        if len(body) > maximum:
            raise _too_large(maximum)
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > maximum:
            raise _too_large(maximum)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def decode_body(raw: bytes, body_type: type[T]) -> T:
    """A JSON body as ``body_type``: 400 when empty, not JSON or not the type (the
    message names the field)."""
    if not raw:
        raise bad("body", "the request has no body; send a JSON object")
    try:
        return _decoder(body_type).decode(raw)
    except msgspec.ValidationError as exc:
        where = str(exc).rpartition(" - at `")[2].rstrip("`") if " - at `" in str(exc) else None
        raise bad(where or "body", f"the body does not match {body_type.__name__}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise bad("body", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad(
            "body", f"the body nests too deeply; events may nest at most {MAX_NESTING_DEPTH} levels"
        ) from None


def _too_large(maximum: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the body is over the limit of {maximum} bytes; send fewer or smaller events",
        field="body",
    )


def as_builtins(value: Any) -> Any:
    """``value`` as JSON-ready builtins (msgspec types, datetimes, UUIDs)."""
    return msgspec.to_builtins(value)
