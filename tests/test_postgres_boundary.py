"""The PostgreSQL backend's error boundary: every psycopg error becomes an eventfold error
in `backends/postgres/_errors.py`, and no other module catches one by name."""

from __future__ import annotations

import re
from pathlib import Path

import eventfold

SRC = Path(eventfold.__file__).parent
BOUNDARY = SRC / "backends" / "postgres" / "_errors.py"


def test_only_the_boundary_module_catches_psycopg_errors() -> None:
    catch = re.compile(r"except\s*\(?[^:]*\bpsycopg\.|suppress\([^)]*\bpsycopg\.")
    found = [
        f"{path.relative_to(SRC)}:{n}"
        for path in sorted(SRC.rglob("*.py"))
        if path != BOUNDARY
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if catch.search(line)
    ]
    assert found == []


def test_the_check_sees_a_catch() -> None:
    catch = re.compile(r"except\s*\(?[^:]*\bpsycopg\.|suppress\([^)]*\bpsycopg\.")
    assert catch.search("        except (_Failed, psycopg.Error) as failed:")
    assert catch.search("    with contextlib.suppress(psycopg.Error):")
    assert not catch.search("    except Exception as exc:")
