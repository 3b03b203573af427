"""The commit engine: a batch of operations on one namespace becomes one commit.

Owns how a change lands: reading the head, applying the operations to its tree
(``store.merkle``), per-file optimistic concurrency (DESIGN.md §4: a 3-way merge of
non-overlapping text edits, otherwise a conflicted copy beside the file; nothing is ever
silently overwritten), chunk authorization for puts, and the one write transaction that
stores the new trees, the commit, the object rows, the event row and the idempotent reply,
and moves the head by compare-and-swap. Also the small readers history and retention
share: trees from the database (``DbTrees``) and the retained commits of a namespace.

Semantics a client relies on (also in ``docs/protocol.md``):

- Ops apply in order, each against the drive as the ops before it left it. An op that
  fails (missing parent, a directory in the way, a chunk not uploaded to this namespace, a
  stale base on a delete) is ``rejected`` with an error code and changes nothing; the
  other ops of the batch still apply. The reply says per op what happened.
- The idempotency key is scoped to (namespace, user): a batch resent by any session of the
  same user (a device that logged in again, say) gets the reply stored the first time, and
  one user can never read or block another's replies. Reusing a key for a different
  request is ``bad_request``.
- A put applies when the path is free, when the file there still has the op's ``base``
  content, or when it holds the very same content. Otherwise (``base`` stale, or ``None``
  over an existing file) it is a conflict: two UTF-8 text files (no NUL, each at most
  ``MERGE_MAX_BYTES``) whose common ancestor (the newest retained version of the path with
  content ``base``) is in history are merged by lines (``merged``) if the edits do not
  overlap; else the incoming file is written beside the other as ``name (conflicted copy
  from DEVICE YYYY-MM-DD HHMMSS).ext`` (``conflicted_copy``; in a shared folder DEVICE is
  ``USER's DEVICE``). A put onto a path deleted
  since ``base`` brings the file back. Every chunk a put names must be held by this
  namespace (uploaded into it, or referenced), else ``not_found``.
- A mkdir onto an existing directory applies and changes nothing (two devices made the
  same folder); onto anything else it is a ``conflict``. A delete removes a non-directory
  or an empty directory; with a ``base`` the file no longer has, it is ``stale_base``.
  A move follows rename(2): it replaces a file at its destination (that version stays
  in history), but only the version the mover saw there (``replaces``): onto another
  (one that landed since, or one the mover never saw) the moved file is handled as a put
  based on ``replaces`` (merged, or a conflicted copy) and its old name removed, so an
  editor's save by rename (write a temporary file, rename it over) conflicts as a save in
  place does.
- A batch that changes nothing makes no commit (``commit_id`` is ``None``).

It must not: publish events (the async caller does, after the transaction), read chunk
bytes except for a merge, or write anything outside the one transaction of a commit
(except merged chunks, whose blobs are written first, as an upload's are).

Blocking: called from a worker thread through ``ServerState.run`` by
``server.routes.ops`` and ``server.history``; retention calls the readers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, TypeVar

import blake3
import sqlalchemy as sa
from cachetools import LRUCache
from merge3 import Merge3

from server import audit
from server import db as tables
from server.namespaces import referenced_objects, require_role
from server.sessions import Caller
from server.state import ServerState, now_ns
from store import protocol
from store.chunking import ChunkStream
from store.errors import (
    ConflictError,
    CryptoError,
    FormatError,
    IntegrityError,
    NotFoundError,
    StoreError,
)
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId, CommitId, ContentHash, NamespaceId, TreeId
from store.merkle import EMPTY_TREE_ID, apply_edits, lookup
from store.objects import (
    EMPTY_TREE,
    MAX_COMMIT_TEXT_BYTES,
    MAX_NAME_BYTES,
    ChunkRef,
    Commit,
    EntryKind,
    FileEntry,
    Tree,
    decode_commit,
    decode_tree,
)
from store.ops import Delete, Mkdir, Move, Op, Put, SetAttr, path_of

_log = logging.getLogger(__name__)

# How many times a batch is recomputed when another batch moved the head first.
MAX_ATTEMPTS: Final = 8
# Files larger than this are never merged (a conflicted copy is written instead).
MERGE_MAX_BYTES: Final = 8 * 1024 * 1024
# How far back (in retained commits) the common ancestor of a merge is looked for.
ANCESTOR_SCAN_COMMITS: Final = 1000
TREE_CACHE_TREES: Final = 256
# A conflicted copy takes the first free name among this many.
MAX_COPY_NAMES: Final = 100
# Chunk ids named in a not_found rejection.
_MISSING_SHOWN: Final = 3
_SUMMARY_OPS: Final = 3
_SUMMARY_PATH_CHARS: Final = 120

Components = tuple[bytes, ...]


# --- reading what the database holds ---------------------------------------------------


class DbTrees:
    """Trees from the ``trees`` table, verified against their ids (``TreeSource``).

    Bound to one connection, so every load sees that transaction's snapshot; keeps the
    last ``cache_trees`` decoded trees (trees are immutable). The empty tree is never
    asked of the table.
    """

    def __init__(self, connection: sa.Connection, cache_trees: int = TREE_CACHE_TREES) -> None:
        self._connection = connection
        self._cache: LRUCache[TreeId, Tree] = LRUCache(cache_trees)

    def load_tree(self, tree_id: TreeId) -> Tree:
        if tree_id == EMPTY_TREE_ID:
            return EMPTY_TREE
        tree = self._cache.get(tree_id)
        if tree is not None:
            return tree
        data = self._connection.execute(
            sa.select(tables.trees.c.data).where(tables.trees.c.id == bytes(tree_id))
        ).scalar_one_or_none()
        if data is None:
            raise NotFoundError("tree", tree_id.hex())
        tree = decode_tree(bytes(data), expected=tree_id)
        if self._cache.maxsize:  # 0: no caching (a walk that reads each tree once)
            self._cache[tree_id] = tree
        return tree


@dataclass(frozen=True, slots=True)
class StoredCommit:
    commit_id: CommitId
    sequence: int
    commit: Commit


def _stored_commit(raw_id: bytes, sequence: int, data: bytes) -> StoredCommit:
    commit_id = CommitId(bytes(raw_id))
    return StoredCommit(commit_id, sequence, decode_commit(bytes(data), commit_id))


def retained_commits(
    connection: sa.Connection,
    namespace_id: NamespaceId,
    *,
    before_sequence: int | None = None,
    page: int = 200,
) -> Iterator[StoredCommit]:
    """The namespace's retained commits, newest first (below ``before_sequence`` if set),
    read a page at a time."""
    table = tables.commits
    below = before_sequence
    while True:
        query = (
            sa.select(table.c.id, table.c.sequence, table.c.data)
            .where(table.c.namespace_id == bytes(namespace_id), table.c.retained.is_(True))
            .order_by(table.c.sequence.desc())
            .limit(page)
        )
        if below is not None:
            query = query.where(table.c.sequence < below)
        rows = connection.execute(query).all()
        for row in rows:
            yield _stored_commit(row.id, row.sequence, row.data)
        if len(rows) < page:
            return
        below = rows[-1].sequence


def retained_commit(
    connection: sa.Connection, namespace_id: NamespaceId, commit_id: CommitId
) -> StoredCommit | None:
    """A retained commit of this namespace, or ``None`` (unknown, another namespace's, or
    thinned away by retention)."""
    table = tables.commits
    row = connection.execute(
        sa.select(table.c.id, table.c.sequence, table.c.data).where(
            table.c.id == bytes(commit_id),
            table.c.namespace_id == bytes(namespace_id),
            table.c.retained.is_(True),
        )
    ).one_or_none()
    return None if row is None else _stored_commit(row.id, row.sequence, row.data)


@dataclass(frozen=True, slots=True)
class Head:
    commit_id: CommitId | None
    sequence: int
    root: TreeId  # the empty tree when there is no commit yet


def read_head(connection: sa.Connection, namespace_id: NamespaceId) -> Head:
    row = connection.execute(
        sa.select(tables.namespaces.c.head, tables.namespaces.c.sequence).where(
            tables.namespaces.c.id == bytes(namespace_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFoundError("namespace", namespace_id.hex())
    if row.head is None:
        return Head(None, row.sequence, EMPTY_TREE_ID)
    commit_id = CommitId(bytes(row.head))
    data = connection.execute(
        sa.select(tables.commits.c.data).where(tables.commits.c.id == bytes(commit_id))
    ).scalar_one()
    return Head(commit_id, row.sequence, decode_commit(bytes(data), commit_id).root)


def read_content(state: ServerState, entry: FileEntry) -> bytes:
    """A file's whole content from the blob store, every chunk opened and verified, and
    the whole checked against the entry's content hash."""
    pieces = []
    for ref in entry.chunks:
        frame = state.keyring.open(ref.chunk_id, state.blobs.get(ref.chunk_id))
        data = decode_frame(frame, ref.chunk_id)
        if len(data) != ref.length:
            raise IntegrityError(ref.chunk_id.hex(), f"{len(data)} bytes, not {ref.length}")
        pieces.append(data)
    content = b"".join(pieces)
    actual = blake3.blake3(content).digest()
    if entry.content_hash is None or actual != entry.content_hash:
        expected = entry.content_hash.hex() if entry.content_hash else "?"
        raise IntegrityError(expected, actual.hex(), what="file")
    return content


