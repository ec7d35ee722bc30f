"""Bearer tokens with roles, stored hashed.

A token is a random string handed to a client once (`new_token`); the server keeps only
its SHA-256 (`hash_token`), so a leaked configuration grants nothing. A presented token
is hashed, its hash looked up among the known ones and compared in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import ConfigurationError

__all__ = ["Role", "Tokens", "hash_token", "new_token"]

_PREFIX = "sha256:"


class Role(enum.StrEnum):
    """What a token may do; each role includes the ones before it."""

    READ = "read"
    """Read streams, the log, projections and schemas (when reads need a token)."""
    WRITE = "write"
    """Also append events."""
    ADMIN = "admin"
    """Also replay parked events and rebuild projections (each recorded in ``$audit``)."""

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {Role.READ: 0, Role.WRITE: 1, Role.ADMIN: 2}


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The form a server stores: ``sha256:`` and the hex digest of the token."""
    return _PREFIX + hashlib.sha256(token.encode()).hexdigest()


def _check_hash(text: str) -> str:
    digest = text.removeprefix(_PREFIX)
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigurationError(
            f"token hash {text[:80]!r} is not sha256:<64 lowercase hex digits>; store "
            "eventfold.web.hash_token(token) (or the line `eventfold token ROLE` prints), "
            "never the token itself"
        )
    return _PREFIX + digest


class Tokens:
    """The tokens a server accepts: hash → role."""

    def __init__(self, hashes: Mapping[str, Role | str] | None = None) -> None:
        self._hashes: dict[bytes, tuple[bytes, Role]] = {}
        self._count = 0
        for digest, role in (hashes or {}).items():
            self.add(digest, role)

    def add(self, digest: str, role: Role | str) -> None:
        """Accept the token whose `hash_token` is ``digest`` with ``role``."""
        try:
            checked = Role(role)
        except ValueError:
            raise ConfigurationError(
                f"token role {role!r} is not one of read, write, admin"
            ) from None
        raw = bytes.fromhex(_check_hash(digest).removeprefix(_PREFIX))
        self._hashes.setdefault(raw, (raw, checked))  # the first line of a hash wins
        self._count += 1

    @classmethod
    def from_lines(cls, lines: Iterable[str], source: str = "tokens") -> Tokens:
        """Parse ``ROLE sha256:HEX [comment]`` lines; blank lines and ``#`` comments are
        skipped."""
        tokens = cls()
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split(maxsplit=2)
            if len(parts) < 2:
                raise ConfigurationError(
                    f"{source} line {number}: expected `ROLE sha256:HEX`, got {text[:80]!r}"
                )
            try:
                tokens.add(parts[1], parts[0])
            except ConfigurationError as exc:
                raise ConfigurationError(f"{source} line {number}: {exc}") from None
        return tokens

    @classmethod
    def from_file(cls, path: str | Path) -> Tokens:
        """The tokens listed in a file of `from_lines` lines."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read the tokens file {str(path)!r}: {exc}") from exc
        return cls.from_lines(text.splitlines(), source=str(path))

    def __len__(self) -> int:
        return self._count

    def role_of(self, token: str) -> tuple[Role, str] | None:
        """The role of ``token`` and a short id of it (its hash's first 12 digits), or
        None for an unknown token."""
        presented = hashlib.sha256(token.encode()).digest()
        # Looked up by its hash, one dictionary probe per request whatever the number of
        # tokens: what the probe's timing could tell is about a SHA-256 digest, which a
        # caller cannot steer towards a known one. The final compare is constant-time.
        found = self._hashes.get(presented)
        if found is None or not hmac.compare_digest(presented, found[0]):
            return None
        return found[1], presented.hex()[:12]
