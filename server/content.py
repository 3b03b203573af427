"""Content: namespaces and heads, chunks (missing, upload, download, one), trees, commits
and the commit log of a namespace, behind the routes of ``server.routes.content``.

Owns how content enters and leaves the server, and the authorization rule of DESIGN.md §3:
an object is served only through a namespace the caller can read that references it (a
``namespace_objects`` row; a commit row of that namespace for commits), and anything else
is answered exactly as an object that exists nowhere (a *missing* record, ``not_found`` for
one chunk). A chunk is referenced by a namespace only after a member uploaded it there in
full and the server verified it, so nobody learns whether other users hold some content.

Upload: the record-stream body is read incrementally and handled in batches of about
``FLUSH_BYTES``; each frame is verified against its id (``store.frames.decode_frame``),
sealed (``Keyring.seal``) and written durably to the blob store, and only then are its
``chunks`` and ``namespace_objects`` rows written. Downloads stream one blob at a time.

It must not: write trees, commits or heads (the commit path, ``server.commits``), delete
blobs or rows (GC), hold a whole request or reply body in memory, or know HTTP.

Who calls it: the handlers of ``server.routes.content``, on the event loop, which do every
query, blob read, hash and seal through ``state.run``; the blocking functions below take
the database, blob store or keyring, so tests can call them directly.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import anyio
import sqlalchemy as sa

from server import audit
from server import db as tables
from server.blobstore import BlobStore
from server.db import Database
from server.namespaces import (
    Role,
    head_of,
    list_namespaces,
    referenced_objects,
    require_role,
)
from server.paging import parse_cursor
from server.sessions import Caller
from server.state import ServerState, now_ns
from store import protocol
from store.crypto import Keyring
from store.errors import IntegrityError, NotFoundError, StoreError
from store.frames import decode_frame
from store.ids import ChunkId, CommitId, NamespaceId, TreeId
from store.objects import decode_commit

_log = logging.getLogger(__name__)

# An upload is verified, sealed and stored in batches of at least this many frame bytes
# (or FLUSH_RECORDS records), so the memory an upload holds is about one batch plus one
# record, whatever the size of the body.
FLUSH_BYTES: Final = 4 * 1024 * 1024
FLUSH_RECORDS: Final = 256
# Batches read ahead of the one being stored (each at most FLUSH_BYTES).
PIPELINE_BATCHES: Final = 2
# Worker threads one batch is spread over (verification, sealing and fsync run in parallel).
UPLOAD_WORKERS: Final = 4
# Trees and commits are read from the database in groups of about this many bytes.
FETCH_BYTES: Final = 4 * 1024 * 1024

_CHUNK: Final = "c"
_TREE: Final = "t"

IdT = TypeVar("IdT", ChunkId, TreeId, CommitId)


# --- blocking: authorization and queries -----------------------------------------------------


def check_role(database: Database, namespace_id: NamespaceId, user_id: int, role: Role) -> None:
    """``require_role`` in its own read transaction (before a body is read)."""
    with database.read() as connection:
        require_role(connection, namespace_id, user_id, role)


def missing_chunks(
    database: Database, namespace_id: NamespaceId, user_id: int, ids: Sequence[ChunkId]
) -> list[ChunkId]:
    """The ids the namespace does not reference yet, in request order, each once. A chunk
    the server holds only for other namespaces is missing here: it must be uploaded."""
    with database.read() as connection:
        require_role(connection, namespace_id, user_id, "editor")
        held = referenced_objects(connection, namespace_id, ids, _CHUNK)
    return [chunk_id for chunk_id in dict.fromkeys(ids) if chunk_id not in held]


def readable_chunks(
    database: Database,
    namespace_id: NamespaceId,
    who: Caller,
    ids: Sequence[ChunkId],
) -> set[bytes]:
    """The ids of a download the caller may read through the namespace, and the audit
    record of the download (one per batch, written with the authorization decision)."""
    with database.write() as connection:
        require_role(connection, namespace_id, who.user_id, "viewer")
        readable = referenced_objects(connection, namespace_id, ids, _CHUNK)
        plain_bytes = _plain_bytes(connection, readable)
        served = sum(1 for chunk_id in ids if chunk_id in readable)
        audit.append(
            connection,
            action="download",
            caller=who,
            namespace_id=namespace_id,
            detail={
                "chunks_requested": str(len(ids)),
                "chunks": str(served),
                "missing": str(len(ids) - served),
                "plain_bytes": str(plain_bytes),
            },
        )
    return readable


def _plain_bytes(connection: sa.Connection, ids: Iterable[bytes]) -> int:
    chunks = tables.chunks
    per_batch = sa.select(sa.func.coalesce(sa.func.sum(chunks.c.plain_bytes), 0))
    return sum(int(row[0]) for row in tables.select_in(connection, per_batch, chunks.c.id, ids))


def known_chunks(database: Database, blobs: BlobStore, ids: Iterable[bytes]) -> set[bytes]:
    """Those of ``ids`` whose blob is durable already: a ``chunks`` row, and the blob
    itself (a crash in the middle of a GC can leave a row whose blob is gone; such a
    chunk is written again rather than referenced blind)."""
    with database.read() as connection:
        found = {bytes(row.id) for row in _chunk_rows(connection, ids)}
    return {raw for raw in found if blobs.exists(ChunkId(raw))}


def _chunk_rows(connection: sa.Connection, ids: Iterable[bytes]) -> Iterator[sa.Row[Any]]:
    """The ``chunks`` rows (their ``id``) of those of ``ids`` that have one."""
    chunks = tables.chunks
    return tables.select_in(connection, sa.select(chunks.c.id), chunks.c.id, map(bytes, ids))


# --- blocking: storing chunks ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A verified upload record whose blob is durable. ``stored_bytes`` is ``None`` when
    the blob was already there (a ``chunks`` row existed) and was not written again."""

    chunk_id: ChunkId
    plain_bytes: int
    stored_bytes: int | None


