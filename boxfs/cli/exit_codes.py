"""The command line's exit codes, and the one table that maps exceptions to them.

Every user mistake is one line on stderr, ``boxfs: ...``, and one of these exit codes
(``ExitCode``; the table ``_EXIT_CODES`` maps exceptions to them, once, in
``boxfs.cli.parser.main``); ``docs/cli.md`` is the reference:

    0  success
    1  anything else: a local I/O error, a server failure, an unusable home; and bugs,
       which are the only errors printed with a traceback
    2  usage: a bad argument, whether argparse, the CLI or the server refused it (a bad
       path such as ``..``, a short password, two different passwords)
    3  not logged in, wrong credentials, an expired or revoked session, a forbidden action
    4  not found: a remote path, a version, a local file
    5  conflict: ``put`` or ``restore`` did not apply as asked (a conflicted copy was
       written, or an op was rejected), a username that is taken, a folder in the way
    6  the server cannot be reached or is busy (retry later)
    7  integrity: downloaded content does not match its hash (nothing is written in place)
    8  not in sync: ``sync`` found changes pending that nothing uploads (no mount of this
       home is running), or its ``--timeout`` passed while the server was reachable
    9  in use: ``mount`` of a device home that another mount holds

Pure: it prints nothing and imports nothing else of the CLI. The commands return an
``ExitCode``; ``main`` turns what they raise into one with ``exit_code_for`` and ``describe``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from typing import Final

import trio

from boxfs.errors import (
    BoxfsError,
    HomeError,
    HomeInUseError,
    NoSuchVersionError,
    NotLoggedInError,
    UsageError,
    leaf_exceptions,
)
from store import protocol
from store.errors import (
    ConflictError,
    IntegrityError,
    InvalidPathError,
    NotFoundError,
    StoreError,
    TransientError,
)


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    CONFLICT = 5
    UNAVAILABLE = 6
    INTEGRITY = 7
    NOT_SYNCED = 8
    IN_USE = 9


# The first entry the exception is an instance of wins, so subclasses come first.
_EXIT_CODES: Final[tuple[tuple[type[BaseException], ExitCode], ...]] = (
    (UsageError, ExitCode.USAGE),
    (protocol.BadRequestError, ExitCode.USAGE),  # includes invalid_name
    (InvalidPathError, ExitCode.USAGE),  # a drive path the format refuses, found here
    (NotLoggedInError, ExitCode.AUTH),
    (protocol.UnauthorizedError, ExitCode.AUTH),  # includes token_expired
    (protocol.ForbiddenError, ExitCode.AUTH),
    (NotFoundError, ExitCode.NOT_FOUND),
    (NoSuchVersionError, ExitCode.NOT_FOUND),
    (FileNotFoundError, ExitCode.NOT_FOUND),
    (ConflictError, ExitCode.CONFLICT),  # includes stale_base
    (protocol.UsernameTakenError, ExitCode.CONFLICT),
    (TransientError, ExitCode.UNAVAILABLE),  # unavailable, rate_limited
    (IntegrityError, ExitCode.INTEGRITY),
    (HomeInUseError, ExitCode.IN_USE),
    (HomeError, ExitCode.FAILURE),
    (BoxfsError, ExitCode.FAILURE),
    (StoreError, ExitCode.FAILURE),  # internal, unsupported_protocol, local FormatError
    (OSError, ExitCode.FAILURE),
)


def exit_code_for(exc: BaseException) -> ExitCode | None:
    """The exit code of a user-facing error, or ``None`` for a bug (printed with its
    traceback)."""
    return next((code for kind, code in _EXIT_CODES if isinstance(exc, kind)), None)


def describe(exc: BaseException) -> str:
    """One line for the user."""
    if isinstance(exc, protocol.ProtocolError):
        text = exc.message
    elif isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        text = f"{os.fsdecode(where)}: {exc.strerror}" if where != "" else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def leaf(exc: BaseException) -> BaseException:
    """The error that matters inside trio's exception groups (the first that is not a
    cancellation caused by it)."""
    leaves = leaf_exceptions(exc)
    return next((e for e in leaves if not isinstance(e, trio.Cancelled)), leaves[0])


def exit_for_results(results: Sequence[protocol.OpResult]) -> ExitCode:
    done = ("applied", "merged")
    return ExitCode.OK if all(r.status in done for r in results) else ExitCode.CONFLICT
