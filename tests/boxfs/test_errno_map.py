"""The one exception → errno table the mount answers with (``boxfs.errno_map``)."""

from __future__ import annotations

import errno

import pytest

from boxfs.errno_map import errno_for, expected
from boxfs.journal import JournalError
from boxfs.staging import FileTooLargeError, StagedFileMissingError
from store import protocol
from store.errors import FormatError, IntegrityError


@pytest.mark.parametrize(
    ("error", "code", "quiet"),
    [
        (protocol.UnavailableError("cannot reach the server"), errno.ENOTCONN, True),
        (protocol.UnauthorizedError("session ended"), errno.EACCES, True),
        (protocol.TokenExpiredError("expired"), errno.EACCES, True),
        (protocol.ForbiddenError("not a member"), errno.EACCES, True),
        (FileTooLargeError(1 << 40), errno.EFBIG, True),
        (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC, True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT, True),
        (OSError(errno.EIO, "Input/output error"), errno.EIO, False),
        (IntegrityError("ab" * 32, "cd" * 32, "chunk"), errno.EIO, False),
        (FormatError("not a frame"), errno.EIO, False),
        (JournalError("journal: disk I/O error"), errno.EIO, False),
        (StagedFileMissingError("a" * 32), errno.EIO, False),
        (protocol.InternalError("500"), errno.EIO, False),
    ],
)
def test_each_failure_answers_its_errno_and_only_real_faults_are_logged(
    error: BaseException, code: int, quiet: bool
) -> None:
    assert errno_for(error) == code
    assert expected(error) is quiet
