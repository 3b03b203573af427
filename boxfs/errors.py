"""The client's own exceptions, beside the store's and the protocol's.

Errors that come from the server arrive as ``store.protocol`` classes (``UnauthorizedError``,
``NotFoundError``, ``UnavailableError``, ...), raised by ``boxfs.remote``; integrity and
format problems are ``store.errors`` classes. This module adds what only a device has:
its home (not logged in, a broken configuration) and bad user input on the command line.
The CLI maps all of them to one line and an exit code (``boxfs.cli.exit_codes``).
``leaf_exceptions`` finds them inside the exception groups a trio nursery wraps them in
(the uploader's rounds, the CLI's boundary); ``single_failure`` lets a lone one out of a
nursery as itself, for helpers whose callers catch a class.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class BoxfsError(Exception):
    """Base of the client's own errors."""


class NotLoggedInError(BoxfsError):
    """This device home has no session: run ``boxfs login`` first."""


class HomeError(BoxfsError):
    """The device home (``BOXFS_HOME``) is unusable: unreadable, wrong permissions, corrupt."""


class HomeInUseError(HomeError):
    """Another process (a mount) holds this device home: one mount per home at a time."""


class UsageError(BoxfsError):
    """A command-line argument that cannot be right (a bad path, a missing file)."""


class NoSuchVersionError(BoxfsError):
    """``restore --at`` names no version of the path (too old, an unknown commit prefix, or
    a moment when the path did not exist)."""


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``'s (nested) exception groups, depth first in order, or
    ``[exc]`` for one that is no group: what failed inside a trio nursery, whose errors
    arrive wrapped. Cancellations stay in the list; a caller looking for the cause skips
    them (``trio.Cancelled``)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_exceptions(inner)]
    return [exc]


@contextmanager
def single_failure() -> Iterator[None]:
    """Around a trio nursery: when one exception ends it, that exception leaves as itself
    (its traceback kept), not inside an exception group; several stay a group."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = leaf_exceptions(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