def authorized_chunks(
    connection: sa.Connection, namespace_id: NamespaceId, chunk_ids: Iterable[ChunkId]
) -> set[ChunkId]:
    """Those of ``chunk_ids`` this namespace holds (uploaded into it, or referenced)."""
    held = referenced_objects(connection, namespace_id, (bytes(c) for c in chunk_ids), "c")
    return {ChunkId(raw) for raw in held}


# --- text merge and conflicted copies ----------------------------------------------------


def is_text(data: bytes) -> bool:
    """Valid UTF-8 without NUL: what a 3-way merge by lines may touch."""
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def merge_text(base: bytes, ours: bytes, theirs: bytes) -> bytes | None:
    """The 3-way merge by lines of two edits of ``base`` (merge3), or ``None`` if they
    overlap (or touch adjacent lines)."""
    merger = Merge3(
        base.splitlines(keepends=True),
        ours.splitlines(keepends=True),
        theirs.splitlines(keepends=True),
    )
    merged: list[bytes] = []
    for group in merger.merge_groups():
        if group[0] == "conflict":
            return None
        merged.extend(group[1])
    return b"".join(merged)


def _cut_utf8(raw: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of ``raw``, not ending inside a UTF-8 character."""
    if len(raw) <= limit:
        return raw
    cut = limit
    while cut > 0 and 0x80 <= raw[cut] < 0xC0:  # a continuation byte starts the rest
        cut -= 1
    return raw[:cut] if cut > 0 else raw[:limit]


def conflicted_copy_name(name: bytes, device: str, time_ns: int, number: int = 1) -> bytes:
    """``stem (conflicted copy from DEVICE YYYY-MM-DD HHMMSS).ext`` (UTC), with `` N``
    after the time for the Nth name tried; the stem is shortened to keep the name within
    255 bytes. A leading dot does not start an extension (``.bashrc``)."""
    stamp = datetime.fromtimestamp(time_ns / 1e9, UTC).strftime("%Y-%m-%d %H%M%S")
    safe_device = device.replace("/", "_").replace("\0", "_")
    counter = f" {number}" if number > 1 else ""
    tag = f" (conflicted copy from {safe_device} {stamp}{counter})".encode()
    dot = name.rfind(b".")
    stem, extension = (name[:dot], name[dot:]) if 0 < dot < len(name) - 1 else (name, b"")
    room = MAX_NAME_BYTES - len(tag) - len(extension)
    if room < 1:  # an absurdly long extension: treat the whole name as the stem
        stem, extension = name, b""
        room = MAX_NAME_BYTES - len(tag)
    return _cut_utf8(stem, room) + tag + extension


# --- plans ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewChunk:
    """A chunk the server made itself (merged content): sealed, and already in the blob
    store; its rows are written with the commit."""

    chunk_id: ChunkId
    sealed: bytes
    plain_bytes: int


@dataclass(frozen=True, slots=True)
class PlanContext:
    """What a planner works with: one read transaction's snapshot of the namespace."""

    state: ServerState
    connection: sa.Connection
    trees: DbTrees
    caller: Caller
    namespace_id: NamespaceId
    head: Head
    time_ns: int


@dataclass(slots=True)
class Plan:
    """A computed change, not yet written: the new root and what the commit must store.

    ``referenced_chunks``/``referenced_trees`` are existing objects the commit places anew
    (a put's chunks, a restored folder): the write re-checks that this namespace still
    holds them and refreshes their rows, which is what keeps GC from collecting them while
    the commit is on its way (``server.retention``).
    """

    root: TreeId
    new_trees: dict[TreeId, bytes]
    results: list[protocol.OpResult]
    summary: str
    referenced_chunks: set[ChunkId] = field(default_factory=set)
    referenced_trees: set[TreeId] = field(default_factory=set)
    new_chunks: dict[ChunkId, NewChunk] = field(default_factory=dict)
    deleted_paths: list[bytes] = field(default_factory=list)


Planner = Callable[[PlanContext], Plan]


def _show(path: bytes | protocol.DrivePath) -> str:
    raw = bytes(path)
    text = raw.decode("utf-8", "backslashreplace")
    if len(text) > _SUMMARY_PATH_CHARS:
        text = text[: _SUMMARY_PATH_CHARS - 1] + "…"
    return text


def summarize(descriptions: Sequence[str]) -> str:
    """``put a.txt, mkdir docs (+3 more)``, within the commit text bound."""
    if not descriptions:
        return "no changes"
    text = ", ".join(descriptions[:_SUMMARY_OPS])
    if len(descriptions) > _SUMMARY_OPS:
        text += f" (+{len(descriptions) - _SUMMARY_OPS} more)"
    return _cut_utf8(text.encode(), MAX_COMMIT_TEXT_BYTES).decode()


def _is_missing_tree(exc: StoreError) -> bool:
    return isinstance(exc, NotFoundError) and exc.what == "tree"


class _Draft:
    """The batch's drive while it is planned: a root, plus edits not yet applied.

    Edits are applied in groups (one ``apply_edits`` call for many ops): a lookup flushes
    the pending group only if one of its edits touched the looked-up path, an ancestor or
    a descendant of it, so a burst of puts into one directory costs one rewrite of that
    directory, not one per op. If a group fails, its ops are applied one by one and the
    ones that fail are recorded in ``failures`` (each op is all or nothing). A lookup made
    for an op's checks always sees exactly the drive the earlier ops left.
    """

    def __init__(self, trees: DbTrees, root: TreeId) -> None:
        self._trees = trees
        self._new: dict[TreeId, bytes] = {}
        self._decoded: dict[TreeId, Tree] = {}
        self.root = root
        self._pending: list[tuple[int, list[Op]]] = []
        self._touched: set[Components] = set()
        self._touched_prefixes: set[Components] = set()
        self.failures: dict[int, StoreError] = {}

    def load_tree(self, tree_id: TreeId) -> Tree:
        data = self._new.get(tree_id)
        if data is None:
            return self._trees.load_tree(tree_id)
        tree = self._decoded.get(tree_id)
        if tree is None:
            tree = decode_tree(data, expected=tree_id)
            self._decoded[tree_id] = tree
        return tree

    def lookup(self, components: Components) -> FileEntry | None:
        related = components in self._touched_prefixes or any(
            components[:depth] in self._touched for depth in range(1, len(components) + 1)
        )
        if related:
            self.flush()
        return lookup(self, self.root, b"/".join(components))

    def add(self, index: int, edits: Sequence[Op]) -> None:
        self._pending.append((index, list(edits)))
        for edit in edits:
            paths = (edit.src, edit.dst) if isinstance(edit, Move) else (edit.path,)
            for path in paths:
                components = path.components
                self._touched.add(components)
                self._touched_prefixes.update(
                    components[:depth] for depth in range(1, len(components) + 1)
                )

    def _apply(self, edits: Sequence[Op]) -> None:
        result = apply_edits(self, self.root, edits)
        self._new.update(result.new_trees)
        self.root = result.root

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._touched.clear()
        self._touched_prefixes.clear()
        if not pending:
            return
        try:
            self._apply([edit for _, edits in pending for edit in edits])
            return
        except (NotFoundError, ConflictError) as exc:
            if _is_missing_tree(exc):
                raise
        for index, edits in pending:  # find the ops that fail, one at a time
            try:
                self._apply(edits)
            except (NotFoundError, ConflictError) as exc:
                if _is_missing_tree(exc):
                    raise
                self.failures[index] = exc

    def finish(self) -> tuple[TreeId, dict[TreeId, bytes]]:
        """The final root and the new trees it reaches (intermediate ones are dropped)."""
        self.flush()
        reachable: dict[TreeId, bytes] = {}
        stack = [self.root]
        while stack:
            tree_id = stack.pop()
            data = self._new.get(tree_id)
            if data is None or tree_id in reachable:
                continue  # an existing tree: what is below it exists too
            reachable[tree_id] = data
            stack.extend(
                entry.tree_id
                for entry in self.load_tree(tree_id)
                if entry.kind is EntryKind.DIR and entry.tree_id is not None
            )
        return self.root, reachable


def rejected(path: protocol.DrivePath, exc: StoreError) -> protocol.OpResult:
    """The result of an op that failed with ``exc`` (its code and message)."""
    _, body = protocol.body_for(exc)
    return protocol.OpResult(
        status="rejected",
        path=path,
        code=body.code,
        message=body.message[: protocol.MAX_OP_MESSAGE_CHARS],
    )


@dataclass(slots=True)
class _Outcome:
    """One op as planned; final once the draft's failures are known."""

    result: protocol.OpResult
    description: str = ""  # for the commit summary; empty: changed nothing
    chunks: tuple[ChunkId, ...] = ()  # existing chunks the op places
    new_chunks: tuple[NewChunk, ...] = ()
    deleted: bytes | None = None


def _applied(
    path: protocol.DrivePath, description: str, *, chunks: Iterable[ChunkId] = ()
) -> _Outcome:
    return _Outcome(protocol.OpResult(status="applied", path=path), description, tuple(chunks))


def _same_content(current: FileEntry, incoming: FileEntry) -> bool:
    if current.kind is not incoming.kind:
        return False
    if current.kind is EntryKind.FILE:
        return current.content_hash == incoming.content_hash
    return current.target == incoming.target  # symlinks; fifos and sockets have no content


class _OpsPlanner:
    """Plans one ``OpsBatch`` against a snapshot (``PlanContext``)."""

    def __init__(self, context: PlanContext, batch: protocol.OpsBatch) -> None:
        self.context = context
        self.batch = batch
        self.draft = _Draft(context.trees, context.head.root)
        put_chunks = (
            ref.chunk_id for op in batch.ops if isinstance(op, protocol.PutOp)
            for ref in op.entry.chunks
        )  # fmt: skip
        self.authorized = authorized_chunks(context.connection, context.namespace_id, put_chunks)

    def plan(self) -> Plan:
        outcomes = [self._plan_op(index, op) for index, op in enumerate(self.batch.ops)]
        root, new_trees = self.draft.finish()
        for index, exc in self.draft.failures.items():
            outcomes[index] = _Outcome(rejected(outcomes[index].result.path, exc))
        plan = Plan(
            root=root,
            new_trees=new_trees,
            results=[outcome.result for outcome in outcomes],
            summary=summarize([o.description for o in outcomes if o.description]),
        )
        for outcome in outcomes:
            plan.referenced_chunks.update(outcome.chunks)
            plan.new_chunks.update((chunk.chunk_id, chunk) for chunk in outcome.new_chunks)
            if outcome.deleted is not None:
                plan.deleted_paths.append(outcome.deleted)
        return plan

    def _plan_op(self, index: int, wire: protocol.WireOp) -> _Outcome:
        op = protocol.op_from_wire(wire)
        try:
            match op:
                case Put():
                    return self._put(index, op)
                case Mkdir():
                    return self._mkdir(index, op)
                case Delete():
                    return self._delete(index, op)
                case Move():
                    return self._move(index, op)
                case SetAttr():
                    self.draft.add(index, [op])
                    return _applied(op.path, f"setattr {_show(op.path)}")
        except (NotFoundError, ConflictError, protocol.ForbiddenError) as exc:
            if _is_missing_tree(exc):
                raise
            return _Outcome(rejected(path_of(op), exc))

    def _mkdir(self, index: int, op: Mkdir) -> _Outcome:
        current = self.draft.lookup(op.path.components)
        if current is not None:
            if current.kind is EntryKind.DIR:  # made elsewhere too: the folders are one
                return _applied(op.path, "")
            raise ConflictError(_show(op.path), f"exists already as a {current.kind.name.lower()}")
        self.draft.add(index, [op])
        return _applied(op.path, f"mkdir {_show(op.path)}")

    def _delete(self, index: int, op: Delete) -> _Outcome:
        current = self.draft.lookup(op.path.components)
        if current is None:
            raise NotFoundError("path", _show(op.path))
        if current.kind is EntryKind.MOUNT:
            raise ConflictError(_show(op.path), "is a shared folder: leave it, or unshare it")
        if op.base is not None and current.content_hash != op.base:
            raise protocol.StaleBaseError(
                _show(op.path), "the file changed since that base: the newer version stays"
            )
        if current.kind is EntryKind.DIR and current.tree_id != EMPTY_TREE_ID:
            raise ConflictError(_show(op.path), "is a directory that is not empty")
        self.draft.add(index, [op])
        outcome = _applied(op.path, f"delete {_show(op.path)}")
        outcome.deleted = bytes(op.path)
        return outcome

    def _move(self, index: int, op: Move) -> _Outcome:
        """rename(2), unless it would replace a file the mover did not see there (another
        version landed since, or one it never knew of): then the moved file is put there,
        based on what the mover saw (``_put``: merged, or kept beside as a conflicted
        copy), and its old name goes, in the same step."""
        current = self.draft.lookup(op.dst.components)
        moved = self.draft.lookup(op.src.components) if current is not None else None
        if (
            current is not None
            and moved is not None
            and current.kind is EntryKind.FILE
            and moved.kind is EntryKind.FILE
            and current.content_hash != op.replaces
        ):
            chunk_ids = [ref.chunk_id for ref in moved.chunks]
            self.authorized |= authorized_chunks(
                self.context.connection, self.context.namespace_id, chunk_ids
            )
            entry = dataclasses.replace(moved, name=op.dst.name)
            return self._put(index, Put(op.dst, entry, op.replaces), also=[Delete(op.src)])
        self.draft.add(index, [op])
        return _applied(op.src, f"move {_show(op.src)} → {_show(op.dst)}")

    def _put(self, index: int, op: Put, *, also: Sequence[Op] = ()) -> _Outcome:
        """A put (see the module docstring); ``also``: edits that land with it, whatever
        becomes of it (a move's removal of its old name)."""
        path, incoming = op.path, op.entry
        if incoming.kind is EntryKind.MOUNT:
            raise protocol.ForbiddenError(
                f"{_show(path)}: only the server places a shared folder", {"path": _show(path)}
            )
        chunk_ids = tuple(dict.fromkeys(ref.chunk_id for ref in incoming.chunks))
        missing = [chunk_id for chunk_id in chunk_ids if chunk_id not in self.authorized]
        if missing:
            shown = ", ".join(chunk_id.hex() for chunk_id in missing[:_MISSING_SHOWN])
            extra = len(missing) - _MISSING_SHOWN
            more = f" (+{extra} more)" if extra > 0 else ""
            raise NotFoundError("chunk", f"{shown}{more} (upload them to this namespace first)")
        current = self.draft.lookup(path.components)
        if current is not None and current.kind is EntryKind.DIR:
            raise ConflictError(_show(path), "is a directory: delete it before replacing it")
        if current is not None and current.kind is EntryKind.MOUNT:
            raise ConflictError(_show(path), "is a shared folder: it is not replaced")
        if (
            current is None
            or _same_content(current, incoming)
            or (op.base is not None and current.content_hash == op.base)
        ):
            # New, unchanged since the client's base, or the same content anyway. A file
            # deleted on the server since ``base`` comes back: the edit is not lost.
            self.draft.add(index, [op, *also])
            return _applied(path, f"put {_show(path)}", chunks=chunk_ids)
        merged = self._merge(current, incoming, op.base, path)
        if merged is not None:
            entry, new_chunks = merged
            self.draft.add(index, [Put(path, entry), *also])
            return _Outcome(
                protocol.OpResult(status="merged", path=path),
                f"merge {_show(path)}",
                new_chunks=new_chunks,
            )
        copy_path = self._free_copy_path(path)
        copy = Put(copy_path, dataclasses.replace(incoming, name=copy_path.name))
        self.draft.add(index, [copy, *also])
        return _Outcome(
            protocol.OpResult(status="conflicted_copy", path=path, conflict_path=copy_path),
            f"put {_show(copy_path)}",
            chunks=chunk_ids,
        )

    def _free_copy_path(self, path: protocol.DrivePath) -> protocol.DrivePath:
        caller = self.context.caller
        device = caller.device_name
        if not _is_home_of(self.context.connection, self.context.namespace_id, caller.user_id):
            device = f"{caller.username}'s {device}"  # a shared folder: whose device, too
        for number in range(1, MAX_COPY_NAMES + 1):
            name = conflicted_copy_name(path.name, device, self.context.time_ns, number)
            candidate = protocol.DrivePath((*path.components[:-1], name))
            if self.draft.lookup(candidate.components) is None:
                return candidate
        raise ConflictError(_show(path), "no free name for a conflicted copy")

    def _merge(
        self,
        current: FileEntry,
        incoming: FileEntry,
        base: ContentHash | None,
        path: protocol.DrivePath,
    ) -> tuple[FileEntry, tuple[NewChunk, ...]] | None:
        """The merged entry and its new chunks, or ``None`` when a merge is not possible:
        not two text files, no base or no ancestor in history, too large, or overlapping
        edits."""
        if (
            base is None
            or current.kind is not EntryKind.FILE
            or incoming.kind is not EntryKind.FILE
            or max(current.size, incoming.size) > MERGE_MAX_BYTES
        ):
            return None
        ancestor = self._ancestor(path, base)
        if ancestor is None or ancestor.size > MERGE_MAX_BYTES:
            return None
        state = self.context.state
        try:
            texts = [read_content(state, entry) for entry in (ancestor, current, incoming)]
        except (NotFoundError, IntegrityError, CryptoError, FormatError) as exc:
            _log.warning("cannot read %s for a merge, keeping a copy: %s", _show(path), exc)
            return None
        if not all(is_text(text) for text in texts):
            return None
        merged = merge_text(*texts)
        if merged is None or len(merged) > 2 * MERGE_MAX_BYTES:
            return None
        refs, content_hash, new_chunks = seal_content(state, merged)
        entry = dataclasses.replace(
            incoming,
            chunks=refs,
            size=len(merged),
            content_hash=content_hash,
            mtime_ns=max(current.mtime_ns, incoming.mtime_ns),
        )
        return entry, new_chunks

    def _ancestor(self, path: protocol.DrivePath, base: ContentHash) -> FileEntry | None:
        """The newest retained version of ``path`` whose content is ``base``."""
        commits = retained_commits(self.context.connection, self.context.namespace_id)
        for scanned, stored in enumerate(commits):
            if scanned >= ANCESTOR_SCAN_COMMITS:
                break
            try:
                entry = lookup(self.context.trees, stored.commit.root, bytes(path))
            except NotFoundError:
                continue
            if entry is not None and entry.kind is EntryKind.FILE and entry.content_hash == base:
                return entry
        return None


def _is_home_of(connection: sa.Connection, namespace_id: NamespaceId, user_id: int) -> bool:
    home = connection.execute(
        sa.select(tables.users.c.home_namespace).where(tables.users.c.id == user_id)
    ).scalar_one_or_none()
    return home is not None and bytes(home) == bytes(namespace_id)


def seal_content(
    state: ServerState, content: bytes
) -> tuple[tuple[ChunkRef, ...], ContentHash, tuple[NewChunk, ...]]:
    """Chunk, frame and seal content the server made, and put the blobs (before any row
    names them, as an upload does)."""
    stream = ChunkStream(io.BytesIO(content))
    refs: list[ChunkRef] = []
    new_chunks: list[NewChunk] = []
    for piece in stream:
        sealed = state.keyring.seal(piece.chunk_id, encode_frame(piece.data))
        state.blobs.put(piece.chunk_id, sealed)
        refs.append(ChunkRef(piece.chunk_id, piece.length))
        new_chunks.append(NewChunk(piece.chunk_id, sealed, piece.length))
    return tuple(refs), stream.content_hash, tuple(new_chunks)


# --- writing a commit ------------------------------------------------------------------


class _Retry(Exception):
    """The snapshot a plan was made on is gone (the head moved, or rows it relied on):
    roll back and plan again."""


def request_digest(route: protocol.Route, request: protocol.WireModel) -> str:
    """What identifies a request under its idempotency key."""
    return blake3.blake3(f"{route.name}\0{request.model_dump_json()}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Reply:
    """Where one request's reply is kept: under (namespace, the user's key), with the
    digest of the request it answers."""

    namespace_id: NamespaceId
    user_id: int
    key: str
    digest: str

    @property
    def scoped_key(self) -> str:
        # 64 hex digits (the column's width): this user's key, never another user's.
        text = f"boxfs idempotency v1\0{self.user_id}\0{self.key}"
        return blake3.blake3(text.encode()).hexdigest()

    def stored(self, connection: sa.Connection) -> protocol.OpsBatchResponse | None:
        table = tables.idempotency
        text = connection.execute(
            sa.select(table.c.response).where(
                table.c.namespace_id == bytes(self.namespace_id),
                table.c.key == self.scoped_key,
                table.c.user_id == self.user_id,
            )
        ).scalar_one_or_none()
        if text is None:
            return None
        stored = json.loads(text)
        if stored["request"] != self.digest:
            raise protocol.BadRequestError(
                "this idempotency key was already used for a different request",
                {"idempotency_key": self.key},
            )
        return protocol.OpsBatchResponse.model_validate(stored["response"])

    def store(
        self, connection: sa.Connection, response: protocol.OpsBatchResponse, time_ns: int
    ) -> None:
        text = json.dumps({"request": self.digest, "response": response.model_dump(mode="json")})
        connection.execute(
            tables.idempotency.insert().values(
                namespace_id=bytes(self.namespace_id),
                key=self.scoped_key,
                user_id=self.user_id,
                response=text,
                created_ns=time_ns,
            )
        )


def touch_objects(
    connection: sa.Connection,
    namespace_id: NamespaceId,
    objects: Iterable[tuple[bytes, str]],
    added_ns: int,
) -> None:
    """Insert or refresh ``namespace_objects`` rows (object id, kind) with ``added_ns``."""
    rows = [
        {"namespace_id": bytes(namespace_id), "object_id": object_id, "kind": kind,
         "added_ns": added_ns}
        for object_id, kind in dict(objects).items()
    ]  # fmt: skip
    tables.upsert(connection, tables.namespace_objects, rows, refresh=["added_ns"])


def _refresh_held(
    connection: sa.Connection, namespace_id: NamespaceId, ids: set[bytes], kind: str, now: int
) -> None:
    """Refresh the rows of objects the namespace must already hold; ``_Retry`` if GC took
    some of them since the plan was made (the next plan rejects the op)."""
    table = tables.namespace_objects
    for batch in tables.in_batches(sorted(ids)):
        result = connection.execute(
            table.update()
            .where(
                table.c.namespace_id == bytes(namespace_id),
                table.c.kind == kind,
                table.c.object_id.in_(batch),
            )
            .values(added_ns=now)
        )
        if result.rowcount != len(batch):
            raise _Retry


def _write_commit(
    state: ServerState,
    connection: sa.Connection,
    context: PlanContext,
    plan: Plan,
) -> tuple[CommitId, int]:
    """Everything a commit stores, inside the caller's write transaction; ``_Retry`` if
    the head moved since the plan."""
    namespace_id, head, now = context.namespace_id, context.head, context.time_ns
    commit = Commit(
        namespace_id=namespace_id,
        root=plan.root,
        parents=(head.commit_id,) if head.commit_id is not None else (),
        author=context.caller.username,
        device=context.caller.device_name,
        time_ns=now,
        summary=plan.summary,
    )
    encoding = commit.encode()
    commit_id = commit.id
    sequence = head.sequence + 1
    moved = connection.execute(
        tables.namespaces.update()
        .where(
            tables.namespaces.c.id == bytes(namespace_id),
            tables.namespaces.c.sequence == head.sequence,
        )
        .values(head=bytes(commit_id), sequence=sequence)
    )
    if moved.rowcount != 1:
        raise _Retry
    _refresh_held(connection, namespace_id, {bytes(c) for c in plan.referenced_chunks}, "c", now)
    _refresh_held(connection, namespace_id, {bytes(t) for t in plan.referenced_trees}, "t", now)
    for chunk in plan.new_chunks.values():
        # GC may have removed an equal blob since the plan wrote it: write it again.
        if not state.blobs.exists(chunk.chunk_id):
            state.blobs.put(chunk.chunk_id, chunk.sealed)
    tables.upsert(
        connection,
        tables.chunks,
        [
            {"id": bytes(chunk.chunk_id), "stored_bytes": len(chunk.sealed),
             "plain_bytes": chunk.plain_bytes, "created_ns": now}
            for chunk in plan.new_chunks.values()
        ],
    )  # fmt: skip
    trees = dict(plan.new_trees)
    trees.setdefault(EMPTY_TREE_ID, EMPTY_TREE.encode())  # mkdir and empty roots name it
    tables.upsert(
        connection,
        tables.trees,
        [{"id": bytes(tree_id), "data": data} for tree_id, data in trees.items()],
    )
    touch_objects(
        connection,
        namespace_id,
        [*((bytes(t), "t") for t in plan.new_trees), *((bytes(c), "c") for c in plan.new_chunks)],
        now,
    )
    connection.execute(
        tables.commits.insert().values(
            id=bytes(commit_id),
            namespace_id=bytes(namespace_id),
            sequence=sequence,
            time_ns=now,
            data=encoding,
            retained=True,
        )
    )
    connection.execute(
        tables.events.insert().values(
            namespace_id=bytes(namespace_id), head=bytes(commit_id), time_ns=now
        )
    )
    return commit_id, sequence


AuditRecords = Callable[[Plan, CommitId], list[tuple[str, dict[str, str]]]]


def _no_records(_plan: Plan, _commit_id: CommitId) -> list[tuple[str, dict[str, str]]]:
    return []


def _write(
    connection: sa.Connection, context: PlanContext, plan: Plan, audit_records: AuditRecords
) -> protocol.OpsBatchResponse:
    """The reply, after writing the commit (if the plan changes anything) in the caller's
    write transaction; ``_Retry`` if the head moved since the plan."""
    head, results = context.head, tuple(plan.results)
    if plan.root == head.root:  # nothing changed: no commit
        if read_head(connection, context.namespace_id).sequence != head.sequence:
            raise _Retry  # decided on an old head: decide again
        return protocol.OpsBatchResponse(
            commit_id=None, head=head.commit_id, sequence=head.sequence, results=results
        )
    commit_id, sequence = _write_commit(context.state, connection, context, plan)
    records = [("commit", {"commit": commit_id.hex(), "summary": plan.summary})]
    for action, detail in [*records, *audit_records(plan, commit_id)]:
        audit.append(
            connection,
            action=action,
            caller=context.caller,
            namespace_id=context.namespace_id,
            detail=detail,
            time_ns=context.time_ns,
        )
    return protocol.OpsBatchResponse(
        commit_id=commit_id, head=commit_id, sequence=sequence, results=results
    )


def run_commit(
    state: ServerState,
    caller: Caller,
    namespace_id: NamespaceId,
    *,
    idempotency_key: str,
    digest: str,
    planner: Planner,
    audit_records: AuditRecords = _no_records,
) -> protocol.OpsBatchResponse:
    """Plan on a snapshot of the head, then write the commit in one transaction that moves
    the head by compare-and-swap; plan again if another commit won (``MAX_ATTEMPTS``).

    Requires the caller to be an editor. A request whose key has a stored reply gets that
    reply (``digest`` tells whether it is the same request). Every commit gets a
    ``commit`` audit record; ``audit_records`` gives more (action, detail) pairs.
    """
    reply = _Reply(namespace_id, caller.user_id, idempotency_key, digest)
    for _attempt in range(MAX_ATTEMPTS):
        with state.db.read() as connection:
            require_role(connection, namespace_id, caller.user_id, "editor")
            stored = reply.stored(connection)
            if stored is not None:
                return stored
            context = PlanContext(
                state=state,
                connection=connection,
                trees=DbTrees(connection),
                caller=caller,
                namespace_id=namespace_id,
                head=read_head(connection, namespace_id),
                time_ns=now_ns(),
            )
            plan = planner(context)
        try:
            with state.db.write() as connection:
                require_role(connection, namespace_id, caller.user_id, "editor")
                stored = reply.stored(connection)
                if stored is not None:
                    return stored  # the same request, sent twice at once, landed first
                response = _write(connection, context, plan, audit_records)
                reply.store(connection, response, context.time_ns)
            return response
        except _Retry:
            continue
        except sa.exc.IntegrityError as exc:
            # A concurrent writer stored the same key or object first (PostgreSQL, where
            # writers do not queue at BEGIN): the next attempt sees what it wrote.
            _log.warning("commit on %s raced another writer: %s", namespace_id.hex(), exc)
            continue
    raise protocol.UnavailableError(
        "the namespace is changing too fast to commit: retry", {"attempts": MAX_ATTEMPTS}
    )


def commit_root(
    state: ServerState,
    connection: sa.Connection,
    caller: Caller,
    namespace_id: NamespaceId,
    *,
    change: Sequence[Op] | TreeId,
    summary: str,
    time_ns: int,
) -> CommitId | None:
    """A commit the server makes itself (sharing moves folders between namespaces and
    places mount points), inside the caller's write transaction: ``change`` is edits to
    apply to the head, or the new root itself. Every tree and chunk the new root reaches
    must be in the database and held by the namespace already (the caller copies the rows
    first). ``None`` when nothing changed. Call it inside ``retrying_write``, which starts
    the transaction again when another commit moved the head first."""
    head = read_head(connection, namespace_id)
    trees = DbTrees(connection)
    if isinstance(change, TreeId):
        root, new_trees = change, {}
    else:
        result = apply_edits(trees, head.root, change)
        root, new_trees = result.root, result.new_trees
    if root == head.root:
        return None
    context = PlanContext(
        state=state, connection=connection, trees=trees, caller=caller,
        namespace_id=namespace_id, head=head, time_ns=time_ns,
    )  # fmt: skip
    plan = Plan(root=root, new_trees=new_trees, results=[], summary=summary)
    commit_id, _ = _write_commit(state, connection, context, plan)
    return commit_id


T = TypeVar("T")


def retrying_write(state: ServerState, function: Callable[[sa.Connection], T]) -> T:
    """``function`` in a write transaction, started again when a commit it made lost the
    race for a head, up to ``MAX_ATTEMPTS`` times."""
    for _attempt in range(MAX_ATTEMPTS):
        try:
            with state.db.write() as connection:
                return function(connection)
        except _Retry:
            continue
        except sa.exc.IntegrityError as exc:
            _log.warning("a server commit raced another writer: %s", exc)
            continue
    raise protocol.UnavailableError(
        "the namespace is changing too fast to commit: retry", {"attempts": MAX_ATTEMPTS}
    )


def _batch_audit(plan: Plan, commit_id: CommitId) -> list[tuple[str, dict[str, str]]]:
    return [
        ("delete", {"commit": commit_id.hex(), "path": _show(path)}) for path in plan.deleted_paths
    ]


def apply_batch(
    state: ServerState,
    caller: Caller,
    namespace_id: NamespaceId,
    batch: protocol.OpsBatch,
) -> protocol.OpsBatchResponse:
    """Apply ``batch`` to the namespace's head as one commit (see the module docstring for
    the per-op semantics). Blocking."""
    return run_commit(
        state,
        caller,
        namespace_id,
        idempotency_key=batch.idempotency_key,
        digest=request_digest(protocol.APPLY_OPS, batch),
        planner=lambda context: _OpsPlanner(context, batch).plan(),
        audit_records=_batch_audit,
    )
