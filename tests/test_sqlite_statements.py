"""SQLite statements bind their parameters the way every supported Python accepts.

Numbered placeholders (``?`` and a number) bound from a sequence warn on Python 3.12 and
3.13 and raise on 3.14; statements use plain ``?`` with sequences or ``:name`` with
mappings. The suite runs every statement on 3.12 and 3.13 with warnings as errors; this
also covers statements no test runs, and Python 3.11, which does not warn.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(
    path
    for folder in ("src", "benchmarks", "examples", "tests")
    for path in (ROOT / folder).rglob("*.py")
    if path != Path(__file__).resolve()  # its own examples below
)
NUMBERED = re.compile(r"\?\d")
# A "?" that starts an f-string or follows SQL punctuation, with a value formatted in
# after it (not a URL's "?" after a formatted path).
FORMATTED = re.compile(r"[\s(,=<>]\?$")


def numbered_placeholders(source: str) -> list[int]:
    """Lines of string literals holding a numbered placeholder, written out (``"?1"``) or
    formatted (``f"?{n}"``)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if NUMBERED.search(node.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.JoinedStr):
            for index, (part, after) in enumerate(itertools.pairwise(node.values)):
                if (
                    isinstance(part, ast.Constant)
                    and isinstance(after, ast.FormattedValue)
                    and FORMATTED.search(("" if index else " ") + str(part.value))
                ):
                    lines.append(node.lineno)
    return sorted(set(lines))


def test_the_check_finds_numbered_placeholders() -> None:
    source = (
        'A = "SELECT 1 WHERE x = ?1"\n'
        'B = ", ".join(f"?{n}" for n in range(3))\n'
        'C = "SELECT ? WHERE y = :name"\n'
        'D = f"x IN (?{n}, ?{n + 1})"\n'
        'E = f"file://{path}?{flags}"\n'
    )
    assert numbered_placeholders(source) == [1, 2, 4]


def test_no_statement_numbers_its_placeholders() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for path in SOURCES
        if (lines := numbered_placeholders(path.read_text()))
    }
    assert found == {}, "use plain ? with a sequence or :name with a mapping"
