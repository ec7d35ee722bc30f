"""Test helpers that ship with eventfold.

`eventfold.testing.conformance` is the suite every event store backend must pass. A
third-party backend reuses it by subclassing its classes in a test module and providing
a ``store`` fixture (and, for backends shared by several processes, ``store_url``)::

    from eventfold.testing.conformance import EventStoreConformance

    class TestMyStore(EventStoreConformance):
        @pytest.fixture
        async def store(self):
            async with eventfold.connect("mystore://…") as s:
                yield s

A backend with transaction hooks also passes `TransactionHookConformance` (the same
``store`` fixture). Each port has its suite: `ReadModelStoreConformance` (a ``models``
fixture), `SnapshotStoreConformance` and `TransformConformance` (``store``),
`LeaseConformance` (``leases``, ``rival``, ``lose_lease``), `WakeUpConformance`
(``store``, ``other_store``, ``notifier``), `UnitOfWorkConformance` and
`SQLUnitOfWorkConformance` (``store``), `SubjectKeysConformance` (``store``,
``open_store``); docs/architecture.md lists them.

The suites need pytest and pytest-asyncio and are imported on first use; `spec` and
`handler_spec` do not, so ``import eventfold.testing`` works without pytest installed.
"""

from __future__ import annotations

import importlib
import typing

from .spec import HandlerSpec, Spec, handler_spec, spec

if typing.TYPE_CHECKING:
    from .conformance import EventStoreConformance, SharedStoreConformance, settle
    from .hooks import TransactionHookConformance
    from .leases import LeaseConformance, LoseLease
    from .read_models import ProjectionSummariesConformance, ReadModelStoreConformance
    from .snapshots import SnapshotStoreConformance
    from .subject_keys import SubjectKeysConformance
    from .transform import TransformConformance
    from .unit_of_work import SQLUnitOfWorkConformance, UnitOfWorkConformance
    from .wakeups import WakeUpConformance

__all__ = [
    "EventStoreConformance",
    "HandlerSpec",
    "LeaseConformance",
    "LoseLease",
    "ProjectionSummariesConformance",
    "ReadModelStoreConformance",
    "SQLUnitOfWorkConformance",
    "SharedStoreConformance",
    "SnapshotStoreConformance",
    "Spec",
    "SubjectKeysConformance",
    "TransactionHookConformance",
    "TransformConformance",
    "UnitOfWorkConformance",
    "WakeUpConformance",
    "handler_spec",
    "settle",
    "spec",
]

_SUITES = {
    "EventStoreConformance": "conformance",
    "SharedStoreConformance": "conformance",
    "settle": "conformance",
    "TransactionHookConformance": "hooks",
    "LeaseConformance": "leases",
    "LoseLease": "leases",
    "ProjectionSummariesConformance": "read_models",
    "ReadModelStoreConformance": "read_models",
    "SnapshotStoreConformance": "snapshots",
    "SubjectKeysConformance": "subject_keys",
    "TransformConformance": "transform",
    "UnitOfWorkConformance": "unit_of_work",
    "SQLUnitOfWorkConformance": "unit_of_work",
    "WakeUpConformance": "wakeups",
}
"""The names of the suites' modules, which need pytest: imported on first use, so that
``import eventfold.testing`` (and `spec`) works without pytest installed."""


def __getattr__(name: str) -> typing.Any:
    module = _SUITES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
