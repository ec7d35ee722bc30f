"""Class-style aggregates, for teams who prefer methods to functions.

Command methods check the rules and ``record`` events; an ``@applies(EventType)`` method
per event type changes the fields. `Aggregate.decider()` turns the class into a
`Decider`, so the command handler loads, snapshots and saves it like any other.

::

    class Account(eventfold.Aggregate):
        def __init__(self) -> None:
            self.balance = 0

        def deposit(self, amount: int) -> None:
            if amount <= 0:
                raise ValueError("deposit a positive amount")
            self.record(Deposited(amount=amount))

        @eventfold.applies(Deposited)
        def _deposited(self, event: Deposited) -> None:
            self.balance += event.amount

    handler = eventfold.CommandHandler(store, Account.decider())
    await handler.handle("account-1", lambda account: account.deposit(10))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self, TypeVar

from .._events import Event
from ._decider import Decider

__all__ = ["Aggregate", "applies"]

_F = TypeVar("_F", bound=Callable[..., None])


def applies(*event_types: type[Event]) -> Callable[[_F], _F]:
    """Mark an aggregate method as the apply step for ``event_types``."""

    def mark(method: _F) -> _F:
        method.__eventfold_applies__ = event_types  # type: ignore[attr-defined]
        return method

    return mark


class Aggregate:
    """Base class for class-style aggregates (no metaclass; appliers found by decorator)."""

    _appliers: ClassVar[dict[type[Event], Callable[[Any, Any], None]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        appliers = dict(cls._appliers)
        for value in vars(cls).values():
            for event_type in getattr(value, "__eventfold_applies__", ()):
                appliers[event_type] = value
        cls._appliers = appliers

    def record(self, event: Event) -> None:
        """Apply ``event`` now and keep it to be appended."""
        self.apply(event)
        self.__dict__.setdefault("_eventfold_pending", []).append(event)

    def apply(self, event: Event) -> None:
        """Run the apply step for ``event``'s type; events with none change nothing."""
        applier = self._appliers.get(type(event))
        if applier is not None:
            applier(self, event)

    def pending_events(self) -> list[Event]:
        """Take the events recorded since the last call."""
        pending: list[Event] = self.__dict__.pop("_eventfold_pending", [])
        return pending

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return _fields(self) == _fields(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in _fields(self).items())
        return f"{type(self).__name__}({fields})"

    @classmethod
    def decider(
        cls, *, state_type: str = "", state_version: int = 1
    ) -> Decider[Callable[[Self], object], Self, Event]:
        """This aggregate as a `Decider`; commands are callables taking the aggregate."""

        def evolve(state: Self, event: Event) -> Self:
            state.apply(event)
            return state

        def decide(command: Callable[[Self], object], state: Self) -> Sequence[Event]:
            # Work on a copy: the handler folds the new events into the loaded state
            # itself, once the append has succeeded.
            work = copy.deepcopy(state)
            work.pending_events()
            command(work)
            return work.pending_events()

        return Decider(
            initial_state=cls(),
            evolve=evolve,
            decide=decide,
            state_type=state_type or cls.__name__,
            state_version=state_version,
            copy_state=copy.deepcopy,
        )


def _fields(obj: Aggregate) -> dict[str, Any]:
    return {k: v for k, v in vars(obj).items() if k != "_eventfold_pending"}
