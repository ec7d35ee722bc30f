"""Given / when / then for deciders: with no database, or over the full handler.

::

    spec(account).given([Deposited(amount=10)]).when(Withdraw(amount=4)).then([Withdrawn(amount=4)])
    spec(account).given([]).when(Withdraw(amount=1)).then_raises(Overdraft)

    await handler_spec(account).given([Deposited(amount=10)]).when(Withdraw(amount=4)).then(
        [Withdrawn(amount=4)]
    )
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from eventfold import ANY, Event
from eventfold.backends.memory import MemoryStore
from eventfold.write import CommandHandler, CommandResult, Decider, HandlerOptions

__all__ = ["HandlerSpec", "Spec", "handler_spec", "spec"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E", bound=Event)
X = TypeVar("X", bound=BaseException)


def _raises(error: type[X], match: str | None, run: Any) -> X:
    try:
        run()
    except error as exc:
        if match is not None and not re.search(match, str(exc)):
            raise AssertionError(
                f"{error.__name__} raised, but {str(exc)!r} does not match {match!r}"
            ) from exc
        return exc
    raise AssertionError(f"expected {error.__name__} to be raised, but nothing was")


@dataclass(frozen=True)
class Spec(Generic[C, S, E]):
    """A decider under test, with no database."""

    decider: Decider[C, S, E]
    history: Sequence[E] = ()
    command: Any = None

    def given(self, events: Sequence[E]) -> Spec[C, S, E]:
        """The stream's events before the command."""
        return Spec(self.decider, list(events))

    def when(self, command: C) -> Spec[C, S, E]:
        """The command to decide."""
        return Spec(self.decider, self.history, command)

    def _decide(self) -> list[E]:
        state = self.decider.fold(self.history)
        return list(self.decider.decide(self.command, state))

    def then(self, expected: Sequence[E]) -> list[E]:
        """Assert the command decides exactly ``expected``; return the events."""
        events = self._decide()
        assert events == list(expected), f"decided {events!r}, expected {list(expected)!r}"
        return events

    def then_state(self, expected: S) -> S:
        """Assert the state after the decided events equals ``expected``."""
        state = self.decider.fold(self._decide(), self.decider.fold(self.history))
        assert state == expected, f"state is {state!r}, expected {expected!r}"
        return state

    def then_raises(self, error: type[X], match: str | None = None) -> X:
        """Assert deciding raises ``error`` (its message matching ``match``)."""
        return _raises(error, match, self._decide)


def spec(decider: Decider[C, S, E]) -> Spec[C, S, E]:
    """Start a given/when/then test of ``decider`` with no database."""
    return Spec(decider)


@dataclass(frozen=True)
class HandlerSpec(Generic[C, S, E]):
    """A decider under test through a `CommandHandler` over a memory store."""

    decider: Decider[C, S, E]
    options: HandlerOptions | None = None
    history: Sequence[E] = ()
    command: Any = None
    stream_id: str = "spec-1"

    def given(self, events: Sequence[E]) -> HandlerSpec[C, S, E]:
        """The stream's events before the command (appended to a fresh memory store)."""
        return HandlerSpec(self.decider, self.options, list(events), None, self.stream_id)

    def when(self, command: C) -> HandlerSpec[C, S, E]:
        """The command to handle."""
        return HandlerSpec(self.decider, self.options, self.history, command, self.stream_id)

    async def _handle(self) -> tuple[CommandResult[S, E], list[Any]]:
        async with MemoryStore() as store:
            if self.history:
                await store.append(self.stream_id, list(self.history), expected_version=ANY)
            handler = CommandHandler(store, self.decider, options=self.options)
            result = await handler.handle(self.stream_id, self.command)
            stored = [e.data async for e in store.read_stream(self.stream_id)]
        return result, stored

    async def then(self, expected: Sequence[E]) -> CommandResult[S, E]:
        """Assert the handler appends exactly ``expected`` after the given events."""
        result, stored = await self._handle()
        assert result.events == list(expected), (
            f"handled into {result.events!r}, expected {list(expected)!r}"
        )
        assert stored == [*self.history, *expected], f"the stream holds {stored!r}"
        assert result.version == len(stored)
        return result

    async def then_raises(self, error: type[X], match: str | None = None) -> X:
        """Assert handling raises ``error`` and appends nothing."""
        async with MemoryStore() as store:
            if self.history:
                await store.append(self.stream_id, list(self.history), expected_version=ANY)
            handler = CommandHandler(store, self.decider, options=self.options)
            try:
                await handler.handle(self.stream_id, self.command)
            except error as exc:
                if match is not None and not re.search(match, str(exc)):
                    raise AssertionError(
                        f"{error.__name__} raised, but {str(exc)!r} does not match {match!r}"
                    ) from exc
                assert await store.stream_version(self.stream_id) == len(self.history), (
                    "a failed command appended events"
                )
                return exc
        raise AssertionError(f"expected {error.__name__} to be raised, but nothing was")


def handler_spec(
    decider: Decider[C, S, E], *, options: HandlerOptions | None = None
) -> HandlerSpec[C, S, E]:
    """Start a given/when/then test of ``decider`` through the full command handler."""
    return HandlerSpec(decider, options)
