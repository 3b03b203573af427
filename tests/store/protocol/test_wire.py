"""Ids, byte strings, names and paths (``store/paths.py``) on the wire
(``store/protocol/wire.py``)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import protocol as p
from store.errors import InvalidPathError
from store.objects import MAX_NAME_BYTES
from tests.store.protocol.samples import code_of_refusal, path

names = st.binary(min_size=1, max_size=MAX_NAME_BYTES).filter(
    lambda name: b"/" not in name and b"\0" not in name and name not in (b".", b"..")
)


@given(st.lists(names, min_size=1, max_size=12))
def test_path_round_trips_arbitrary_byte_names_through_json(components: list[bytes]) -> None:
    original = p.DrivePath(components)
    op = p.DeleteOp(path=original)
    decoded = p.DeleteOp.model_validate_json(op.model_dump_json())
    assert decoded.path == original
    assert decoded.path.components == tuple(components)
    assert p.path_from_wire(json.loads(json.dumps(p.path_to_wire(original)))) == original


@given(st.binary(max_size=300))
def test_wire_bytes_round_trip_any_bytes(raw: bytes) -> None:
    wire = p.encode_wire_bytes(raw)
    assert p.decode_wire_bytes(json.loads(json.dumps(wire))) == raw


def test_utf8_travels_as_a_string_and_other_bytes_as_base64() -> None:
    assert p.path_to_wire(path("Fotos/Été 2026/ok.jpg".encode())) == "Fotos/Été 2026/ok.jpg"
    assert p.path_to_wire(path(b"a/\xff\xfe")) == {"b64": "YS///g=="}
    # Receivers accept base64 even where a string would do.
    assert p.path_from_wire({"b64": "YS9i"}) == path(b"a/b")


@pytest.mark.parametrize(
    "wire",
    [
        {"b64": "YS9i\n"},  # not strict base64
        {"b64": "YS9j="},  # bad padding
        {"b64": "YR=="},  # non-canonical trailing bits
        {"b64": "YS9i", "extra": "x"},
        {"text": "a"},
        ["a", "b"],
        42,
        "\udc80",  # a lone surrogate is not UTF-8
    ],
)
def test_malformed_wire_bytes_are_refused(wire: object) -> None:
    with pytest.raises(p.BadRequestError):
        p.decode_wire_bytes(wire)


@pytest.mark.parametrize(
    "raw",
    [
        b"..",
        b".",
        b"a/../b",
        b"a/./b",
        b"a/b\0c",
        b"",
        b"/a",
        b"a/",
        b"a//b",
        b"x" * 256,
        b"a/" + b"y" * 256,
        b"/".join([b"d"] * (p.MAX_PATH_DEPTH + 1)),
    ],
)
def test_bad_paths_are_refused(raw: bytes) -> None:
    """A store error where the path is made; ``invalid_name`` (400) where it arrives."""
    with pytest.raises(InvalidPathError):
        path(raw)
    wire = p.encode_wire_bytes(raw)
    with pytest.raises(p.InvalidNameError):
        p.path_from_wire(wire)
    assert code_of_refusal(p.DeleteOp, {"op": "delete", "path": wire}) == "invalid_name"
    status, body = p.body_for(InvalidPathError("x"))
    assert (status, body.code) == (400, "invalid_name")
