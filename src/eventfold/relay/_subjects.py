"""Subject tokens: any text mapped to a token NATS accepts, reversibly, never dropped.

NATS subjects are tokens separated by ``.``; a token must not hold whitespace, ``.``,
``*``, ``>`` or control characters. `subject_token` keeps ASCII letters, digits, ``_``
and ``-`` and writes every other byte of the UTF-8 text as ``%XX`` (``%`` itself
included), so two different names never share a token; the empty name is ``%``.
"""

from __future__ import annotations

import re

from ..errors import InvalidInput

__all__ = ["check_prefix", "subject_token", "token_text"]

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPED = re.compile(r"(?:[A-Za-z0-9_-]|%[0-9A-F]{2})*")
_PREFIX_TOKEN = re.compile(r"[A-Za-z0-9_\-$%]+")


def subject_token(text: str) -> str:
    """``text`` as one NATS subject token (see the module's rules)."""
    if not text:
        return "%"
    if text.isascii() and all(ord(c) in _SAFE for c in text):
        return text
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode())


def token_text(token: str) -> str:
    """The text `subject_token` mapped to ``token``."""
    if token == "%":
        return ""
    if not _ESCAPED.fullmatch(token):
        raise InvalidInput(f"{token!r} is not a token subject_token writes")
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "%":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(token[i]))
            i += 1
    return out.decode()


def check_prefix(prefix: str) -> str:
    """A subject prefix: dot-separated tokens of letters, digits, ``_``, ``-``, ``$``, ``%``."""
    if not isinstance(prefix, str) or not all(
        _PREFIX_TOKEN.fullmatch(t) for t in prefix.split(".")
    ):
        raise InvalidInput(
            f"subject prefix {prefix!r} is not a NATS subject: use dot-separated tokens of "
            "letters, digits, '_' and '-' (no spaces, '*' or '>'), e.g. 'events.orders'"
        )
    return prefix
