"""The client's errors: the failures inside (nested) exception groups are found, in order."""

from __future__ import annotations

from boxfs.errors import UsageError, leaf_exceptions


def test_leaf_exceptions_of_a_plain_error_is_that_error() -> None:
    error = UsageError("bad path")
    assert leaf_exceptions(error) == [error]


def test_leaf_exceptions_flattens_nested_groups_depth_first_in_order() -> None:
    first, second, third = OSError("a"), ValueError("b"), KeyboardInterrupt()
    group = BaseExceptionGroup("outer", [ExceptionGroup("inner", [first, second]), third])
    assert leaf_exceptions(group) == [first, second, third]
