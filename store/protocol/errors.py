"""The protocol's error classes and, beside them, the error table: each error code with its
HTTP status and the exception class it stands for, both ways.

Each ``ProtocolError`` subclass stands for one code (``CODE``); the store's own kinds
(``NotFoundError``, ``ConflictError``, ``IntegrityError``) travel under codes of their own.
``ERROR_CODES`` is the one table: the server answers with a code's status (``status_for``)
and the client raises the code's class again. A new code is a row in the table and, for a
``ProtocolError``, a class beside it; a check at import keeps the two in step.

Knows no JSON body and no route: ``error_bodies`` builds and reads the ``ErrorBody``.
Raised by the rest of ``store.protocol``, by the server's handlers and by the client.
Immutable values: any thread.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from pydantic import JsonValue

from store.errors import (
    ConflictError,
    CryptoError,
    FormatError,
    IntegrityError,
    InvalidPathError,
    NotFoundError,
    StoreError,
    TransientError,
)
from store.protocol.bounds import CODE_PATTERN

# --- the error classes ----------------------------------------------------------------------


class ProtocolError(StoreError):
    """An error that travels as an error code. ``code``, ``message`` and ``detail`` are the
    JSON error body (``ErrorBody``); each subclass stands for one code (``CODE``). A plain
    ``ProtocolError`` carries a code this build does not know (a newer peer)."""

    CODE: ClassVar[str] = "internal"

    def __init__(
        self,
        message: str,
        detail: Mapping[str, JsonValue] | None = None,
        *,
        code: str | None = None,
    ) -> None:
        self.code = code if code is not None else type(self).CODE
        self.message = message
        self.detail: dict[str, JsonValue] = dict(detail or {})
        super().__init__(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequestError(ProtocolError):
    """The request does not follow the protocol: a bug in the sender, never retried."""

    CODE = "bad_request"


class InvalidIdError(BadRequestError):
    """An id that is not the right number of lowercase hex digits for its kind."""

    CODE = "invalid_id"


class InvalidNameError(BadRequestError):
    """A file name or path the format does not allow (empty, ``.``, ``..``, NUL, ``/``,
    over 255 bytes, too deep)."""

    CODE = "invalid_name"


class BodyTooLargeError(BadRequestError):
    """A request body over its byte bound."""

    CODE = "body_too_large"


class BatchTooLargeError(BadRequestError):
    """A list over its length bound (ids, ops, records): split it and send again."""

    CODE = "batch_too_large"


class UnsupportedProtocolError(ProtocolError):
    """The peer speaks another protocol version (``detail``: ``supported``, ``got``)."""

    CODE = "unsupported_protocol"


class UnauthorizedError(ProtocolError):
    """No valid session: missing, unknown or revoked token, or wrong credentials."""

    CODE = "unauthorized"


class TokenExpiredError(UnauthorizedError):
    """The session token was valid but has expired: log in again."""

    CODE = "token_expired"


class ForbiddenError(ProtocolError):
    """Authenticated, but the role does not allow this (a viewer writing, ...)."""

    CODE = "forbidden"


class UsernameTakenError(ProtocolError):
    """Registration with a username that already exists."""

    CODE = "username_taken"


class GoneError(ProtocolError):
    """What was asked for existed and is gone for good: an expired or revoked share link."""

    CODE = "gone"


class RangeNotSatisfiableError(ProtocolError):
    """A ``Range`` header that names no byte of the file (``detail``: ``size``)."""

    CODE = "range_not_satisfiable"


class RateLimitedError(ProtocolError, TransientError):
    """Too many requests; retry after ``retry_after_s`` seconds."""

    CODE = "rate_limited"

    @property
    def retry_after_s(self) -> float | None:
        value = self.detail.get("retry_after_s")
        return float(value) if isinstance(value, int | float) else None


class UnavailableError(ProtocolError, TransientError):
    """The server cannot serve now (starting, stopping, a backend down): retry later."""

    CODE = "unavailable"


class InternalError(ProtocolError):
    """A bug or an unexpected failure in the server. The message never carries internals."""

    CODE = "internal"


class StaleBaseError(ConflictError):
    """A request names a base (a content hash or a head) that is no longer current, and the
    server cannot resolve the difference itself: fetch the head and try again."""


# --- the error table -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    status: int
    exception: type[StoreError]
    meaning: str


ERROR_CODES: Final[tuple[ErrorCode, ...]] = (
    ErrorCode("bad_request", 400, BadRequestError, "the request does not follow the protocol"),
    ErrorCode("invalid_id", 400, InvalidIdError, "an id is not hex of the right length"),
    ErrorCode("invalid_name", 400, InvalidNameError, "a name or path the format refuses"),
    ErrorCode("body_too_large", 413, BodyTooLargeError, "a body over its byte bound"),
    ErrorCode("batch_too_large", 413, BatchTooLargeError, "a list over its length bound"),
    ErrorCode("unsupported_protocol", 400, UnsupportedProtocolError, "another version"),
    ErrorCode("unauthorized", 401, UnauthorizedError, "no valid session or credentials"),
    ErrorCode("token_expired", 401, TokenExpiredError, "the session has expired"),
    ErrorCode("forbidden", 403, ForbiddenError, "the role does not allow it"),
    ErrorCode("not_found", 404, NotFoundError, "no such object, path or namespace here"),
    ErrorCode("conflict", 409, ConflictError, "contradicts the current state"),
    ErrorCode("stale_base", 409, StaleBaseError, "the base named is no longer current"),
    ErrorCode("username_taken", 409, UsernameTakenError, "the username exists"),
    ErrorCode("gone", 410, GoneError, "an expired or revoked share link"),
    ErrorCode("range_not_satisfiable", 416, RangeNotSatisfiableError, "a range past the end"),
    ErrorCode("integrity", 422, IntegrityError, "bytes do not hash to their id"),
    ErrorCode("rate_limited", 429, RateLimitedError, "too many requests; retry later"),
    ErrorCode("internal", 500, InternalError, "a server bug or unexpected failure"),
    ErrorCode("unavailable", 503, UnavailableError, "the server cannot serve now; retry"),
)
ERROR_TABLE: Final[Mapping[str, ErrorCode]] = {entry.code: entry for entry in ERROR_CODES}
_CODE_OF_CLASS: Final[dict[type[StoreError], str]] = {e.exception: e.code for e in ERROR_CODES}
# Store errors with no code of their own, as a server reports them.
_FALLBACK_CODES: Final[dict[type[StoreError], str]] = {
    InvalidPathError: "invalid_name",  # a path the format refuses, as InvalidNameError
    FormatError: "bad_request",  # the server parsing what the client sent
    TransientError: "unavailable",
    CryptoError: "internal",
    StoreError: "internal",
}
# What a client assumes when an error response carries no ErrorBody (a proxy, a crash).
_CODE_OF_STATUS: Final[dict[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    410: "gone",
    413: "body_too_large",
    416: "range_not_satisfiable",
    429: "rate_limited",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}


def status_for(code: str) -> int:
    entry = ERROR_TABLE.get(code)
    return entry.status if entry is not None else 500


def code_for_store_error(exc_type: type[StoreError]) -> str:
    """The code a server reports for a store error that is not a ``ProtocolError``: its
    class's own, or ``bad_request`` (a ``FormatError`` in what the client sent),
    ``unavailable`` (transient) or ``internal``."""
    return next(
        _CODE_OF_CLASS.get(cls) or _FALLBACK_CODES[cls]
        for cls in exc_type.__mro__
        if cls in _CODE_OF_CLASS or cls in _FALLBACK_CODES
    )


def code_for_status(status: int) -> str:
    """The code a client assumes for an error response that carries no ``ErrorBody``."""
    return _CODE_OF_STATUS.get(status, "internal" if status >= 500 else "bad_request")


def _check_table() -> None:
    for entry in ERROR_CODES:
        assert re.fullmatch(CODE_PATTERN, entry.code), entry.code
        if issubclass(entry.exception, ProtocolError):
            assert entry.code == entry.exception.CODE, entry.code
    assert len(ERROR_TABLE) == len(ERROR_CODES)


_check_table()
