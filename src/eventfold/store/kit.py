"""For writing a backend: the input checks and append rules every backend shares.

A store built on these refuses bad input with the same errors as eventfold's own (what
`eventfold.testing.EventStoreConformance` checks), and decides retries and conflicts
alike. A backend is then registered with `eventfold.store.register_backend`; its ``open``
gets the `Codec` that encodes and decodes the events (rows in `Row` order).
"""

from __future__ import annotations

from .._codec import Codec, Row
from .._position import version_matches
from ._common import (
    PAGE_SIZE,
    CommitListeners,
    StoredCopy,
    category_names,
    category_of,
    check_event_ids,
    check_from_version,
    check_limit,
    check_retry,
    check_stream_id,
    explicit_ids,
    log_start,
    prepare_append,
    type_names,
)

__all__ = [
    "PAGE_SIZE",
    "Codec",
    "CommitListeners",
    "Row",
    "StoredCopy",
    "category_names",
    "category_of",
    "check_event_ids",
    "check_from_version",
    "check_limit",
    "check_retry",
    "check_stream_id",
    "explicit_ids",
    "log_start",
    "prepare_append",
    "type_names",
    "version_matches",
]
