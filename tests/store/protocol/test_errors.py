"""The error table and error bodies, both ways (``store/protocol/errors.py``,
``error_bodies.py``), and that docs/protocol.md lists every code and route."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from store import protocol as p
from store.errors import (
    ConflictError,
    CryptoError,
    FormatError,
    IntegrityError,
    NotFoundError,
    StoreError,
    TransientError,
)
from tests.store.protocol.samples import CHUNK, NS

DOCS = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"


DETAILS: dict[str, dict[str, Any]] = {
    "not_found": {"what": "chunk", "name": CHUNK.hex()},
    "conflict": {"path": "a/b", "reason": "exists already"},
    "stale_base": {"path": "a/b", "reason": "content changed"},
    "integrity": {"what": "chunk", "expected": "aa", "actual": "bb"},
    "rate_limited": {"retry_after_s": 2},
}


@pytest.mark.parametrize("entry", p.ERROR_CODES, ids=lambda entry: entry.code)
def test_error_table_round_trips_every_code(entry: p.ErrorCode) -> None:
    sent = p.ErrorBody(code=entry.code, message="", detail=DETAILS.get(entry.code, {"n": 1}))
    exc = p.error_for(p.ErrorBody.model_validate_json(sent.model_dump_json()))
    assert type(exc) is entry.exception
    status, body = p.body_for(exc)
    assert (status, body.code) == (entry.status, entry.code)
    if entry.code in DETAILS:
        assert body.detail == DETAILS[entry.code]
    # And once more: the body built from the client's exception means the same thing.
    assert type(p.error_for(body)) is entry.exception


@pytest.mark.parametrize(
    "exc, code",
    [
        (NotFoundError("namespace", NS.hex()), "not_found"),
        (ConflictError("a", "is a directory"), "conflict"),
        (p.StaleBaseError("a", "changed"), "stale_base"),
        (IntegrityError("aa", "bb"), "integrity"),
        (FormatError("truncated frame"), "bad_request"),
        (TransientError("map full"), "unavailable"),
        (CryptoError("bad key"), "internal"),
        (StoreError("???"), "internal"),
        (p.TokenExpiredError("expired"), "token_expired"),
    ],
)
def test_server_exceptions_map_to_their_codes(exc: StoreError, code: str) -> None:
    status, body = p.body_for(exc)
    assert body.code == code and status == p.ERROR_TABLE[code].status


def test_the_same_store_class_arrives_on_the_client() -> None:
    _, body = p.body_for(IntegrityError("aa", "bb", what="tree"))
    exc = p.error_for(body)
    assert isinstance(exc, IntegrityError)
    assert (exc.expected, exc.actual, exc.what) == ("aa", "bb", "tree")
    assert str(exc) == body.message
    assert isinstance(p.error_for(p.body_for(p.StaleBaseError("a", "b"))[1]), ConflictError)


def test_internal_errors_never_leak_their_message() -> None:
    _, body = p.body_for(p.InternalError("password=hunter2 in /srv/db", {"trace": "x"}))
    assert body.message == "internal server error" and body.detail == {}
    _, body = p.body_for(CryptoError("master key file /etc/boxfs/key unreadable"))
    assert "/etc" not in body.message


def test_transient_codes_are_transient_errors() -> None:
    exc = p.error_for(
        p.ErrorBody(code="rate_limited", message="slow down", detail={"retry_after_s": 3})
    )
    assert isinstance(exc, TransientError) and isinstance(exc, p.RateLimitedError)
    assert exc.retry_after_s == 3.0
    assert isinstance(p.error_for(p.ErrorBody(code="unavailable", message="")), TransientError)


def test_an_unknown_code_from_a_newer_server_is_kept() -> None:
    exc = p.error_for(p.ErrorBody(code="quota_exceeded", message="full", detail={}))
    assert type(exc) is p.ProtocolError
    assert isinstance(exc, p.ProtocolError) and exc.code == "quota_exceeded"
    assert p.body_for(exc)[1].code == "quota_exceeded"


@pytest.mark.parametrize(
    "status, content, kind",
    [
        (502, b"<html>Bad Gateway</html>", p.UnavailableError),
        (504, b"", p.UnavailableError),
        (500, b"oops", p.InternalError),
        (404, b"Not Found", NotFoundError),
        (401, b"", p.UnauthorizedError),
        (418, b"teapot", p.BadRequestError),
        (409, b'{"code": "stale_base", "message": "m", "detail": {}}', p.StaleBaseError),
    ],
)
def test_error_responses_without_a_body_map_by_status(
    status: int, content: bytes, kind: type[StoreError]
) -> None:
    assert type(p.error_for_response(status, content)) is kind


def test_error_codes_are_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for entry in p.ERROR_CODES:
        assert re.search(rf"`{entry.code}`\s*\|\s*{entry.status}\b", text), entry.code
    for route in p.ROUTES:
        assert f"`{route.method} {route.template}`" in text, route.name
