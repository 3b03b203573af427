"""The LMDB object cache: immutable frames and trees by id, under a byte budget.

Owns one LMDB environment (a directory holding ``data.mdb`` and ``lock.mdb``) and
everything in it: the cached objects, their least-recently-used order, and the totals
that keep the byte budget. The budget holds after every call returns: the sum
of the stored objects' sizes never exceeds it, whatever the load.

Must not: fetch, decompress or verify anything (whoever uses an object checks its id, so
a damaged cache costs a refetch, never wrong data); import an I/O framework (trio, anyio,
...); hold an LMDB transaction past the end of a method call; open the same environment
twice in one process (LMDB forbids it: its fcntl locks are per process).

Who calls it: one owner (the client's mount) opens it writable and drives it from worker
threads, ``trio.to_thread.run_sync(..., limiter=...)``. Every method takes the handle's
lock for its whole duration, so calls arriving from several threads run one after another
and never interleave transactions; each write transaction begins and ends inside one
method call, in the calling thread (LMDB's write lock belongs to the thread that took it).
Other processes (the CLI) open the same directory with ``readonly=True``: they see every
committed object, never write, and do not refresh recency.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from types import TracebackType
from typing import Final, Self, TypeVar

import lmdb

from store.errors import FormatError, NotFoundError, StoreError, TransientError
from store.ids import ChunkId, TreeId

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

FORMAT_VERSION: Final = 1

KiB: Final = 1024
MiB: Final = 1024 * KiB

DEFAULT_INITIAL_MAP_BYTES: Final = 64 * MiB
"""The map starts this big (or at the ceiling, if smaller) and doubles when it fills."""

MAP_BUDGET_MULTIPLE: Final = 4
MAP_HEADROOM_BYTES: Final = 64 * MiB
"""Default ceiling of the map: ``MAP_BUDGET_MULTIPLE * budget + MAP_HEADROOM_BYTES``.

