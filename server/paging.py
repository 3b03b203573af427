"""Page cursors: where the previous page of a listing ended (an audit record's id, a
commit's sequence), written in decimal in a reply's ``next_cursor`` and sent back as is.

Pure (no I/O); called by the services that page: ``server.audit``, ``server.content``
(the commit log) and ``server.history`` (the versions of a path).
"""

from __future__ import annotations

from typing import Final

from store import protocol

# Ids and sequences are signed 64-bit integers: 19 decimal digits at most, and at most this.
MAX_CURSOR_DIGITS: Final = 19
MAX_CURSOR_VALUE: Final = 2**63 - 1


def parse_cursor(cursor: str, what: str) -> int:
    """The position ``cursor`` names; ``BadRequestError`` (``not <what>``, the field named)
    for anything this server cannot have written, e.g. ``what="an audit page cursor"``."""
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= MAX_CURSOR_DIGITS):
        raise protocol.BadRequestError(f"not {what}", {"field": "cursor"})
    position = int(cursor)
    if position > MAX_CURSOR_VALUE:  # 19 digits may still overflow the database's integer
        raise protocol.BadRequestError(f"not {what}", {"field": "cursor"})
    return position
