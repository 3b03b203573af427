"""Who is calling: session tokens, and the ``Caller`` every authenticated handler gets.

A token is 256 random bits (base64url); the database keeps only its BLAKE3 hash, so a
copy of the database yields no usable token. A session is valid until it expires or is
revoked (logout revokes at once: the next request with that token is refused).
Blocking functions run in worker threads; ``caller`` is the FastAPI dependency.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

import blake3
import sqlalchemy as sa
from fastapi import Depends, Request

from server import db as tables
from server.db import Database
from server.state import ServerState, now_ns
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


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def server_state(request: Request) -> ServerState:
    state = request.app.state.server
    assert isinstance(state, ServerState)
    return state


async def caller(request: Request) -> Caller:
    """FastAPI dependency: the authenticated caller of this request."""
    token = protocol.parse_bearer(request.headers.get(protocol.AUTHORIZATION_HEADER))
    state = server_state(request)
    return await state.run(authenticate, state.db, token, client_address(request))


CallerDep = Annotated[Caller, Depends(caller)]
"""Annotate a handler parameter with this to get the authenticated caller."""
