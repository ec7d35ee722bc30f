"""Each public package exports exactly what its ``__all__`` lists, and no implementation
module leaks into its namespace."""

from __future__ import annotations
import __future__

import importlib
import types

import pytest

import eventfold

PUBLIC_MODULES: dict[str, set[str]] = {
    "eventfold": {
        "backends",
        "cli",
        "inbox",
        "metrics",
        "privacy",
        "projections",
        "relay",
        "schema",
        "store",
        "sync",
        "testing",
        "web",
        "write",
        "errors",
    },
    "eventfold.backends": {"memory", "postgres", "sqlite"},
    "eventfold.backends.memory": set(),
    "eventfold.backends.postgres": set(),
    "eventfold.backends.sqlite": set(),
    "eventfold.inbox": set(),
    "eventfold.metrics": set(),
    "eventfold.privacy": set(),
    "eventfold.projections": set(),
    "eventfold.relay": set(),
    "eventfold.schema": set(),
    "eventfold.store": {"connect", "kit", "ports", "protocol"},
    "eventfold.sync": set(),
    "eventfold.testing": {
        "conformance",
        "hooks",
        "leases",
        "read_models",
        "snapshots",
        "spec",
        "subject_keys",
        "transform",
        "unit_of_work",
        "wakeups",
    },
    "eventfold.web": set(),
    "eventfold.write": set(),
}
"""The submodules each package may show under a public name (the rest are ``_name``)."""

EXPORTED_DUNDERS = {"__version__"}


def namespace(package: str) -> tuple[set[str], set[str]]:
    """The package's public names that are not modules, and its public submodules."""
    module = importlib.import_module(package)
    # Names the package provides lazily (its module __getattr__) are exported when they
    # resolve.
    names = {n for n in module.__all__ if n not in vars(module) and getattr(module, n)}
    submodules: set[str] = set()
    for name, value in vars(module).items():
        if name.startswith("_") and name not in EXPORTED_DUNDERS:
            continue
        if isinstance(value, __future__._Feature):
            continue
        if isinstance(value, types.ModuleType):
            if value.__name__.startswith(f"{package}."):
                submodules.add(name)
            continue
        names.add(name)
    return names, submodules


@pytest.mark.parametrize("package", sorted(PUBLIC_MODULES))
def test_all_is_exactly_what_the_package_exports(package: str) -> None:
    module = importlib.import_module(package)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "a name is listed twice"
    modules_listed = {n for n in exported if isinstance(getattr(module, n), types.ModuleType)}
    names, _ = namespace(package)
    assert names == exported - modules_listed


@pytest.mark.parametrize("package", sorted(PUBLIC_MODULES))
def test_no_implementation_module_leaks(package: str) -> None:
    _, submodules = namespace(package)
    assert submodules <= PUBLIC_MODULES[package]


def test_all_is_sorted() -> None:
    assert eventfold.__all__ == sorted(eventfold.__all__, key=lambda n: (not n.isupper(), n))


def test_backends_load_lazily() -> None:
    import subprocess
    import sys

    code = "import eventfold, sys; print('psycopg' in sys.modules, 'sqlite3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_testing_imports_without_pytest() -> None:
    """`eventfold.testing` and its specs load without pytest; a suite asks for it."""
    import subprocess
    import sys

    code = "\n".join(
        [
            "import sys",
            "sys.modules['pytest'] = None  # as if pytest were not installed",
            "import eventfold.testing as testing",
            "from eventfold.testing import handler_spec, spec",
            "print(callable(spec) and callable(handler_spec))",
            "try:",
            "    testing.EventStoreConformance",
            "except ImportError as exc:",
            "    print('pytest' in str(exc))",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
