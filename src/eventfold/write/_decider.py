"""Deciders: the pure functions a stream's behaviour is made of.

``state = fold(evolve, initial_state, events)``; ``events = decide(command, state)``. Both
functions are pure — no clock, no randomness, no I/O — so a stream's state can be rebuilt
at any time from its events. Time and ids come in through the command or the event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Decider", "fold"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")


@dataclass(frozen=True)
class Decider(Generic[C, S, E]):
    """A stream's behaviour: an initial state, ``evolve`` and ``decide``.

    ``state_type`` names the state in snapshots (default: the initial state's class
    name) and ``state_version`` is its schema version: bump it when the state's shape
    changes and old snapshots are ignored and rebuilt from the events.

    ::

        account = eventfold.Decider(initial_state=Account(), evolve=evolve, decide=decide)
    """

    initial_state: S
    evolve: Callable[[S, E], S]
    decide: Callable[[C, S], Sequence[E]]
    state_type: str = ""
    state_version: int = 1
    copy_state: Callable[[S], S] | None = field(default=None, repr=False)
    """For mutable states (class-style aggregates): how to copy one before deciding."""

    def __post_init__(self) -> None:
        if not self.state_type:
            object.__setattr__(self, "state_type", type(self.initial_state).__name__)
        if (
            isinstance(self.state_version, bool)
            or not isinstance(self.state_version, int)
            or self.state_version < 1
        ):
            raise ValueError(f"state_version must be an int >= 1, got {self.state_version!r}")

    def start(self) -> S:
        """A fresh initial state (a copy, when the state is mutable)."""
        if self.copy_state is not None:
            return self.copy_state(self.initial_state)
        return self.initial_state

    def fold(self, events: Iterable[E], state: S | None = None) -> S:
        """Apply ``events`` to ``state`` (default: a fresh initial state)."""
        return fold(self.evolve, self.start() if state is None else state, events)


def fold(evolve: Callable[[S, E], S], state: S, events: Iterable[E]) -> S:
    """``evolve`` each event into ``state``, left to right."""
    for event in events:
        state = evolve(state, event)
    return state
