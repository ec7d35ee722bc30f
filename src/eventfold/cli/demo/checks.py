"""How the demo stops when the store misbehaves."""

from __future__ import annotations

__all__ = ["DemoCheckFailed", "check"]


class DemoCheckFailed(Exception):
    """The store did not behave as the demo shows it should (a bug, never user error)."""


def check(condition: bool, message: str) -> None:
    """Stop the demo with `DemoCheckFailed` unless ``condition`` holds."""
    if not condition:
        raise DemoCheckFailed(message)
