"""Routes from ``store.protocol`` turned into FastAPI routes, and request helpers shared by
every router (path ids, the caller, JSON replies, streamed replies made in worker
threads). No route string or status number lives
outside ``store.protocol``: handlers are registered with ``endpoint(router, protocol.X)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from server.state import ServerState
from store import protocol
from store.ids import ChunkId, NamespaceId

F = TypeVar("F", bound=Callable[..., Any])

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": protocol.ErrorBody}
    for status in sorted({entry.status for entry in protocol.ERROR_CODES})
}


def endpoint(router: APIRouter, route: protocol.Route) -> Callable[[F], F]:
    """Register the decorated handler as ``route``: its method, path, status and models."""
    streams = route.response_model is None
    return router.api_route(
        route.template,
        methods=[route.method],
        name=route.name,
        status_code=route.status_code,
        response_model=route.response_model,
        response_class=Response if streams else JSONResponse,
        responses=_ERROR_RESPONSES,
    )


def namespace_id_param(text: str) -> NamespaceId:
    return protocol.parse_id(NamespaceId, text)


def chunk_id_param(text: str) -> ChunkId:
    return protocol.parse_id(ChunkId, text)


def _take(pieces: Iterator[bytes], min_bytes: int) -> list[bytes]:
    """Pull pieces until they add up to ``min_bytes`` or the stream ends ([] at its end);
    empty pieces are dropped."""
    taken: list[bytes] = []
    total = 0
    for piece in pieces:
        if piece:
            taken.append(piece)
            total += len(piece)
        if total >= min_bytes:
            break
    return taken


async def pump(
    state: ServerState, pieces: Iterator[bytes], step_bytes: int
) -> AsyncIterator[bytes]:
    """A streamed reply's body from a blocking iterator (one that reads blobs and rows):
    each step of about ``step_bytes`` runs in a worker thread."""
    while taken := await state.run(_take, pieces, step_bytes):
        for piece in taken:
            yield piece
