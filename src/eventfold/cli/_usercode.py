"""Calling the user's code (a transform function, a decider) so that what it raises reaches
the terminal as one ``error:`` line naming the function and where it failed.

A traceback of the user's own frames is printed too when ``EVENTFOLD_DEBUG`` is set:
those are the lines they need to fix their code; eventfold's frames are left out.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .._events import Event
from ..errors import EventfoldError
from ..write import Decider

__all__ = ["DEBUG_ENV", "UserCodeError", "call_user", "guard_decider", "user_traceback"]

DEBUG_ENV = "EVENTFOLD_DEBUG"
"""Set (to anything but empty or 0) to print the user's frames above an ``error:`` line."""

_PACKAGE = Path(__file__).resolve().parent.parent

R = TypeVar("R")


class UserCodeError(EventfoldError):
    """Code the user gave the CLI raised an exception; ``__cause__`` holds it."""

    def __init__(self, what: str, where: str, exc: BaseException) -> None:
        self.what = what
        self.where = where
        detail = str(exc)
        see = "" if _debugging() else f" (set {DEBUG_ENV}=1 to see its traceback)"
        super().__init__(
            f"{what} raised {type(exc).__name__}{where}"
            + (f": {detail}" if detail else "")
            + f"; fix it and run the command again{see}"
        )


def _debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def user_traceback(exc: BaseException) -> str | None:
    """The traceback of the exception behind ``exc``, user frames only, when debugging.

    None unless ``EVENTFOLD_DEBUG`` is set and ``exc`` wraps user code's exception.
    """
    if not _debugging() or not isinstance(exc, UserCodeError):
        return None
    cause = exc.__cause__
    if cause is None:
        return None
    frames = [
        frame
        for frame in traceback.extract_tb(cause.__traceback__)
        if not Path(frame.filename).resolve().is_relative_to(_PACKAGE)
    ]
    lines = ["Traceback (user code, most recent call last):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(cause)
    return "".join(lines)


def _nowhere() -> str:
    return ""


def call_user(what: str, where: Callable[[], str], fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)``; whatever it raises becomes a `UserCodeError` naming ``what``
    and ``where()`` (a place such as `` at order-5@1``, or empty)."""
    try:
        return fn(*args)
    except Exception as exc:
        raise UserCodeError(what, where(), exc) from exc


def guard_decider(decider: Decider[Any, Any, Any], stream_id: str) -> Decider[Any, Any, Any]:
    """``decider`` with its functions guarded: what they raise names the function.

    ``evolve`` is given an event's data only, so the place is the stream and the type.
    """
    evolve = decider.evolve
    copy_state = decider.copy_state

    def guarded_evolve(state: Any, data: Any) -> Any:
        def where() -> str:
            if isinstance(data, Event):
                return f" folding a {data.__event_type__} event of stream {stream_id!r}"
            return f" folding stream {stream_id!r}"

        return call_user("the decider's evolve", where, evolve, state, data)

    guarded_copy: Callable[[Any], Any] | None = None
    if copy_state is not None:

        def guarded_copy(state: Any) -> Any:
            return call_user("the decider's copy_state", _nowhere, copy_state, state)

    return dataclasses.replace(decider, evolve=guarded_evolve, copy_state=guarded_copy)