def store_frame(
    keyring: Keyring, blobs: BlobStore, chunk_id: ChunkId, frame: bytes, *, write_blob: bool
) -> StoredChunk:
    """Verify ``frame`` against ``chunk_id`` (``IntegrityError`` if it is malformed or holds
    other content) and, if ``write_blob``, seal it and write it durably."""
    plain_bytes = len(decode_frame(frame, chunk_id))
    if not write_blob:
        return StoredChunk(chunk_id, plain_bytes, None)
    sealed = keyring.seal(chunk_id, frame)
    blobs.put(chunk_id, sealed)
    return StoredChunk(chunk_id, plain_bytes, len(sealed))


def store_frames(
    keyring: Keyring,
    blobs: BlobStore,
    records: Sequence[tuple[ChunkId, bytes, bool]],
) -> list[StoredChunk | IntegrityError]:
    """``store_frame`` for each ``(chunk id, frame, write blob)``; a record that fails
    verification gives its ``IntegrityError`` in its place instead of raising."""
    outcomes: list[StoredChunk | IntegrityError] = []
    for chunk_id, frame, write_blob in records:
        try:
            outcomes.append(store_frame(keyring, blobs, chunk_id, frame, write_blob=write_blob))
        except IntegrityError as exc:
            outcomes.append(exc)
    return outcomes


def record_chunks(
    database: Database,
    namespace_id: NamespaceId,
    user_id: int,
    stored: Sequence[StoredChunk],
    added_ns: int,
) -> list[ChunkId]:
    """Reference durable chunks from the namespace: a ``chunks`` row for each blob written
    (if absent) and a ``namespace_objects`` row for each chunk (``added_ns`` refreshed).

    A chunk whose blob was not written because its ``chunks`` row existed is re-checked
    here, in the writing transaction: if the row has gone meanwhile (GC), nothing is
    written and those ids are returned, for the caller to write their blobs and call again.
    The role is checked again too, so a membership revoked during an upload takes effect.
    """
    with database.write() as connection:
        require_role(connection, namespace_id, user_id, "editor")
        reused = [item.chunk_id for item in stored if item.stored_bytes is None]
        if reused:
            present = {bytes(row.id) for row in _chunk_rows(connection, reused)}
            vanished = [chunk_id for chunk_id in dict.fromkeys(reused) if chunk_id not in present]
            if vanished:
                return vanished
        written = {
            item.chunk_id: {
                "id": bytes(item.chunk_id),
                "stored_bytes": item.stored_bytes,
                "plain_bytes": item.plain_bytes,
                "created_ns": added_ns,
            }
            for item in stored
            if item.stored_bytes is not None
        }
        tables.upsert(connection, tables.chunks, list(written.values()))
        references = {
            item.chunk_id: {
                "namespace_id": bytes(namespace_id),
                "object_id": bytes(item.chunk_id),
                "kind": _CHUNK,
                "added_ns": added_ns,
            }
            for item in stored
        }
        tables.upsert(
            connection, tables.namespace_objects, list(references.values()), refresh=["added_ns"]
        )
    return []