Live data is at most the budget. On top of it LMDB needs B-tree pages (about 100 bytes of
keys and metadata per object across the three object databases), whole 4 KiB pages for
values stored out of line, and the pages freed by recent transactions, which it reuses
only once no reader still sees them. Four times the budget covers small trees, whose
per-object overhead rivals their size; frames of ~1 MiB need little more than the budget.
"""

_MIN_MAP_BYTES: Final = 64 * KiB
_MAP_GRANULE_BYTES: Final = 64 * KiB  # map sizes are multiples of this (any OS page size)

_TOUCH_BATCH_MAX: Final = 512
"""Recency touches from ``get`` wait in memory until the next write, or until this many."""


class ObjectKind(enum.Enum):
    """What a cached object is; the value is the one-byte tag that starts its key."""

    FRAME = b"c"  # the frame of a chunk (store.frames), keyed by its ChunkId
    TREE = b"t"  # a tree's canonical encoding (store.objects), keyed by its TreeId
    BLOCKS = b"b"  # the block digests of a chunk (store.frames.block_digests), by ChunkId


ObjectId = ChunkId | TreeId

_ID_TYPE: Final[dict[ObjectKind, type[ChunkId] | type[TreeId]]] = {
    ObjectKind.FRAME: ChunkId,
    ObjectKind.TREE: TreeId,
    ObjectKind.BLOCKS: ChunkId,
}


# --------------------------------------------------------------------------------------
# Errors


class CacheError(StoreError):
    """Misuse of the cache (closed, read-only, wrong id type)."""


class ObjectTooLargeError(CacheError):
    """An object bigger than the whole budget: caching it would break the budget."""

    def __init__(self, kind: ObjectKind, object_id: ObjectId, size_bytes: int, budget_bytes: int):
        self.kind = kind
        self.object_id = object_id
        self.size_bytes = size_bytes
        self.budget_bytes = budget_bytes
        super().__init__(
            f"{kind.name.lower()} {object_id} is {size_bytes} bytes, more than the whole "
            f"cache budget of {budget_bytes} bytes"
        )


class CacheMapFullError(CacheError, TransientError):
    """LMDB's map reached its ceiling without room for the change.

    Eviction keeps the live data within the budget, so this means LMDB cannot reuse freed
    pages: usually a reader in another process holding one read transaction for a long
    time. Retrying once it ends succeeds.
    """

    def __init__(self, map_size_bytes: int, max_map_bytes: int) -> None:
        self.map_size_bytes = map_size_bytes
        self.max_map_bytes = max_map_bytes
        super().__init__(
            f"object cache map is full at {map_size_bytes} bytes (ceiling {max_map_bytes}); "
            f"a long-lived reader may be holding freed pages"
        )


# --------------------------------------------------------------------------------------
# On-disk layout
#
# Four named databases in one environment. Integers are unsigned big-endian, so byte
# order is numeric order. An object key is 33 bytes: the kind tag, then the 32-byte id
# (``ObjectKind.value + id``), so a ChunkId and a TreeId with equal bytes never collide.
#
#   objects   object key -> the object's bytes, exactly as put
#   entries   object key -> size_bytes u64 ‖ counter u64 ‖ 0 u32                (_ENTRY)
#   recency   counter u64 -> object key, one row per object; the first row is the least
#             recently used, which is where eviction starts
#   meta      b"format"       -> u32 FORMAT_VERSION
#             b"budget_bytes" -> u64, the budget the writer last opened with (for readers)
#             b"totals"       -> object_count u64 ‖ stored_bytes u64 ‖ 0 u64 ‖ 0 u64 ‖
#                                next_counter u64                                  (_TOTALS)
#
# The zeros are reserved: they held pin counts, which the cache no longer keeps (nothing
# outside its tests pinned); a non-zero one is damage (``FormatError``).
#
# Invariants, true after every committed transaction (``ObjectCache.verify`` checks them):
# - objects and entries have the same keys, and entries.size_bytes == len(objects value);
# - recency holds (entry.counter -> key) exactly for the entries;
# - counters are unique and below next_counter, which only grows (never reused, so a
#   counter's position in recency is the order of last use);
# - totals match the entries: object_count rows, stored_bytes the sum of sizes;
# - stored_bytes <= budget_bytes.

_DB_OBJECTS: Final = b"objects"
_DB_ENTRIES: Final = b"entries"
_DB_RECENCY: Final = b"recency"
_DB_META: Final = b"meta"
_DB_NAMES: Final = (_DB_OBJECTS, _DB_ENTRIES, _DB_RECENCY, _DB_META)

_META_FORMAT: Final = b"format"
_META_BUDGET: Final = b"budget_bytes"
_META_TOTALS: Final = b"totals"

_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_ENTRY: Final = struct.Struct(">QQI")
_TOTALS: Final = struct.Struct(">QQQQQ")

KEY_BYTES: Final = 1 + 32


def object_key(kind: ObjectKind, object_id: ObjectId) -> bytes:
    """The 33-byte key of an object: its kind tag, then its id."""
    expected = _ID_TYPE[kind]
    if not isinstance(object_id, expected):
        raise CacheError(
            f"a {kind.name.lower()} is keyed by a {expected.__name__}, "
            f"not a {type(object_id).__name__}"
        )
    return kind.value + bytes(object_id)


@dataclass(slots=True)
class _Entry:
    size_bytes: int
    counter: int

    @classmethod
    def decode(cls, raw: bytes) -> _Entry:
        if len(raw) != _ENTRY.size:
            raise FormatError(f"object cache entry is {len(raw)} bytes, expected {_ENTRY.size}")
        size_bytes, counter, reserved = _ENTRY.unpack(raw)
        if reserved:
            raise FormatError(f"object cache entry has {reserved} in its reserved field")
        return cls(size_bytes, counter)

    def encode(self) -> bytes:
        return _ENTRY.pack(self.size_bytes, self.counter, 0)


@dataclass(slots=True)
class _Totals:
    object_count: int = 0
    stored_bytes: int = 0
    next_counter: int = 0

    @classmethod
    def decode(cls, raw: bytes) -> _Totals:
        if len(raw) != _TOTALS.size:
            raise FormatError(f"object cache totals are {len(raw)} bytes, expected {_TOTALS.size}")
        object_count, stored_bytes, reserved_a, reserved_b, next_counter = _TOTALS.unpack(raw)
        if reserved_a or reserved_b:
            raise FormatError("object cache totals have non-zero reserved fields")
        return cls(object_count, stored_bytes, next_counter)

    def encode(self) -> bytes:
        return _TOTALS.pack(self.object_count, self.stored_bytes, 0, 0, self.next_counter)


@dataclass(frozen=True, slots=True)
class _Dbs:
    objects: lmdb._Database
    entries: lmdb._Database
    recency: lmdb._Database
    meta: lmdb._Database


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Totals as of the last committed transaction."""

    object_count: int
    stored_bytes: int
    budget_bytes: int
    map_size_bytes: int


