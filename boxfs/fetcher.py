"""The read path below the filesystem: trees and chunks by id, verified, cached, and file ranges.

Owns: fetching trees (``Remote.trees``) and chunk frames (``Remote.download_chunks``) of one
namespace, in batches; verifying every object against its id before it is used or cached
(``store.objects.decode_tree``, ``store.frames.decode_frame``); putting verified objects
into the LMDB ``ObjectCache`` (whose byte budget is the cache's own business), when it has
one it may write: the CLI passes a mount's cache opened read-only, or none, and then
verified objects stay in the memory caches below only; reading a
byte range of a file entry, with sequential prefetch, and a small random part of a cached
raw chunk by the 64 KiB blocks it touches (``store.frames.raw_range`` against the block
digests cached with the chunk once a read verified it whole), so a 4 KiB read does not
decode and hash a whole chunk; and the pure offset -> chunk mapping (``chunk_starts``,
``slices_for_range``).

Must not: import pyfuse3 or know about inodes and errnos (the FUSE adapter maps the
exceptions below); call the cache or decode on the trio loop (every such call goes through
``boxfs.threads.run_in_thread(limiter, ...)``, each one a whole cache method, so no LMDB
transaction spans an await); cache anything that failed verification; hold a whole file
(a read holds the chunks it touches, at most ``MAX_READ_BYTES`` of them; a batch streams
one frame at a time; the last-used plaintexts kept in memory are bounded by
``recent_plaintext_bytes``, the last-used trees by ``RECENT_TREE_BYTES``); let a
background failure escape ``run``.

Who calls it: request handlers of the mount (lookup, readdir, read) and the CLI, as trio
tasks on the one loop; ``run()`` is a background task in the mount's nursery (it owns the
download tasks). Errors reaching callers: ``store.errors.IntegrityError`` (the server sent
something that is not the object asked for: the caller marks that file broken),
``store.errors.NotFoundError`` (the namespace does not hold the object),
``store.protocol.UnavailableError`` (the server cannot be reached or sent nothing for
``request_timeout_s``; cached objects keep being served), and the other
``store.protocol`` errors the server answers with (e.g. ``UnauthorizedError``).

Concurrency (``docs/concurrency.md``, "Fetcher"): all state below lives on the trio loop
and is only touched between awaits, so it needs no lock. Concurrent requests for one
object share one download (``_inflight``: id -> pending result). Chunk misses go to a
queue; ``run()`` collects them for ``batch_window_s`` (or until ``max_batch_chunks``) and
starts one download task per batch, at most ``max_concurrent_batches`` at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import logging
from array import array
from bisect import bisect_right
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import trio
from cachetools import LRUCache

from boxfs.remote import Remote
from boxfs.threads import run_in_thread
from store import protocol
from store.cache import CacheError, ObjectCache, ObjectKind
from store.errors import FormatError, IntegrityError, NotFoundError, StoreError
from store.frames import Codec, block_digests, decode_frame, frame_codec, raw_range
from store.ids import ChunkId, ContentHash, NamespaceId, TreeId
from store.objects import EMPTY_TREE, ChunkRef, EntryKind, FileEntry, Tree, decode_tree

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

MiB: Final = 1024 * 1024

MAX_READ_BYTES: Final = 64 * MiB
"""The most one ``read`` returns: it holds the chunks it touches in memory at once."""

DEFAULT_REQUEST_TIMEOUT_S: Final = 10.0
DEFAULT_PREFETCH_CHUNKS: Final = 4
DEFAULT_BATCH_WINDOW_S: Final = 0.002
DEFAULT_MAX_BATCH_CHUNKS: Final = 16
DEFAULT_MAX_CONCURRENT_BATCHES: Final = 4
DEFAULT_RECENT_PLAINTEXT_BYTES: Final = 16 * MiB
"""Verified plaintexts of the chunks used last, kept in memory: the kernel reads a chunk
in several requests (128 KiB to 1 MiB each), and each would otherwise load, decompress
and hash the whole chunk again."""

_PARTIAL_READ_FRACTION: Final = 4
"""A random read of at most this fraction of a cached chunk reads the blocks it touches
(``store.frames.raw_range``), where a bigger one decodes and verifies the whole chunk (and
keeps it in memory for the next)."""

_SEQUENTIAL_SLACK_BYTES: Final = 1 * MiB
"""A read starting this close to where the previous one of the entry ended is sequential
(the kernel sends readahead requests concurrently, so they may arrive slightly out of
order)."""

RECENT_TREE_BYTES: Final = 16 * MiB
"""Verified trees used last, kept in memory up to this many encoded bytes in all: the model
looks at the same directories again and again (a sync, a recheck after every answered
batch), and each would otherwise load, decode and re-verify them; a directory of 10,000
entries costs milliseconds every time."""

_TREE_TOUCH_BATCH: Final = 256
"""Trees served from memory before their cache recency is refreshed in a call of its own
(otherwise it rides along with the next lookup)."""

_MAX_TRACKED_NOT_RAW: Final = 4096
"""Compressed cached chunks remembered as such (``_not_raw``), least recent dropped:
losing one costs one look at its frame header."""

_MAX_TRACKED_ENTRIES: Final = 128
"""Per-entry read state (chunk offsets, where the last read ended) kept, least recent
dropped: losing it only costs recomputing the offsets and one missed prefetch."""

_EMPTY_TREE_ID: Final = EMPTY_TREE.id


def _encoded_size(tree_and_size: tuple[Tree, int]) -> int:
    """What a tree counts against ``RECENT_TREE_BYTES``: the size of its encoding."""
    return tree_and_size[1]


# --------------------------------------------------------------------------------------
# Offsets -> chunks (pure)


def chunk_starts(chunks: Sequence[ChunkRef]) -> array[int]:
    """Where each chunk begins in the file, then the file size: ``len(chunks) + 1`` items.

    An ``array`` of 8-byte integers: proportional to the chunk list, never to the file size.
    """
    starts = array("Q", [0])
    position = 0
    for ref in chunks:
        position += ref.length
        starts.append(position)
    return starts


@dataclass(frozen=True, slots=True)
class ChunkSlice:
    """The part of chunk ``index`` a range covers: bytes ``start:stop`` of its plaintext."""

    index: int
    start: int
    stop: int


def slices_for_range(starts: Sequence[int], offset: int, size: int) -> list[ChunkSlice]:
    """The chunk pieces that make up bytes ``offset:offset+size`` of a file, in order.

    ``starts`` is ``chunk_starts`` of the file (strictly increasing: chunks are never
    empty). The range is cut at the end of the file; a range of nothing, or one starting at
    or past the end, has no pieces.
    """
    if offset < 0 or size < 0:
        raise ValueError(f"a range needs a non-negative offset and size: {offset}, {size}")
    file_size = starts[-1]
    end = min(offset + size, file_size)
    if offset >= end:
        return []
    index = bisect_right(starts, offset) - 1
    pieces: list[ChunkSlice] = []
    while starts[index] < end:
        chunk_start, chunk_stop = starts[index], starts[index + 1]
        pieces.append(
            ChunkSlice(
                index, max(offset, chunk_start) - chunk_start, min(end, chunk_stop) - chunk_start
            )
        )
        index += 1
    return pieces


# --------------------------------------------------------------------------------------
# Shared results


class _Pending(Generic[_T]):
    """The result of one object's fetch, shared by every task that asked for it.

    Settled once (``succeed``, ``fail`` or ``abandon``); later calls do nothing. An
    abandoned fetch (its leader was cancelled) tells waiters to ask again themselves.
    """

    __slots__ = ("abandoned", "done", "error", "object_id", "value")

    def __init__(self, object_id: ChunkId | TreeId) -> None:
        self.object_id = object_id
        self.done = trio.Event()
        self.value: _T | None = None
        self.error: BaseException | None = None
        self.abandoned = False

    def succeed(self, value: _T | None) -> None:
        if not self.done.is_set():
            self.value = value
            self.done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            # Waiters raise this one object; drop the detecting task's frames with it.
            self.error = error.with_traceback(None)
            self.done.set()

    def abandon(self) -> None:
        if not self.done.is_set():
            self.abandoned = True
            self.done.set()


class _FramePending(_Pending[bytes]):
    """A chunk being fetched (or loaded from the cache ahead of a reader). ``value`` is its
    verified plaintext."""

    __slots__ = ("cache_checked", "chunk_id", "demanded", "length", "prefetch")

    def __init__(self, chunk_id: ChunkId, length: int, *, demanded: bool) -> None:
        super().__init__(chunk_id)
        self.chunk_id = chunk_id
        self.length = length
        self.demanded = demanded  # a reader waits for it (else a prefetch)
        self.cache_checked = demanded  # a reader found it missing from the cache
        self.prefetch = not demanded  # counted in Fetcher._prefetch_bytes_inflight


class _Lookup:
    """A reader's look into the cache for ``ids`` (one worker-thread call). Chunks that a
    download writes to the cache meanwhile arrive in ``arrived``: the lookup may have
    missed them, and they are no longer in flight to be joined."""

    __slots__ = ("arrived", "ids", "wanted")

    def __init__(self, ids: Iterable[ChunkId]) -> None:
        self.ids = list(dict.fromkeys(ids))
        self.wanted = set(self.ids)
        self.arrived: dict[ChunkId, bytes] = {}


async def _wait(pending: _Pending[_T]) -> _T:
    await pending.done.wait()
    if pending.error is not None:
        raise pending.error
    assert pending.value is not None, "a waited-for fetch settled without a value"
    return pending.value


# --------------------------------------------------------------------------------------
# The fetcher


@dataclass(slots=True)
class FetcherStats:
    """Counters since the fetcher was made (for tests, ``boxfs status`` and benchmarks).
    ``chunks_prefetched`` counts chunks queued ahead of a reader, whether or not they then
    had to be downloaded; ``corrupt_cache_objects`` those the cache held damaged."""

    chunk_memory_hits: int = 0
    chunk_cache_hits: int = 0
    chunk_range_hits: int = 0  # parts of cached raw chunks read by their blocks
    chunks_downloaded: int = 0
    frame_bytes_downloaded: int = 0
    download_requests: int = 0
    chunks_prefetched: int = 0
    integrity_failures: int = 0
    corrupt_cache_objects: int = 0
    tree_memory_hits: int = 0
    tree_cache_hits: int = 0
    trees_downloaded: int = 0
    tree_requests: int = 0


class _RangeMiss(enum.Enum):
    """Why a part of a chunk could not be read from the cache by its blocks."""

    ABSENT = "the frame is not cached"
    NO_DIGESTS = "the frame is cached, its block digests are not (or were damaged)"
    NOT_RAW = "the frame is compressed: it decodes whole"


@dataclass(slots=True)
class _EntryState:
    """What ``read`` remembers about one file content between calls."""

    chunks: tuple[ChunkRef, ...]
    starts: array[int]
    next_offset: int = 0  # where the last read ended; 0 so reading from the start counts
    prefetched_until: int = 0  # chunk index: those below it were queued for prefetch


class Fetcher:
    """Trees and chunks of one namespace, by id, verified and cached; byte ranges of files.

    Chunk misses are downloaded by ``run()``, which must be running (start it with
    ``await nursery.start(fetcher.run)``); trees and cached chunks need no background task.
    """

    def __init__(
        self,
        remote: Remote,
        namespace_id: NamespaceId,
        cache: ObjectCache | None,
        limiter: trio.CapacityLimiter,
        *,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        prefetch_chunks: int = DEFAULT_PREFETCH_CHUNKS,
        batch_window_s: float = DEFAULT_BATCH_WINDOW_S,
        max_batch_chunks: int = DEFAULT_MAX_BATCH_CHUNKS,
        max_concurrent_batches: int = DEFAULT_MAX_CONCURRENT_BATCHES,
        recent_plaintext_bytes: int = DEFAULT_RECENT_PLAINTEXT_BYTES,
    ) -> None:
        if (
            request_timeout_s <= 0
            or min(prefetch_chunks, batch_window_s, recent_plaintext_bytes) < 0
        ):
            raise ValueError("timeouts and windows must be positive, prefetch not negative")
        if not 1 <= max_batch_chunks <= protocol.MAX_IDS_PER_REQUEST or max_concurrent_batches < 1:
            raise ValueError(f"bad batch bounds: {max_batch_chunks}, {max_concurrent_batches}")
        self._remote = remote
        self._namespace_id = namespace_id
        self._cache = cache
        self._cache_writable = cache is not None and not cache.readonly
        self._limiter = limiter
        self._timeout_s = request_timeout_s
        self._prefetch_chunks = prefetch_chunks
        self._batch_window_s = batch_window_s
        self._max_batch_chunks = max_batch_chunks
        self._batch_slots = trio.Semaphore(max_concurrent_batches)
        self._stats = FetcherStats()
        # Chunks being fetched, and trees: one pending result per id, removed once the
        # object is in the cache (or failed), so a later request looks in the cache again.
        self._inflight: dict[ChunkId, _FramePending] = {}
        self._tree_inflight: dict[TreeId, _Pending[Tree]] = {}
        # Chunk fetches waiting for run() to put them in a batch. Bounded by the readers
        # waiting (one per chunk they asked for) plus the prefetch cap below.
        self._queue: collections.deque[_FramePending] = collections.deque()
        self._queue_nonempty = trio.Event()
        # Prefetch stays under half the cache budget, so prefetched chunks do not evict
        # each other (or the chunk being read) before the reader gets to them.
        self._prefetch_cap_bytes = 0
        self._prefetch_bytes_inflight = 0
        # Cache lookups of readers under way (see _begin): a chunk stored during one is
        # handed to it, so a lookup that just missed it does not download it again.
        self._lookups: list[_Lookup] = []
        # The memory caches: least recently used dropped first (a lookup or a store makes
        # an item the most recent). Read states by count; verified plaintexts by their
        # bytes, at most recent_plaintext_bytes; verified trees with their encoded sizes,
        # at most RECENT_TREE_BYTES of encodings in all.
        self._entries: LRUCache[ContentHash, _EntryState] = LRUCache(_MAX_TRACKED_ENTRIES)
        self._recent: LRUCache[ChunkId, bytes] = LRUCache(recent_plaintext_bytes, getsizeof=len)
        # Chunks whose cached frame is compressed: a part of one is read by decoding it.
        self._not_raw: LRUCache[ChunkId, None] = LRUCache(_MAX_TRACKED_NOT_RAW)
        self._recent_trees: LRUCache[TreeId, tuple[Tree, int]] = LRUCache(
            RECENT_TREE_BYTES, getsizeof=_encoded_size
        )
        # Trees served from memory whose LMDB recency is still to be refreshed, so the cache
        # does not evict them as unused (an offline start needs the view's trees there).
        self._tree_touches: list[TreeId] = []
        self._running = False
        self._stopped = False

    @property
    def namespace_id(self) -> NamespaceId:
        return self._namespace_id

    def stats(self) -> FetcherStats:
        return dataclasses.replace(self._stats)

    # ----------------------------------------------------------------------------------
    # The background task

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Batch chunk misses and download them until cancelled. Never raises on a failed
        download: its error goes to the readers waiting for those chunks."""
        if self._running or self._stopped:
            raise RuntimeError("Fetcher.run() runs once")
        if self._cache is not None and self._cache_writable:
            cache_stats = await run_in_thread(self._limiter, self._cache.stats)
            self._prefetch_cap_bytes = cache_stats.budget_bytes // 2
        else:  # prefetched chunks wait in memory only
            self._prefetch_cap_bytes = int(self._recent.maxsize) // 2
        try:
            async with trio.open_nursery() as nursery:
                self._running = True
                task_status.started()
                await self._dispatch(nursery)
        finally:
            self._running = False
            self._stopped = True
            self._fail_queued(protocol.UnavailableError("the fetcher has stopped"))

    async def _dispatch(self, nursery: trio.Nursery) -> None:
        while True:
            while not self._queue:
                self._queue_nonempty = trio.Event()
                await self._queue_nonempty.wait()
            await self._batch_slots.acquire()
            started = False
            try:
                if len(self._queue) < self._max_batch_chunks:
                    await trio.sleep(self._batch_window_s)  # let close misses join
                batch = self._take_batch()
                if batch:
                    nursery.start_soon(self._download_batch, batch)
                    started = True
            finally:
                if not started:
                    self._batch_slots.release()

    def _take_batch(self) -> list[_FramePending]:
        """Up to ``max_batch_chunks`` queued fetches, those a reader waits for first."""
        queued = sorted(self._queue, key=lambda pending: not pending.demanded)  # stable
        batch = queued[: self._max_batch_chunks]
        self._queue = collections.deque(queued[self._max_batch_chunks :])
        return batch

    def _enqueue(self, pending: _FramePending) -> None:
        self._inflight[pending.chunk_id] = pending
        self._queue.append(pending)
        self._queue_nonempty.set()

    def _forget(self, pending: _FramePending) -> None:
        chunk_id = pending.chunk_id
        if self._inflight.get(chunk_id) is pending:
            del self._inflight[chunk_id]
        if pending.prefetch:
            pending.prefetch = False
            self._prefetch_bytes_inflight -= pending.length

    def _fail_queued(self, error: BaseException) -> None:
        queued, self._queue = self._queue, collections.deque()
        for pending in queued:
            pending.fail(error)
            self._forget(pending)

    async def _download_batch(self, batch: list[_FramePending]) -> None:
        """Fetch one batch and settle every pending result in it, whatever happens."""
        by_id = {pending.chunk_id: pending for pending in batch}  # not yet settled
        error: BaseException | None = None
        try:
            await self._settle_from_cache(by_id)
            if by_id:
                await self._stream_batch(by_id)
        except protocol.UnavailableError as exc:
            _log.warning("downloading %d chunks failed: %s", len(by_id), exc)
            error = exc
            # The server is unreachable: readers queued behind this batch fail now
            # instead of each waiting out its own timeout.
            self._fail_queued(exc)
        except StoreError as exc:
            _log.warning("downloading %d chunks failed: %s", len(by_id), exc)
            error = exc
        except Exception as exc:  # noqa: BLE001  (a bug here must not end run(): readers get it)
            _log.exception("chunk download failed")
            error = exc
        finally:
            self._batch_slots.release()
            if by_id:
                if error is None:  # cancelled: the fetcher is stopping
                    error = protocol.UnavailableError("the fetcher has stopped")
                for pending in by_id.values():
                    pending.fail(error)
                    self._forget(pending)

    async def _stream_batch(self, by_id: dict[ChunkId, _FramePending]) -> None:
        """One download request for ``by_id``; each chunk leaves it once settled."""
        self._stats.download_requests += 1
        with trio.CancelScope() as scope:
            scope.deadline = trio.current_time() + self._timeout_s
            records = self._remote.download_chunks(self._namespace_id, list(by_id))
            try:
                async for record in records:
                    pending = by_id.get(record.object_id)
                    if pending is None:
                        _log.warning("server sent chunk %s, not asked for", record.object_id)
                        continue
                    await self._accept_frame(pending, record.payload)
                    del by_id[record.object_id]
                    # Progress: the bound is on silence, not on the whole batch.
                    scope.deadline = trio.current_time() + self._timeout_s
            finally:
                if isinstance(records, AsyncGenerator):
                    await records.aclose()  # ends the HTTP response now, not at GC
        if scope.cancelled_caught:
            raise protocol.UnavailableError(
                f"{self._remote.base_url} sent no chunk for {self._timeout_s:g} s"
            )
        if by_id:
            raise FormatError(f"the download ended without {len(by_id)} of its chunks")

    async def _settle_from_cache(self, by_id: dict[ChunkId, _FramePending]) -> None:
        """Take out of the batch the chunks the cache holds by now, loaded and verified
        into the recent plaintexts (a prefetch of a cached chunk does the reader's work
        ahead of it, on a worker thread), so only misses are downloaded."""
        unchecked = [chunk_id for chunk_id, pending in by_id.items() if not pending.cache_checked]
        if not unchecked or self._cache is None:
            return
        found, damaged = await run_in_thread(self._limiter, self._load_cached_plaintexts, unchecked)
        self._stats.corrupt_cache_objects += damaged
        for chunk_id, plaintext in zip(unchecked, found, strict=True):
            by_id[chunk_id].cache_checked = True
            if plaintext is None:
                continue
            self._stats.chunk_cache_hits += 1
            self._remember(chunk_id, plaintext)
            pending = by_id.pop(chunk_id)
            pending.succeed(plaintext)
            self._forget(pending)

    async def _accept_frame(self, pending: _FramePending, frame: bytes | None) -> None:
        """Verify one downloaded frame, hand its plaintext to the waiters, cache it."""
        chunk_id = pending.chunk_id
        try:
            if frame is None:
                raise NotFoundError("chunk", chunk_id.hex())
            self._stats.chunks_downloaded += 1
            self._stats.frame_bytes_downloaded += len(frame)
            try:
                plaintext = await run_in_thread(self._limiter, decode_frame, frame, chunk_id)
            except IntegrityError as exc:
                self._stats.integrity_failures += 1
                _log.error("chunk %s from the server failed verification: %s", chunk_id, exc)
                raise
            pending.succeed(plaintext)
            self._remember(chunk_id, plaintext)
            # Still in _inflight (settled) while it is written: a request arriving now
            # takes the plaintext instead of missing the cache and downloading again.
            if self._cache_writable:
                await run_in_thread(self._limiter, self._store, ObjectKind.FRAME, chunk_id, frame)
            for lookup in self._lookups:
                if chunk_id in lookup.wanted:
                    lookup.arrived[chunk_id] = plaintext
        except StoreError as exc:
            pending.fail(exc)
        finally:
            self._forget(pending)

    # ----------------------------------------------------------------------------------
    # Chunks

    async def frame_plaintext(self, chunk_id: ChunkId) -> bytes:
        """The verified plaintext of a chunk, from the cache or the server."""
        wanted = [(chunk_id, 0)]
        (plaintext,) = await self._collect(wanted, await self._begin(wanted))
        return plaintext

    async def _begin(
        self, wanted: Sequence[tuple[ChunkId, int]]
    ) -> dict[ChunkId, bytes | _FramePending]:
        """Start getting ``(chunk id, length)`` pairs: the ones on their way joined, the
        cached ones verified at once, the others queued for download."""
        results: dict[ChunkId, bytes | _FramePending] = {}
        for chunk_id, _ in wanted:
            plaintext = self._recent.get(chunk_id)
            if plaintext is not None:
                self._stats.chunk_memory_hits += 1
                results[chunk_id] = plaintext
            else:
                self._join(chunk_id, results)
        lookup = _Lookup(chunk_id for chunk_id, _ in wanted if chunk_id not in results)
        if lookup.ids and self._cache is not None:
            self._lookups.append(lookup)
            try:
                found, damaged = await run_in_thread(
                    self._limiter, self._load_cached_plaintexts, lookup.ids
                )
            finally:
                self._lookups.remove(lookup)
            self._stats.corrupt_cache_objects += damaged
            for chunk_id, plaintext in zip(lookup.ids, found, strict=True):
                if plaintext is not None:
                    self._stats.chunk_cache_hits += 1
                    self._remember(chunk_id, plaintext)
                    results[chunk_id] = plaintext
                elif chunk_id in lookup.arrived:  # downloaded and cached as we looked
                    results[chunk_id] = lookup.arrived[chunk_id]
                else:
                    self._join(chunk_id, results)  # queued (by a prefetch) as we looked
        for chunk_id, length in wanted:
            if chunk_id not in results:
                self._check_running()
                pending = _FramePending(chunk_id, length, demanded=True)
                self._enqueue(pending)
                results[chunk_id] = pending
        return results

    def _remember(self, chunk_id: ChunkId, plaintext: bytes) -> None:
        if len(plaintext) <= self._recent.maxsize:  # a bigger one would empty it for nothing
            self._recent[chunk_id] = plaintext

    def _join(self, chunk_id: ChunkId, results: dict[ChunkId, bytes | _FramePending]) -> None:
        pending = self._inflight.get(chunk_id)
        if pending is not None:
            pending.demanded = True  # from now on it is never settled without a value
            results[chunk_id] = pending

    @staticmethod
    async def _collect(
        wanted: Sequence[tuple[ChunkId, int]], results: dict[ChunkId, bytes | _FramePending]
    ) -> list[bytes]:
        """The plaintexts of ``wanted``, in order, once each has arrived."""
        plaintexts = []
        for chunk_id, _ in wanted:
            result = results[chunk_id]
            plaintexts.append(result if isinstance(result, bytes) else await _wait(result))
        return plaintexts

    def _check_running(self) -> None:
        if self._stopped:
            raise protocol.UnavailableError("the fetcher has stopped")
        if not self._running:
            raise RuntimeError("Fetcher.run() is not running: nothing would download")

    def _prefetch(self, refs: Sequence[ChunkRef]) -> int:
        """Queue chunks nobody waits for yet, in order, within the prefetch cap (no await).
        How many of ``refs`` are now queued or on their way."""
        if not self._running:
            return 0
        for count, ref in enumerate(refs):
            if ref.chunk_id in self._inflight:
                continue
            if self._prefetch_bytes_inflight + ref.length > self._prefetch_cap_bytes:
                return count
            self._prefetch_bytes_inflight += ref.length
            self._stats.chunks_prefetched += 1
            self._enqueue(_FramePending(ref.chunk_id, ref.length, demanded=False))
        return len(refs)

    # ----------------------------------------------------------------------------------
    # Files

    async def read(self, entry: FileEntry, offset: int, size: int) -> bytes:
        """Bytes ``offset:offset+size`` of a file: short at its end, empty past it.

        Raises ``ValueError`` for a negative range, or one holding over ``MAX_READ_BYTES``
        of the file.
        """
        if entry.kind is not EntryKind.FILE or entry.content_hash is None:
            raise ValueError(f"{entry.name!r} is not a file")
        if min(offset + size, entry.size) - offset > MAX_READ_BYTES:
            raise ValueError(f"a read of {size} bytes is over {MAX_READ_BYTES}")
        state = self._entry_state(entry.content_hash, entry.chunks)
        pieces = slices_for_range(state.starts, offset, size)
        if not pieces:
            return b""
        sequential = abs(offset - state.next_offset) <= _SEQUENTIAL_SLACK_BYTES
        ahead = self._read_ahead(state, offset, pieces)
        wanted = [(ref.chunk_id, ref.length) for ref in (state.chunks[p.index] for p in pieces)]
        needs_digests = False
        if not sequential and len(pieces) == 1 and self._partial(wanted[0], pieces[0]):
            ranged = await run_in_thread(
                self._limiter, self._load_cached_range, wanted[0][0], pieces[0]
            )
            if isinstance(ranged, bytes):
                self._stats.chunk_range_hits += 1
                return ranged
            if ranged is _RangeMiss.NOT_RAW:
                self._not_raw[wanted[0][0]] = None  # not asked again: it decodes whole
            needs_digests = ranged is _RangeMiss.NO_DIGESTS and self._cache_writable
        results = await self._begin(wanted)
        if ahead:
            # Behind this read's own misses, so they come first in the batch.
            state.prefetched_until = ahead.start + self._prefetch(
                state.chunks[ahead.start : ahead.stop]
            )
        plaintexts = await self._collect(wanted, results)
        if needs_digests:  # the next random read of this chunk checks its blocks only
            await run_in_thread(self._limiter, self._store_digests, wanted[0][0], plaintexts[0])
        if len(pieces) == 1 and pieces[0].start == 0 and pieces[0].stop == len(plaintexts[0]):
            return plaintexts[0]
        return b"".join(
            memoryview(plaintext)[piece.start : piece.stop]
            for piece, plaintext in zip(pieces, plaintexts, strict=True)
        )

    def _partial(self, wanted: tuple[ChunkId, int], piece: ChunkSlice) -> bool:
        """Whether a read of ``piece`` of a chunk is better served by its blocks (a small
        part, the chunk not in memory nor on its way, a cache to look in)."""
        chunk_id, length = wanted
        return (
            self._cache is not None
            and (piece.stop - piece.start) * _PARTIAL_READ_FRACTION <= length
            and chunk_id not in self._recent
            and chunk_id not in self._inflight
            and chunk_id not in self._not_raw
        )

    def _entry_state(self, content_hash: ContentHash, chunks: tuple[ChunkRef, ...]) -> _EntryState:
        state = self._entries.get(content_hash)
        # Same content, same chunks, unless some writer chunked it differently: compare.
        if state is not None and (state.chunks is chunks or state.chunks == chunks):
            return state
        state = _EntryState(chunks=chunks, starts=chunk_starts(chunks))
        self._entries[content_hash] = state
        return state

    def _read_ahead(self, state: _EntryState, offset: int, pieces: list[ChunkSlice]) -> range:
        """Note a read; if it continues the previous one, the indexes of the chunks to
        prefetch (those after it, not queued for prefetch already)."""
        sequential = abs(offset - state.next_offset) <= _SEQUENTIAL_SLACK_BYTES
        last = pieces[-1]
        state.next_offset = state.starts[last.index] + last.stop
        if not sequential:
            state.prefetched_until = 0  # a new run starts wherever the reader went
            return range(0)
        first = max(last.index + 1, state.prefetched_until)
        stop = min(len(state.chunks), last.index + 1 + self._prefetch_chunks)
        return range(first, max(first, stop))

    # ----------------------------------------------------------------------------------
    # Trees

    async def tree(self, tree_id: TreeId) -> Tree:
        """One tree, verified: from the cache or the server (the empty tree from neither)."""
        return (await self.trees([tree_id]))[tree_id]

    async def trees(self, tree_ids: Iterable[TreeId]) -> dict[TreeId, Tree]:
        """Several trees, verified; the ones neither cached nor already being fetched come
        in one request. Raises the first failure after settling (and caching) the rest."""
        wanted = list(dict.fromkeys(tree_ids))
        found: dict[TreeId, Tree] = {}
        lookup = []
        for tree_id in wanted:
            recent = self._recent_trees.get(tree_id)
            if tree_id == _EMPTY_TREE_ID:
                found[tree_id] = EMPTY_TREE
            elif recent is not None:
                self._stats.tree_memory_hits += 1
                self._tree_touches.append(tree_id)
                found[tree_id] = recent[0]
            elif tree_id not in self._tree_inflight:
                lookup.append(tree_id)
        if lookup or len(self._tree_touches) >= _TREE_TOUCH_BATCH:
            touches, self._tree_touches = self._tree_touches, []
            cached, damaged = await run_in_thread(
                self._limiter, self._load_cached_trees, lookup, touches
            )
            self._stats.tree_cache_hits += len(cached)
            self._stats.corrupt_cache_objects += damaged
            for tree_id, (tree, size_bytes) in cached.items():
                found[tree_id] = tree
                self._remember_tree(tree_id, tree, size_bytes)
        mine: dict[TreeId, _Pending[Tree]] = {}
        waiting: dict[TreeId, _Pending[Tree]] = {}
        for tree_id in wanted:
            if tree_id in found:
                continue
            pending = self._tree_inflight.get(tree_id)
            if pending is None:
                pending = mine[tree_id] = _Pending(tree_id)
                self._tree_inflight[tree_id] = pending
            waiting[tree_id] = pending
        if mine:
            await self._fetch_trees(mine)
        await self._collect_trees(waiting, found)
        return {tree_id: found[tree_id] for tree_id in wanted}

    def _remember_tree(self, tree_id: TreeId, tree: Tree, size_bytes: int) -> None:
        if size_bytes > self._recent_trees.maxsize or tree_id in self._recent_trees:
            return
        self._recent_trees[tree_id] = (tree, size_bytes)

    async def _collect_trees(
        self, waiting: dict[TreeId, _Pending[Tree]], found: dict[TreeId, Tree]
    ) -> None:
        """Wait for each fetch into ``found``; raise the first failure after all settled."""
        errors: list[BaseException] = []
        for tree_id, pending in waiting.items():
            await pending.done.wait()
            if pending.abandoned:  # its fetcher was cancelled: ask again
                found[tree_id] = await self.tree(tree_id)
            elif pending.error is not None:
                errors.append(pending.error)
            else:
                assert pending.value is not None
                found[tree_id] = pending.value
        if errors:
            raise errors[0]

    async def _fetch_trees(self, mine: dict[TreeId, _Pending[Tree]]) -> None:
        """Fetch ``mine`` (one request per ``MAX_IDS_PER_REQUEST`` ids, each given
        ``request_timeout_s``) and settle each; a cancelled fetch abandons them."""
        try:
            ids = list(mine)
            encodings: dict[TreeId, bytes | None] = {}
            for start in range(0, len(ids), protocol.MAX_IDS_PER_REQUEST):
                self._stats.tree_requests += 1
                part = ids[start : start + protocol.MAX_IDS_PER_REQUEST]
                with trio.move_on_after(self._timeout_s) as scope:
                    encodings.update(await self._remote.trees(self._namespace_id, part))
                if scope.cancelled_caught:
                    raise protocol.UnavailableError(
                        f"{self._remote.base_url} sent no trees within {self._timeout_s:g} s"
                    )
            results = await run_in_thread(self._limiter, self._accept_trees, list(mine), encodings)
            for tree_id, result in results.items():
                if isinstance(result, Tree):
                    self._stats.trees_downloaded += 1
                    self._remember_tree(tree_id, result, len(encodings.get(tree_id) or b""))
                    mine[tree_id].succeed(result)
                else:
                    if isinstance(result, IntegrityError):
                        self._stats.integrity_failures += 1
                        _log.error(
                            "tree %s from the server failed verification: %s", tree_id, result
                        )
                    mine[tree_id].fail(result)
        except StoreError as exc:
            for pending in mine.values():
                pending.fail(exc)
        finally:
            for tree_id, pending in mine.items():
                # Only if still unsettled (we were cancelled, or hit a bug that propagates
                # from here): whoever waits asks again.
                pending.abandon()
                if self._tree_inflight.get(tree_id) is pending:
                    del self._tree_inflight[tree_id]

    # ----------------------------------------------------------------------------------
    # Worker-thread side: each runs in one ``run_in_thread`` call.

    def _load_cached_range(self, chunk_id: ChunkId, piece: ChunkSlice) -> bytes | _RangeMiss:
        """``piece`` of a cached raw chunk, checked by the blocks it touches; else why not.
        Damaged digests are deleted (counted as a damaged object): the whole frame is
        then verified against its id, and its digests made again."""
        assert self._cache is not None

        def use(views: list[memoryview | None]) -> bytes | _RangeMiss:
            frame, digests = views
            if frame is None:
                return _RangeMiss.ABSENT
            if frame_codec(frame) is not Codec.RAW:
                return _RangeMiss.NOT_RAW
            if digests is None:
                return _RangeMiss.NO_DIGESTS
            part = raw_range(frame, digests, piece.start, piece.stop)
            assert part is not None  # a raw frame
            return part

        try:
            return self._cache.get_each_with(
                [(ObjectKind.FRAME, chunk_id), (ObjectKind.BLOCKS, chunk_id)], use
            )
        except FormatError as exc:
            self._stats.corrupt_cache_objects += 1
            _log.warning("cached chunk %s: %s; verifying the whole chunk", chunk_id, exc)
            if self._cache_writable:
                self._cache.delete(ObjectKind.BLOCKS, chunk_id)
            return _RangeMiss.NO_DIGESTS

    def _load_cached_plaintexts(self, chunk_ids: list[ChunkId]) -> tuple[list[bytes | None], int]:
        """Verified plaintexts of the cached chunks (None for the others), and how many
        were damaged. A cached frame that fails verification (a damaged disk) is deleted:
        the caller fetches it again."""
        plaintexts: list[bytes | None] = []
        damaged = 0
        if self._cache is None:
            return [None] * len(chunk_ids), 0
        for chunk_id in chunk_ids:
            plaintext = None
            try:
                # Decoded where LMDB keeps it: one copy of the bytes, not two.
                found = self._cache.get_with(
                    ObjectKind.FRAME, chunk_id, functools.partial(decode_frame, expected=chunk_id)
                )
            except IntegrityError as exc:
                damaged += 1
                _log.warning("cached chunk %s is damaged, fetching it again: %s", chunk_id, exc)
                if self._cache_writable:
                    self._cache.delete(ObjectKind.FRAME, chunk_id)
            else:
                plaintext = None if found is None else found[0]
            plaintexts.append(plaintext)
        return plaintexts, damaged

    def _load_cached_trees(
        self, tree_ids: list[TreeId], touches: Sequence[TreeId] = ()
    ) -> tuple[dict[TreeId, tuple[Tree, int]], int]:
        """The cached trees among ``tree_ids``, verified, with their encoded sizes, and how
        many were damaged (deleted, so they are fetched again). ``touches``: trees served
        from memory since the last call, made recent in the cache too."""
        trees: dict[TreeId, tuple[Tree, int]] = {}
        damaged = 0
        if self._cache is None:
            return trees, damaged
        if touches:
            self._cache.touch(ObjectKind.TREE, touches)
        for tree_id in tree_ids:
            data = self._cache.get(ObjectKind.TREE, tree_id)
            if data is None:
                continue
            try:
                trees[tree_id] = (decode_tree(data, expected=tree_id), len(data))
            except (IntegrityError, FormatError) as exc:
                damaged += 1
                _log.warning("cached tree %s is damaged, fetching it again: %s", tree_id, exc)
                if self._cache_writable:
                    self._cache.delete(ObjectKind.TREE, tree_id)
        return trees, damaged

    def _accept_trees(
        self, tree_ids: list[TreeId], encodings: dict[TreeId, bytes | None]
    ) -> dict[TreeId, Tree | StoreError]:
        """Verify the trees a request brought and cache the good ones; a failure per id."""
        results: dict[TreeId, Tree | StoreError] = {}
        for tree_id in tree_ids:
            data = encodings.get(tree_id)
            if data is None:
                results[tree_id] = NotFoundError("tree", tree_id.hex())
                continue
            try:
                results[tree_id] = decode_tree(data, expected=tree_id)
            except IntegrityError as exc:
                results[tree_id] = exc
            except FormatError as exc:
                # Right id, bytes that are no tree: the server stored garbage under it.
                results[tree_id] = IntegrityError(
                    tree_id.hex(), f"an unreadable tree ({exc})", what="tree"
                )
            else:
                self._store(ObjectKind.TREE, tree_id, data)
        return results

    def _store_digests(self, chunk_id: ChunkId, plaintext: bytes) -> None:
        """Cache the block digests of a chunk's plaintext, verified against its id."""
        self._store(ObjectKind.BLOCKS, chunk_id, block_digests(plaintext))

    def _store(self, kind: ObjectKind, object_id: ChunkId | TreeId, data: bytes) -> None:
        """Cache a verified object; a cache that cannot take it costs a refetch, no more."""
        if self._cache is None or not self._cache_writable:
            return
        try:
            self._cache.put(kind, object_id, data)
        except CacheError as exc:
            _log.warning("not caching %s %s: %s", kind.name.lower(), object_id, exc)
