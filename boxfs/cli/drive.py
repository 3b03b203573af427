"""The drive at its head, read and changed through the server, without a mount.

``DriveView`` reads the home namespace as its head commit shows it (trees fetched by id in
batches, verified against their ids, kept for the life of the command); ``download_file``
and ``download_to`` fetch a file's chunks and verify every frame and the whole content
before anything lands in place; ``ChunkUploader`` and ``scan_file`` send only the chunks
the server lacks as local files are chunked; ``apply_ops`` sends ops in batches within the
protocol's bounds, resending a batch whose reply was lost under the same idempotency key.

``put`` never silently replaces an edit made elsewhere: its ``base`` (``base_for_put``) is
the content this device last saw at the path (recorded by ``get`` and ``put`` in the home's
``bases.json``: ``remember``, ``remember_puts``), or, for a file this device never read, the
drive's current content (an explicit replace; the old version stays in history). The server
merges or writes a conflicted copy otherwise.

Network calls go through ``boxfs.remote.Remote`` inside the command's one ``trio.run``.
Chunking, hashing, zstd and big file writes run in worker threads
(``trio.to_thread.run_sync``): the scan of local files in a thread of its own that feeds a
bounded channel, frame encoding and decoding through the ``CapacityLimiter`` the command
passes (sized to the CPUs). It must not print (it only advances the progress bar it is
given; the commands print what it returns), parse arguments, or import ``server`` or
pyfuse3. Called by the commands, from the trio thread.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, TypeAlias, TypeVar, cast

import blake3
import trio

from boxfs.backoff import Backoff
from boxfs.cli.output import Transfer, show_path
from boxfs.errors import UsageError
from boxfs.home import Home, Session
from boxfs.remote import Remote
from store import ops, protocol
from store.chunking import ChunkStream
from store.errors import ConflictError, FormatError, IntegrityError, TransientError
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId, ContentHash, NamespaceId, TreeId
from store.merkle import EMPTY_TREE_ID
from store.objects import (
    EMPTY_TREE,
    MAX_FILE_BYTES,
    ChunkRef,
    EntryKind,
    FileEntry,
    Tree,
    decode_commit,
    decode_tree,
)

T = TypeVar("T")


def session_remote(session: Session) -> Remote:
    """A client of this device's server, speaking for its session."""
    return Remote(session.server_url, session.token)