def _read_totals(txn: lmdb.Transaction[bytes], dbs: _Dbs) -> _Totals:
    raw = txn.get(_META_TOTALS, db=dbs.meta)
    if raw is None:
        raise FormatError("object cache has no totals record")
    return _Totals.decode(raw)


def _round_up(size_bytes: int) -> int:
    return -(-size_bytes // _MAP_GRANULE_BYTES) * _MAP_GRANULE_BYTES


class _Writer:
    """The work of one write transaction.

    Loads the totals when created and stores them in ``finish``; the caller commits. Every
    method keeps the layout's invariants (see above) true at its return.
    """

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: _Dbs, budget_bytes: int) -> None:
        self.txn = txn
        self.dbs = dbs
        self.budget_bytes = budget_bytes
        raw = txn.get(_META_TOTALS, db=dbs.meta)
        self.totals = _Totals() if raw is None else _Totals.decode(raw)

    def finish(self) -> None:
        self.txn.put(_META_TOTALS, self.totals.encode(), db=self.dbs.meta)

    def entry(self, key: bytes) -> _Entry | None:
        raw = self.txn.get(key, db=self.dbs.entries)
        return None if raw is None else _Entry.decode(raw)

    def _tick(self) -> int:
        counter = self.totals.next_counter
        self.totals.next_counter += 1
        return counter

    def _enqueue(self, key: bytes, entry: _Entry) -> None:
        """Give an entry a fresh counter: it becomes the most recently used."""
        entry.counter = self._tick()
        self.txn.put(_U64.pack(entry.counter), key, db=self.dbs.recency)

    def touch(self, key: bytes, entry: _Entry) -> None:
        self.txn.delete(_U64.pack(entry.counter), db=self.dbs.recency)
        self._enqueue(key, entry)
        self.txn.put(key, entry.encode(), db=self.dbs.entries)

    def apply_touches(self, keys: list[bytes]) -> None:
        for key in keys:
            entry = self.entry(key)
            if entry is not None:  # gone meanwhile: deleted, or evicted by another writer
                self.touch(key, entry)

    def put(self, key: bytes, data: bytes) -> None:
        """``data`` is at most the budget (``ObjectCache.put`` checks)."""
        entry = self.entry(key)
        if entry is not None:
            # Same id, same bytes: the object is immutable, only its recency changes.
            self.touch(key, entry)
            return
        size_bytes = len(data)
        self.evict_until(self.budget_bytes - size_bytes)
        entry = _Entry(size_bytes=size_bytes, counter=0)
        self._enqueue(key, entry)
        self.txn.put(key, data, db=self.dbs.objects)
        self.txn.put(key, entry.encode(), db=self.dbs.entries)
        self.totals.object_count += 1
        self.totals.stored_bytes += size_bytes

    def remove(self, key: bytes, entry: _Entry) -> None:
        self.txn.delete(key, db=self.dbs.objects)
        self.txn.delete(key, db=self.dbs.entries)
        self.txn.delete(_U64.pack(entry.counter), db=self.dbs.recency)
        self.totals.object_count -= 1
        self.totals.stored_bytes -= entry.size_bytes

    def evict_until(self, limit_bytes: int) -> None:
        """Evict least recently used objects until at most ``limit_bytes`` are stored.

        The caller guarantees ``limit_bytes >= 0``; evicting every object would reach it,
        so the loop ends.
        """
        cursor = self.txn.cursor(db=self.dbs.recency)
        while self.totals.stored_bytes > limit_bytes:
            if not cursor.first():
                raise FormatError(
                    f"object cache is damaged: {self.totals.stored_bytes} bytes stored, "
                    "yet nothing left to evict"
                )
            counter_raw, key = cursor.item()
            entry = self.entry(key)
            if entry is None or _U64.pack(entry.counter) != counter_raw:
                raise FormatError(f"object cache is damaged: recency row {counter_raw.hex()}")
            self.remove(key, entry)

    def initialize(self, budget_bytes: int) -> None:
        """Create the meta records of a new cache, or adopt an existing one."""
        raw_format = self.txn.get(_META_FORMAT, db=self.dbs.meta)
        if raw_format is None:
            self.txn.put(_META_FORMAT, _U32.pack(FORMAT_VERSION), db=self.dbs.meta)
        elif raw_format != _U32.pack(FORMAT_VERSION):
            raise FormatError(f"object cache has unknown format version {raw_format.hex()}")
        self.txn.put(_META_BUDGET, _U64.pack(budget_bytes), db=self.dbs.meta)
        self.evict_until(budget_bytes)  # the budget may have shrunk since the last open


