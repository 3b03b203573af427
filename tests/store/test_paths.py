"""Paths inside a namespace (``store/paths.py``): their rules, refusals and navigation.
How they travel in JSON is tested with the wire (``tests/store/protocol/test_wire.py``)."""

from __future__ import annotations

import pytest

from store.errors import FormatError, InvalidPathError
from store.paths import MAX_PATH_DEPTH, DrivePath


def path(raw: bytes) -> DrivePath:
    return DrivePath.from_bytes(raw)


def test_a_refused_path_is_a_store_format_error() -> None:
    with pytest.raises(FormatError):
        DrivePath([b".."])


def test_a_slash_inside_a_component_is_refused() -> None:
    with pytest.raises(InvalidPathError):
        DrivePath([b"a/b"])
    with pytest.raises(InvalidPathError):
        DrivePath([])


def test_the_longest_name_and_the_deepest_path_are_allowed() -> None:
    assert path(b"n" * 255).name == b"n" * 255
    deep = path(b"/".join([b"d"] * MAX_PATH_DEPTH))
    assert len(deep.components) == MAX_PATH_DEPTH


def test_drive_path_navigation_and_immutability() -> None:
    here = path(b"a/b")
    assert here.child(b"c") == path(b"a/b/c")
    assert here.parent == path(b"a")
    assert path(b"a").parent is None
    assert path(b"a/b/c").is_within(here) and not path(b"a/bc").is_within(here)
    assert bytes(here) == b"a/b" and len({here, path(b"a/b")}) == 1
    with pytest.raises(AttributeError):
        here.components = (b"x",)
