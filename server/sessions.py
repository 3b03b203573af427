"""Sessions: bearer tokens, and the ``Caller`` a valid one stands for.

A token is 256 random bits (base64url); the database keeps only its BLAKE3 hash, so a
copy of the database yields no usable token. A session is valid until it expires or is
revoked (logout revokes at once: the next request with that token is refused).
``server.accounts`` opens and revokes sessions; ``authenticate`` only reads them (and
refreshes ``last_seen_ns``). ``Caller`` is who every service acts for.

Blocking (SQL): ``authenticate`` runs in a worker thread.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import blake3
import sqlalchemy as sa

from server import db as tables
from server.db import Database
from server.state import now_ns
from store import protocol

# Refresh a session's last_seen_ns at most this often (it costs a write).
_LAST_SEEN_RESOLUTION_NS = 60 * 10**9


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: int
    username: str
    session_id: str
    device_name: str
    address: str | None


def new_token() -> str:
    return secrets.token_urlsafe(protocol.TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    return blake3.blake3(token.encode()).digest()


def authenticate(database: Database, token: str, address: str | None) -> Caller:
    """The caller a token stands for, or ``UnauthorizedError`` / ``TokenExpiredError``."""
    now = now_ns()
    with database.read() as connection:
        row = connection.execute(
            sa.select(
                tables.sessions.c.id,
                tables.sessions.c.user_id,
                tables.sessions.c.device_name,
                tables.sessions.c.expires_ns,
                tables.sessions.c.revoked_ns,
                tables.sessions.c.last_seen_ns,
                tables.users.c.username,
            )
            .join(tables.users, tables.users.c.id == tables.sessions.c.user_id)
            .where(tables.sessions.c.token_hash == hash_token(token))
        ).one_or_none()
    if row is None or row.revoked_ns is not None:
        raise protocol.UnauthorizedError("the session token is unknown or was revoked")
    if row.expires_ns <= now:
        raise protocol.TokenExpiredError("the session has expired: log in again")
    if now - row.last_seen_ns > _LAST_SEEN_RESOLUTION_NS:
        with database.write() as connection:
            connection.execute(
                tables.sessions.update()
                .where(tables.sessions.c.id == row.id)
                .values(last_seen_ns=now)
            )
    return Caller(row.user_id, row.username, row.id, row.device_name, address)
