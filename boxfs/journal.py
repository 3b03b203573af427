"""The journal: the durable, ordered list of operations the server has not confirmed yet.

Owns one SQLite database in the device home (WAL, ``synchronous=FULL``). Every change the
mount makes to a namespace (put, mkdir, move, delete, setattr) is appended here before the
mount answers the kernel, and stays until the uploader has the server's reply for the batch
that carried it. A crash, a kill -9, a reboot or an unreachable server loses nothing: the
next mount's uploader resumes from here.

**Order.** Entries carry a global ``seq`` (autoincrement, never reused) and are replayed
per namespace in that order, batch after batch, and the server applies each batch in order
(``docs/protocol.md``). That is what lets a rename carry pending uploads with it: ``put
a/x`` then ``move a → b`` lands ``x`` at ``b/x`` because the put is applied first, whether
the two travel in one batch or in two. Nothing here reorders, merges or rewrites entries.

**Batches.** The uploader takes the oldest pending entries, builds the request and persists
it with its idempotency key (``assign_batch``) *before* sending it. If the reply is lost
(crash, broken connection) the batch is resent with the same key and the same bytes
(``batches_in_flight``), and the server answers with its stored reply: applied exactly once.
At most one batch per namespace is in flight, and it always holds the oldest entries.
``complete`` removes the entries and records every result that is not a plain ``applied``
in ``conflicts`` (for ``boxfs status``).

**Bases.** A put or delete names the content it expects to replace (``base``). When the
mount writes a file again while its previous put is still pending, it does not know that
put's content hash yet (the uploader computes it at send time): it appends the op as
``BasedOnPut(op, base_seq)``, naming the seq of that put; the entry carries ``base_seq``,
and the uploader uses the content hash recorded for it (``put_hashes``), falling back to
``base`` if that put never got one (it was rejected before sending).

**Ops.** Entries hold the store's operations (``store.ops``: ``Mkdir``, ``Move``,
``Delete``, ``SetAttr``), and one of the journal's own, ``StagedPut``: a put whose content
is still a staged file, which becomes a ``store.ops.Put`` when the uploader has cut it.

**Durability.** Once ``append`` returns, the entry survives the process being killed
(SQLite's write-ahead log is written before the commit returns, whatever the sync mode) and,
by default, the machine losing power too (``synchronous=FULL``: the log is fsynced at each
commit). ``append_many(..., power_safe=False)`` skips that fsync (``synchronous=NORMAL``
for the one transaction): the entry still survives a kill -9, and the next power-safe
commit (any later ``power_safe`` append, and every batch bookkeeping write) fsyncs the log
with it and every earlier entry, as ``sync()`` does without appending. The mount appends
with ``power_safe=False`` except for fsync(2) (which calls ``sync()`` for an entry written
at an earlier close), so a burst of closes (an untar) does not pay one disk flush per file. A put's
staged file is the caller's: fsync it first (``Staging.fsync``) for the same promise about
the content.

Tables (the schema is ``_SCHEMA``; ``PRAGMA user_version`` is its version)::

    ops         seq, namespace, kind, path, dst (move), staged (put of a file),
                attrs (msgpack: file attributes, mkdir attributes, setattr changes),
                base, base_seq (put, delete), state ('pending' | 'sent'), batch_key
    batches     key, namespace, body (the OpsBatch JSON exactly as sent), created_ns
    put_hashes  seq → content hash of the put with that seq, as sent
    view_heads  namespace → the commit (and root tree) the mount's view last showed: an
                offline mount starts from it (its trees are in the object cache)
    conflicts   what the server did not apply as sent: path, conflict_path, status, code,
                message, local_copy (a preserved staged file), time_ns; status ``lost``
                is a put the uploader could not send because its staged file was gone

Threads: blocking. One connection per ``Journal``, guarded by a lock, so one worker thread
at a time uses it; callers on the trio loop go through
``trio.to_thread.run_sync(journal.method, ..., limiter=limiter)``, but for
``append_many_now``, which never waits: it appends only when the lock is free and no
checkpoint of the log is due (``CHECKPOINT_EVERY``; SQLite's automatic one is off), one
small write to the log without an fsync, and otherwise declines. Other processes (the
CLI's ``boxfs status``) may open the same file read-only.

Must not: talk to the server, read staged files, or decide what an op means.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeAlias

import msgpack

from boxfs.errors import BoxfsError
from boxfs.staging import check_name
from store import protocol
from store.errors import FormatError, StoreError
from store.ids import CommitId, ContentHash, NamespaceId, TreeId
from store.objects import DEVICE_KINDS, ChunkRef, EntryKind, FileEntry
from store.ops import (
    AttrChanges,
    Attrs,
    Delete,
    Mkdir,
    Move,
    OpKind,
    Put,
    SetAttr,
    Xattrs,
)
from store.paths import DrivePath

SCHEMA_VERSION: Final = 1
# The newest conflict records kept for `boxfs status`; older ones are pruned.
MAX_CONFLICTS_KEPT: Final = 10_000
# Content hashes of puts kept for later `base_seq` references (older ones are pruned unless
# a pending entry still names them).
MAX_PUT_HASHES_KEPT: Final = 100_000
BUSY_TIMEOUT_MS: Final = 10_000
# Commits between checkpoints of the write-ahead log into the database. SQLite's own
# (automatic, at a commit) is off: a checkpoint may fsync, and a commit may run on the trio
# loop (``append_many_now``); the journal checkpoints after a commit in a worker thread.
CHECKPOINT_EVERY: Final = 256

_SCHEMA: Final = """
CREATE TABLE ops (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('put', 'mkdir', 'move', 'delete', 'setattr')),
    path BLOB NOT NULL,
    dst BLOB,
    staged TEXT,
    attrs BLOB,
    base BLOB,
    base_seq INTEGER,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent')),
    batch_key TEXT REFERENCES batches (key),
    CHECK ((state = 'pending') = (batch_key IS NULL))
);
CREATE INDEX ops_by_namespace ON ops (namespace, state, seq);
CREATE INDEX ops_by_batch ON ops (batch_key) WHERE batch_key IS NOT NULL;
CREATE INDEX ops_by_staged ON ops (staged) WHERE staged IS NOT NULL;
CREATE TABLE batches (
    key TEXT PRIMARY KEY,
    namespace BLOB NOT NULL,
    body BLOB NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE TABLE put_hashes (
    seq INTEGER PRIMARY KEY,
    content_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS view_heads (
    namespace BLOB PRIMARY KEY,
    commit_id BLOB NOT NULL,
    root BLOB NOT NULL,
    time_ns INTEGER NOT NULL
);
CREATE TABLE conflicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace BLOB NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    path BLOB NOT NULL,
    conflict_path BLOB,
    status TEXT NOT NULL,
    code TEXT,
    message TEXT NOT NULL,
    local_copy TEXT,
    time_ns INTEGER NOT NULL
);
"""


_VIEW_HEADS_TABLE: Final = (
    _SCHEMA[
        _SCHEMA.index("CREATE TABLE IF NOT EXISTS view_heads") : _SCHEMA.index(
            "CREATE TABLE conflicts"
        )
    ]
    .rstrip()
    .rstrip(";")
)


class JournalError(BoxfsError):
    """The journal cannot be used: unreadable, a newer format, or a call that would break
    its order (a bug in the caller)."""


# --- operations --------------------------------------------------------------------------

# The journal holds the store's ops (``store.ops``), with one op of its own: a put whose
# content is still a staged file, which the uploader cuts into chunks at send time.


@dataclass(frozen=True, slots=True)
class StagedPut:
    """Create or replace a non-directory at ``path``: ``store.ops.Put`` before its entry
    exists. A FILE's content is the staged file ``staged`` (frozen from now on); a SYMLINK
    has ``target``; a device node ``rdev``; FIFO and SOCKET have none. ``base``: the
    content hash the mount last saw there (``None``: a new name)."""

    path: DrivePath
    attrs: Attrs
    staged: str | None = None
    kind: EntryKind = EntryKind.FILE
    target: bytes = b""
    base: ContentHash | None = None
    rdev: int = 0

    def __post_init__(self) -> None:
        if self.kind is EntryKind.DIR:
            raise FormatError("a put cannot create a directory: use mkdir")
        if (self.kind is EntryKind.FILE) != (self.staged is not None):
            raise FormatError("a put of a file names its staged file, and only a file does")
        if self.staged is not None:
            check_name(self.staged)
        if self.kind is EntryKind.SYMLINK:
            FileEntry(
                name=self.path.name, kind=EntryKind.SYMLINK, mode=0, uid=0, gid=0,
                size=len(self.target), mtime_ns=0, target=self.target,
            )  # fmt: skip
        elif self.target:
            raise FormatError("only a symlink has a target")
        if self.rdev and self.kind not in DEVICE_KINDS:
            raise FormatError("only a device node has an rdev")

    def put(
        self,
        chunks: tuple[ChunkRef, ...] = (),
        size: int = 0,
        content_hash: ContentHash | None = None,
        base: ContentHash | None = None,
    ) -> Put:
        """The store's put, once a file's content is cut (``chunks``, ``size``,
        ``content_hash``) and its base resolved (``base``)."""
        attrs = self.attrs
        if self.kind is not EntryKind.FILE:
            size = len(self.target)
        entry = FileEntry(
            name=self.path.name, kind=self.kind, mode=attrs.mode, uid=attrs.uid,
            gid=attrs.gid, size=size, mtime_ns=attrs.mtime_ns, xattrs=attrs.xattrs,
            chunks=chunks, content_hash=content_hash, target=self.target, rdev=self.rdev,
            atime_ns=attrs.atime_ns,
        )  # fmt: skip
        return Put(self.path, entry, base)


JournalOp: TypeAlias = StagedPut | Mkdir | Move | Delete | SetAttr


@dataclass(frozen=True, slots=True)
class BasedOnPut:
    """``op``, a put or delete of a file, or a move onto one, whose base (a move's
    ``replaces``) is the content of an earlier pending put, ``base_seq``: known once the
    uploader has cut that put (see "Bases" above)."""

    op: StagedPut | Delete | Move
    base_seq: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    namespace_id: NamespaceId
    op: JournalOp
    batch_key: str | None  # set once the entry belongs to a batch persisted for sending
    base_seq: int | None = None  # a put or delete ``BasedOnPut``

    @property
    def in_flight(self) -> bool:
        return self.batch_key is not None


@dataclass(frozen=True, slots=True)
class InFlightBatch:
    """A batch persisted with its key, perhaps sent, not completed: resend ``body`` as is."""

    key: str
    namespace_id: NamespaceId
    entries: tuple[JournalEntry, ...]
    body: bytes
    created_ns: int


@dataclass(frozen=True, slots=True)
class ViewHead:
    """The commit a mount's view last showed, and its root tree."""

    commit_id: CommitId
    root: TreeId
    time_ns: int


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    """An op the server (or the uploader) did not apply as sent."""

    id: int
    namespace_id: NamespaceId
    seq: int
    kind: str
    path: bytes
    conflict_path: bytes | None
    status: str  # merged, conflicted_copy, rejected, or lost (its content is gone)
    code: str | None
    message: str
    local_copy: str | None  # where the content of a rejected put was kept
    time_ns: int


# --- encoding of rows ----------------------------------------------------------------------


def _pack(value: Any) -> bytes:
    packed = msgpack.packb(value, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def _attrs_to_map(attrs: Attrs) -> dict[str, Any]:
    return {
        "mode": attrs.mode,
        "uid": attrs.uid,
        "gid": attrs.gid,
        "mtime_ns": attrs.mtime_ns,
        "xattrs": [[name, value] for name, value in attrs.xattrs],
    } | ({} if attrs.atime_ns is None else {"atime_ns": attrs.atime_ns})


def _xattrs_from(raw: Any) -> Xattrs:
    return tuple((bytes(name), bytes(value)) for name, value in raw)


def _attrs_from_map(raw: dict[str, Any]) -> Attrs:
    return Attrs(
        mode=raw["mode"],
        uid=raw["uid"],
        gid=raw["gid"],
        mtime_ns=raw["mtime_ns"],
        xattrs=_xattrs_from(raw["xattrs"]),
        atime_ns=raw.get("atime_ns"),
    )


@dataclass(frozen=True, slots=True)
class _Row:
    kind: OpKind
    path: bytes
    dst: bytes | None = None
    staged: str | None = None
    attrs: bytes | None = None
    base: bytes | None = None
    base_seq: int | None = None


def _row_of(pending: JournalOp | BasedOnPut) -> _Row:
    base_seq = None
    if isinstance(pending, BasedOnPut):
        op: JournalOp = pending.op
        base_seq = pending.base_seq
    else:
        op = pending
    match op:
        case StagedPut():
            attrs = _attrs_to_map(op.attrs) | {"kind": int(op.kind), "target": op.target}
            if op.rdev:
                attrs["rdev"] = op.rdev
            return _Row(
                "put",
                bytes(op.path),
                staged=op.staged,
                attrs=_pack(attrs),
                base=None if op.base is None else bytes(op.base),
                base_seq=base_seq,
            )
        case Mkdir():
            return _Row("mkdir", bytes(op.path), attrs=_pack(_attrs_to_map(op.attrs)))
        case Move():
            base = None if op.replaces is None else bytes(op.replaces)
            return _Row("move", bytes(op.src), dst=bytes(op.dst), base=base, base_seq=base_seq)
        case Delete():
            base = None if op.base is None else bytes(op.base)
            return _Row("delete", bytes(op.path), base=base, base_seq=base_seq)
        case SetAttr():
            changes = op.changes
            fields: dict[str, Any] = {
                name: value
                for name, value in (
                    ("mode", changes.mode),
                    ("uid", changes.uid),
                    ("gid", changes.gid),
                    ("mtime_ns", changes.mtime_ns),
                    ("atime_ns", changes.atime_ns),
                )
                if value is not None
            }
            if changes.xattrs is not None:
                fields["xattrs"] = [[name, value] for name, value in changes.xattrs]
            return _Row("setattr", bytes(op.path), attrs=_pack(fields))


_SELECT_ENTRY: Final = (
    "SELECT seq, namespace, kind, path, dst, staged, attrs, base, base_seq, batch_key FROM ops"
)


def _entry_from(row: sqlite3.Row) -> JournalEntry:
    seq = row["seq"]
    try:
        op = _op_from(row)
        namespace_id = NamespaceId(row["namespace"])
    except (StoreError, KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise JournalError(f"journal entry {seq} is unreadable: {exc}") from exc
    return JournalEntry(seq, namespace_id, op, row["batch_key"], row["base_seq"])


def _op_from(row: sqlite3.Row) -> JournalOp:
    kind = row["kind"]
    path = DrivePath.from_bytes(row["path"])
    attrs: Any = None if row["attrs"] is None else msgpack.unpackb(row["attrs"], raw=False)
    base = None if row["base"] is None else ContentHash(row["base"])
    if kind == "put":
        return StagedPut(
            path=path,
            attrs=_attrs_from_map(attrs),
            staged=row["staged"],
            kind=EntryKind(attrs["kind"]),
            target=bytes(attrs["target"]),
            base=base,
            rdev=attrs.get("rdev", 0),
        )
    if kind == "mkdir":
        return Mkdir(path, _attrs_from_map(attrs))
    if kind == "move":
        return Move(path, DrivePath.from_bytes(row["dst"]), base)
    if kind == "delete":
        return Delete(path, base)
    if kind == "setattr":
        xattrs = attrs.get("xattrs")
        return SetAttr(
            path,
            AttrChanges(
                mode=attrs.get("mode"),
                uid=attrs.get("uid"),
                gid=attrs.get("gid"),
                mtime_ns=attrs.get("mtime_ns"),
                xattrs=None if xattrs is None else _xattrs_from(xattrs),
                atime_ns=attrs.get("atime_ns"),
            ),
        )
    raise FormatError(f"unknown op kind {kind!r}")


# --- the journal ---------------------------------------------------------------------------


class Journal:
    """The journal database at ``path`` (created if missing, unless ``readonly``)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._power_safe = True  # the connection's synchronous mode: FULL (or NORMAL)
        self._commits_unchecked = 0  # commits since the log's last checkpoint
        try:
            if readonly:
                connection = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc
        self._db = connection
        self._db.row_factory = sqlite3.Row
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._db.close()
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc
        except JournalError:
            self._db.close()
            raise

    def _setup(self) -> None:
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if self.readonly:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise JournalError(f"{self.path} is not a journal this build reads")
            return
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise JournalError(f"{self.path}: cannot use write-ahead logging ({mode})")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA wal_autocheckpoint = 0")
        self._db.execute("PRAGMA foreign_keys = ON")
        with self._write():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise JournalError(
                    f"{self.path} has journal format {version}; this build reads {SCHEMA_VERSION}"
                )
            else:  # a journal made before `view_heads` existed gains it (additive)
                self._db.execute(_VIEW_HEADS_TABLE)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _write(self, *, power_safe: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (and fsynced, if ``power_safe``) when the block
        ends, rolled back if it raises; then the log's checkpoint, when one is due. SQLite's
        own errors leave as ``JournalError``."""
        with self._lock, self._translated():
            with self._committed(power_safe=power_safe) as db:
                yield db
            if self._commits_unchecked >= CHECKPOINT_EVERY:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._commits_unchecked = 0

    @contextmanager
    def _committed(self, *, power_safe: bool) -> Iterator[sqlite3.Connection]:
        """One write transaction (``_write``'s, ``append_many_now``'s), the caller holding
        ``_lock``."""
        if not self.readonly and power_safe != self._power_safe:
            # The mode of the next commit; not settable inside one.
            self._db.execute(f"PRAGMA synchronous = {'FULL' if power_safe else 'NORMAL'}")
            self._power_safe = power_safe
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._commits_unchecked += 1

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot for the block."""
        with self._lock, self._translated():
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from exc

    def sync(self) -> None:
        """Make every entry appended so far survive a power cut, as a ``power_safe`` append
        would: fsync the log (for fsync(2) of a file journaled at an earlier close)."""
        with self._lock:
            try:
                fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return  # no log: every commit is in the database, synced at its checkpoint
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # --- appending ----------------------------------------------------------------------------

    def append(self, namespace_id: NamespaceId, op: JournalOp | BasedOnPut) -> int:
        """Add ``op`` after every earlier entry; durable when this returns. Its seq."""
        return self.append_many(namespace_id, [op])[0]

    def append_many(
        self,
        namespace_id: NamespaceId,
        ops: Iterable[JournalOp | BasedOnPut],
        *,
        power_safe: bool = True,
    ) -> list[int]:
        """Add several ops, in order, in one transaction (one fsync; none unless
        ``power_safe``: see "Durability" above)."""
        rows = [_row_of(op) for op in ops]
        with self._write(power_safe=power_safe) as db:
            return self._insert(db, namespace_id, rows)

    def append_many_now(
        self, namespace_id: NamespaceId, ops: Iterable[JournalOp | BasedOnPut]
    ) -> list[int] | None:
        """``append_many(namespace_id, ops, power_safe=False)`` if it can be made without
        waiting, and so on the trio loop: no other thread in the journal, and no checkpoint
        of the log due (the next ``append_many``, in a worker thread, makes it). Then it is
        one small write to the log, no fsync. ``None``: nothing appended; append the usual
        way."""
        if self._commits_unchecked >= CHECKPOINT_EVERY or not self._lock.acquire(blocking=False):
            return None
        try:
            rows = [_row_of(op) for op in ops]
            with self._translated(), self._committed(power_safe=False) as db:
                return self._insert(db, namespace_id, rows)
        finally:
            self._lock.release()

    def _insert(
        self, db: sqlite3.Connection, namespace_id: NamespaceId, rows: list[_Row]
    ) -> list[int]:
        seqs: list[int] = []
        for row in rows:
            if row.base_seq is not None:
                self._check_base_seq(db, row.base_seq)
            cursor = db.execute(
                "INSERT INTO ops (namespace, kind, path, dst, staged, attrs, base, base_seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bytes(namespace_id),
                    row.kind,
                    row.path,
                    row.dst,
                    row.staged,
                    row.attrs,
                    row.base,
                    row.base_seq,
                ),
            )
            assert cursor.lastrowid is not None
            seqs.append(cursor.lastrowid)
        return seqs

    @staticmethod
    def _check_base_seq(db: sqlite3.Connection, base_seq: int) -> None:
        # An earlier seq, nothing more: the put it names may have been dropped meanwhile
        # (then the uploader falls back to ``base``).
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'ops'").fetchone()
        if base_seq <= 0 or row is None or base_seq > row[0]:
            raise JournalError(f"base_seq {base_seq} names no earlier entry")

    # --- reading ------------------------------------------------------------------------------

    def pending(self, namespace_id: NamespaceId, limit: int) -> list[JournalEntry]:
        """The oldest entries not yet in a batch, in order (at most ``limit``)."""
        with self._read() as db:
            rows = db.execute(
                f"{_SELECT_ENTRY} WHERE namespace = ? AND state = 'pending' ORDER BY seq LIMIT ?",
                (bytes(namespace_id), limit),
            ).fetchall()
        return [_entry_from(row) for row in rows]

    def unconfirmed_paths(self, namespace_id: NamespaceId) -> set[DrivePath]:
        """Every path an entry (pending or in flight) names: a put's, a move's source and
        destination. The syncer leaves these alone until the server has answered."""
        with self._read() as db:
            rows = db.execute(
                "SELECT path, dst FROM ops WHERE namespace = ?", (bytes(namespace_id),)
            ).fetchall()
        paths: set[DrivePath] = set()
        for row in rows:
            paths.add(DrivePath.from_bytes(row["path"]))
            if row["dst"] is not None:
                paths.add(DrivePath.from_bytes(row["dst"]))
        return paths

    def save_view_head(self, namespace_id: NamespaceId, head: ViewHead) -> None:
        """Remember the commit the mount's view shows (what an offline mount starts from)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO view_heads (namespace, commit_id, root, time_ns)"
                " VALUES (?, ?, ?, ?)",
                (bytes(namespace_id), bytes(head.commit_id), bytes(head.root), head.time_ns),
            )

    def view_head(self, namespace_id: NamespaceId) -> ViewHead | None:
        with self._read() as db:
            row = db.execute(
                "SELECT commit_id, root, time_ns FROM view_heads WHERE namespace = ?",
                (bytes(namespace_id),),
            ).fetchone()
        if row is None:
            return None
        return ViewHead(CommitId(row["commit_id"]), TreeId(row["root"]), row["time_ns"])

    def view_namespaces(self) -> list[NamespaceId]:
        """The namespaces a view head is remembered for."""
        with self._read() as db:
            rows = db.execute("SELECT namespace FROM view_heads ORDER BY namespace").fetchall()
        return [NamespaceId(row[0]) for row in rows]

    def count(self, namespace_id: NamespaceId | None = None) -> int:
        """How many entries (pending or in flight) the namespace has; all, without one."""
        with self._read() as db:
            if namespace_id is None:
                row = db.execute("SELECT count(*) FROM ops").fetchone()
            else:
                row = db.execute(
                    "SELECT count(*) FROM ops WHERE namespace = ?", (bytes(namespace_id),)
                ).fetchone()
        return int(row[0])

    def namespaces(self) -> list[NamespaceId]:
        """The namespaces that have entries."""
        with self._read() as db:
            rows = db.execute("SELECT DISTINCT namespace FROM ops ORDER BY namespace").fetchall()
        return [NamespaceId(row[0]) for row in rows]

    def staged_names(self, namespace_id: NamespaceId | None = None) -> set[str]:
        """Every staged file an entry names (pending or in flight): what ``Staging.sweep``
        must keep. With ``namespace_id``, only that namespace's."""
        with self._read() as db:
            if namespace_id is None:
                rows = db.execute("SELECT DISTINCT staged FROM ops WHERE staged IS NOT NULL")
            else:
                rows = db.execute(
                    "SELECT DISTINCT staged FROM ops WHERE staged IS NOT NULL AND namespace = ?",
                    (bytes(namespace_id),),
                )
            return {row[0] for row in rows}

    def put_hashes(self, seqs: Iterable[int]) -> dict[int, ContentHash]:
        """The content hashes recorded for these puts (those that have one)."""
        wanted = sorted(set(seqs))
        found: dict[int, ContentHash] = {}
        with self._read() as db:
            for seq in wanted:
                row = db.execute(
                    "SELECT content_hash FROM put_hashes WHERE seq = ?", (seq,)
                ).fetchone()
                if row is not None:
                    found[seq] = ContentHash(row[0])
        return found

    # --- batches ------------------------------------------------------------------------------

    def assign_batch(
        self,
        namespace_id: NamespaceId,
        seqs: Sequence[int],
        key: str,
        body: bytes,
        content_hashes: Mapping[int, ContentHash] | None = None,
    ) -> None:
        """Persist ``key`` and the request ``body`` for the entries ``seqs`` before the
        batch is sent. ``seqs`` must be the oldest pending entries of the namespace, in
        order, and no other batch of the namespace may be in flight: that is what keeps
        the order. ``content_hashes`` records the content of the batch's puts (``base_seq``)."""
        if not seqs:
            raise JournalError("a batch needs at least one entry")
        namespace = bytes(namespace_id)
        with self._write() as db:
            busy = db.execute(
                "SELECT key FROM batches WHERE namespace = ? LIMIT 1", (namespace,)
            ).fetchone()
            if busy is not None:
                raise JournalError(f"batch {busy[0]} is still in flight for this namespace")
            oldest = [
                row[0]
                for row in db.execute(
                    "SELECT seq FROM ops WHERE namespace = ? AND state = 'pending'"
                    " ORDER BY seq LIMIT ?",
                    (namespace, len(seqs)),
                )
            ]
            if oldest != list(seqs):
                raise JournalError(
                    "a batch must hold the oldest pending entries of its namespace, in order"
                )
            db.execute(
                "INSERT INTO batches (key, namespace, body, created_ns) VALUES (?, ?, ?, ?)",
                (key, namespace, body, time.time_ns()),
            )
            db.executemany(
                "UPDATE ops SET state = 'sent', batch_key = ? WHERE seq = ?",
                [(key, seq) for seq in seqs],
            )
            db.executemany(
                "INSERT OR REPLACE INTO put_hashes (seq, content_hash) VALUES (?, ?)",
                [(seq, bytes(digest)) for seq, digest in (content_hashes or {}).items()],
            )

    def batches_in_flight(self, namespace_id: NamespaceId) -> list[InFlightBatch]:
        """Batches persisted with their key and not completed (resend each as it is)."""
        with self._read() as db:
            batches = db.execute(
                "SELECT key, body, created_ns FROM batches WHERE namespace = ?"
                " ORDER BY created_ns, key",
                (bytes(namespace_id),),
            ).fetchall()
            found = []
            for batch in batches:
                rows = db.execute(
                    f"{_SELECT_ENTRY} WHERE batch_key = ? ORDER BY seq", (batch["key"],)
                ).fetchall()
                found.append((batch, rows))
        return [
            InFlightBatch(
                key=batch["key"],
                namespace_id=namespace_id,
                entries=tuple(_entry_from(row) for row in rows),
                body=bytes(batch["body"]),
                created_ns=batch["created_ns"],
            )
            for batch, rows in found
        ]

    def complete(
        self,
        key: str,
        results: Sequence[protocol.OpResult],
        *,
        local_copies: Mapping[int, str] | None = None,
    ) -> list[str]:
        """The server answered batch ``key``: remove its entries and record every result
        that is not ``applied`` (``local_copies``: seq → a preserved staged file). Returns
        the staged files no entry names any more (for ``Staging.discard``). Completing a
        key that is not in flight does nothing (a completion repeated after a crash)."""
        copies = dict(local_copies or {})
        now_ns = time.time_ns()
        with self._write() as db:
            rows = db.execute(
                f"{_SELECT_ENTRY} WHERE batch_key = ? ORDER BY seq", (key,)
            ).fetchall()
            if not rows:
                return []
            if len(rows) != len(results):
                raise JournalError(
                    f"batch {key} has {len(rows)} entries but {len(results)} results"
                )
            for row, result in zip(rows, results, strict=True):
                if result.status != "applied":
                    self._record(
                        db,
                        row,
                        status=result.status,
                        code=result.code,
                        message=result.message,
                        path=bytes(result.path),
                        conflict_path=None
                        if result.conflict_path is None
                        else bytes(result.conflict_path),
                        local_copy=copies.get(row["seq"]),
                        time_ns=now_ns,
                    )
            db.execute("DELETE FROM ops WHERE batch_key = ?", (key,))
            db.execute("DELETE FROM batches WHERE key = ?", (key,))
            self._prune(db)
            return self._unreferenced(db, rows)

    def reject(
        self,
        seq: int,
        code: str,
        message: str,
        *,
        local_copy: str | None = None,
        lost: bool = False,
    ) -> list[str]:
        """Remove one pending entry the uploader cannot send (its staged file vanished, it
        cannot be built into a valid op) and record why: status ``lost`` where its content
        is gone (``boxfs sync`` then fails, naming it), else ``rejected``. Returns the
        staged files no entry names any more."""
        with self._write() as db:
            row = db.execute(f"{_SELECT_ENTRY} WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return []
            if row["batch_key"] is not None:
                raise JournalError(f"entry {seq} is in flight in batch {row['batch_key']}")
            self._record(
                db,
                row,
                status="lost" if lost else "rejected",
                code=code,
                message=message,
                path=row["path"],
                conflict_path=None,
                local_copy=local_copy,
                time_ns=time.time_ns(),
            )
            db.execute("DELETE FROM ops WHERE seq = ?", (seq,))
            return self._unreferenced(db, [row])

    @staticmethod
    def _record(
        db: sqlite3.Connection,
        row: sqlite3.Row,
        *,
        status: str,
        code: str | None,
        message: str,
        path: bytes,
        conflict_path: bytes | None,
        local_copy: str | None,
        time_ns: int,
    ) -> None:
        db.execute(
            "INSERT INTO conflicts (namespace, seq, kind, path, conflict_path, status, code,"
            " message, local_copy, time_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["namespace"],
                row["seq"],
                row["kind"],
                path,
                conflict_path,
                status,
                code,
                message,
                local_copy,
                time_ns,
            ),
        )

    @staticmethod
    def _unreferenced(db: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[str]:
        unreferenced = []
        for name in sorted({row["staged"] for row in rows if row["staged"] is not None}):
            cursor = db.execute("SELECT 1 FROM ops WHERE staged = ? LIMIT 1", (name,))
            if cursor.fetchone() is None:
                unreferenced.append(name)
        return unreferenced

    @staticmethod
    def _prune(db: sqlite3.Connection) -> None:
        db.execute(
            "DELETE FROM conflicts WHERE id <= (SELECT max(id) FROM conflicts) - ?",
            (MAX_CONFLICTS_KEPT,),
        )
        db.execute(
            "DELETE FROM put_hashes WHERE seq <= (SELECT max(seq) FROM put_hashes) - ?"
            " AND seq NOT IN (SELECT base_seq FROM ops WHERE base_seq IS NOT NULL)",
            (MAX_PUT_HASHES_KEPT,),
        )

    # --- conflicts ----------------------------------------------------------------------------

    def conflicts(self, limit: int = 100) -> list[ConflictRecord]:
        """The newest conflict and rejection records, newest first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM conflicts ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [
            ConflictRecord(
                id=row["id"],
                namespace_id=NamespaceId(row["namespace"]),
                seq=row["seq"],
                kind=row["kind"],
                path=bytes(row["path"]),
                conflict_path=None if row["conflict_path"] is None else bytes(row["conflict_path"]),
                status=row["status"],
                code=row["code"],
                message=row["message"],
                local_copy=row["local_copy"],
                time_ns=row["time_ns"],
            )
            for row in rows
        ]