def audit_upload(
    database: Database,
    namespace_id: NamespaceId,
    who: Caller,
    outcome: audit.Outcome,
    detail: dict[str, str],
) -> None:
    with database.write() as connection:
        audit.append(
            connection,
            action="upload",
            caller=who,
            outcome=outcome,
            namespace_id=namespace_id,
            detail=detail,
        )


# --- blocking: reading chunks, trees, commits ------------------------------------------------


def read_frame(blobs: BlobStore, keyring: Keyring, chunk_id: ChunkId) -> bytes:
    """The frame of a stored chunk, out of its sealed blob. ``NotFoundError`` if the blob is
    absent; ``IntegrityError`` (or another ``StoreError``) if it does not open."""
    return keyring.open(chunk_id, blobs.get(chunk_id))


def _frame_or_none(blobs: BlobStore, keyring: Keyring, chunk_id: ChunkId) -> bytes | None:
    # In a batch, a referenced chunk the server cannot read back is sent as missing (the
    # client retries it one by one and gets an internal error), and logged: it is the
    # server's fault, never the client's.
    try:
        return read_frame(blobs, keyring, chunk_id)
    except StoreError as exc:
        _log.error("stored chunk %s cannot be read: %s", chunk_id.hex(), exc)
        return None


def chunk_records(
    blobs: BlobStore, keyring: Keyring, ids: Sequence[ChunkId], readable: set[bytes]
) -> Iterator[protocol.Record[ChunkId]]:
    """One record per id, in order; frames read lazily, one blob at a time."""
    for chunk_id in ids:
        frame = _frame_or_none(blobs, keyring, chunk_id) if chunk_id in readable else None
        yield protocol.Record(chunk_id, frame)


def readable_frame(
    state: ServerState, namespace_id: NamespaceId, who: Caller, chunk_id: ChunkId
) -> bytes:
    """One chunk's frame, if the namespace references it (else ``NotFoundError``). A
    referenced chunk the server cannot read back is an ``InternalError``, logged."""
    readable = readable_chunks(state.db, namespace_id, who, [chunk_id])
    if chunk_id not in readable:
        raise NotFoundError("chunk", chunk_id.hex())
    try:
        return read_frame(state.blobs, state.keyring, chunk_id)
    except StoreError as exc:
        _log.error("stored chunk %s cannot be read: %s", chunk_id.hex(), exc)
        raise protocol.InternalError(f"stored chunk {chunk_id.hex()} is unreadable") from exc


def readable_tree_sizes(
    database: Database, namespace_id: NamespaceId, user_id: int, ids: Sequence[TreeId]
) -> dict[bytes, int]:
    """Encoding sizes of the requested trees the namespace references."""
    trees, refs = tables.trees, tables.namespace_objects
    query = (
        sa.select(trees.c.id, sa.func.length(trees.c.data).label("size"))
        .join(refs, refs.c.object_id == trees.c.id)
        .where(refs.c.namespace_id == bytes(namespace_id), refs.c.kind == _TREE)
    )
    with database.read() as connection:
        require_role(connection, namespace_id, user_id, "viewer")
        rows = tables.select_in(connection, query, trees.c.id, map(bytes, ids))
        return {bytes(row.id): int(row.size) for row in rows}


def fetch_trees(database: Database, ids: Sequence[bytes]) -> dict[bytes, bytes]:
    trees = tables.trees
    with database.read() as connection:
        rows = tables.select_in(connection, sa.select(trees.c.id, trees.c.data), trees.c.id, ids)
        return {bytes(row.id): bytes(row.data) for row in rows}


