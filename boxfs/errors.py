"""The client's own exceptions, beside the store's and the protocol's.

Errors that come from the server arrive as ``store.protocol`` classes (``UnauthorizedError``,
``NotFoundError``, ``UnavailableError``, ...), raised by ``boxfs.remote``; integrity and
format problems are ``store.errors`` classes. This module adds what only a device has:
its home (not logged in, a broken configuration) and bad user input on the command line.
The CLI maps all of them to one line and an exit code (``boxfs.cli.exit_codes``).
"""

from __future__ import annotations


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
