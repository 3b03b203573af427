"""The body of every error response (``ErrorBody``), and the translation through it, once
at each boundary: a server's exception → status and body (``body_for``), a refused request
→ status and body (``validation_error_body``), an error response → the exception class the
server raised, in the client (``error_for_response``, ``error_for``).

It follows the table in ``errors`` (``ERROR_CODES``) and adds the JSON: the message, and the
detail fields the store's own kinds carry. An internal error's message never leaves the
server. Called by ``server/app.py`` and ``boxfs/remote.py``. Pure: any thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final

from pydantic import Field, JsonValue, StringConstraints, ValidationError

from store.errors import ConflictError, IntegrityError, NotFoundError, StoreError
from store.protocol.bounds import CODE_PATTERN, MAX_ERROR_MESSAGE_CHARS
from store.protocol.errors import (
    ERROR_TABLE,
    BatchTooLargeError,
    InternalError,
    InvalidIdError,
    InvalidNameError,
    ProtocolError,
    code_for_status,
    code_for_store_error,
    status_for,
)
from store.protocol.models import WireModel


class ErrorBody(WireModel):
    """The body of every error response (any 4xx or 5xx)."""

    code: Annotated[str, StringConstraints(pattern=CODE_PATTERN)]
    message: Annotated[str, StringConstraints(max_length=MAX_ERROR_MESSAGE_CHARS)]
    detail: dict[str, JsonValue] = Field(default_factory=dict)


_INTERNAL_MESSAGE: Final = "internal server error"


def _detail_str(detail: Mapping[str, JsonValue], key: str, default: str) -> str:
    value = detail.get(key)
    return value if isinstance(value, str) else default


def error_for(body: ErrorBody) -> StoreError:
    """Client side: the exception an error body stands for (the same class the server
    raised, for the store's own kinds). An unknown code gives a plain ``ProtocolError``."""
    entry = ERROR_TABLE.get(body.code)
    detail, message = body.detail, body.message
    if entry is None:
        return ProtocolError(message, detail, code=body.code)
    cls = entry.exception
    if issubclass(cls, ProtocolError):
        return cls(message, detail)
    if issubclass(cls, ConflictError):  # ConflictError and StaleBaseError
        return cls(_detail_str(detail, "path", "(server)"), _detail_str(detail, "reason", message))
    if cls is NotFoundError:
        return NotFoundError(_detail_str(detail, "what", "object"), _detail_str(detail, "name", ""))
    if cls is IntegrityError:
        return IntegrityError(
            _detail_str(detail, "expected", "?"),
            _detail_str(detail, "actual", "?"),
            _detail_str(detail, "what", "object"),
        )
    raise AssertionError(f"error table entry {body.code} has no constructor")


def error_for_response(status: int, content: bytes) -> StoreError:
    """Client side: the exception for any error response, with or without an ErrorBody."""
    try:
        body = ErrorBody.model_validate_json(content)
    except ValidationError:
        code = code_for_status(status)
        snippet = content[:200].decode("utf-8", "replace")
        body = ErrorBody(code=code, message=f"HTTP {status}: {snippet}", detail={})
    return error_for(body)


def body_for(exc: StoreError) -> tuple[int, ErrorBody]:
    """Server side: the status and body for an exception. Store errors without a code of
    their own map to ``bad_request`` (a ``FormatError`` in what the client sent),
    ``unavailable`` (transient) or ``internal``; an internal error's message is generic."""
    detail: dict[str, JsonValue] = {}
    if isinstance(exc, ProtocolError):
        code, message, detail = exc.code, exc.message, exc.detail
    else:
        code = code_for_store_error(type(exc))
        message = str(exc)
        if isinstance(exc, ConflictError):
            detail = {"path": exc.path, "reason": exc.reason}
        elif isinstance(exc, NotFoundError):
            detail = {"what": exc.what, "name": exc.name}
        elif isinstance(exc, IntegrityError):
            detail = {"what": exc.what, "expected": exc.expected, "actual": exc.actual}
    if code == InternalError.CODE:
        message, detail = _INTERNAL_MESSAGE, {}
    body = ErrorBody(code=code, message=message[:MAX_ERROR_MESSAGE_CHARS], detail=detail)
    return status_for(code), body


# How a validation failure is reported: the first matching kind wins.
_VALIDATION_CODES: Final = (
    (InvalidNameError.CODE, InvalidNameError.CODE),
    (InvalidIdError.CODE, InvalidIdError.CODE),
    ("too_long", BatchTooLargeError.CODE),  # pydantic's type for an over-long list
)
_MAX_REPORTED_ERRORS: Final = 20


def validation_error_body(errors: Iterable[Mapping[str, Any]]) -> tuple[int, ErrorBody]:
    """Server side: status and body for a refused request body or query (pydantic's
    ``errors()`` list, or FastAPI's). The input values are never echoed back: they may be
    large, or a password."""
    reported: list[JsonValue] = []
    types: set[str] = set()
    for error in errors:
        kind = str(error.get("type", ""))
        types.add(kind)
        if len(reported) < _MAX_REPORTED_ERRORS:
            loc = ".".join(str(part) for part in error.get("loc", ()))
            reported.append({"loc": loc, "type": kind, "message": str(error.get("msg", ""))})
    code = next((code for kind, code in _VALIDATION_CODES if kind in types), "bad_request")
    first = reported[0] if reported else {}
    summary = (
        f"{first['loc']}: {first['message']}"
        if isinstance(first, dict) and first.get("loc")
        else "request is not valid"
    )
    body = ErrorBody(
        code=code,
        message=f"invalid request: {summary}"[:MAX_ERROR_MESSAGE_CHARS],
        detail={"errors": reported},
    )
    return status_for(code), body