def readable_commit_sizes(
    database: Database, namespace_id: NamespaceId, user_id: int, ids: Sequence[CommitId]
) -> dict[bytes, int]:
    """Encoding sizes of the requested commits that belong to the namespace."""
    commits = tables.commits
    query = sa.select(commits.c.id, sa.func.length(commits.c.data).label("size")).where(
        commits.c.namespace_id == bytes(namespace_id)
    )
    with database.read() as connection:
        require_role(connection, namespace_id, user_id, "viewer")
        rows = tables.select_in(connection, query, commits.c.id, map(bytes, ids))
        return {bytes(row.id): int(row.size) for row in rows}


def fetch_commits(
    database: Database, namespace_id: NamespaceId, ids: Sequence[bytes]
) -> dict[bytes, bytes]:
    commits = tables.commits
    query = sa.select(commits.c.id, commits.c.data).where(
        commits.c.namespace_id == bytes(namespace_id)
    )
    with database.read() as connection:
        rows = tables.select_in(connection, query, commits.c.id, ids)
        return {bytes(row.id): bytes(row.data) for row in rows}


def object_records(
    ids: Sequence[IdT],
    sizes: dict[bytes, int],
    fetch: Callable[[list[bytes]], dict[bytes, bytes]],
    builtin: dict[bytes, bytes],
) -> Iterator[protocol.Record[IdT]]:
    """One record per id, in order: ``builtin`` objects, then those in ``sizes`` (the
    readable ones) fetched in groups of about ``FETCH_BYTES``; the rest missing."""
    position = 0
    while position < len(ids):
        end, budget, wanted = position, 0, list[bytes]()
        while end < len(ids):
            object_id = bytes(ids[end])
            size = sizes.get(object_id)
            if size is not None and object_id not in builtin and object_id not in wanted:
                if wanted and budget + size > FETCH_BYTES:
                    break
                wanted.append(object_id)
                budget += size
            end += 1
        fetched = fetch(wanted) if wanted else {}
        for typed_id in ids[position:end]:
            payload = builtin.get(bytes(typed_id))
            if payload is None:
                payload = fetched.get(bytes(typed_id))
            yield protocol.Record(typed_id, payload)
        position = end


def log_page(
    database: Database, namespace_id: NamespaceId, user_id: int, query: protocol.LogQuery
) -> protocol.LogPage:
    """Retained commits of the namespace, newest first (by sequence), one page. The cursor
    is the sequence of the last commit of the previous page, in decimal."""
    commits = tables.commits
    statement = sa.select(commits.c.id, commits.c.sequence, commits.c.data).where(
        commits.c.namespace_id == bytes(namespace_id), commits.c.retained == sa.true()
    )
    if query.cursor is not None:
        before = parse_cursor(query.cursor, "a log page cursor")
        statement = statement.where(commits.c.sequence < before)
    statement = statement.order_by(commits.c.sequence.desc()).limit(query.limit + 1)
    with database.read() as connection:
        require_role(connection, namespace_id, user_id, "viewer")
        rows = list(connection.execute(statement))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    infos = []
    for row in rows:
        commit_id = CommitId(bytes(row.id))
        try:
            commit = decode_commit(bytes(row.data), commit_id)
        except StoreError as exc:
            _log.error("stored commit %s cannot be decoded: %s", commit_id.hex(), exc)
            raise protocol.InternalError(f"stored commit {commit_id.hex()} is unreadable") from exc
        infos.append(protocol.commit_info(commit_id, commit))
    return protocol.LogPage(
        commits=tuple(infos), next_cursor=str(rows[-1].sequence) if more else None
    )


def namespace_list(database: Database, user_id: int) -> protocol.NamespaceList:
    with database.read() as connection:
        return protocol.NamespaceList(namespaces=tuple(list_namespaces(connection, user_id)))


def namespace_head(
    database: Database, namespace_id: NamespaceId, user_id: int
) -> protocol.HeadInfo:
    with database.read() as connection:
        require_role(connection, namespace_id, user_id, "viewer")
        return head_of(connection, namespace_id)


# --- async: upload ---------------------------------------------------------------------------


