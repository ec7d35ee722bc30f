"""The public surface is exactly what ``eventfold.__all__`` lists."""

from __future__ import annotations

import eventfold


def test_all_is_sorted_and_complete() -> None:
    assert eventfold.__all__ == sorted(eventfold.__all__, key=lambda n: (not n.isupper(), n))
    for name in eventfold.__all__:
        assert hasattr(eventfold, name), name


def test_public_members_are_exported() -> None:
    public = {
        name
        for name, value in vars(eventfold).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("eventfold")
    }
    assert public <= set(eventfold.__all__)


def test_backends_load_lazily() -> None:
    import subprocess
    import sys

    code = "import eventfold, sys; print('psycopg' in sys.modules, 'sqlite3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
