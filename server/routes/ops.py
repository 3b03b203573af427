"""The operations route: a batch of file operations on one namespace becomes one commit.

Owns only the HTTP side of ``APPLY_OPS``: parse the namespace id, run the commit engine
(``server.commits.apply_batch``) in a worker thread, and wake the event streams once a new
commit is in. It must not touch the database or blobs itself. Registered by ``server.app``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from server import commits
from server.routes.auth import CallerDep, server_state
from server.routes.endpoint import endpoint, namespace_id_param
from store import protocol

router = APIRouter()


@endpoint(router, protocol.APPLY_OPS)
async def apply_ops(
    request: Request, namespace_id: str, batch: protocol.OpsBatch, who: CallerDep
) -> protocol.OpsBatchResponse:
    state = server_state(request)
    namespace = namespace_id_param(namespace_id)
    response = await state.run(commits.apply_batch, state, who, namespace, batch)
    if response.commit_id is not None:
        state.events.publish()  # a replayed reply publishes again: events are only hints
    return response