async def receive_chunks(
    state: ServerState,
    namespace_id: NamespaceId,
    user_id: int,
    pieces: AsyncIterable[bytes],
    totals: dict[str, int] | None = None,
) -> list[ChunkId]:
    """Parse an upload body as it arrives and store its chunks batch by batch; the ids
    stored, in stream order. A bad stream raises as soon as it is seen; the batches stored
    before stay (each is consistent: blob, then rows). ``totals`` (if given) counts
    ``chunks``, ``frame_bytes`` and ``new_blobs`` so far.

    Receiving and storing overlap: while one batch is verified, sealed and written in
    worker threads, the next is read off the network (at most ``PIPELINE_BATCHES`` wait)."""
    counts = totals if totals is not None else {}
    parser = protocol.chunk_upload_parser()
    stored: list[ChunkId] = []
    send, receive = anyio.create_memory_object_stream[list[protocol.Record[ChunkId]]](
        max_buffer_size=PIPELINE_BATCHES
    )

    async def store_batches() -> None:
        async with receive:
            async for batch in receive:
                stored.extend(await _store_batch(state, namespace_id, user_id, batch, counts))

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(store_batches)
            async with send:
                pending: list[protocol.Record[ChunkId]] = []
                pending_bytes = 0
                async for piece in pieces:
                    for record in parser.feed(piece):
                        pending.append(record)
                        pending_bytes += len(record.payload or b"")
                        if pending_bytes >= FLUSH_BYTES or len(pending) >= FLUSH_RECORDS:
                            await send.send(pending)
                            pending, pending_bytes = [], 0
                parser.close()
                if pending:
                    await send.send(pending)
    except BaseExceptionGroup as group_error:
        raise _sole_error(group_error) from None
    return stored


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a task group wrapped (the group itself if there were several)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    return leaves[0] if len(leaves) == 1 else group


async def _store_batch(
    state: ServerState,
    namespace_id: NamespaceId,
    user_id: int,
    records: list[protocol.Record[ChunkId]],
    counts: dict[str, int],
) -> list[ChunkId]:
    """Verify, seal and write one batch in parallel, then reference what verified; raise
    the first record's ``IntegrityError`` (in stream order) after that, if any."""
    frames = [(record.object_id, record.payload or b"") for record in records]
    # Every frame is sealed and written, even one whose blob the server holds already for
    # other namespaces: skipping that work would answer sooner, and the time of an upload
    # would tell the uploader that someone else holds the content (DESIGN.md §3). A
    # namespace never sends a chunk it holds itself (``missing_chunks`` says so first), so
    # only content shared across users is written twice.
    work = [(chunk_id, frame, True) for chunk_id, frame in frames]
    outcomes: list[StoredChunk | IntegrityError | None] = [None] * len(work)

    async def run_share(share: int) -> None:
        positions = range(share, len(work), UPLOAD_WORKERS)
        results = await state.run(
            store_frames, state.keyring, state.blobs, [work[index] for index in positions]
        )
        for index, result in zip(positions, results, strict=True):
            outcomes[index] = result

    async with anyio.create_task_group() as group:
        for share in range(min(UPLOAD_WORKERS, len(work))):
            group.start_soon(run_share, share)

    stored = [item for item in outcomes if isinstance(item, StoredChunk)]
    while stored:
        vanished = await state.run(record_chunks, state.db, namespace_id, user_id, stored, now_ns())
        if not vanished:
            break
        # Their rows went (GC) after we looked: write the blobs after all, and try again.
        again = {bytes(chunk_id) for chunk_id in vanished}
        frame_of = dict(frames)
        rewritten = await state.run(
            store_frames,
            state.keyring,
            state.blobs,
            [(chunk_id, frame_of[chunk_id], True) for chunk_id in vanished],
        )
        by_id = {item.chunk_id: item for item in rewritten if isinstance(item, StoredChunk)}
        stored = [
            by_id.get(item.chunk_id, item) if item.chunk_id in again else item for item in stored
        ]
    counts["chunks"] = counts.get("chunks", 0) + len(stored)
    counts["frame_bytes"] = counts.get("frame_bytes", 0) + sum(
        len(frame)
        for (_, frame), item in zip(frames, outcomes, strict=True)
        if isinstance(item, StoredChunk)
    )
    counts["new_blobs"] = counts.get("new_blobs", 0) + sum(
        1 for item in stored if item.stored_bytes is not None
    )
    for item in outcomes:
        if isinstance(item, IntegrityError):
            raise item
    return [item.chunk_id for item in stored]
