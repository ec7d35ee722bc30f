"""The ``eventfold`` command line: a thin skin over the library, built with click and rich.

::

    eventfold [--url URL] info | streams | read STREAM | tail | append STREAM TYPE JSON | demo
"""

from __future__ import annotations

from .app import cli, main

__all__ = ["cli", "main"]
