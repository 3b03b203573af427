"""What the CLI's file commands need beside the headless drive (``boxfs.drive``).

``opened_drive`` opens the home namespace at its head through ``boxfs.drive.Drive``
(reading from the mount's object cache, opened read-only, when the home has one; taking
no lock, so a mount may run meanwhile), and ``opened_drives`` the home with the shared
folders its paths lead into (``boxfs.drive.Drives``); ``require_writable`` refuses a change
where the caller only views, and ``outer_results`` shows a shared folder's op results as
paths of the home; ``download_to`` lands a file's verified content in
place only once every byte is checked and fsynced; ``ChunkUploader`` and ``scan_file``
send only the chunks the server lacks as local files are chunked; ``mkdir_op`` and
``deletes_below`` build the ``store.ops`` operations the commands hand to ``Drive.apply``.

``put`` never silently replaces an edit made elsewhere: its ``base`` (``base_for_put``) is
the content this device last saw at the path (recorded by ``get`` and ``put`` in the home's
``bases.json``: ``remember``, ``remember_puts``), or, for a file this device never read, the
drive's current content (an explicit replace; the old version stays in history). The server
merges or writes a conflicted copy otherwise.

Network calls go through ``boxfs.remote.Remote`` inside the command's one ``trio.run``.
Chunking, hashing, zstd and big file writes run in worker threads
(``trio.to_thread.run_sync``): the scan of local files in a thread of its own that feeds a
bounded channel, frame encoding (a group of chunks per worker-thread call, the next group
framed while one travels: ``boxfs.chunk_sender``) through the ``CapacityLimiter`` the
command passes. It must not print (it only advances the progress bar it is given; the
commands print what it returns), parse arguments, or import ``server`` or pyfuse3. Called
by the commands, from the trio thread.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, TypeVar

import trio

from boxfs.chunk_sender import groups_of, send_framed
from boxfs.cli.output import Transfer, show_path
from boxfs.drive import Drive, Drives, Location, open_drive, open_drives
from boxfs.errors import UsageError
from boxfs.home import Home, Session
from boxfs.remote import Remote
from boxfs.threads import run_in_thread
from store import ops, protocol
from store.cache import ObjectCache
from store.chunking import ChunkStream
from store.errors import FormatError, NotFoundError, StoreError
from store.frames import encode_frame
from store.ids import ChunkId, ContentHash, NamespaceId
from store.objects import (
    MAX_FILE_BYTES,
    ChunkRef,
    EntryKind,
    FileEntry,
)

T = TypeVar("T")

_log = logging.getLogger(__name__)


def session_remote(session: Session) -> Remote:
    """A client of this device's server, speaking for its session."""
    return Remote(session.server_url, session.token)


@asynccontextmanager
async def opened_drive(
    home: Home, remote: Remote, limiter: trio.CapacityLimiter
) -> AsyncIterator[Drive]:
    """The home namespace at its head; objects the home's cache holds are read from it
    (read-only: a mount may own it), the rest are fetched."""
    async with _home_cache(home, limiter) as cache, open_drive(remote, limiter, cache) as drive:
        yield drive


@asynccontextmanager
async def opened_drives(
    home: Home, remote: Remote, limiter: trio.CapacityLimiter
) -> AsyncIterator[Drives]:
    """The home at its head and the shared folders its paths lead into (``Drives.at``),
    reading from the home's object cache as ``opened_drive`` does."""
    async with _home_cache(home, limiter) as cache, open_drives(remote, limiter, cache) as drives:
        yield drives


@asynccontextmanager
async def _home_cache(
    home: Home, limiter: trio.CapacityLimiter
) -> AsyncIterator[ObjectCache | None]:
    """The home's object cache opened read-only, or ``None`` if it has none or it is
    unusable (it is only a shortcut)."""
    cache: ObjectCache | None = None
    try:
        cache = await run_in_thread(
            limiter, lambda: ObjectCache.open(home.cache_dir, readonly=True)
        )
    except NotFoundError:
        cache = None  # no mount has run here yet
    except (StoreError, OSError) as exc:  # the cache is only a shortcut: go without it
        _log.warning("not using the object cache of %s: %s", home, exc)
    try:
        yield cache
    finally:
        if cache is not None:
            cache.close()


def require_writable(location: Location) -> None:
    """Refuse, before anything is sent, a change inside a shared folder one only views."""
    if not location.writable:
        assert location.mount_path is not None
        shown = show_path(location.mount_path)
        raise protocol.ForbiddenError(
            f"{shown} is a shared folder you can only view (role {location.role}): "
            "ask its owner for the editor role"
        )


def outer_results(
    location: Location, results: Sequence[protocol.OpResult]
) -> list[protocol.OpResult]:
    """Op results of a shared folder with their paths as paths of the home, to show."""
    if not location.shared:
        return list(results)
    return [
        result.model_copy(
            update={
                "path": location.outer(result.path),
                "conflict_path": (
                    None if result.conflict_path is None else location.outer(result.conflict_path)
                ),
            }
        )
        for result in results
    ]


# --- downloads --------------------------------------------------------------------------------


async def download_to(
    view: Drive,
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
            await view.read(entry, stream.write, transfer.advance)

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
        groups = groups_of(to_send, lambda item: len(item[1]))
        self.stats.sent_bytes += await send_framed(
            self._remote, self._namespace_id, self._limiter, groups, frame=_frame_all
        )
        self.stats.new_chunks += len(to_send)


def _frame_all(chunks: list[tuple[ChunkId, bytes]]) -> list[tuple[ChunkId, bytes]]:
    return [(chunk_id, encode_frame(data)) for chunk_id, data in chunks]


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


def remember(home: Home, view: Drive, seen: dict[bytes, ContentHash | None]) -> None:
    """Record the content seen at each path (``get``, an unchanged ``put``) in the home."""
    home.bases.record(
        view.namespace_id, {path: hash_ for path, hash_ in seen.items() if hash_ is not None}
    )


def remember_puts(
    home: Home,
    view: Drive,
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
