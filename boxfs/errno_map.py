"""The one table from the client's exceptions to the errno a filesystem request answers.

The filesystem model (``boxfs.view``) raises ``FsError(errno)`` for its own POSIX rules
(ENOENT, EEXIST, ENOTEMPTY, ...). Every other failure that reaches a request (the server,
the cache, the journal, a staged file on the local disk) is translated here, once, by the
first row its exception is an instance of:

============================================  ==========  =================================
exception                                      errno       why
============================================  ==========  =================================
``protocol.UnavailableError``                  ENOTCONN    the server cannot be reached
                                                           (offline, or it timed out): the
                                                           content is not here and cannot
                                                           be fetched now (DESIGN.md §5)
``protocol.UnauthorizedError``,                EACCES      the session was ended or the
``protocol.ForbiddenError``                                namespace may not be read
``staging.FileTooLargeError``                  EFBIG       over the largest file stored
``OSError`` ENOSPC / EDQUOT                    the same    the local disk (staging, journal)
                                                           is full: say so, not EIO
anything else (integrity, format, journal,     EIO         the content cannot be served;
other disk errors)                                         an integrity failure also marks
                                                           the file broken (the model)
============================================  ==========  =================================

Must not: decide what a failure means for the view (marking a file broken, keeping an
offline listing) — that is the model's; or import pyfuse3 (``boxfs.fuse_ops`` turns the
errno into a ``FUSEError``). Pure functions; any task may call them.
"""

from __future__ import annotations

import errno
from typing import Final

from boxfs.staging import FileTooLargeError
from store import protocol

# First match wins: subclasses before their bases.
_ERRNO_OF: Final[tuple[tuple[type[BaseException], int], ...]] = (
    (protocol.UnavailableError, errno.ENOTCONN),
    (protocol.UnauthorizedError, errno.EACCES),
    (protocol.ForbiddenError, errno.EACCES),
    (FileTooLargeError, errno.EFBIG),
)
# Local disk conditions that keep their own errno.
_DISK_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def errno_for(exc: BaseException) -> int:
    """The errno a request answers when ``exc`` ends it."""
    for kind, code in _ERRNO_OF:
        if isinstance(exc, kind):
            return code
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return exc.errno
    return errno.EIO


def expected(exc: BaseException) -> bool:
    """Whether ``exc`` is a condition of the world (offline, logged out, a full disk), not
    worth an error in the log each time a request meets it."""
    return errno_for(exc) != errno.EIO
