"""The pjdfstest failures expected on a boxfs mount, each with its reason. The list may only
shrink: ``tests/fuse/test_pjdfstest.py`` fails when a file fails outside it (a file not
listed, or a subtest of a listed file that is not), and when a listed file passes, so the
list stays true. Every difference is described in ``docs/posix.md``.

A file is listed with the subtests that may fail, or with ``None`` when the whole file is
about what the mount does not do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Expected:
    reason: str
    subtests: frozenset[int] | None = None  # None: any of the file's subtests


def _numbers(listed: str) -> frozenset[int]:
    return frozenset(int(number) for number in listed.split())


HARD_LINKS = "hard links are not stored: link(2) answers EPERM (a non-goal, docs/posix.md)"

EXPECTED_FAILURES: dict[str, Expected] = {
    # The link/ files that need a link to succeed; its others (the errnos checked before
    # anything is linked: ENAMETOOLONG, ENOENT, ENOTDIR, ELOOP, EACCES, EROFS ...) pass.
    **{f"link/{number:02d}.t": Expected(HARD_LINKS) for number in (0, 2, 3, 6, 7, 9)},
    # These link a file first, then check the link count and ctime after a rename or an
    # unlink; the same checks without a second link pass.
    "rename/00.t": Expected(
        HARD_LINKS,
        _numbers(
            "8 9 10 12 14 15 23 24 25 27 29 30 38 39 40 42 44 45"
            " 53 54 55 57 59 60 68 69 70 72 74 75"
        ),
    ),
    "rename/23.t": Expected(
        HARD_LINKS, _numbers("4 6 7 9 12 14 15 17 20 22 23 25 28 30 31 33 36 38 39 41")
    ),
    "unlink/00.t": Expected(
        HARD_LINKS, _numbers("27 28 29 32 33 34 37 38 39 42 43 44 47 48 49 108 109 110")
    ),
}
