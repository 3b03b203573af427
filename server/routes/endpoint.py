"""Routes from ``store.protocol`` turned into FastAPI routes, and request helpers shared by
every router (path ids, the caller, JSON replies). No route string or status number lives
outside ``store.protocol``: handlers are registered with ``endpoint(router, protocol.X)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

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
