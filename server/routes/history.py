"""History routes: the versions of one path, and restoring a path as it was at a commit.

The HTTP side of ``server.history``: parse the namespace id, run the blocking function in
a worker thread, and wake the event streams once a restore made a commit. Registered by
``server.app``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.history import list_versions, restore
from server.routes.auth import CallerDep, server_state
from server.routes.endpoint import endpoint, namespace_id_param
from server.routes.ops import commit_and_publish
from store import protocol

router = APIRouter()


@endpoint(router, protocol.VERSIONS)
async def versions_route(
    request: Request, namespace_id: str, body: protocol.VersionsRequest, who: CallerDep
) -> protocol.VersionsPage:
    state = server_state(request)
    namespace = namespace_id_param(namespace_id)
    return await state.run(list_versions, state.db, who.user_id, namespace, body)


@endpoint(router, protocol.RESTORE)
async def restore_route(
    request: Request, namespace_id: str, body: protocol.RestoreRequest, who: CallerDep
) -> protocol.OpsBatchResponse:
    state = server_state(request)
    namespace = namespace_id_param(namespace_id)
    return await commit_and_publish(state, restore, state, who, namespace, body)