class DriveView:
    """The user's home drive as its head commit shows it, read through the server. Trees
    are fetched in batches, verified against their ids in a worker thread, and kept for the
    life of the command."""

    def __init__(
        self,
        remote: Remote,
        namespace_id: NamespaceId,
        root: TreeId,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self.remote = remote
        self.namespace_id = namespace_id
        self.root = root
        self._limiter = limiter
        self._trees: dict[TreeId, Tree] = {EMPTY_TREE_ID: EMPTY_TREE}

    @classmethod
    async def open(cls, remote: Remote, limiter: trio.CapacityLimiter) -> DriveView:
        info = await remote.home()
        root = EMPTY_TREE_ID
        if info.head is not None:
            data = (await remote.commits(info.namespace_id, [info.head])).get(info.head)
            if data is None:
                raise IntegrityError(
                    info.head.hex(), "nothing (the server sent no commit)", "commit"
                )
            commit = await trio.to_thread.run_sync(decode_commit, data, info.head, limiter=limiter)
            root = commit.root
        return cls(remote, info.namespace_id, root, limiter)

    async def load(self, ids: Sequence[TreeId]) -> dict[TreeId, Tree]:
        wanted = list(dict.fromkeys(tree_id for tree_id in ids if tree_id not in self._trees))
        if wanted:
            found = await self.remote.trees(self.namespace_id, wanted)
            for tree_id in wanted:
                data = found.get(tree_id)
                if data is None:
                    raise IntegrityError(tree_id.hex(), "nothing (the server sent no tree)", "tree")
                self._trees[tree_id] = await trio.to_thread.run_sync(
                    decode_tree, data, tree_id, limiter=self._limiter
                )
        return {tree_id: self._trees[tree_id] for tree_id in ids}

    async def tree(self, tree_id: TreeId) -> Tree:
        return (await self.load([tree_id]))[tree_id]

    async def lookup(self, path: protocol.DrivePath) -> FileEntry | None:
        """The entry at ``path``, or ``None`` if it (or a folder on the way) is missing."""
        tree = await self.tree(self.root)
        for name in path.components[:-1]:
            entry = tree.get(name)
            if entry is None or entry.kind is not EntryKind.DIR:
                return None
            assert entry.tree_id is not None
            tree = await self.tree(entry.tree_id)
        return tree.get(path.name)

    async def missing_parents(self, path: protocol.DrivePath) -> list[protocol.DrivePath]:
        """The folders above ``path`` that do not exist yet, outermost first;
        ``ConflictError`` if one of them is something else than a folder."""
        missing: list[protocol.DrivePath] = []
        for depth in range(1, len(path.components)):
            parent = protocol.DrivePath(path.components[:depth])
            entry = None if missing else await self.lookup(parent)
            if entry is None:
                missing.append(parent)
            elif entry.kind is not EntryKind.DIR:
                raise ConflictError(show_path(parent), "is not a folder on the drive")
        return missing

    async def subtree(self, tree_id: TreeId) -> dict[bytes, FileEntry]:
        """Every entry below a folder, by path relative to it; one request per level."""
        found: dict[bytes, FileEntry] = {}
        level: list[tuple[bytes, TreeId]] = [(b"", tree_id)]
        while level:
            trees = await self.load([tree_id for _, tree_id in level])
            next_level: list[tuple[bytes, TreeId]] = []
            for prefix, level_id in level:
                for entry in trees[level_id]:
                    path = prefix + b"/" + entry.name if prefix else entry.name
                    found[path] = entry
                    if entry.kind is EntryKind.DIR:
                        assert entry.tree_id is not None
                        next_level.append((path, entry.tree_id))
            level = next_level
        return found


# --- downloads --------------------------------------------------------------------------------

_DOWNLOAD_QUEUE_RECORDS: Final = 4


async def download_file(
    view: DriveView,
    entry: FileEntry,
    sink: Callable[[bytes], object],
    transfer: Transfer,
    limiter: trio.CapacityLimiter,
) -> None:
    """Fetch ``entry``'s chunks in order, verify each frame against its id and the whole
    content against ``content_hash``, handing verified plaintext to ``sink`` (called in a
    worker thread, one call at a time). ``IntegrityError`` on any mismatch."""
    assert entry.content_hash is not None
    hasher = blake3.blake3()
    ids = [ref.chunk_id for ref in entry.chunks]
    send, receive = trio.open_memory_channel[protocol.Record[ChunkId]](_DOWNLOAD_QUEUE_RECORDS)

    async def fetch() -> None:
        async with send:
            stream = cast(
                "AsyncGenerator[protocol.Record[ChunkId], None]",
                view.remote.download_chunks(view.namespace_id, ids),
            )
            async with contextlib.aclosing(stream) as records:
                async for record in records:
                    await send.send(record)

    def take(record: protocol.Record[ChunkId], ref: ChunkRef) -> None:
        if record.object_id != ref.chunk_id or record.payload is None:
            got = "nothing" if record.payload is None else record.object_id.hex()
            raise IntegrityError(ref.chunk_id.hex(), f"{got} (the server did not send it)")
        data = decode_frame(record.payload, ref.chunk_id)
        if len(data) != ref.length:
            raise IntegrityError(ref.chunk_id.hex(), f"{len(data)} bytes, not {ref.length}")
        hasher.update(data)
        sink(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        async with receive:
            for ref in entry.chunks:
                try:
                    record = await receive.receive()
                except trio.EndOfChannel:
                    raise IntegrityError(
                        ref.chunk_id.hex(), "nothing (the download ended early)"
                    ) from None
                await trio.to_thread.run_sync(take, record, ref, limiter=limiter)
                transfer.advance(ref.length)
    actual = ContentHash(hasher.digest())
    if actual != entry.content_hash:
        raise IntegrityError(entry.content_hash.hex(), actual.hex(), "file")


async def download_to(
    view: DriveView,
    entry: FileEntry,
    destination: Path,
    transfer: Transfer,
    limiter: trio.CapacityLimiter,
) -> None:
    """Into a temp file beside ``destination``, renamed over it only once every byte is
    verified and fsynced: a failed download leaves nothing behind."""
    fd, temp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".boxfs-part", dir=destination.parent
    )
    temp = Path(temp_name)
    try:
        with open(fd, "wb") as stream:
            await download_file(view, entry, stream.write, transfer, limiter)

            def finish(stream: BinaryIO) -> None:
                stream.flush()
                # Permission bits only: setuid, setgid and sticky from the drive are dropped.
                os.fchmod(stream.fileno(), entry.mode & 0o777)
                os.utime(stream.fileno(), ns=(time.time_ns(), entry.mtime_ns))
                os.fsync(stream.fileno())

            await trio.to_thread.run_sync(finish, stream, limiter=limiter)
        os.replace(temp, destination)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# --- uploads ----------------------------------------------------------------------------------

# The scan thread hands chunks over through a channel this long (each up to 4 MiB).
_SCAN_QUEUE_CHUNKS: Final = 8
# Chunks are asked about and sent in batches of about this many plaintext bytes.
_UPLOAD_BATCH_BYTES: Final = 32 * 1024 * 1024
_UPLOAD_BATCH_CHUNKS: Final = 256

OnChunk = Callable[[ChunkId, memoryview], None]


@dataclass(slots=True)
class UploadStats:
    chunks: int = 0  # distinct chunks seen
    new_chunks: int = 0  # those the server lacked, sent
    sent_bytes: int = 0  # frame bytes sent
    scanned_bytes: int = 0  # plaintext bytes chunked


class ChunkUploader:
    """Uploads the chunks the server lacks, as the scan of local files produces them.

    ``scan`` runs a synchronous function (chunking in a thread of its own) that reports
    every chunk through its ``on_chunk`` callback; the chunks cross a bounded channel to
    this task, which asks the server which are missing, batch by batch, encodes only those
    (zstd, in worker threads) and sends them. Memory stays bounded by the channel and one
    batch, whatever the size of the files.
    """

    def __init__(
        self,
        remote: Remote,
        namespace_id: NamespaceId,
        limiter: trio.CapacityLimiter,
        transfer: Transfer,
    ) -> None:
        self._remote = remote
        self._namespace_id = namespace_id
        self._limiter = limiter
        self._transfer = transfer
        self._seen: set[ChunkId] = set()
        self._pending: list[tuple[ChunkId, bytes]] = []
        self._pending_bytes = 0
        self.stats = UploadStats()

    async def scan(self, function: Callable[[OnChunk], T]) -> T:
        send, receive = trio.open_memory_channel[tuple[ChunkId, bytes]](_SCAN_QUEUE_CHUNKS)
        outcome: list[T] = []

        def on_chunk(chunk_id: ChunkId, data: memoryview) -> None:
            trio.from_thread.run(send.send, (chunk_id, bytes(data)))

        async def produce() -> None:
            async with send:
                # Its own thread: it blocks on the channel, so it must not hold a slot of
                # the limiter the encoder needs.
                outcome.append(
                    await trio.to_thread.run_sync(
                        function, on_chunk, limiter=trio.CapacityLimiter(1)
                    )
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with receive:
                async for chunk_id, data in receive:
                    self.stats.scanned_bytes += len(data)
                    self._transfer.advance(len(data))
                    await self._add(chunk_id, data)
        await self.flush()
        return outcome[0]

    async def _add(self, chunk_id: ChunkId, data: bytes) -> None:
        if chunk_id in self._seen:
            return
        self._seen.add(chunk_id)
        self.stats.chunks += 1
        self._pending.append((chunk_id, data))
        self._pending_bytes += len(data)
        if self._pending_bytes >= _UPLOAD_BATCH_BYTES or len(self._pending) >= _UPLOAD_BATCH_CHUNKS:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending:
            return
        missing = set(
            await self._remote.missing_chunks(self._namespace_id, [cid for cid, _ in pending])
        )
        to_send = [(chunk_id, data) for chunk_id, data in pending if chunk_id in missing]
        if not to_send:
            return
        frames: list[bytes] = [b""] * len(to_send)

        async def encode(index: int, data: bytes) -> None:
            frames[index] = await trio.to_thread.run_sync(encode_frame, data, limiter=self._limiter)

        async with trio.open_nursery() as nursery:
            for index, (_, data) in enumerate(to_send):
                nursery.start_soon(encode, index, data)
        ids = [chunk_id for chunk_id, _ in to_send]
        stored = await self._remote.upload_chunks(
            self._namespace_id, list(zip(ids, frames, strict=True))
        )
        if set(stored) != set(ids):
            lost = next(chunk_id for chunk_id in ids if chunk_id not in set(stored))
            raise protocol.ProtocolError(f"the server did not store chunk {lost.hex()}")
        self.stats.new_chunks += len(ids)
        self.stats.sent_bytes += sum(len(frame) for frame in frames)


def scan_file(local: Path, name: bytes, on_chunk: OnChunk) -> FileEntry:
    """The entry of one local regular file, chunked (in the calling worker thread): the
    attributes of the very inode read (``fstat``), its extended attributes, every chunk
    reported to ``on_chunk``."""
    with open(local, "rb", buffering=0) as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{local}: not a regular file or a folder")
        if info.st_size > MAX_FILE_BYTES:
            raise UsageError(f"{local}: {info.st_size} bytes is over the {MAX_FILE_BYTES} maximum")
        pieces = ChunkStream(stream)
        refs: list[ChunkRef] = []
        for piece in pieces:
            on_chunk(piece.chunk_id, piece.data)
            refs.append(ChunkRef(piece.chunk_id, piece.length))
        try:
            return FileEntry(
                name=name,
                kind=EntryKind.FILE,
                mode=stat.S_IMODE(info.st_mode),
                uid=info.st_uid,
                gid=info.st_gid,
                size=pieces.size,
                mtime_ns=info.st_mtime_ns,
                xattrs=_xattrs_of(stream.fileno()),
                chunks=tuple(refs),
                content_hash=pieces.content_hash,
            )
        except FormatError as exc:
            raise UsageError(f"{local} cannot be stored: {exc}") from exc


def _xattrs_of(fd: int) -> tuple[tuple[bytes, bytes], ...]:
    """The extended attributes of an open file, sorted (as ``store.merkle.build_tree``
    records them); none where the filesystem has none."""
    if not hasattr(os, "listxattr"):
        return ()
    try:
        names = os.listxattr(fd)
    except OSError:
        return ()  # not supported here
    pairs: list[tuple[bytes, bytes]] = []
    for name in names:
        try:
            pairs.append((os.fsencode(name), os.getxattr(fd, name)))
        except OSError:
            continue  # removed between list and get
    return tuple(sorted(pairs))


# --- ops --------------------------------------------------------------------------------------


def new_key() -> str:
    """A fresh idempotency key for one batch of ops (or one restore)."""
    return secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]


_APPLY_ATTEMPTS: Final = 3
_MAX_RETRY_WAIT_S: Final = 10.0
# Bounds of one ops batch besides the op count: its chunk references (the JSON body).
_MAX_REFS_PER_BATCH: Final = 200_000


DriveOp: TypeAlias = ops.Put | ops.Mkdir | ops.Move | ops.Delete


async def apply_ops(view: DriveView, changes: Sequence[DriveOp]) -> list[protocol.OpResult]:
    """Apply ops in batches within the protocol's bounds (in order: folders before what
    they hold). A batch whose reply was lost is resent with the same idempotency key, so it
    applies once."""
    results: list[protocol.OpResult] = []
    for batch in _batches(changes):
        key = new_key()
        request = protocol.OpsBatch(
            idempotency_key=key, ops=tuple(protocol.op_to_wire(op) for op in batch)
        )
        backoff = Backoff(1.0, _MAX_RETRY_WAIT_S)
        for attempt in range(1, _APPLY_ATTEMPTS + 1):
            try:
                reply = await view.remote.apply_ops(view.namespace_id, request)
                break
            except TransientError as exc:
                if attempt == _APPLY_ATTEMPTS:
                    raise
                wait_s = backoff.next_delay_s()
                if isinstance(exc, protocol.RateLimitedError) and exc.retry_after_s:
                    wait_s = min(exc.retry_after_s, _MAX_RETRY_WAIT_S)
                await trio.sleep(wait_s)
        results.extend(reply.results)
    return results


def _batches(changes: Sequence[DriveOp]) -> Iterator[list[DriveOp]]:
    batch: list[DriveOp] = []
    refs = 0
    for op in changes:
        op_refs = len(op.entry.chunks) if isinstance(op, ops.Put) else 0
        if batch and (
            len(batch) >= protocol.MAX_OPS_PER_BATCH or refs + op_refs > _MAX_REFS_PER_BATCH
        ):
            yield batch
            batch, refs = [], 0
        batch.append(op)
        refs += op_refs
    if batch:
        yield batch


def mkdir_op(path: protocol.DrivePath, info: os.stat_result | None = None) -> ops.Mkdir:
    """A mkdir with a local folder's attributes, or this user's and the time now."""
    if info is None:
        attrs = ops.Attrs(mode=0o755, uid=os.getuid(), gid=os.getgid(), mtime_ns=time.time_ns())
    else:
        attrs = ops.Attrs(
            mode=stat.S_IMODE(info.st_mode),
            uid=info.st_uid,
            gid=info.st_gid,
            mtime_ns=info.st_mtime_ns,
        )
    return ops.Mkdir(path, attrs)


def deletes_below(folder: protocol.DrivePath, below: Mapping[bytes, FileEntry]) -> list[ops.Delete]:
    """Deletes of everything below ``folder``, deepest first (a folder only once empty).
    A file's delete names the content seen here: one changed elsewhere meanwhile stays."""
    ordered = sorted(below.items(), key=lambda item: item[0].count(b"/"), reverse=True)
    return [
        ops.Delete(
            protocol.DrivePath((*folder.components, *relative.split(b"/"))), entry.content_hash
        )
        for relative, entry in ordered
    ]


# --- the bases of puts ------------------------------------------------------------------------


def base_for_put(seen: ContentHash | None, existing: FileEntry | None) -> ContentHash | None:
    """The ``base`` of a put over ``existing`` (the drive's entry at the path, if any).

    The content this device last saw there (``seen``, recorded by ``get`` and ``put``), so
    an edit made elsewhere since is merged or kept as a conflicted copy, never replaced.
    A file this device never read is replaced on purpose (the user named it; the old
    version stays in history): its base is the drive's current content. ``None`` where no
    file is.
    """
    if existing is None or existing.kind is not EntryKind.FILE:
        return None
    return seen if seen is not None else existing.content_hash


def remember(home: Home, view: DriveView, seen: dict[bytes, ContentHash | None]) -> None:
    """Record the content seen at each path (``get``, an unchanged ``put``) in the home."""
    home.bases.record(
        view.namespace_id, {path: hash_ for path, hash_ in seen.items() if hash_ is not None}
    )


def remember_puts(
    home: Home,
    view: DriveView,
    changes: Sequence[ops.Put | ops.Mkdir],
    results: Sequence[protocol.OpResult],
    also: dict[bytes, ContentHash | None] | None = None,
) -> None:
    """Record, as the base of the next put, the content each applied or merged put sent
    (after a merge, it is the ancestor of the next 3-way merge, so edits made elsewhere
    survive). A conflicted copy records nothing: the path still holds the other version."""
    seen: dict[bytes, ContentHash | None] = dict(also or {})
    for op, result in zip(changes, results, strict=True):
        if isinstance(op, ops.Put) and result.status in ("applied", "merged"):
            seen[bytes(op.path)] = op.entry.content_hash
    remember(home, view, seen)


def same_leaf(existing: FileEntry, local: FileEntry) -> bool:
    """Whether a put would change nothing that matters: same kind, content and mode."""
    return (
        existing.kind == local.kind
        and existing.content_hash == local.content_hash
        and existing.target == local.target
        and existing.mode == local.mode
    )


# --- history ----------------------------------------------------------------------------------


async def all_versions(view: DriveView, path: protocol.DrivePath) -> list[protocol.FileVersion]:
    """Every version of ``path``, newest first, page by page."""
    versions: list[protocol.FileVersion] = []
    cursor: str | None = None
    while True:
        page = await view.remote.versions(
            view.namespace_id,
            protocol.VersionsRequest(path=path, cursor=cursor, limit=protocol.MAX_PAGE_SIZE),
        )
        versions.extend(page.versions)
        if page.next_cursor is None:
            return versions
        cursor = page.next_cursor
