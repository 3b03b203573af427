"""Who is calling, for one request: the FastAPI dependencies every authenticated handler
uses (``caller``, ``CallerDep``), the client's address and the server's state.

The HTTP side of ``server.sessions``: the bearer token is parsed here and checked there,
in a worker thread. Called by FastAPI, on the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.sessions import Caller, authenticate
from server.state import ServerState
from store import protocol


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
