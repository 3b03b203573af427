"""Content routes: namespaces and heads, chunks (missing, upload, download, one), trees,
commits and the commit log of a namespace.

The HTTP side of ``server.content``, which owns what may be read and how an upload is
stored: here the request body is read as it arrives (a client that goes away is a bad
request) and record streams are sent as they are produced, in steps of ``PUMP_BYTES``,
each step in a worker thread (the records read blobs and rows). Handlers run on the event
loop and do every query, blob read, hash and seal through ``state.run``. Registered by
``server.app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Final, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.requests import ClientDisconnect

from server.content import (
    audit_upload,
    check_role,
    chunk_records,
    fetch_commits,
    fetch_trees,
    log_page,
    missing_chunks,
    namespace_head,
    namespace_list,
    object_records,
    readable_chunks,
    readable_commit_sizes,
    readable_frame,
    readable_tree_sizes,
    receive_chunks,
)
from server.routes.auth import CallerDep, server_state
from server.routes.endpoint import chunk_id_param, endpoint, namespace_id_param, pump
from server.state import ServerState
from store import protocol
from store.errors import IntegrityError, StoreError
from store.ids import ChunkId, CommitId, TreeId
from store.merkle import EMPTY_TREE_ID
from store.objects import EMPTY_TREE

router = APIRouter()

# A streamed reply is produced in a worker thread in steps of about this many bytes.
PUMP_BYTES: Final = 256 * 1024

IdT = TypeVar("IdT", ChunkId, TreeId, CommitId)


# --- request bodies ------------------------------------------------------------------------


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for piece in request.stream():
            yield piece
    except ClientDisconnect as exc:
        raise protocol.BadRequestError("the client went away in the middle of the body") from exc


# --- streamed replies ------------------------------------------------------------------------


def _record_stream(
    state: ServerState, id_type: type[IdT], records: Iterator[protocol.Record[IdT]]
) -> StreamingResponse:
    pieces = protocol.encode_record_stream(id_type, records)
    return StreamingResponse(
        pump(state, pieces, PUMP_BYTES), media_type=protocol.RECORD_STREAM_MEDIA_TYPE
    )


# --- routes ----------------------------------------------------------------------------------


@endpoint(router, protocol.NAMESPACES)
async def namespaces_route(request: Request, who: CallerDep) -> protocol.NamespaceList:
    state = server_state(request)
    return await state.run(namespace_list, state.db, who.user_id)


@endpoint(router, protocol.HEAD)
async def head_route(namespace_id: str, request: Request, who: CallerDep) -> protocol.HeadInfo:
    ns = namespace_id_param(namespace_id)
    state = server_state(request)
    return await state.run(namespace_head, state.db, ns, who.user_id)


@endpoint(router, protocol.MISSING_CHUNKS)
async def missing_chunks_route(
    namespace_id: str, body: protocol.MissingChunksRequest, request: Request, who: CallerDep
) -> protocol.MissingChunksResponse:
    ns = namespace_id_param(namespace_id)
    state = server_state(request)
    missing = await state.run(missing_chunks, state.db, ns, who.user_id, body.ids)
    return protocol.MissingChunksResponse(missing=tuple(missing))


@endpoint(router, protocol.UPLOAD_CHUNKS)
async def upload_chunks_route(
    namespace_id: str, request: Request, who: CallerDep
) -> protocol.ChunkUploadResponse:
    ns = namespace_id_param(namespace_id)
    state = server_state(request)
    await state.run(check_role, state.db, ns, who.user_id, "editor")
    totals: dict[str, int] = {}
    try:
        stored = await receive_chunks(state, ns, who.user_id, _body(request), totals)
    except StoreError as exc:
        code = protocol.body_for(exc)[1].code
        detail = {"error": code, **{key: str(value) for key, value in totals.items()}}
        if isinstance(exc, IntegrityError):
            detail["chunk_id"] = exc.expected
        await state.run(audit_upload, state.db, ns, who, "failure", detail)
        raise
    detail = {key: str(value) for key, value in totals.items()}
    await state.run(audit_upload, state.db, ns, who, "success", detail)
    return protocol.ChunkUploadResponse(stored=tuple(stored))


@endpoint(router, protocol.DOWNLOAD_CHUNKS)
async def download_chunks_route(
    namespace_id: str, body: protocol.ChunksRequest, request: Request, who: CallerDep
) -> Response:
    ns = namespace_id_param(namespace_id)
    state = server_state(request)
    readable = await state.run(readable_chunks, state.db, ns, who, body.ids)
    records = chunk_records(state.blobs, state.keyring, body.ids, readable)
    return _record_stream(state, ChunkId, records)


@endpoint(router, protocol.CHUNK)
async def chunk_route(
    namespace_id: str, chunk_id: str, request: Request, who: CallerDep
) -> Response:
    ns = namespace_id_param(namespace_id)
    wanted = chunk_id_param(chunk_id)
    state = server_state(request)
    frame = await state.run(readable_frame, state, ns, who, wanted)
    return Response(content=frame, media_type=protocol.FRAME_MEDIA_TYPE)


_EMPTY_TREE: Final = {bytes(EMPTY_TREE_ID): EMPTY_TREE.encode()}


@endpoint(router, protocol.TREES)
async def trees_route(
    namespace_id: str, body: protocol.TreesRequest, request: Request, who: CallerDep
) -> Response:
    ns = namespace_id_param(namespace_id)
    state = server_state(request)
    sizes = await state.run(readable_tree_sizes, state.db, ns, who.user_id, body.ids)

    def fetch(ids: list[bytes]) -> dict[bytes, bytes]:
        return fetch_trees(state.db, ids)

    return _record_stream(state, TreeId, object_records(body.ids, sizes, fetch, _EMPTY_TREE))


@endpoint(router, protocol.COMMITS)
async def commits_route(
    namespace_id: str, body: protocol.CommitsRequest, request: Request, who: CallerDep
) -> Response:
    ns = namespace_id_param(namespace_id)
    state = server_state(request)
    sizes = await state.run(readable_commit_sizes, state.db, ns, who.user_id, body.ids)

    def fetch(ids: list[bytes]) -> dict[bytes, bytes]:
        return fetch_commits(state.db, ns, ids)

    return _record_stream(state, CommitId, object_records(body.ids, sizes, fetch, {}))


@endpoint(router, protocol.LOG)
async def log_route(
    namespace_id: str,
    query: Annotated[protocol.LogQuery, Query()],
    request: Request,
    who: CallerDep,
) -> protocol.LogPage:
    ns = namespace_id_param(namespace_id)
    state = server_state(request)
    return await state.run(log_page, state.db, ns, who.user_id, query)
