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
`SQLUnitOfWorkConformance` (``store``); docs/architecture.md lists them.
"""

from __future__ import annotations

from .conformance import EventStoreConformance, SharedStoreConformance, settle
from .hooks import TransactionHookConformance
from .leases import LeaseConformance, LoseLease
from .read_models import ReadModelStoreConformance
from .snapshots import SnapshotStoreConformance
from .spec import HandlerSpec, Spec, handler_spec, spec
from .transform import TransformConformance
from .unit_of_work import SQLUnitOfWorkConformance, UnitOfWorkConformance
from .wakeups import WakeUpConformance

__all__ = [
    "EventStoreConformance",
    "HandlerSpec",
    "LeaseConformance",
    "LoseLease",
    "ReadModelStoreConformance",
    "SQLUnitOfWorkConformance",
    "SharedStoreConformance",
    "SnapshotStoreConformance",
    "Spec",
    "TransactionHookConformance",
    "TransformConformance",
    "UnitOfWorkConformance",
    "WakeUpConformance",
    "handler_spec",
    "settle",
    "spec",
]
