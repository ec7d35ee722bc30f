"""Positions order totally and round-trip through their string form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventfold
from eventfold import START, Position
from eventfold._position import MAX_POSITION_PART

positions = st.builds(
    Position, st.integers(0, MAX_POSITION_PART), st.integers(0, MAX_POSITION_PART)
)


@given(positions)
def test_string_form_parses_back(p: Position) -> None:
    assert Position.parse(str(p)) == p


@given(positions, positions)
def test_order_is_the_pair_order(a: Position, b: Position) -> None:
    assert (a < b) == ((a.tx, a.seq) < (b.tx, b.seq))
    assert (a == b) == ((a.tx, a.seq) == (b.tx, b.seq))


def test_string_forms() -> None:
    assert str(START) == "0"
    assert str(Position(0, 42)) == "42"
    assert str(Position(7301, 42)) == "7301:42"
    assert Position.parse("7301:42") == Position(7301, 42)
    assert Position.parse("0:42") == Position(0, 42)
    assert Position.parse(Position(1, 2)) == Position(1, 2)
    assert hash(Position(1, 2)) == hash(Position.parse("1:2"))


@pytest.mark.parametrize(
    "bad",
    [
        *["", "x", "1:", ":1", "1:2:3", "-1", "1:-1", "+1:2", "1.5", None, 3],
        # Only ASCII digits, nothing around them: int() would take all of these.
        *[" 5 ", "5 ", "\t5", "5\n", "1_000", "+5", "1: 2", "\u0663", "\uff11\uff12", "1:\u0663"],
    ],
)
def test_malformed(bad: object) -> None:
    with pytest.raises(eventfold.InvalidPosition) as info:
        Position.parse(bad)  # type: ignore[arg-type]
    assert info.value.text == bad


@pytest.mark.parametrize(
    "big", [str(2**63), f"1:{2**63}", f"{2**63}:1", "9" * 30, "1:" + "9" * 5000]
)
def test_numbers_past_64_bits_are_refused_naming_the_limit(big: str) -> None:
    with pytest.raises(eventfold.InvalidPosition, match="at most 9223372036854775807"):
        Position.parse(big)
    top = MAX_POSITION_PART
    assert Position.parse(f"{top}:{top}") == Position(top, top)
    assert Position.parse("0" * 40 + "7") == Position(0, 7)  # leading zeros are digits


def test_expected_version_constants_read_well() -> None:
    assert str(eventfold.NO_STREAM) == "NO_STREAM"
    err = eventfold.WrongExpectedVersion("order-1", eventfold.NO_STREAM, 3)
    assert "expected NO_STREAM" in str(err)
    assert "version 3" in str(err)
