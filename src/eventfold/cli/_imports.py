"""Importing the application's module named on the command line (``--app``,
``--decider``, ``--fn``) and finding the object a ``MODULE:NAME`` reference names."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType

from ..errors import EventfoldError, InvalidInput

__all__ = ["find_attribute", "import_user_module"]


def import_user_module(option: str, reference: str, module_name: str) -> ModuleType:
    """Import ``module_name`` with the working directory importable, or raise a clear error.

    ``option`` and ``reference`` (what the user typed) name the source in the message.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    # In-process callers (tests, notebooks) may have written the module a moment ago.
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except EventfoldError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            if module_name.endswith(".py"):
                # A file name where a module name goes: bank.py means package bank, module py.
                bare = module_name.removesuffix(".py")
                fixed = bare + reference[len(module_name) :]
                raise InvalidInput(
                    f"{option} {reference!r}: name the module, not its file: drop .py "
                    f"({option} {fixed})"
                ) from None
            raise InvalidInput(
                f"{option} {reference!r}: no module named {module_name!r} in {cwd} or on the "
                "Python path; run eventfold from the directory that holds it, or install it"
            ) from None
        raise InvalidInput(
            f"{option} {reference!r}: importing {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise InvalidInput(
            f"{option} {reference!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def find_attribute(
    option: str,
    reference: str,
    module: ModuleType,
    name: str,
    hint: Callable[[], str] | None = None,
) -> object:
    """The object the dotted ``name`` names in ``module``, or `InvalidInput` naming what is
    missing (``hint()``, if given, is added to the message)."""
    found: object = module
    for part in name.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            extra = hint() if hint is not None else ""
            raise InvalidInput(
                f"{option} {reference!r}: module {module.__name__!r} has no attribute "
                f"{name!r}{extra}"
            ) from None
    return found
