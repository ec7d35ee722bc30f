"""The audit trail of erasure: one event per forgotten subject, with no personal data."""

from __future__ import annotations

from .._events import Event

__all__ = ["AUDIT_STREAM", "SubjectForgotten"]

AUDIT_STREAM = "eventfold_privacy-audit"
"""The stream `Privacy.forget` appends its `SubjectForgotten` events to."""


class SubjectForgotten(Event):
    """A data subject's keys were deleted: their personal fields read as replacement
    values from now on. Projections that copied personal data erase it on this event."""

    __event_type__ = "eventfold.SubjectForgotten"

    subject: str
    keys_deleted: int
    reason: str = ""
    actor: str | None = None
