"""The operations route: a batch of file operations on one namespace becomes one commit.

Owns only the HTTP side of ``APPLY_OPS``: parse the namespace id, run the commit engine
(``server.commits.apply_batch``) in a worker thread, and wake the event streams once a new
commit is in (``commit_and_publish``, which the restore route uses too). It must not touch
the database or blobs itself. Registered by ``server.app``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVarTuple, Unpack

from fastapi import APIRouter, Request

from server import commits
from server.routes.auth import CallerDep, server_state
from server.routes.endpoint import endpoint, namespace_id_param
from server.state import ServerState
from store import protocol

Ts = TypeVarTuple("Ts")

router = APIRouter()


async def commit_and_publish(
    state: ServerState,
    function: Callable[[Unpack[Ts]], protocol.OpsBatchResponse],
    *args: *Ts,
) -> protocol.OpsBatchResponse:
    """Run a blocking ``function`` of the commit engine in a worker thread, then wake the
    event streams if its reply names a commit."""
    response = await state.run(function, *args)
    if response.commit_id is not None:
        state.events.publish()  # a replayed reply publishes again: events are only hints
    return response


@endpoint(router, protocol.APPLY_OPS)
async def apply_ops(
    request: Request, namespace_id: str, batch: protocol.OpsBatch, who: CallerDep
) -> protocol.OpsBatchResponse:
    state = server_state(request)
    namespace = namespace_id_param(namespace_id)
    return await commit_and_publish(state, commits.apply_batch, state, who, namespace, batch)
