"""Page cursors: where the previous page of a listing ended (an audit record's id, a
commit's sequence), written in decimal in a reply's ``next_cursor`` and sent back as is.

Pure (no I/O); called by the services that page: ``server.audit``, ``server.content``
(the commit log) and ``server.history`` (the versions of a path).
"""

from __future__ import annotations

from typing import Final

from store import protocol

# Ids and sequences are 64-bit integers: 19 decimal digits at most.
MAX_CURSOR_DIGITS: Final = 19


def parse_cursor(cursor: str, what: str) -> int:
    """The position ``cursor`` names; ``BadRequestError`` (``not <what>``, the field named)
    for anything this server cannot have written, e.g. ``what="an audit page cursor"``."""
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= MAX_CURSOR_DIGITS):
        raise protocol.BadRequestError(f"not {what}", {"field": "cursor"})
    return int(cursor)
