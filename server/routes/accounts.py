"""Account routes: register, login, logout, whoami, sessions, revoking one, the audit page.

The HTTP side of ``server.accounts``: each handler runs the blocking account functions
(argon2 and SQL) through ``state.run`` with the client's address and the time, and wakes
the event streams after a session is revoked, so a revoked device's stream ends.
Registered by ``server.app``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from server.accounts import (
    audit_page,
    begin_login,
    check_password,
    finish_login,
    hash_password,
    list_sessions,
    register_account,
    revoke_session,
    whoami,
)
from server.routes.auth import CallerDep, client_address, server_state
from server.routes.endpoint import endpoint
from server.state import now_ns
from store import protocol

router = APIRouter()


@endpoint(router, protocol.REGISTER)
async def register(request: Request, body: protocol.RegisterRequest) -> protocol.AccountInfo:
    state = server_state(request)
    password_hash = await state.run(hash_password, body.password)
    return await state.run(
        register_account, state.db, body, password_hash, client_address(request), now_ns()
    )


@endpoint(router, protocol.LOGIN)
async def login(request: Request, body: protocol.LoginRequest) -> protocol.LoginResponse:
    state = server_state(request)
    address = client_address(request)
    attempt = await state.run(begin_login, state.db, body, address, now_ns())
    check = await state.run(check_password, attempt.password_hash, body.password)
    return await state.run(
        finish_login, state.db, attempt, check, state.settings.session_lifetime_s, now_ns()
    )


@endpoint(router, protocol.LOGOUT)
async def logout(request: Request, who: CallerDep) -> None:
    state = server_state(request)
    await state.run(revoke_session, state.db, who, who.session_id, now_ns())
    state.events.publish()  # open event streams re-check their session and end


@endpoint(router, protocol.WHOAMI)
async def me(request: Request, who: CallerDep) -> protocol.WhoAmI:
    state = server_state(request)
    return await state.run(whoami, state.db, who)


@endpoint(router, protocol.SESSIONS)
async def sessions(request: Request, who: CallerDep) -> protocol.SessionList:
    state = server_state(request)
    return await state.run(list_sessions, state.db, who, now_ns())


@endpoint(router, protocol.REVOKE_SESSION)
async def revoke(request: Request, session_id: str, who: CallerDep) -> None:
    session_id = protocol.parse_session_id(session_id)
    state = server_state(request)
    await state.run(revoke_session, state.db, who, session_id, now_ns())
    state.events.publish()  # the revoked device's event stream re-checks and ends


@endpoint(router, protocol.AUDIT_LOG)
async def audit_log(
    request: Request, query: Annotated[protocol.AuditQuery, Query()], who: CallerDep
) -> protocol.AuditPage:
    state = server_state(request)
    return await state.run(audit_page, state.db, who, query)
