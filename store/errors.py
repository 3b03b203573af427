"""The store's exception hierarchy: one base, a few meaningful kinds with structured fields.

Every error the store raises is a ``StoreError``. The server maps these kinds to protocol
error codes (``store.protocol``), and the client maps the codes back to the same classes,
so a caller catches ``IntegrityError`` whether it was detected locally or remotely.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error raised by ``store``."""


class FormatError(StoreError):
    """Bytes that do not follow the format: truncated, non-canonical, unknown version."""


class InvalidPathError(FormatError):
    """A drive path or a name in it that the format refuses: empty, too deep, ``..``, a
    ``/`` or NUL inside a name, a name over 255 bytes."""


class IntegrityError(StoreError):
    """Content whose BLAKE3 digest is not the id it was asked for (or fails authentication)."""

    def __init__(self, expected: str, actual: str, what: str = "chunk") -> None:
        self.expected = expected
        self.actual = actual
        self.what = what
        super().__init__(f"{what} integrity error: expected {expected}, got {actual}")


class NotFoundError(StoreError):
    """An object or path that does not exist."""

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"{what} not found: {name}")


class ConflictError(StoreError):
    """An edit that contradicts the current state (exists already, not a directory, ...)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class TransientError(StoreError):
    """A failure that may succeed when retried (a full map, a busy resource)."""


class CryptoError(StoreError):
    """A sealed frame or wrapped key that cannot be opened with the keys at hand."""
