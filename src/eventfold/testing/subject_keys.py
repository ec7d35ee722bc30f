"""The conformance suite of subject keys (`eventfold.store.SupportsSubjectKeys`), the key
table behind crypto-shredding.

Subclass `SubjectKeysConformance` in a test module and provide:

- ``store``: an open store declaring `SupportsSubjectKeys`, with no keys yet;
- ``open_store``: a callable ``open_store(read_only)`` that makes another, unopened
  store object on the same database (as another process would have). The default
  connects to the ``store_url`` fixture's URL with `eventfold.connect`.

The suite checks what a key table must guarantee: what is added is found, by id and as
the subject's newest key, from this store object and any other on the database; what is
forgotten is gone, for that subject only; a read-only store reads and refuses writes;
lookups on a store that never had a key find nothing; bad input is refused before
anything is stored; threads may share the table; `SubjectKeys.add_in` writes in an
append's own transaction (commits with it or not at all, keeps the created_us order, and
does not bring back a key written with an event already stored). The ``add_in`` tests
need a store declaring `SupportsTransactionHooks` (disable them for one that does not, as
tests/test_subject_keys.py does for ``memory://``). Async tests need pytest-asyncio with
``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

import eventfold
from eventfold import (
    ANY,
    Event,
    EventfoldError,
    EventStore,
    InvalidInput,
    RecordedEvent,
    StoreClosed,
    StoreReadOnly,
)
from eventfold.store import (
    HookOrder,
    HookTransaction,
    SubjectKeys,
    SupportsSubjectKeys,
    SupportsTransactionHooks,
    TransactionParticipant,
    capability,
)

__all__ = ["OpenStore", "SubjectKeysConformance", "keys_of"]

OpenStore = Callable[[bool], EventStore]
"""What the ``open_store`` fixture gives: ``open_store(read_only)`` makes another store
object on the same database, not yet open."""


def keys_of(store: EventStore) -> SubjectKeys:
    """The store's subject keys."""
    return capability(store, SupportsSubjectKeys).subject_keys


def key(n: int) -> bytes:
    """A 16-byte key id."""
    return n.to_bytes(16, "big")


def material(n: int) -> bytes:
    """32 bytes of key material, distinct per ``n``."""
    return n.to_bytes(4, "big") * 8


ODD_SUBJECTS = (
    'o\'brien "the" `quoted`',
    "x'); DROP TABLE eventfold_subject_keys; --",
    "a%_b\\c",
    "a",
    "Zoë Čapek 日本語 🔑",
    "🔑" * 256,
    "s" * 256,
)
"""Subjects a backend must keep apart and match exactly: quotes, SQL, LIKE wildcards,
a prefix of another, non-ASCII text, the longest allowed (4-byte characters too)."""


class KeyNoted(Event):
    """The suite's event (appended to make a transaction the keys join)."""

    __event_type__ = "conformance.KeyNoted"
    n: int


class _Refused(EventfoldError):
    """What `_AddIn` raises to fail its append after writing."""


class _AddIn(TransactionParticipant):
    """Writes the keys it is given with `SubjectKeys.add_in` in every append's
    transaction (then raises, when told to)."""

    name = "conformance.subject-keys"
    order = HookOrder.SUBJECT_KEYS

    def __init__(self, keys: SubjectKeys) -> None:
        self.keys = keys
        self.adds: list[tuple[bytes, str, bytes, list[tuple[str, bytes]]]] = []
        self.fail = False
        self.seen: list[RecordedEvent] = []

    async def apply(self, tx: HookTransaction, events: Sequence[RecordedEvent]) -> None:
        # Not cleared after use: a failed group commit runs an append's transaction
        # again, with its participants.
        self.seen.extend(events)
        for key_id, subject, data, written in self.adds:
            await self.keys.add_in(tx, key_id, subject, data, written)
        if self.fail:
            raise _Refused("refused after writing its keys")