class ObjectCache:
    """Immutable objects by (kind, id) under a byte budget, evicted least recently used.

    Open with ``ObjectCache.open``. See the module docstring for threads and processes.

    Recency: ``get`` does not write. It notes the key in an in-memory batch (ordered by
    last use) that the next write transaction applies first, before it evicts anything;
    a batch reaching ``_TOUCH_BATCH_MAX`` keys is written on its own. Eviction therefore
    always sees every read made through this handle, and a read costs one read
    transaction instead of a write and an fsync. Touches are hints: a crash loses at most
    one batch, which only makes the eviction order slightly staler. The budget does not
    depend on them: it is checked against the totals inside every write transaction.
    """

    def __init__(
        self,
        env: lmdb.Environment,
        dbs: _Dbs,
        *,
        path: Path,
        readonly: bool,
        budget_bytes: int,
        max_map_bytes: int,
    ) -> None:
        """Use ``ObjectCache.open``."""
        self._env = env
        self._dbs = dbs
        self._path = path
        self._readonly = readonly
        self._budget_bytes = budget_bytes  # 0 when read-only: stats() reads the writer's
        self._max_map_bytes = max_map_bytes
        self._lock = Lock()  # held for the whole of every method; guards all fields below
        self._closed = False
        # Keys read since the last write, least recent first (dict order is insertion order).
        self._pending_touches: dict[bytes, None] = {}

    # ----------------------------------------------------------------------------------
    # Opening and closing

    @classmethod
    def open(
        cls,
        path: Path,
        budget_bytes: int | None = None,
        readonly: bool = False,
        *,
        initial_map_bytes: int | None = None,
        max_map_bytes: int | None = None,
    ) -> ObjectCache:
        """Open (creating if needed) the cache in directory ``path``.

        A writer needs ``budget_bytes``; if the cache holds more than that (the budget
        shrank), the oldest objects are evicted now. The map starts at
        ``initial_map_bytes`` and doubles when full, up to ``max_map_bytes`` (defaults:
        ``DEFAULT_INITIAL_MAP_BYTES`` and ``MAP_BUDGET_MULTIPLE * budget +
        MAP_HEADROOM_BYTES``).

        ``readonly=True`` is for other processes: the cache must exist, budget and map
        arguments are ignored, and ``stats().budget_bytes`` is the writer's budget.
        """
        if readonly:
            return cls._open_readonly(path)
        if budget_bytes is None or budget_bytes <= 0:
            raise CacheError(f"a writable object cache needs a positive budget: {budget_bytes}")
        if max_map_bytes is None:
            max_map_bytes = MAP_BUDGET_MULTIPLE * budget_bytes + MAP_HEADROOM_BYTES
        if initial_map_bytes is None:
            initial_map_bytes = DEFAULT_INITIAL_MAP_BYTES
        ceiling = _round_up(max(_MIN_MAP_BYTES, max_map_bytes))
        initial = min(ceiling, _round_up(max(_MIN_MAP_BYTES, initial_map_bytes)))
        path.mkdir(parents=True, exist_ok=True)
        env = lmdb.open(
            str(path),
            map_size=initial,
            subdir=True,
            max_dbs=len(_DB_NAMES),
            # One fsync per commit, no separate one for the meta page: a system crash may
            # undo the last transaction but never leaves the B-trees inconsistent (LMDB's
            # MDB_NOMETASYNC). Losing a cached object is harmless; corruption is not.
            metasync=False,
            sync=True,
            readahead=False,  # random access to a cache that may exceed RAM
            lock=True,
        )
        try:
            env.reader_check()  # readers that crashed would hold freed pages forever
            cache = cls(
                env,
                _create_dbs(env, ceiling),
                path=path,
                readonly=False,
                budget_bytes=budget_bytes,
                max_map_bytes=ceiling,
            )
            with cache._lock:
                cache._write(lambda writer: writer.initialize(budget_bytes))
        except BaseException:
            env.close()
            raise
        return cache

    @classmethod
    def _open_readonly(cls, path: Path) -> ObjectCache:
        if not (path / "data.mdb").is_file():
            raise NotFoundError("object cache", str(path))
        try:
            env = lmdb.open(
                str(path),
                map_size=0,  # adopt the size the writer last committed
                subdir=True,
                readonly=True,
                lock=True,  # take a reader slot, so the writer will not reuse pages we read
                max_dbs=len(_DB_NAMES),
                readahead=False,
            )
        except lmdb.Error as exc:  # damaged, or not readable by this user
            raise CacheError(f"object cache {path} cannot be opened: {exc}") from exc
        try:
            try:
                handles = [env.open_db(name, create=False) for name in _DB_NAMES]
            except lmdb.NotFoundError as exc:
                raise NotFoundError("object cache", str(path)) from exc
            except lmdb.Error as exc:
                raise CacheError(f"object cache {path} cannot be read: {exc}") from exc
            dbs = _Dbs(*handles)
            cache = cls(env, dbs, path=path, readonly=True, budget_bytes=0, max_map_bytes=0)
            with cache._lock:
                cache._read(cache._check_format_and_read_budget)
        except BaseException:
            env.close()
            raise
        return cache

    def _check_format_and_read_budget(self, txn: lmdb.Transaction[bytes]) -> int:
        """The budget the writer last opened with (this handle's, if it is the writer)."""
        raw_format = txn.get(_META_FORMAT, db=self._dbs.meta)
        raw_budget = txn.get(_META_BUDGET, db=self._dbs.meta)
        if raw_format is None or raw_budget is None:
            raise NotFoundError("object cache", str(self._path))
        if raw_format != _U32.pack(FORMAT_VERSION):
            raise FormatError(f"object cache has unknown format version {raw_format.hex()}")
        (budget_bytes,) = _U64.unpack(raw_budget)
        return int(budget_bytes)

    def close(self) -> None:
        """Write pending recency touches and close the environment. Repeat calls do nothing."""
        with self._lock:
            if self._closed:
                return
            try:
                if not self._readonly and self._pending_touches:
                    self._write(lambda writer: None)
            finally:
                self._closed = True
                self._pending_touches.clear()
                self._env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def readonly(self) -> bool:
        return self._readonly

    # ----------------------------------------------------------------------------------
    # Objects

    def put(self, kind: ObjectKind, object_id: ObjectId, data: bytes) -> None:
        """Cache ``data`` as the object ``(kind, object_id)``, evicting the least recently
        used objects to stay within the budget.

        An object already cached is not rewritten (objects are immutable: same id, same
        bytes); it becomes the most recently used.

        Raises ``ObjectTooLargeError`` if ``data`` alone exceeds the budget.
        """
        key = object_key(kind, object_id)
        with self._lock:
            self._check_writable()
            # Checked before any transaction: an object this big is never cached (the
            # budget is at least as large as every cached object), so no id is refreshed.
            if len(data) > self._budget_bytes:
                raise ObjectTooLargeError(kind, object_id, len(data), self._budget_bytes)
            self._write(lambda writer: writer.put(key, data))

    def get(self, kind: ObjectKind, object_id: ObjectId) -> bytes | None:
        """The object's bytes, or None if it is not cached. Marks it most recently used."""
        key = object_key(kind, object_id)
        with self._lock:
            self._check_open()
            data = self._read(lambda txn: txn.get(key, db=self._dbs.objects))
            if data is not None and not self._readonly:
                self._note_touch(key)
            return data

    def get_with(
        self, kind: ObjectKind, object_id: ObjectId, use: Callable[[memoryview], _T]
    ) -> tuple[_T] | None:
        """``(use(data),)`` for the object's bytes read in place, or None if it is not
        cached. Marks it most recently used. ``data`` is a view into the map, valid only
        during the call (``use`` copies what it keeps; it runs holding this handle's lock):
        for a large object turned into something else at once, such as a frame decoded
        into its plaintext, it saves the copy ``get`` makes. What ``use`` raises
        propagates, and the object's recency is left as it was."""
        key = object_key(kind, object_id)
        with self._lock:
            self._check_open()

            def work(txn: lmdb.Transaction[memoryview]) -> tuple[_T] | None:
                data = txn.get(key, db=self._dbs.objects)
                return None if data is None else (use(data),)

            result = self._read_in_place(work)
            if result is not None and not self._readonly:
                self._note_touch(key)
            return result

    def get_each_with(
        self,
        objects: Sequence[tuple[ObjectKind, ObjectId]],
        use: Callable[[list[memoryview | None]], _T],
    ) -> _T:
        """``use(views)`` for several objects read in place in one transaction (None for
        one not cached), as ``get_with`` does for one: views valid only during the call.
        Marks those found most recently used, unless ``use`` raises."""
        keys = [object_key(kind, object_id) for kind, object_id in objects]
        with self._lock:
            self._check_open()
            found: list[bytes] = []

            def work(txn: lmdb.Transaction[memoryview]) -> _T:
                views = [txn.get(key, db=self._dbs.objects) for key in keys]
                found.clear()  # a retry after a map resize reads them again
                found.extend(key for key, view in zip(keys, views, strict=True) if view is not None)
                return use(views)

            result = self._read_in_place(work)
            if not self._readonly:
                for key in found:
                    self._note_touch(key)
            return result

    def touch(self, kind: ObjectKind, object_ids: Iterable[ObjectId]) -> None:
        """Mark these objects most recently used, as ``get`` would, without reading them:
        for a caller that serves them from a memory cache of its own, so they are not
        evicted here as unused. Ids not cached are ignored; a read-only handle does
        nothing (readers never refresh recency)."""
        with self._lock:
            self._check_open()
            if self._readonly:
                return
            for object_id in object_ids:
                self._note_touch(object_key(kind, object_id))

    def contains(self, kind: ObjectKind, object_id: ObjectId) -> bool:
        """Whether the object is cached. Does not change its recency."""
        key = object_key(kind, object_id)
        with self._lock:
            self._check_open()
            return self._contains(key)

    def delete(self, kind: ObjectKind, object_id: ObjectId) -> bool:
        """Remove the object (e.g. it failed verification). Whether it was there."""
        key = object_key(kind, object_id)

        def work(writer: _Writer) -> bool:
            entry = writer.entry(key)
            if entry is None:
                return False
            writer.remove(key, entry)
            return True

        with self._lock:
            self._check_writable()
            return self._write(work)

    def flush(self) -> None:
        """Write the pending recency touches now (``close`` does it too)."""
        with self._lock:
            self._check_writable()
            if self._pending_touches:
                self._write(lambda writer: None)

    def stats(self) -> CacheStats:
        """Totals of the last committed transaction, and this handle's map size."""
        with self._lock:
            self._check_open()
            totals, budget_bytes = self._read(
                lambda txn: (_read_totals(txn, self._dbs), self._check_format_and_read_budget(txn))
            )
            return CacheStats(
                object_count=totals.object_count,
                stored_bytes=totals.stored_bytes,
                budget_bytes=budget_bytes,
                map_size_bytes=self._env.info()["map_size"],
            )

    def verify(self) -> None:
        """Check every invariant of the layout; raise ``FormatError`` naming the first broken.

        Reads every row (one read transaction): for tests and ``boxfs doctor``, not for
        the hot path.
        """
        with self._lock:
            self._check_open()
            self._read(self._verify)

    # ----------------------------------------------------------------------------------
    # Internals; every one runs with self._lock held.

    def _check_open(self) -> None:
        if self._closed:
            raise CacheError(f"object cache {self._path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._readonly:
            raise CacheError(f"object cache {self._path} is open read-only")

    def _contains(self, key: bytes) -> bool:
        return self._read(lambda txn: txn.get(key, db=self._dbs.entries) is not None)

    def _note_touch(self, key: bytes) -> None:
        self._pending_touches.pop(key, None)
        self._pending_touches[key] = None
        if len(self._pending_touches) < _TOUCH_BATCH_MAX:
            return
        try:
            self._write(lambda writer: None)
        except CacheMapFullError as exc:
            # The read itself succeeded; recency is a hint. Keep the reader working.
            _log.warning("dropping %d recency touches: %s", len(self._pending_touches), exc)
            self._pending_touches.clear()

    def _read(self, work: Callable[[lmdb.Transaction[bytes]], _T]) -> _T:
        """Run ``work`` in one read transaction, adopting a map another process grew."""
        while True:
            try:
                with self._env.begin(write=False) as txn:
                    return work(txn)
            except lmdb.MapResizedError:
                # The writer grew the map past ours (LMDB refuses the transaction rather
                # than read beyond our mapping); adopt its size and retry.
                self._env.set_mapsize(0)

    def _read_in_place(self, work: Callable[[lmdb.Transaction[memoryview]], _T]) -> _T:
        """``_read`` where the values ``work`` gets are views into the map, valid only
        inside ``work``."""
        while True:
            try:
                with self._env.begin(write=False, buffers=True) as txn:
                    return work(txn)
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)  # as in _read

    def _write(self, work: Callable[[_Writer], _T]) -> _T:
        """Run ``work`` in one write transaction after applying the pending touches.

        The transaction begins and commits (or aborts) here, in the calling thread. If it
        does not commit, the touches go back to the batch, so a refused put does not lose
        the recency of earlier reads.
        """
        touches = list(self._pending_touches)
        self._pending_touches.clear()
        committed = False
        try:
            result = self._write_growing_map(touches, work)
            committed = True
        finally:
            if not committed:
                assert not self._pending_touches, "the lock was held: no read can have run"
                self._pending_touches = dict.fromkeys(touches)
        return result

    def _write_growing_map(self, touches: list[bytes], work: Callable[[_Writer], _T]) -> _T:
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    writer = _Writer(txn, self._dbs, self._budget_bytes)
                    writer.apply_touches(touches)
                    result = work(writer)
                    writer.finish()
                return result
            except lmdb.MapFullError as exc:
                # The transaction was aborted on the way out of the with block, so no
                # transaction is open in this process and the map may be resized.
                self._make_room(exc)
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)

    def _make_room(self, exc: lmdb.MapFullError) -> None:
        stale_readers = self._env.reader_check()
        if stale_readers:
            _log.info("object cache: cleared %d stale reader slots", stale_readers)
            return
        map_size_bytes = self._env.info()["map_size"]
        if map_size_bytes >= self._max_map_bytes:
            raise CacheMapFullError(map_size_bytes, self._max_map_bytes) from exc
        new_size_bytes = min(self._max_map_bytes, _round_up(2 * map_size_bytes))
        _log.info("object cache: growing map %d -> %d bytes", map_size_bytes, new_size_bytes)
        self._env.set_mapsize(new_size_bytes)

    def _verify(self, txn: lmdb.Transaction[bytes]) -> None:
        dbs = self._dbs
        totals = _read_totals(txn, dbs)
        budget_bytes = self._check_format_and_read_budget(txn)
        expected = _Totals(next_counter=totals.next_counter)
        counters: dict[int, bytes] = {}
        object_keys = [key for key, _ in txn.cursor(db=dbs.objects)]
        entry_keys: list[bytes] = []
        for key, raw in txn.cursor(db=dbs.entries):
            entry_keys.append(key)
            entry = _Entry.decode(raw)
            if len(key) != KEY_BYTES or key[:1] not in {kind.value for kind in ObjectKind}:
                raise FormatError(f"object cache key {key.hex()} is malformed")
            data = txn.get(key, db=dbs.objects)
            if data is None or len(data) != entry.size_bytes:
                raise FormatError(f"object cache entry {key.hex()} does not match its object")
            if entry.counter >= totals.next_counter:
                raise FormatError(f"object cache entry {key.hex()} has a future counter")
            expected.object_count += 1
            expected.stored_bytes += entry.size_bytes
            if entry.counter in counters:
                raise FormatError(f"object cache counter {entry.counter} is used twice")
            counters[entry.counter] = key
        if object_keys != entry_keys:
            raise FormatError("object cache objects and entries have different keys")
        recency = {_U64.unpack(counter)[0]: key for counter, key in txn.cursor(db=dbs.recency)}
        if recency != counters:
            raise FormatError("object cache recency index does not match the entries")
        if totals != expected:
            raise FormatError(f"object cache totals {totals} do not match the entries {expected}")
        if totals.stored_bytes > budget_bytes:
            raise FormatError(
                f"object cache holds {totals.stored_bytes} bytes, over its budget {budget_bytes}"
            )


def _create_dbs(env: lmdb.Environment, max_map_bytes: int) -> _Dbs:
    """Create (or open) the named databases in one write transaction, growing a tiny map."""
    while True:
        try:
            with env.begin(write=True) as txn:
                handles = [env.open_db(name, txn=txn) for name in _DB_NAMES]
            return _Dbs(*handles)
        except lmdb.MapFullError as exc:
            map_size_bytes = env.info()["map_size"]
            if map_size_bytes >= max_map_bytes:
                raise CacheMapFullError(map_size_bytes, max_map_bytes) from exc
            env.set_mapsize(min(max_map_bytes, 2 * map_size_bytes))
