"""Ids, byte strings, names and paths on the wire (``store/protocol/wire.py``)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import protocol as p
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
    assert p.DrivePath.from_wire(json.loads(json.dumps(original.to_wire()))) == original


@given(st.binary(max_size=300))
def test_wire_bytes_round_trip_any_bytes(raw: bytes) -> None:
    wire = p.encode_wire_bytes(raw)
    assert p.decode_wire_bytes(json.loads(json.dumps(wire))) == raw


def test_utf8_travels_as_a_string_and_other_bytes_as_base64() -> None:
    assert path("Fotos/Été 2026/ok.jpg".encode()).to_wire() == "Fotos/Été 2026/ok.jpg"
    assert path(b"a/\xff\xfe").to_wire() == {"b64": "YS///g=="}
    # Receivers accept base64 even where a string would do.
    assert p.DrivePath.from_wire({"b64": "YS9i"}) == path(b"a/b")


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
    with pytest.raises(p.InvalidNameError):
        path(raw)
    wire = p.encode_wire_bytes(raw)
    assert code_of_refusal(p.DeleteOp, {"op": "delete", "path": wire}) == "invalid_name"


def test_a_slash_inside_a_component_is_refused() -> None:
    with pytest.raises(p.InvalidNameError):
        p.DrivePath([b"a/b"])
    with pytest.raises(p.InvalidNameError):
        p.DrivePath([])


def test_the_longest_name_and_the_deepest_path_are_allowed() -> None:
    assert path(b"n" * 255).name == b"n" * 255
    deep = path(b"/".join([b"d"] * p.MAX_PATH_DEPTH))
    assert len(deep.components) == p.MAX_PATH_DEPTH


def test_drive_path_navigation_and_immutability() -> None:
    here = path(b"a/b")
    assert here.child(b"c") == path(b"a/b/c")
    assert here.parent == path(b"a")
    assert path(b"a").parent is None
    assert path(b"a/b/c").is_within(here) and not path(b"a/bc").is_within(here)
    assert bytes(here) == b"a/b" and len({here, path(b"a/b")}) == 1
    with pytest.raises(AttributeError):
        here.components = (b"x",)