class SubjectKeysConformance:
    """Behaviour every `SubjectKeys` shares."""

    @pytest.fixture
    def open_store(self, store_url: str) -> OpenStore:
        """Makes another store object on ``store``'s database (override to change how)."""

        def make(read_only: bool) -> EventStore:
            return eventfold.connect(store_url, read_only=read_only)

        return make

    async def test_lookups_before_any_key_find_nothing(
        self, store: EventStore, open_store: OpenStore
    ) -> None:
        keys = keys_of(store)
        assert keys.find([key(1), key(2)]) == {}
        assert keys.find([]) == {}
        assert keys.current("ann") is None
        async with open_store(True) as reader:
            assert keys_of(reader).find([key(1)]) == {}
            assert keys_of(reader).current("ann") is None
        # Still nothing after the lookups, and forgetting finds nothing to delete.
        assert keys.current("ann") is None
        assert keys.forget("ann") == 0

    async def test_added_key_is_found_by_id_and_as_current(self, store: EventStore) -> None:
        keys = keys_of(store)
        keys.add(key(1), "ann", material(1))
        assert keys.find([key(1)]) == {key(1): material(1)}
        assert keys.find([key(9), key(1), key(1)]) == {key(1): material(1)}
        assert keys.current("ann") == (key(1), material(1))
        assert keys.current("bob") is None

    async def test_the_newest_of_several_keys_is_current(self, store: EventStore) -> None:
        keys = keys_of(store)
        # Ids in descending order, so that no backend gets the newest by sorting ids.
        for n in (30, 20, 10):
            keys.add(key(n), "ann", material(n))
            assert keys.current("ann") == (key(n), material(n))
        assert keys.find([key(10), key(20), key(30)]) == {key(n): material(n) for n in (10, 20, 30)}

    async def test_adding_the_same_key_again_changes_nothing(self, store: EventStore) -> None:
        keys = keys_of(store)
        keys.add(key(1), "ann", material(1))
        keys.add(key(2), "ann", material(2))
        keys.add(key(1), "ann", material(1))  # a retry: accepted, and not made newest
        assert keys.current("ann") == (key(2), material(2))
        with pytest.raises(InvalidInput, match="already taken"):
            keys.add(key(1), "ann", material(7))
        with pytest.raises(InvalidInput, match="already taken"):
            keys.add(key(1), "bob", material(1))
        assert keys.find([key(1)]) == {key(1): material(1)}
        assert keys.current("bob") is None

    async def test_forget_deletes_every_key_of_the_subject_only(self, store: EventStore) -> None:
        keys = keys_of(store)
        keys.add(key(1), "ann", material(1))
        keys.add(key(2), "ann", material(2))
        keys.add(key(3), "bob", material(3))
        keys.add(key(4), "ann-2", material(4))
        assert keys.forget("ann") == 2
        assert keys.find([key(1), key(2), key(3), key(4)]) == {
            key(3): material(3),
            key(4): material(4),
        }
        assert keys.current("ann") is None
        assert keys.current("bob") == (key(3), material(3))
        assert keys.current("ann-2") == (key(4), material(4))
        assert keys.forget("ann") == 0
        # A forgotten subject may get a new key; the old ones stay gone.
        keys.add(key(5), "ann", material(5))
        assert keys.current("ann") == (key(5), material(5))
        assert keys.find([key(1), key(2)]) == {}

    async def test_forget_of_an_unknown_subject_is_zero(self, store: EventStore) -> None:
        keys = keys_of(store)
        assert keys.forget("nobody") == 0
        keys.add(key(1), "ann", material(1))
        assert keys.forget("nobody") == 0
        assert keys.current("ann") == (key(1), material(1))

    async def test_another_store_object_sees_adds_and_forgets(
        self, store: EventStore, open_store: OpenStore
    ) -> None:
        keys = keys_of(store)
        async with open_store(False) as other:
            theirs = keys_of(other)
            assert theirs.find([key(1)]) == {}  # its connection is open before the add
            keys.add(key(1), "ann", material(1))
            assert theirs.find([key(1)]) == {key(1): material(1)}
            assert theirs.current("ann") == (key(1), material(1))
            theirs.add(key(2), "ann", material(2))
            assert keys.current("ann") == (key(2), material(2))
            assert theirs.forget("ann") == 2
            assert keys.find([key(1), key(2)]) == {}
            assert keys.current("ann") is None
            theirs.add(key(3), "bob", material(3))
        # Closing one store object leaves the keys to the others.
        assert keys.current("bob") == (key(3), material(3))

    async def test_one_find_takes_many_ids(self, store: EventStore) -> None:
        keys = keys_of(store)
        stored = range(0, 2000, 40)
        for n in stored:
            keys.add(key(n), f"subject-{n % 7}", material(n))
        assert keys.find([key(n) for n in range(2000)]) == {key(n): material(n) for n in stored}
        assert keys.find([key(n) for n in range(2000, 4000)]) == {}

    async def test_subjects_are_matched_exactly(self, store: EventStore) -> None:
        keys = keys_of(store)
        for n, subject in enumerate(ODD_SUBJECTS):
            keys.add(key(n), subject, material(n))
        for n, subject in enumerate(ODD_SUBJECTS):
            assert keys.current(subject) == (key(n), material(n)), subject
        assert keys.current("a%") is None
        assert keys.current("A") is None
        assert keys.current("🔑") is None
        for n, subject in enumerate(ODD_SUBJECTS):
            assert keys.forget(subject) == 1, subject
            rest = ODD_SUBJECTS[n + 1 :]
            assert all(keys.current(other) is not None for other in rest)
        assert keys.find([key(n) for n in range(len(ODD_SUBJECTS))]) == {}

    async def test_bad_input_is_refused_and_nothing_stored(self, store: EventStore) -> None:
        keys = keys_of(store)
        bad_adds: list[tuple[object, object, object]] = [
            ("id", "ann", material(1)),
            (b"", "ann", material(1)),
            (b"x" * 65, "ann", material(1)),
            (key(1), "", material(1)),
            (key(1), " ann", material(1)),
            (key(1), "a\x00b", material(1)),
            (key(1), "a\nb", material(1)),
            (key(1), "\ud800", material(1)),
            (key(1), "s" * 257, material(1)),
            (key(1), 7, material(1)),
            (key(1), "ann", b""),
            (key(1), "ann", "text"),
            (key(1), "ann", b"m" * 1025),
        ]
        for key_id, subject, data in bad_adds:
            with pytest.raises(InvalidInput):
                keys.add(key_id, subject, data)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match=r"\[key_id\]"):
            keys.find(key(1))  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            keys.find(["id"])  # type: ignore[list-item]
        with pytest.raises(InvalidInput):
            keys.current("")
        with pytest.raises(InvalidInput):
            keys.forget(None)  # type: ignore[arg-type]
        assert keys.find([key(1), b"x" * 64]) == {}
        assert keys.current("ann") is None

    async def test_read_only_store_reads_and_refuses_writes(
        self, store: EventStore, open_store: OpenStore
    ) -> None:
        keys = keys_of(store)
        keys.add(key(1), "ann", material(1))
        async with open_store(True) as reader:
            theirs = keys_of(reader)
            assert theirs.find([key(1), key(2)]) == {key(1): material(1)}
            assert theirs.current("ann") == (key(1), material(1))
            with pytest.raises(StoreReadOnly):
                theirs.add(key(2), "ann", material(2))
            with pytest.raises(StoreReadOnly):
                theirs.forget("ann")
            keys.add(key(3), "ann", material(3))
            assert theirs.current("ann") == (key(3), material(3))
        assert keys.find([key(1), key(2), key(3)]) == {key(1): material(1), key(3): material(3)}

    async def test_keys_need_an_open_store_and_outlive_it(self, open_store: OpenStore) -> None:
        other = open_store(False)
        with pytest.raises(StoreClosed):
            keys_of(other).current("ann")
        async with other:
            keys_of(other).add(key(1), "ann", material(1))
        with pytest.raises(StoreClosed):
            keys_of(other).find([key(1)])
        with pytest.raises(StoreClosed):
            keys_of(other).add(key(2), "ann", material(2))
        async with other:
            assert keys_of(other).current("ann") == (key(1), material(1))

    async def test_threads_share_the_keys(self, store: EventStore) -> None:
        keys = keys_of(store)
        threads, each = 8, 15

        def work(t: int) -> None:
            subject = f"thread-{t}"
            mine: dict[bytes, bytes] = {}
            for i in range(each):
                n = t * 1000 + i
                keys.add(key(n), subject, material(n))
                mine[key(n)] = material(n)
                assert keys.find(list(mine)) == mine
                assert keys.current(subject) == (key(n), material(n))
            if t % 2:
                assert keys.forget(subject) == each

        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(threads) as pool:
            await asyncio.gather(*(loop.run_in_executor(pool, work, t) for t in range(threads)))
        for t in range(threads):
            ids = [key(t * 1000 + i) for i in range(each)]
            found = keys.find(ids)
            if t % 2:
                assert found == {}
                assert keys.current(f"thread-{t}") is None
            else:
                assert found == {k: material(t * 1000 + i) for i, k in enumerate(ids)}
                assert keys.current(f"thread-{t}") == (ids[-1], material(t * 1000 + each - 1))

    # -- add_in: keys written in an append's own transaction --------------------------

    async def _participant(self, store: EventStore) -> _AddIn:
        participant = _AddIn(keys_of(store))
        await capability(store, SupportsTransactionHooks).transaction_hooks.add(participant)
        return participant

    async def test_add_in_commits_with_the_append(
        self, store: EventStore, open_store: OpenStore
    ) -> None:
        writer = await self._participant(store)
        keys = keys_of(store)
        keys.add(key(5), "ann", material(5))
        writer.adds = [(key(1), "ann", material(1), []), (key(2), "bob", material(2), [])]
        await store.append("noted-1", [KeyNoted(n=1)], expected_version=ANY)
        assert keys.find([key(1), key(2)]) == {key(1): material(1), key(2): material(2)}
        # Made after ann's first key: her newest now, whatever the clock says.
        assert keys.current("ann") == (key(1), material(1))
        async with open_store(False) as other:
            assert keys_of(other).current("bob") == (key(2), material(2))
        # Written again (a later append naming it): harmless, and not made newer.
        keys.add(key(3), "ann", material(3))
        writer.adds = [(key(1), "ann", material(1), [])]
        await store.append("noted-1", [KeyNoted(n=2)], expected_version=ANY)
        assert keys.current("ann") == (key(3), material(3))
        assert keys.find([key(1)]) == {key(1): material(1)}

    async def test_add_in_rolls_back_with_a_failed_append(self, store: EventStore) -> None:
        writer = await self._participant(store)
        keys = keys_of(store)
        writer.adds = [(key(1), "ann", material(1), [])]
        writer.fail = True
        with pytest.raises(_Refused):
            await store.append("noted-1", [KeyNoted(n=1)], expected_version=ANY)
        assert keys.find([key(1)]) == {}
        assert keys.current("ann") is None
        assert await store.stream_version("noted-1") == 0

    async def test_add_in_does_not_bring_back_a_key_stored_with_an_event(
        self, store: EventStore
    ) -> None:
        writer = await self._participant(store)
        keys = keys_of(store)
        writer.adds = [(key(1), "ann", material(1), [])]
        await store.append("noted-1", [KeyNoted(n=1)], expected_version=ANY)
        first = writer.seen[-1]
        writer.adds = []
        assert keys.forget("ann") == 1
        written = [(first.stream_id, first.raw_event_id)]
        # Written with an event that is stored: the key was committed then; it stays gone.
        writer.adds = [(key(1), "ann", material(1), written)]
        await store.append("noted-2", [KeyNoted(n=2)], expected_version=ANY)
        assert keys.find([key(1)]) == {}
        # Written with events that are not stored (their appends failed): written now.
        missing = [("noted-1", os.urandom(16)), ("noted-9", first.raw_event_id)]
        writer.adds = [(key(2), "bob", material(2), missing)]
        await store.append("noted-3", [KeyNoted(n=3)], expected_version=ANY)
        assert keys.find([key(2)]) == {key(2): material(2)}

    async def test_add_in_refuses_bad_input_and_stores_nothing(self, store: EventStore) -> None:
        writer = await self._participant(store)
        keys = keys_of(store)
        writer.adds = [(key(1), "", material(1), [])]
        with pytest.raises(InvalidInput, match="subject"):
            await store.append("noted-1", [KeyNoted(n=1)], expected_version=ANY)
        bads: list[tuple[bytes, str, bytes, list[tuple[str, bytes]]]] = [
            (b"", "ann", material(1), []),
            (key(1), "ann", b"", []),
        ]
        for bad in bads:
            writer.adds = [bad]
            with pytest.raises(InvalidInput):
                await store.append("noted-1", [KeyNoted(n=1)], expected_version=ANY)
        assert keys.find([key(1)]) == {}
        assert await store.stream_version("noted-1") == 0
