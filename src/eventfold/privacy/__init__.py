"""Crypto-shredding: personal fields encrypted per data subject, erased by deleting keys.

Mark fields with `Personal`, call `enable` on the store, and `Privacy.forget` a subject
to make their fields read as replacement values for good (see docs/privacy.md).
"""

from __future__ import annotations

from .._personal import PERSONAL_KEY, Personal, redacted
from ._audit import AUDIT_STREAM, SubjectForgotten
from ._follow import Follower
from ._privacy import (
    KEYS_PARTICIPANT,
    MASTER_KEY_ENV,
    ForgetResult,
    Privacy,
    enable,
    erased_fields,
    erased_in,
)

__all__ = [
    "AUDIT_STREAM",
    "KEYS_PARTICIPANT",
    "MASTER_KEY_ENV",
    "PERSONAL_KEY",
    "Follower",
    "ForgetResult",
    "Personal",
    "Privacy",
    "SubjectForgotten",
    "enable",
    "erased_fields",
    "erased_in",
    "redacted",
]
