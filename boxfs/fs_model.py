"""The filesystem model: one namespace as a POSIX tree of inodes, kernel-free.

Owns the view the mount shows: the namespace's head tree, fetched lazily directory by
directory through the ``Fetcher``, plus an in-memory overlay of local changes the server
has not confirmed (new, changed, moved and removed entries, open files and their staged
content), the inode table (numbers handed out on first lookup, never reused), directory
and file handles, and the read-only ``/.versions`` tree of retained commits.

Every change is applied to the overlay at once and journaled (``boxfs.journal``) before
the call returns, then the uploader is nudged: a burst of metadata changes never waits
for the server. File content is copied on write into a staged file (``boxfs.staging``)
at the first write or truncate (the whole current content is copied then: from the
fetcher for a file as committed, hole-preserving from the staged file for one written
earlier in this mount); after the last release, or an fsync, the staged file is frozen
and journaled as one put. A file created here keeps its first writes (up to 1 MiB, 32 MiB
for all such files) in memory, without a thread hop each, until its close writes them out
in the same worker-thread call that journals the put.

Must not: import pyfuse3 (``boxfs.fuse_ops`` translates ``FsError`` to ``FUSEError``),
talk to the server other than through the ``Fetcher`` (trees, chunks) and ``Remote.head``,
``commits`` and ``log`` (the start and ``.versions``), call SQLite, staged-file I/O or
anything blocking on the loop (it goes through ``trio.to_thread.run_sync`` with the
``limiter``), or hold anything proportional to a file's size (a sparse truncate to
10^11 bytes is one ``ftruncate`` of the staged file).

Who calls it: the FUSE adapter's request handlers, as trio tasks on the mount's one loop.
All state lives on that loop and is touched only between awaits; metadata changes hold
``_lock`` (a trio lock) from their checks through the journal append to the overlay
update, so concurrent requests never see a half-made change and the journal's order is the
overlay's. Nothing slow happens under it: a directory listing a change needs is fetched
first with the lock free (``_change`` starts the change over once it is in memory), and
fsync(2)'s disk flush of the staged file and the journal comes after the lock is released.

Decisions the adapter relies on:
- ``open`` returns ``keep_cache=True`` only for a file whose content is the committed one
  (served by content hash through the fetcher, so the kernel's page cache stays valid);
  ``False`` for a file opened for writing or holding local (staged) content.
- ``readdir`` counts a lookup for every entry it returns (readdirplus does in the kernel):
  an over-count (a page asked for twice) only keeps an inode in the table longer; numbers
  are never reused. ``forget`` to zero takes an inode out of the table, and an unchanged
  directory nobody references drops its listing (fetched again on the next lookup), so
  memory follows what the kernel holds, not the drive.
- Content is copied on the first write or truncate of a file (not at open), the whole
  file at once (from the fetcher, or hole-preserving from an earlier staged file);
  ``O_TRUNC`` copies nothing.
- ``fsync`` journals the file's content now and fsyncs its staged file: it survives a
  crash or power cut and will be uploaded; it does not wait for the server. ``flush``
  (every close(2)) journals it too, without the fsync: once close(2) has returned, the
  content survives the mount being killed.
- ``start`` replays the journal's entries (an earlier mount's unconfirmed changes) onto
  the head, so they show; call it before ``uploader.run`` starts.

Following other devices: ``apply_head`` (called by ``boxfs.syncer``) diffs a new head's
trees against the listed part of the view, changes what differs in place (a file keeps its
inode, so an open descriptor reads the new content), and queues ``Invalidation``s for the
notifier (``wait_invalidations``); names with unconfirmed journal entries, and files open
for writing, are left to the local change and looked at again by ``recheck``. The head the
view shows is remembered in the journal, so ``start`` works offline from it.

Known limits: a file written here keeps its staged file pinned while its node lives (until
a sync from another device replaces the content); a truncate of a closed file is
journaled at once as a put (a sparse 10^11-byte file truncated while closed is chunked as
zeros by the uploader even if deleted right after: the journal never merges entries;
truncated while open and unlinked before the last release, nothing is journaled); new
entries take the mount's uid/gid (the caller's ids are not passed in); hard links always
raise ``FsError(EPERM)``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, ParamSpec, TypeVar

import trio

from boxfs import errno_map
from boxfs.errors import BoxfsError
from boxfs.fetcher import Fetcher
from boxfs.journal import (
    AttrChanges,
    FileAttrs,
    Journal,
    JournalError,
    PendingDelete,
    PendingMkdir,
    PendingMove,
    PendingOp,
    PendingPut,
    PendingSetattr,
    ViewHead,
)
from boxfs.remote import Remote
from boxfs.stage_pool import StagePool
from boxfs.staging import (
    MemoryBudget,
    StagedFile,
    StagedFileMissingError,
    Staging,
    StagingError,
)
from boxfs.uploader import Uploader
from store import protocol
from store.errors import FormatError, IntegrityError, NotFoundError, StoreError
from store.ids import CommitId, ContentHash, NamespaceId, TreeId
from store.objects import (
    EMPTY_TREE,
    MAX_FILE_BYTES,
    MAX_NAME_BYTES,
    MAX_SYMLINK_TARGET_BYTES,
    MAX_XATTR_NAME_BYTES,
    MAX_XATTR_VALUE_BYTES,
    MAX_XATTRS_TOTAL_BYTES,
    EntryKind,
    FileEntry,
    Tree,
    decode_commit,
)
from store.protocol import DrivePath

_log = logging.getLogger(__name__)

_T = TypeVar("_T")
_P = ParamSpec("_P")

ROOT_INODE: Final = 1
VERSIONS_NAME: Final = b".versions"
RENAME_NOREPLACE: Final = 1
RENAME_EXCHANGE: Final = 2
BLOCK_SIZE: Final = 4096
READDIR_PAGE: Final = 256
"""Entries one ``readdir`` call returns at most."""
COPY_PIECE_BYTES: Final = 8 * 1024 * 1024
"""Bytes copied per step when a committed file is copied into its staged file."""
MAX_READ_BYTES: Final = 4 * 1024 * 1024
"""The most one ``read`` returns (the kernel asks for at most 1 MiB)."""
STAGED_MEMORY_BYTES: Final = 32 * 1024 * 1024
"""What new files' first writes may hold in memory in all, before their close writes them
out (``StagedFile.buffer``, at most ``staging.MAX_BUFFERED_BYTES`` per file)."""
XATTR_NAMESPACE: Final = b"user."
"""The extended attributes the drive keeps. The others are this machine's security state
(``security.*`` labels, ``system.posix_acl_*``, ``trusted.*``), meaningless on another
device and not enforced here, so they answer EOPNOTSUPP, as on a filesystem without them;
tools such as ``ls -l`` then stop asking for them."""
_STATFS_BLOCKS: Final = (1 << 40) // BLOCK_SIZE
_DIR_SIZE: Final = 4096
_TYPE_BITS: Final = {
    EntryKind.FILE: stat.S_IFREG,
    EntryKind.DIR: stat.S_IFDIR,
    EntryKind.SYMLINK: stat.S_IFLNK,
    EntryKind.FIFO: stat.S_IFIFO,
    EntryKind.SOCKET: stat.S_IFSOCK,
}


class FsError(BoxfsError):
    """A filesystem request fails with ``errno`` (the adapter raises ``FUSEError(errno)``)."""

    def __init__(self, errno_value: int, message: str = "") -> None:
        self.errno = errno_value
        super().__init__(message or os.strerror(errno_value))


@dataclass(frozen=True, slots=True)
class Attr:
    """What getattr/lookup/create/mkdir/... return."""

    inode: int
    mode: int  # full st_mode: file type bits | permission bits
    nlink: int
    uid: int
    gid: int
    size: int
    rdev: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    blocks: int  # 512-byte blocks
    generation: int = 0


@dataclass(frozen=True, slots=True)
class StatFs:
    block_size: int
    blocks: int
    blocks_free: int
    files: int
    files_free: int
    name_max: int


@dataclass(frozen=True, slots=True)
class Invalidation:
    """Something the kernel may cache that changed behind its back: a name in the directory
    ``inode``, or (``name is None``) an inode's attributes, and its cached pages too when
    ``data``."""

    inode: int
    name: bytes | None = None
    data: bool = False


class SyncError(BoxfsError):
    """The view cannot follow a new head now (a tree the server sent is unusable); the
    syncer retries."""


class _ListingNeeded(Exception):
    """A change under ``_lock`` met a directory whose listing is not in memory: ``_change``
    fetches it with the lock free and starts the change over."""

    def __init__(self, node: _Node) -> None:
        super().__init__(node.name)
        self.node = node


@dataclass(frozen=True, slots=True)
class _Unconfirmed:
    """The paths (as name tuples) journal entries name, and every directory above them."""

    exact: frozenset[tuple[bytes, ...]]
    ancestors: frozenset[tuple[bytes, ...]]

    @classmethod
    def of(cls, paths: Iterable[tuple[bytes, ...]]) -> _Unconfirmed:
        exact = frozenset(paths)
        ancestors = frozenset(path[:end] for path in exact for end in range(1, len(path)))
        return cls(exact, ancestors)


@dataclass(eq=False, slots=True)
class _Node:
    """One entry of the view. A directory's ``children`` is ``None`` until materialized
    (then its tree ``tree_id`` has been fetched); a file's content is, in order of
    precedence, its open ``stage``, its frozen ``staged`` file, or the committed
    ``entry``."""

    kind: EntryKind
    name: bytes
    parent: _Node | None
    mode: int  # permission bits only
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    target: bytes = b""
    entry: FileEntry | None = None  # committed file content
    tree_id: TreeId | None = None  # committed directory content
    children: dict[bytes, _Node] | None = None
    readonly: bool = False  # under .versions
    remote: bool = False  # the server has (or the journal will give it) this path
    base: ContentHash | None = None  # content hash this device last saw (files)
    base_seq: int | None = None  # the seq of this file's latest pending put
    staged: str | None = None  # frozen staged file (pinned by this node)
    stage: StagedFile | None = None  # open, writable staged file (pinned by this node)
    reader: StagedFile | None = None  # ``staged`` opened for reading
    dirty: bool = False  # ``stage`` holds changes not journaled
    writers: int = 0
    handles: int = 0
    lookups: int = 0
    inode: int = 0
    detached: bool = False  # unlinked, or replaced by a rename
    broken: bool = False  # integrity failure: reads give EIO
    versions_root: bool = False
    rdev: int = 0
    changed: bool = False  # differs from its committed entry (a directory: its listing)


@dataclass(slots=True)
class _FileHandle:
    node: _Node
    writable: bool


@dataclass(slots=True)
class _DirHandle:
    node: _Node
    names: list[bytes] = field(default_factory=list)


def _now_ns() -> int:
    return time.time_ns()


def _check_name(name: bytes) -> None:
    if len(name) > MAX_NAME_BYTES:
        raise FsError(errno.ENAMETOOLONG)
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise FsError(errno.EINVAL)


def _check_xattr_namespace(name: bytes) -> None:
    if not name.startswith(XATTR_NAMESPACE):
        raise FsError(errno.EOPNOTSUPP)


def _failed(exc: BaseException, doing: str, subject: object) -> FsError:
    """``exc`` as the error a request answers (``boxfs.errno_map``: offline is ENOTCONN, a
    full disk ENOSPC, ...), logged unless it is a condition of the world."""
    if not errno_map.expected(exc):
        _log.error("%s %r: %s", doing, subject, exc)
    return FsError(errno_map.errno_for(exc))


def _check_size(size: int) -> None:
    if size < 0:
        raise FsError(errno.EINVAL)
    if size > MAX_FILE_BYTES:
        raise FsError(errno.EFBIG)


def version_names(times_ns: list[int]) -> list[str]:
    """Directory names for commits at ``times_ns`` (oldest first): their UTC second as
    ``YYYY-MM-DDTHH-MM-SSZ``, the second and later commit of one second with ``.2``, ``.3``
    ... (so a name, once given, stays the same when newer commits arrive)."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for time_ns in times_ns:
        base = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(time_ns // 1_000_000_000))
        count = seen.get(base, 0) + 1
        seen[base] = count
        names.append(base if count == 1 else f"{base}.{count}")
    return names


def _set_attrs(node: _Node, attrs: FileAttrs) -> None:
    node.mode, node.uid, node.gid, node.xattrs = attrs.mode, attrs.uid, attrs.gid, attrs.xattrs
    node.mtime_ns = node.ctime_ns = attrs.mtime_ns


def _apply_changes(node: _Node, changes: AttrChanges) -> None:
    node.changed = True
    if changes.mode is not None:
        node.mode = changes.mode
    if changes.uid is not None:
        node.uid = changes.uid
    if changes.gid is not None:
        node.gid = changes.gid
    if changes.mtime_ns is not None:
        node.mtime_ns = changes.mtime_ns
    if changes.xattrs is not None:
        node.xattrs = changes.xattrs
    node.ctime_ns = _now_ns()


def _busy(node: _Node) -> bool:
    """Open for writing, or holding written bytes not journaled yet: the syncer keeps off."""
    return bool(node.writers) or node.stage is not None


def _held_locally(
    child: _Node | None,
    entry: FileEntry | None,
    path: tuple[bytes, ...],
    unconfirmed: _Unconfirmed,
) -> bool:
    """Whether a local change keeps the server's ``entry`` off this name for now: a journal
    entry names it, the file is being written, or (for a removal or a change of kind)
    unconfirmed changes lie below it (a directory can still be synced into)."""
    if path in unconfirmed.exact or (child is not None and _busy(child)):
        return True
    if child is None:
        return False
    if child.kind is EntryKind.DIR and entry is not None and entry.kind is EntryKind.DIR:
        return False  # a directory both sides have is synced into, never replaced
    # Removed or replaced remotely: not while a change below it is unconfirmed, or a file
    # below it is being written (not journaled yet, so only the view knows it).
    return path in unconfirmed.ancestors or _busy_below(child)


def _busy_below(node: _Node) -> bool:
    """Whether a listed descendant of ``node`` is open for writing or holds unjournaled
    bytes (memory follows what the view lists, so the walk is bounded by it)."""
    pending = [node]
    while pending:
        current = pending.pop()
        for child in (current.children or {}).values():
            if _busy(child):
                return True
            if child.children is not None:
                pending.append(child)
    return False


def _adopt_attrs(node: _Node, entry: FileEntry) -> bool:
    """Take the server entry's attributes; whether any differed."""
    before = (node.mode, node.uid, node.gid, node.mtime_ns, node.xattrs, node.size)
    after = (entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs, entry.size)
    if before == after:
        return False
    node.mode, node.uid, node.gid, node.mtime_ns, node.xattrs, node.size = after
    node.ctime_ns = _now_ns()
    return True


def _listing_of(node: _Node) -> dict[bytes, _Node] | None:
    """``node.children`` read afresh after an await (``forget`` may have dropped it)."""
    return node.children


def _stage_of(node: _Node) -> StagedFile | None:
    """``node.stage`` read afresh after an await (where another task may have set it)."""
    return node.stage


def _check_replace(node: _Node, replaced: _Node, flags: int, replaced_empty: bool) -> None:
    """rename(2)'s rules for ``node`` taking the place of ``replaced``."""
    if flags & RENAME_NOREPLACE:
        raise FsError(errno.EEXIST)
    if node.kind is EntryKind.DIR and replaced.kind is not EntryKind.DIR:
        raise FsError(errno.ENOTDIR)
    if node.kind is not EntryKind.DIR and replaced.kind is EntryKind.DIR:
        raise FsError(errno.EISDIR)
    if not replaced_empty:
        raise FsError(errno.ENOTEMPTY)


def _copy_sparse(source: str, target: int, size: int, staged: StagedFile | None = None) -> None:
    """Copy the data extents of ``source`` into the open ``target`` fd (holes stay holes),
    then set its size: time and space follow the data, never the logical size. ``staged``:
    the source's open staged file, whose buffered writes go to disk first."""
    if staged is not None:
        staged.spill()
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        position = 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            while start < end:
                data = os.pread(fd, min(COPY_PIECE_BYTES, end - start), start)
                if not data:
                    break
                os.pwrite(target, data, start)
                start += len(data)
            position = end
        os.ftruncate(target, size)
    finally:
        os.close(fd)


class FileSystemModel:
    """The view of one namespace: see the module docstring."""

    def __init__(
        self,
        *,
        namespace_id: NamespaceId,
        remote: Remote,
        fetcher: Fetcher,
        journal: Journal,
        staging: Staging,
        uploader: Uploader,
        limiter: trio.CapacityLimiter,
        uid: int,
        gid: int,
        preserve_ownership: bool = False,
        stage_pool: StagePool | None = None,
    ) -> None:
        self._namespace_id = namespace_id
        self._stage_pool = stage_pool
        self._memory_budget = MemoryBudget(STAGED_MEMORY_BYTES)
        self._remote = remote
        self._fetcher = fetcher
        self._journal = journal
        self._staging = staging
        self._uploader = uploader
        self._limiter = limiter
        self._uid = uid
        self._gid = gid
        self._preserve = preserve_ownership
        self._lock = trio.Lock()
        now = _now_ns()
        self._root = _Node(
            kind=EntryKind.DIR, name=b"", parent=None, mode=0o755, uid=uid, gid=gid, size=0,
            mtime_ns=now, ctime_ns=now, tree_id=EMPTY_TREE.id, remote=True,
        )  # fmt: skip
        self._versions = _Node(
            kind=EntryKind.DIR, name=VERSIONS_NAME, parent=self._root, mode=0o555, uid=uid,
            gid=gid, size=0, mtime_ns=now, ctime_ns=now, readonly=True, versions_root=True,
        )  # fmt: skip
        self._root.inode = ROOT_INODE
        self._next_inode = ROOT_INODE + 1
        self._inodes: dict[int, _Node] = {ROOT_INODE: self._root}
        self._next_fh = 1
        self._files: dict[int, _FileHandle] = {}
        self._dirs: dict[int, _DirHandle] = {}
        self._invalidations: list[Invalidation] = []
        self._invalidations_ready = trio.Event()
        self._head: CommitId | None = None
        self._head_sequence = -1  # the sequence of ``_head``
        self._floor_sequence = -1  # no head older than this is shown (``raise_floor``)
        self._deferred: set[tuple[bytes, ...]] = set()
        self._versions_stale = False

    # --- helpers ---------------------------------------------------------------------------

    async def _thread(self, function: Callable[_P, _T], *args: _P.args, **kw: _P.kwargs) -> _T:
        def call() -> _T:
            return function(*args, **kw)

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def _new_stage(self) -> StagedFile:
        """A new empty staged file, pinned: a ready one from the pool if it has one (no
        thread hop), else made now."""
        stage = self._stage_pool.take() if self._stage_pool is not None else None
        if stage is None:
            stage = await self._thread(self._staging.new)
        self._staging.pin(stage.name)
        return stage

    def _ino(self, node: _Node) -> int:
        if not node.inode:
            node.inode = self._next_inode
            self._next_inode += 1
        self._inodes[node.inode] = node
        return node.inode

    def _node(self, inode: int) -> _Node:
        node = self._inodes.get(inode)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    def _attr(self, node: _Node) -> Attr:
        inode = self._ino(node)
        mode = node.mode & ~0o222 if node.readonly else node.mode
        if node.kind is EntryKind.DIR:
            size = _DIR_SIZE
        elif node.kind is EntryKind.SYMLINK:
            size = len(node.target)
        else:
            size = node.size
        uid, gid = (node.uid, node.gid) if self._preserve else (self._uid, self._gid)
        return Attr(
            inode=inode, mode=_TYPE_BITS[node.kind] | mode,
            nlink=2 if node.kind is EntryKind.DIR else (0 if node.detached else 1),
            uid=uid, gid=gid, size=size, rdev=node.rdev, atime_ns=node.mtime_ns,
            mtime_ns=node.mtime_ns, ctime_ns=node.ctime_ns, blocks=(size + 511) // 512,
        )  # fmt: skip

    def _path(self, node: _Node) -> DrivePath:
        names: list[bytes] = []
        current: _Node | None = node
        while current is not None and current.parent is not None:
            names.append(current.name)
            current = current.parent
        try:
            return DrivePath(reversed(names))
        except (FormatError, protocol.ProtocolError) as exc:
            raise FsError(errno.ENAMETOOLONG) from exc

    def _child_path(self, directory: _Node, name: bytes) -> DrivePath:
        if directory.parent is None:
            return DrivePath([name])
        try:
            return self._path(directory).child(name)
        except (FormatError, protocol.ProtocolError) as exc:
            raise FsError(errno.ENAMETOOLONG) from exc

    def _node_from_entry(self, entry: FileEntry, parent: _Node) -> _Node:
        return _Node(
            kind=entry.kind, name=entry.name, parent=parent, mode=entry.mode, uid=entry.uid,
            gid=entry.gid, size=entry.size, mtime_ns=entry.mtime_ns, ctime_ns=entry.mtime_ns,
            xattrs=entry.xattrs, target=entry.target,
            entry=entry if entry.kind is EntryKind.FILE else None, tree_id=entry.tree_id,
            readonly=parent.readonly, remote=not parent.readonly, base=entry.content_hash,
        )  # fmt: skip

    async def _children(self, node: _Node) -> dict[bytes, _Node]:
        """A directory's entries, fetching its tree the first time."""
        if node.kind is not EntryKind.DIR:
            raise FsError(errno.ENOTDIR)
        if node.versions_root and (node.children is None or self._versions_stale):
            await self._refresh_versions()
        while node.children is None:
            tree_id = node.tree_id
            assert tree_id is not None
            tree = await self._fetch_listing(node, tree_id)
            # Materialize only if nobody did meanwhile and a sync did not move the
            # directory to a newer tree while this one travelled (then fetch that one).
            if node.children is None and node.tree_id == tree_id:
                node.children = {
                    entry.name: self._node_from_entry(entry, node)
                    for entry in tree
                    if not (node is self._root and entry.name == VERSIONS_NAME)
                }
        return node.children

    async def _fetch_listing(self, node: _Node, tree_id: TreeId) -> Tree:
        try:
            return await self._fetcher.tree(tree_id)
        except (StoreError, protocol.ProtocolError) as exc:
            raise _failed(exc, "cannot list the directory", node.name) from exc

    async def _refresh_versions(self) -> None:
        """(Re)list the retained commits as ``.versions`` entries (names are stable)."""
        commits: list[protocol.CommitInfo] = []
        cursor: str | None = None
        try:
            while True:
                page = await self._remote.log(
                    self._namespace_id, cursor=cursor, limit=protocol.MAX_PAGE_SIZE
                )
                commits.extend(page.commits)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        except (StoreError, protocol.ProtocolError) as exc:
            if isinstance(exc, protocol.UnavailableError) and self._versions.children is not None:
                return  # offline: keep the list we have
            raise _failed(exc, "cannot list the versions in", VERSIONS_NAME) from exc
        self._versions_stale = False
        commits.reverse()  # oldest first
        names = version_names([info.time_ns for info in commits])
        old = self._versions.children or {}
        fresh: dict[bytes, _Node] = {}
        for info, text in reversed(list(zip(commits, names, strict=True))):
            name = text.encode()
            node = old.get(name)
            if node is None or node.tree_id != info.root:
                node = _Node(
                    kind=EntryKind.DIR, name=name, parent=self._versions, mode=0o555,
                    uid=self._uid, gid=self._gid, size=0, mtime_ns=info.time_ns,
                    ctime_ns=info.time_ns, tree_id=info.root, readonly=True,
                )  # fmt: skip
            fresh[name] = node
        self._versions.children = fresh

    def _listed(self, node: _Node) -> dict[bytes, _Node]:
        """A directory's listing for a change under ``_lock``: never fetched there. One not
        in memory raises ``_ListingNeeded``, and ``_change`` fetches it with the lock
        released, then runs the change again from its checks."""
        if node.kind is not EntryKind.DIR:
            raise FsError(errno.ENOTDIR)
        if node.children is None:
            raise _ListingNeeded(node)
        return node.children

    def _listed_child(self, parent: _Node, name: bytes) -> _Node:
        """``_child`` under ``_lock``, for a writable directory (not inside ``.versions``)."""
        _check_name(name)
        if parent is self._root and name == VERSIONS_NAME:
            return self._versions  # the caller's writability check refuses it
        node = self._listed(parent).get(name)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    async def _change(self, change: Callable[[], Awaitable[_T]]) -> _T:
        """Run a metadata change under ``_lock``, which orders overlay and journal alike.
        The change reads listings with ``_listed`` only, and does all of its checks before
        its first append or overlay update, so a listing that must be fetched (the network,
        perhaps a slow or offline server) is fetched with the lock free, and the change
        starts over: no other request waits on that fetch."""
        while True:
            try:
                async with self._lock:
                    return await change()
            except _ListingNeeded as needed:
                await self._children(needed.node)

    async def _child(self, parent: _Node, name: bytes) -> _Node:
        _check_name(name)
        if parent is self._root and name == VERSIONS_NAME:
            return self._versions
        node = (await self._children(parent)).get(name)
        if node is None and parent.versions_root:  # perhaps a commit made since the listing
            await self._refresh_versions()
            node = (await self._children(parent)).get(name)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    def _check_writable(self, node: _Node) -> None:
        if node.readonly or node.versions_root:
            raise FsError(errno.EROFS)

    def _writable_dir(self, inode: int) -> _Node:
        node = self._node(inode)
        self._check_writable(node)
        if node.kind is not EntryKind.DIR:
            raise FsError(errno.ENOTDIR)
        ancestor: _Node | None = node
        while ancestor is not None:  # under a removed directory nothing can be made
            if ancestor.detached:
                raise FsError(errno.ENOENT)
            ancestor = ancestor.parent
        return node

    async def _append(
        self, *ops: PendingOp, power_safe: bool = False, spill: StagedFile | None = None
    ) -> list[int]:
        """Journal ``ops``: they survive the mount being killed once this returns, and a
        power cut only with ``power_safe`` (what fsync(2) promises; metadata changes, like
        a local filesystem's, are made durable by a later fsync). ``spill``: the staged
        file a put names, written out first, in the same worker-thread call."""

        def append() -> list[int]:
            if spill is not None:
                spill.spill()
            return self._journal.append_many(self._namespace_id, ops, power_safe=power_safe)

        try:
            seqs = await self._thread(append)
        except FormatError as exc:
            raise FsError(errno.EINVAL, str(exc)) from exc
        except (JournalError, OSError) as exc:
            raise _failed(exc, "cannot journal", [type(op).__name__ for op in ops]) from exc
        self._uploader.nudge()
        return seqs

    def _file_attrs(self, node: _Node) -> FileAttrs:
        return FileAttrs(
            mode=node.mode, uid=node.uid, gid=node.gid, mtime_ns=node.mtime_ns, xattrs=node.xattrs
        )

    def _new_node(self, parent: _Node, name: bytes, kind: EntryKind, mode: int) -> _Node:
        now = _now_ns()
        return _Node(
            kind=kind, name=name, parent=parent, mode=mode & 0o7777, uid=self._uid,
            gid=self._gid, size=0, mtime_ns=now, ctime_ns=now,
            children={} if kind is EntryKind.DIR else None, changed=True,
        )  # fmt: skip

    def _free_name(self, parent: _Node, name: bytes) -> dict[bytes, _Node]:
        """The listing ``name`` is free in (under ``_lock``, see ``_listed``)."""
        _check_name(name)
        if parent is self._root and name == VERSIONS_NAME:
            raise FsError(errno.EEXIST)
        children = self._listed(parent)
        if parent.detached:  # removed while this request waited for the lock
            raise FsError(errno.ENOENT)
        if name in children:
            raise FsError(errno.EEXIST)
        return children

    def _journals_attrs(self, node: _Node) -> bool:
        """Whether an attribute change needs its own setattr entry: not for the root (no
        entry stores it: the change stays in memory), a path the server does not know yet,
        or a file whose coming put carries the attributes."""
        if node is self._root or not node.remote or node.detached:
            return False
        return not (node.dirty and node.writers)

    def _touch(self, node: _Node) -> None:
        node.mtime_ns = node.ctime_ns = _now_ns()
        node.changed = True

    # --- entries ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the head (or the empty tree) as the view, then replay the journal's entries
        (an earlier mount's changes the server has not confirmed) onto it, so they show.

        With the server unreachable, the view starts from the head the last mount showed
        (remembered in the journal; its trees are in the object cache as far as that mount
        listed them): an offline start. Without one, ``protocol.UnavailableError`` passes.

        Call it once, before the uploader starts (so no staged file named by an entry is
        discarded while this replays)."""
        view = await self._initial_head()
        if view is not None:
            self._head = view.commit_id
            self._root.tree_id = view.root
            self._root.mtime_ns = self._root.ctime_ns = view.time_ns
        self._root.children = None
        batches = await self._thread(self._journal.batches_in_flight, self._namespace_id)
        pending = await self._thread(self._journal.pending, self._namespace_id, 1 << 62)
        async with self._lock:
            for entry in [*(e for batch in batches for e in batch.entries), *pending]:
                try:
                    await self._replay(entry.seq, entry.op)
                except (FsError, StagingError, FormatError, OSError) as exc:
                    # Already applied on the server (a lost reply), or it will be rejected
                    # there: the head shows what became of it.
                    _log.info("journal entry %d not shown in the view: %s", entry.seq, exc)

    async def _initial_head(self) -> ViewHead | None:
        """The server's head now, or offline the one the last mount showed."""
        try:
            head = await self._remote.head(self._namespace_id)
            self._head_sequence = head.sequence
            if head.head is None:
                return None
            raw = (await self._remote.commits(self._namespace_id, [head.head])).get(head.head)
        except protocol.UnavailableError:
            remembered = await self._thread(self._journal.view_head, self._namespace_id)
            if remembered is None:
                raise
            _log.warning("the server is unreachable: showing the drive as this device last saw it")
            self.started_offline = True
            return remembered
        if raw is None:
            raise NotFoundError("head commit", str(head.head))
        commit = await self._thread(decode_commit, raw, head.head)
        view = ViewHead(head.head, commit.root, commit.time_ns)
        await self._remember_head(view)
        return view

    async def _resolve(self, path: DrivePath) -> tuple[_Node, dict[bytes, _Node]]:
        """The directory holding ``path`` and its entries (materialized)."""
        node = self._root
        for name in path.components[:-1]:
            node = await self._child(node, name)
        return node, await self._children(node)

    async def _replay(self, seq: int, op: PendingOp) -> None:
        """Apply one journal entry to the overlay (no journaling: it is there already)."""
        match op:
            case PendingPut():
                await self._replay_put(seq, op)
            case PendingMkdir():
                parent, children = await self._resolve(op.path)
                if op.path.name not in children:
                    node = self._new_node(parent, op.path.name, EntryKind.DIR, op.attrs.mode)
                    _set_attrs(node, op.attrs)
                    node.remote = parent.changed = True
                    children[op.path.name] = node
            case PendingMove():
                source_dir, sources = await self._resolve(op.src)
                moved = sources.get(op.src.name)
                if moved is None:
                    raise FsError(errno.ENOENT)
                target_dir, targets = await self._resolve(op.dst)
                replaced = targets.get(op.dst.name)
                if replaced is not None and replaced is not moved:
                    self._detach(replaced)
                del sources[op.src.name]
                moved.name, moved.parent = op.dst.name, target_dir
                targets[op.dst.name] = moved
                moved.changed = target_dir.changed = source_dir.changed = True
            case PendingDelete():
                _, children = await self._resolve(op.path)
                if (gone := children.get(op.path.name)) is not None:
                    self._detach(gone)
            case PendingSetattr():
                _, children = await self._resolve(op.path)
                changed = children.get(op.path.name)
                if changed is None:
                    raise FsError(errno.ENOENT)
                _apply_changes(changed, op.changes)

    async def _replay_put(self, seq: int, op: PendingPut) -> None:
        parent, children = await self._resolve(op.path)
        existing = children.get(op.path.name)
        if existing is not None and existing.kind is EntryKind.DIR:
            raise FsError(errno.EISDIR)
        node = self._new_node(parent, op.path.name, op.kind, op.attrs.mode)
        _set_attrs(node, op.attrs)
        node.target, node.remote, node.base_seq = op.target, True, seq
        node.base = existing.base if existing is not None else op.base
        if op.staged is not None:
            node.size = await self._thread(self._staging.size_of, op.staged)
            self._staging.pin(op.staged)
            node.staged = op.staged
        if existing is not None:
            self._detach(existing)
        children[op.path.name] = node
        parent.changed = True

    # --- following the server -----------------------------------------------------------------

    @property
    def head(self) -> CommitId | None:
        """The commit the view shows (``None``: the namespace had no commit yet)."""
        return self._head

    @property
    def deferred_count(self) -> int:
        """Names the last sync left alone (local changes the server has not confirmed)."""
        return len(self._deferred)

    def raise_floor(self, sequence: int) -> None:
        """A batch of this device was answered with the head at ``sequence``: from now on
        no older head is shown, and nothing is rechecked against one (both would take away
        what the batch confirmed, as its entries leave the journal). Call it on the loop
        before the batch is completed in the journal."""
        self._floor_sequence = max(self._floor_sequence, sequence)

    async def apply_head(self, commit_id: CommitId, sequence: int) -> None:
        """Show the namespace as of ``commit_id`` (a newer head): diff its trees against the
        view, directory by directory where the view has listed them (an unchanged subtree
        is skipped by id), change what differs, and queue the kernel invalidations.

        What this device changed and the server has not confirmed wins: a name with a
        journal entry, or a file open for writing, is left as it is and remembered
        (``recheck`` looks again once the server has answered, and shows what it made of
        the change: the same content, a merge, or the other version with a conflicted copy
        beside it). Trees are fetched before taking the lock, so requests wait only for the
        changes themselves."""
        if commit_id == self._head or sequence < self._floor_sequence:
            return
        raw = (await self._remote.commits(self._namespace_id, [commit_id])).get(commit_id)
        if raw is None:
            raise NotFoundError("head commit", str(commit_id))
        commit = await self._thread(decode_commit, raw, commit_id)
        await self._prefetch_trees(self._root, commit.root)
        async with self._lock:
            unconfirmed = await self._unconfirmed()
            if sequence < self._floor_sequence:
                # A batch was answered with a newer head while this one travelled; its
                # entries may be gone from ``unconfirmed`` already: show that head instead.
                return
            await self._sync_dir(self._root, commit.root, (), unconfirmed)
            self._root.mtime_ns = self._root.ctime_ns = commit.time_ns
            self._head, self._head_sequence = commit_id, sequence
            self._versions_stale = True
            self._queue_invalidation(self._root)
            _log.debug(
                "showing head %s: %d invalidations queued, %d names left to local changes",
                commit_id, len(self._invalidations), len(self._deferred),
            )  # fmt: skip
        await self._remember_head(ViewHead(commit_id, commit.root, commit.time_ns))
        self._flush_invalidations()

    async def recheck(self) -> None:
        """Look again at the names an earlier sync left alone whose local change is now
        settled (answered by the server, or the file closed). Names still named by the
        journal stay aside without any work; the rest are looked up directory by
        directory (one tree and one journal read each), so a burst of thousands of
        pending creates costs little per answered batch."""
        if not self._deferred or self._head_sequence < self._floor_sequence:
            return  # the newer head is on its way: recheck against it
        async with self._lock:
            unconfirmed = await self._unconfirmed()
            if self._head_sequence < self._floor_sequence:
                return
            settled = [path for path in self._deferred if path not in unconfirmed.exact]
            self._deferred.difference_update(settled)
            by_directory: dict[tuple[bytes, ...], list[bytes]] = {}
            for path in settled:
                by_directory.setdefault(path[:-1], []).append(path[-1])
            try:
                for directory_path in sorted(by_directory, key=len):  # parents first
                    names = by_directory[directory_path]
                    await self._recheck_names(directory_path, names, unconfirmed)
            except BaseException:
                self._deferred.update(settled)  # a failed round: all of them again next time
                raise
        self._flush_invalidations()

    async def _recheck_names(
        self, path: tuple[bytes, ...], names: list[bytes], unconfirmed: _Unconfirmed
    ) -> None:
        """Sync ``names`` of the directory at ``path`` to the head the view shows. Their
        entries come from that head's tree for ``path`` (walked down from the root), not
        from the directory's own ``tree_id``: a directory held back by a later sync still
        names the older tree, which lacks what was confirmed since."""
        if any(path[:end] in self._deferred for end in range(1, len(path) + 1)):
            # The directory (or one above it) is still held back: so are its names.
            self._deferred.update((*path, name) for name in names)
            return
        directory = self._listed_dir(path)
        if directory is None:
            return  # gone, or not listed: nothing shown to correct
        server_tree = await self._server_tree(path)
        children = _listing_of(directory)
        if children is None:
            return  # dropped by a forget meanwhile: fetched anew when looked up
        entries = {} if server_tree is None else {entry.name: entry for entry in server_tree}
        own = await self._own_put_hashes(children[name] for name in names if name in children)
        for name in sorted(names):
            entry = entries.get(name)
            await self._sync_name(directory, name, entry, (*path, name), unconfirmed, own=own)

    async def _server_tree(self, path: tuple[bytes, ...]) -> Tree | None:
        """The tree at ``path`` in the head the view shows (``None``: no directory there)."""
        tree_id = self._root.tree_id
        assert tree_id is not None
        tree = await self._tree(tree_id)
        for name in path:
            entry = tree.get(name)
            if entry is None or entry.kind is not EntryKind.DIR or entry.tree_id is None:
                return None
            tree = await self._tree(entry.tree_id)
        return tree

    async def wait_invalidations(self) -> list[Invalidation]:
        """Wait for, and take, what the notifier must tell the kernel."""
        while not self._invalidations:
            await self._invalidations_ready.wait()
            self._invalidations_ready = trio.Event()
        return self.take_invalidations()

    async def _unconfirmed(self) -> _Unconfirmed:
        paths = await self._thread(self._journal.unconfirmed_paths, self._namespace_id)
        return _Unconfirmed.of(path.components for path in paths)

    async def _remember_head(self, head: ViewHead) -> None:
        try:
            await self._thread(self._journal.save_view_head, self._namespace_id, head)
        except (JournalError, OSError) as exc:  # only an offline start needs it
            _log.warning("cannot remember the head the view shows: %s", exc)

    async def _tree(self, tree_id: TreeId) -> Tree:
        try:
            return await self._fetcher.tree(tree_id)
        except protocol.UnavailableError:
            raise
        except (StoreError, protocol.ProtocolError) as exc:
            raise SyncError(f"cannot fetch tree {tree_id}: {exc}") from exc

    async def _prefetch_trees(self, node: _Node, tree_id: TreeId) -> None:
        """Fetch (into the cache) the trees a sync to ``tree_id`` will read: those of the
        listed directories whose content changed."""
        if node.children is None or node.tree_id == tree_id:
            return
        tree = await self._tree(tree_id)
        children = _listing_of(node)
        if children is None:
            return
        for entry in tree:
            child = children.get(entry.name)
            if (
                entry.kind is EntryKind.DIR
                and entry.tree_id is not None
                and child is not None
                and child.kind is EntryKind.DIR
            ):
                await self._prefetch_trees(child, entry.tree_id)

    def _listed_dir(self, path: tuple[bytes, ...]) -> _Node | None:
        """The listed directory at ``path`` in the view, without fetching anything."""
        node = self._root
        for name in path:
            if node.children is None:
                return None
            child = node.children.get(name)
            if child is None or child.kind is not EntryKind.DIR:
                return None
            node = child
        return node if node.children is not None else None

    async def _sync_dir(
        self, node: _Node, tree_id: TreeId, path: tuple[bytes, ...], unconfirmed: _Unconfirmed
    ) -> None:
        """Bring a directory of the view to the server's tree ``tree_id``."""
        if node.tree_id == tree_id:
            return
        if node.children is None:  # not listed: the next lookup fetches the new tree
            node.tree_id = tree_id
            return
        tree = await self._tree(tree_id)
        children = _listing_of(node)
        if children is None:  # forgotten meanwhile
            node.tree_id = tree_id
            return
        entries = {
            entry.name: entry
            for entry in tree
            if not (node is self._root and entry.name == VERSIONS_NAME)
        }
        own = await self._own_put_hashes(children.values())
        for name in sorted(entries.keys() | children.keys()):
            await self._sync_name(
                node, name, entries.get(name), (*path, name), unconfirmed, own=own
            )
        node.tree_id = tree_id

    async def _own_put_hashes(self, nodes: Iterable[_Node]) -> dict[int, ContentHash]:
        """The content hashes the uploader recorded for these files' latest puts (this
        device's content, still served from its staged file), in one journal call."""
        seqs = [
            node.base_seq
            for node in nodes
            if node.staged is not None and node.base_seq is not None and node.entry is None
        ]
        if not seqs:
            return {}
        return await self._thread(self._journal.put_hashes, seqs)

    async def _sync_name(
        self,
        directory: _Node,
        name: bytes,
        entry: FileEntry | None,
        path: tuple[bytes, ...],
        unconfirmed: _Unconfirmed,
        *,
        own: Mapping[int, ContentHash],
    ) -> None:
        """Bring one name of a listed directory to the server's ``entry`` (``None``: the
        server has no such name), unless a local change holds it. ``own``: the content
        hashes of this device's puts (``_own_put_hashes``)."""
        if directory.children is None:
            return  # dropped by a forget meanwhile: it is fetched anew, from the new tree
        child = directory.children.get(name)
        if _held_locally(child, entry, path, unconfirmed):
            self._deferred.add(path)
        elif child is None:
            if entry is not None:
                directory.children[name] = self._node_from_entry(entry, directory)
                self._queue_invalidation(directory, name)  # a negative entry the kernel holds
        elif entry is None:
            self._remove_remotely(directory, child)
        elif child.kind is EntryKind.DIR and entry.kind is EntryKind.DIR:
            assert entry.tree_id is not None
            if _adopt_attrs(child, entry):
                self._queue_invalidation(child)
            await self._sync_dir(child, entry.tree_id, path, unconfirmed)
        elif child.kind is entry.kind:
            self._sync_leaf(child, entry, own)
        else:  # another kind now
            self._remove_remotely(directory, child)
            directory.children[name] = self._node_from_entry(entry, directory)

    def _sync_leaf(self, node: _Node, entry: FileEntry, own: Mapping[int, ContentHash]) -> None:
        """A file, symlink, FIFO or socket whose server entry is ``entry`` (same kind). The
        node keeps its inode, so an open descriptor reads the new content."""
        same_content = True
        if node.kind is EntryKind.FILE:
            if node.entry is not None:
                same_content = node.entry.content_hash == entry.content_hash
            elif node.staged is not None and node.base_seq is not None:
                # Content this device wrote: is the server's entry that put, as sent?
                same_content = own.get(node.base_seq) == entry.content_hash
            else:
                same_content = False
            if not same_content:
                if node.reader is not None:
                    node.reader.close()  # a read using it retries with the new state
                    node.reader = None
                if node.staged is not None:
                    self._staging.unpin(node.staged)
                    node.staged = None
                node.base_seq = None
                node.broken = False
            node.entry = entry
        elif node.target != entry.target:
            same_content = False
        node.target = entry.target
        node.base = entry.content_hash
        attrs_changed = _adopt_attrs(node, entry)
        if not same_content or attrs_changed:
            self._queue_invalidation(node, data=not same_content)

    def _remove_remotely(self, directory: _Node, node: _Node) -> None:
        """Another device removed (or replaced) ``node``: out of its directory, open
        handles keep working, the kernel forgets the name."""
        assert directory.children is not None
        del directory.children[node.name]
        node.detached = True
        node.ctime_ns = _now_ns()
        self._queue_invalidation(directory, node.name)
        self._maybe_drop(node)

    def _queue_invalidation(
        self, node: _Node, name: bytes | None = None, *, data: bool = False
    ) -> None:
        """Queue what the kernel may hold about ``node`` (or the name ``name`` in it), if
        the kernel knows its inode."""
        if not node.inode or self._inodes.get(node.inode) is not node:
            return
        self._invalidations.append(Invalidation(node.inode, name, data=data))

    def _flush_invalidations(self) -> None:
        if self._invalidations:
            self._invalidations_ready.set()

    async def lookup(self, parent: int, name: bytes) -> Attr:
        node = await self._child(self._node(parent), name)
        node.lookups += 1
        return self._attr(node)

    def forget(self, inode: int, nlookup: int) -> None:
        node = self._inodes.get(inode)
        if node is None or inode == ROOT_INODE:
            return
        node.lookups = max(0, node.lookups - nlookup)
        self._maybe_drop(node)
        if node.lookups or node.handles:
            return
        # The kernel no longer knows the number: out of the table until the next lookup
        # (a node keeps its number for life, and numbers are never reused).
        self._inodes.pop(inode, None)
        if node.children is not None and self._collapsible(node):
            self._collapse(node)

    def _collapsible(self, node: _Node) -> bool:
        """Whether a materialized directory is exactly its committed tree, with nothing in
        it the kernel knows or has open: then its listing can go and be fetched again."""
        if node.changed or node.handles or node.tree_id is None or node.versions_root:
            return False
        for child in (node.children or {}).values():
            if child.lookups or child.handles or child.changed:
                return False
            if child.children is not None and not self._collapsible(child):
                return False
        return True

    def _collapse(self, node: _Node) -> None:
        """Drop a collapsible directory's listing (memory stays bounded by what the kernel
        holds); its children's inode numbers are retired, never reused."""
        for child in (node.children or {}).values():
            if child.children is not None:
                self._collapse(child)
            if child.inode:
                self._inodes.pop(child.inode, None)
        node.children = None

    def _maybe_drop(self, node: _Node) -> None:
        """A detached node: its content goes with its last handle, its inode with the
        kernel's last reference (the number is never reused)."""
        if node.handles or not node.detached:
            return
        self._drop_content(node)
        if not node.lookups and node.inode:
            self._inodes.pop(node.inode, None)

    def _drop_content(self, node: _Node) -> None:
        if node.handles:
            return
        if node.reader is not None:
            node.reader.close()
            node.reader = None
        if node.stage is not None:
            name = node.stage.name
            node.stage.close()
            node.stage = None
            self._staging.remove(name)  # never journaled: nobody else needs it
        if node.staged is not None:
            self._staging.unpin(node.staged)
            node.staged = None

    async def getattr(self, inode: int) -> Attr:
        return self._attr(self._node(inode))

    async def setattr(
        self,
        inode: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
        fh: int | None = None,
    ) -> Attr:
        node = self._node(inode)
        self._check_writable(node)
        if size is not None:
            if node.kind is EntryKind.DIR:
                raise FsError(errno.EISDIR)
            if node.kind is not EntryKind.FILE:
                raise FsError(errno.EINVAL)
            _check_size(size)
            await self._truncate(node, size)
        if not self._preserve:
            uid = gid = None  # ownership is the mount's: chown is accepted and ignored
        if mode is None and uid is None and gid is None and mtime_ns is None:
            return self._attr(node)
        try:
            changes = AttrChanges(
                mode=None if mode is None else mode & 0o7777, uid=uid, gid=gid, mtime_ns=mtime_ns
            )
        except FormatError as exc:
            raise FsError(errno.EINVAL, str(exc)) from exc
        async with self._lock:
            if self._journals_attrs(node):
                await self._append(PendingSetattr(self._path(node), changes))
            _apply_changes(node, changes)
        return self._attr(node)

    async def readlink(self, inode: int) -> bytes:
        node = self._node(inode)
        if node.kind is not EntryKind.SYMLINK:
            raise FsError(errno.EINVAL)
        return node.target

    # --- directories ------------------------------------------------------------------------

    async def opendir(self, inode: int) -> int:
        node = self._node(inode)
        if node.versions_root:
            await self._refresh_versions()
        children = await self._children(node)
        names = [name for name in children if not (node is self._root and name == VERSIONS_NAME)]
        dh = self._next_fh
        self._next_fh += 1
        self._dirs[dh] = _DirHandle(node, names)
        node.handles += 1
        return dh

    async def readdir(self, dh: int, start: int) -> list[tuple[bytes, Attr, int]]:
        """A page of the listing from offset ``start``: ``.`` (offset 0) and ``..`` (1)
        first, as ``ls -a`` expects (the kernel does not add them for FUSE), then the names
        opendir saw. ``.`` and ``..`` count no lookup: the kernel links no entry for them."""
        handle = self._dirs.get(dh)
        if handle is None:
            raise FsError(errno.EBADF)
        directory = handle.node
        page: list[tuple[bytes, Attr, int]] = []
        dots = ((b".", directory), (b"..", directory.parent or directory))
        for offset in range(start, len(dots)):
            name, dot = dots[offset]
            page.append((name, self._attr(dot), offset + 1))
        children = directory.children or {}
        index = max(0, start - len(dots))
        while index < len(handle.names) and len(page) < READDIR_PAGE:
            name = handle.names[index]
            index += 1
            node = children.get(name)
            if node is not None:  # removed since opendir: skipped
                node.lookups += 1
                page.append((name, self._attr(node), index + len(dots)))
        return page

    async def releasedir(self, dh: int) -> None:
        handle = self._dirs.pop(dh, None)
        if handle is not None:
            handle.node.handles -= 1
            if handle.node.detached:
                self._maybe_drop(handle.node)

    async def mkdir(self, parent: int, name: bytes, mode: int) -> Attr:
        directory = self._writable_dir(parent)

        async def change() -> _Node:
            children = self._free_name(directory, name)
            node = self._new_node(directory, name, EntryKind.DIR, mode)
            await self._append(PendingMkdir(self._path(node), self._file_attrs(node)))
            node.remote = True
            children[name] = node
            self._touch(directory)
            return node

        node = await self._change(change)
        node.lookups += 1
        return self._attr(node)

    async def rmdir(self, parent: int, name: bytes) -> None:
        directory = self._writable_dir(parent)

        async def change() -> None:
            node = self._listed_child(directory, name)
            self._check_writable(node)
            if node.kind is not EntryKind.DIR:
                raise FsError(errno.ENOTDIR)
            if self._listed(node):
                raise FsError(errno.ENOTEMPTY)
            await self._append(PendingDelete(self._path(node)))
            self._detach(node)
            self._touch(directory)

        await self._change(change)

    async def unlink(self, parent: int, name: bytes) -> None:
        directory = self._writable_dir(parent)

        async def change() -> None:
            node = self._listed_child(directory, name)
            self._check_writable(node)
            if node.kind is EntryKind.DIR:
                raise FsError(errno.EISDIR)
            if node.remote:
                await self._append(self._delete_op(node))
            self._detach(node)
            self._touch(directory)

        await self._change(change)

    def _delete_op(self, node: _Node) -> PendingDelete:
        return PendingDelete(self._path(node), base=node.base, base_seq=node.base_seq)

    def _detach(self, node: _Node) -> None:
        """Take ``node`` out of its directory; open handles keep working."""
        assert node.parent is not None and node.parent.children is not None
        del node.parent.children[node.name]
        node.parent.changed = True
        node.detached = True
        node.ctime_ns = _now_ns()
        self._maybe_drop(node)

    async def rename(
        self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int
    ) -> None:
        if flags & ~RENAME_NOREPLACE:
            raise FsError(errno.EINVAL)
        source_dir = self._writable_dir(old_parent)
        target_dir = self._writable_dir(new_parent)
        _check_name(new)
        if target_dir is self._root and new == VERSIONS_NAME:
            raise FsError(errno.EROFS)
        await self._change(lambda: self._rename(source_dir, old, target_dir, new, flags))

    async def _rename(
        self, source_dir: _Node, old: bytes, target_dir: _Node, new: bytes, flags: int
    ) -> None:
        """rename's checks and change, under ``_lock`` (through ``_change``)."""
        node = self._listed_child(source_dir, old)
        self._check_writable(node)
        targets = self._listed(target_dir)
        if source_dir.detached or target_dir.detached:
            raise FsError(errno.ENOENT)
        replaced = targets.get(new)
        if replaced is node:
            return
        ancestor: _Node | None = target_dir
        while ancestor is not None:
            if ancestor is node:
                raise FsError(errno.EINVAL)  # into its own subtree
            ancestor = ancestor.parent
        if replaced is not None:
            empty = replaced.kind is not EntryKind.DIR or not self._listed(replaced)
            _check_replace(node, replaced, flags, empty)
        source_path = self._path(node)
        destination = self._child_path(target_dir, new)
        ops: list[PendingOp] = []
        if node.remote:
            ops.append(PendingMove(source_path, destination))
        elif replaced is not None and replaced.remote:
            ops.append(self._delete_op(replaced))  # the new file's put comes at release
        if ops:
            await self._append(*ops)
        if replaced is not None:
            self._detach(replaced)
        assert source_dir.children is not None
        del source_dir.children[node.name]
        node.name = new
        node.parent = target_dir
        targets[new] = node
        node.ctime_ns = _now_ns()
        node.changed = True
        self._touch(source_dir)
        if target_dir is not source_dir:
            self._touch(target_dir)

    async def symlink(self, parent: int, name: bytes, target: bytes) -> Attr:
        directory = self._writable_dir(parent)
        if len(target) > MAX_SYMLINK_TARGET_BYTES:
            raise FsError(errno.ENAMETOOLONG)
        if not target or b"\0" in target:
            raise FsError(errno.EINVAL)
        return await self._put_special(directory, name, EntryKind.SYMLINK, 0o777, target=target)

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int) -> Attr:
        directory = self._writable_dir(parent)
        if stat.S_ISFIFO(mode):
            kind = EntryKind.FIFO
        elif stat.S_ISSOCK(mode):
            kind = EntryKind.SOCKET
        elif stat.S_ISREG(mode):
            raise FsError(errno.EPERM)  # the kernel uses create for files
        else:
            raise FsError(errno.EPERM)  # devices are not stored
        return await self._put_special(directory, name, kind, mode, rdev=rdev)

    async def _put_special(
        self,
        directory: _Node,
        name: bytes,
        kind: EntryKind,
        mode: int,
        *,
        target: bytes = b"",
        rdev: int = 0,
    ) -> Attr:
        async def change() -> _Node:
            children = self._free_name(directory, name)
            node = self._new_node(directory, name, kind, mode)
            node.target = target
            node.rdev = rdev
            await self._append(
                PendingPut(self._path(node), self._file_attrs(node), kind=kind, target=target)
            )
            node.remote = True
            children[name] = node
            self._touch(directory)
            return node

        node = await self._change(change)
        node.lookups += 1
        return self._attr(node)

    async def link(self, inode: int, new_parent: int, new_name: bytes) -> Attr:
        """Hard links are not part of the format: always EPERM."""
        raise FsError(errno.EPERM)

    # --- files ------------------------------------------------------------------------------

    def _new_fh(self, node: _Node, writable: bool) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = _FileHandle(node, writable)
        node.handles += 1
        if writable:
            node.writers += 1
        return fh

    async def open(self, inode: int, flags: int) -> tuple[int, bool]:
        """A file handle and ``keep_cache``: True when the file's content is the committed
        one (served by content hash, so the kernel's page cache stays valid); False for a
        file with local content (staged) or opened for writing."""
        node = self._node(inode)
        if node.kind is EntryKind.DIR:
            raise FsError(errno.EISDIR)
        if node.broken:
            raise FsError(errno.EIO)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        if writable or flags & os.O_TRUNC:
            self._check_writable(node)
        fh = self._new_fh(node, writable)
        if flags & os.O_TRUNC and writable:
            try:
                await self._truncate(node, 0)
            except BaseException:
                await self.release(fh)
                raise
        keep = not writable and node.stage is None and node.staged is None
        return fh, keep

    async def create(self, parent: int, name: bytes, mode: int, flags: int) -> tuple[int, Attr]:
        directory = self._writable_dir(parent)
        stage = await self._new_stage()  # before the lock: without a ready one, a disk hop

        async def change() -> _Node:
            children = self._free_name(directory, name)
            node = self._new_node(directory, name, EntryKind.FILE, mode)
            node.stage = stage
            stage.start_buffering(self._memory_budget)  # a small file: no hop per write
            node.dirty = True
            children[name] = node
            self._touch(directory)
            return node

        try:
            node = await self._change(change)
        except BaseException:
            stage.close()
            self._staging.remove(stage.name)
            raise
        node.lookups += 1
        fh = self._new_fh(node, True)
        return fh, self._attr(node)

    def _handle(self, fh: int) -> _FileHandle:
        handle = self._files.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        return handle

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        node = self._handle(fh).node
        if offset < 0 or size < 0:
            raise FsError(errno.EINVAL)
        size = min(size, MAX_READ_BYTES)
        if node.broken:
            raise FsError(errno.EIO)
        if node.stage is not None or node.staged is not None:
            local = await self._read_local(node, offset, size)
            if local is not None:
                return local  # else a sync replaced the local content: read the entry
        if node.entry is None:
            return b""
        try:
            return await self._fetcher.read(node.entry, offset, size)
        except (StoreError, protocol.ProtocolError) as exc:
            if isinstance(exc, IntegrityError):
                node.broken = True  # the rest of the drive stays readable
            raise _failed(exc, "cannot read", node.name) from exc

    async def _read_local(self, node: _Node, offset: int, size: int) -> bytes | None:
        """Read the node's staged content; ``None`` once it has none (a sync from another
        device replaced it with a committed entry). A commit or a drop may close the file
        under a read in a worker thread (``ValueError``): then read again from the new
        state."""
        for _attempt in range(3):
            source = node.stage or node.reader
            if source is None:
                staged = node.staged
                if staged is None:
                    if node.entry is not None:
                        return None
                    break
                opened = await self._thread(self._staging.open, staged)
                if node.reader is None and node.staged == staged:
                    node.reader = opened
                else:  # another read opened it meanwhile, or the content moved on
                    opened.close()
                continue
            try:
                return await self._thread(source.read_at, offset, size)
            except ValueError:
                continue
        raise FsError(errno.EIO, "the staged content went away")

    async def _ensure_stage(self, node: _Node) -> StagedFile:
        """Copy on write: the node's current content into a new staged file."""
        if node.stage is not None:
            return node.stage
        stage = await self._new_stage()
        try:
            if node.staged is not None:
                path = str(self._staging.path_of(node.staged))
                # The frozen stage may still be spilling its buffer (a commit in flight).
                frozen = node.reader if node.reader and node.reader.name == node.staged else None
                await self._thread(_copy_sparse, path, stage.fileno(), node.size, frozen)
            elif node.entry is not None and node.entry.size:
                entry = node.entry
                for offset in range(0, entry.size, COPY_PIECE_BYTES):
                    data = await self._fetcher.read(entry, offset, COPY_PIECE_BYTES)
                    await self._thread(stage.write_at, offset, data)
        except BaseException as exc:
            stage.close()
            self._staging.remove(stage.name)
            if isinstance(exc, IntegrityError):
                node.broken = True
            if isinstance(exc, StoreError | protocol.ProtocolError | OSError):
                raise _failed(exc, "cannot copy the content of", node.name) from exc
            raise
        theirs = _stage_of(node)
        if theirs is not None:  # another task copied it meanwhile: use theirs
            stage.close()
            self._staging.remove(stage.name)
            return theirs
        node.stage = stage
        return stage

    async def _truncate(self, node: _Node, size: int) -> None:
        if node.broken:
            raise FsError(errno.EIO)
        node.writers += 1  # an internal writer: commits at the end if nobody else writes
        node.handles += 1
        try:
            if size == 0 and node.stage is None:
                stage = await self._new_stage()
                theirs = _stage_of(node)
                if theirs is not None:  # a write made one meanwhile: truncate that one
                    stage.close()
                    self._staging.remove(stage.name)
                    stage = theirs
                node.stage = stage
            else:
                stage = await self._ensure_stage(node)
            try:
                await self._thread(stage.truncate, size)
            except StagingError as exc:
                raise FsError(errno.EFBIG) from exc
            node.size = size
            node.dirty = True
            self._touch(node)
        finally:
            node.handles -= 1
            node.writers -= 1
        if not node.writers:
            await self._commit(node, durable=False)
        elif node.detached:
            self._maybe_drop(node)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        node = handle.node
        if not handle.writable:
            raise FsError(errno.EBADF)
        self._check_writable(node)
        if offset < 0:
            raise FsError(errno.EINVAL)
        _check_size(offset + len(data))
        if node.broken:
            raise FsError(errno.EIO)
        stage = await self._ensure_stage(node)
        if stage.buffer(offset, data):  # in memory, no await: the stage is still the node's
            node.size = max(node.size, offset + len(data))
            node.dirty = True
            self._touch(node)
            return len(data)
        written = await self._thread(stage.write_at, offset, data)
        while _stage_of(node) is not stage:
            # A close froze (journaled) the stage while these bytes went in: write them
            # again into the stage that follows it, so the next put carries them for sure.
            stage = await self._ensure_stage(node)
            written = await self._thread(stage.write_at, offset, data)
        node.size = max(node.size, offset + written)
        node.dirty = True
        self._touch(node)
        return written

    async def flush(self, fh: int) -> None:
        """A close(2) of a descriptor of this handle: journal what it wrote now. The kernel
        sends the release only after close(2) has returned, and a mount killed in between
        would otherwise lose a file whose close succeeded. (A later write through another
        descriptor of the same file copies the frozen content into a new stage.)"""
        handle = self._handle(fh)
        if handle.writable:
            await self._commit(handle.node, durable=False)

    async def fsync(self, fh: int, datasync: bool) -> None:
        """Journal the file's content now, durably: once this returns, the content survives
        a crash or power cut (it is in the journal and the fsynced staged file), and will be
        uploaded; it does not wait for the server."""
        node = self._handle(fh).node
        if await self._commit(node, durable=True):
            return
        # Nothing left to journal: the content went in at a close (perhaps one on another
        # descriptor, whose commit ``_commit`` waited for), without an fsync. Make that
        # staged file, and the journal up to its entry, durable now.
        if node.stage is None and node.staged is not None:
            try:
                await self._thread(self._sync_journaled, node.staged)
            except (JournalError, StagingError, OSError) as exc:
                raise _failed(exc, "cannot make durable", node.name) from exc

    def _sync_journaled(self, staged: str) -> None:
        """The staged file's content and the journal up to its put, made durable. A staged
        file gone meanwhile was uploaded and discarded, or its file removed: nothing of it
        is left to make durable."""
        with contextlib.suppress(StagedFileMissingError):
            self._staging.fsync(staged)
        self._journal.sync()

    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is None:
            return
        node = handle.node
        node.handles -= 1
        if handle.writable:
            node.writers -= 1
        try:
            if handle.writable and not node.writers:
                await self._commit(node, durable=False)
        finally:
            if node.detached:
                self._maybe_drop(node)

    async def _commit(self, node: _Node, *, durable: bool) -> bool:
        """Freeze the open stage and journal it as one put (nothing if unchanged). Whether
        it journaled one. ``durable`` (fsync(2)): the frozen stage and the journal are
        fsynced once ``_lock`` is free again (the frozen stage no longer changes), so other
        requests never wait on the disk flush of a large file."""
        journaled = await self._freeze(node)
        if journaled is not None and durable:
            try:
                await self._thread(self._sync_journaled, journaled)
            except (JournalError, StagingError, OSError) as exc:
                raise _failed(exc, "cannot fsync the staged content of", node.name) from exc
        return journaled is not None

    async def _freeze(self, node: _Node) -> str | None:
        """``_commit``'s change under ``_lock``: the staged file journaled, if any."""
        async with self._lock:
            stage = node.stage
            if stage is None or not node.dirty or node.detached:
                return None
            # Frozen from here on: a write arriving meanwhile copies it into a new stage.
            previous, old_reader = node.staged, node.reader
            node.stage, node.staged, node.reader, node.dirty = None, stage.name, stage, False
            try:
                op = PendingPut(
                    self._path(node), self._file_attrs(node), staged=stage.name,
                    base=node.base, base_seq=node.base_seq,
                )  # fmt: skip
                (seq,) = await self._append(op, spill=stage)
            except BaseException:
                node.staged, node.reader = previous, old_reader
                if _stage_of(node) is None:  # give the content back, still to be journaled
                    node.stage, node.dirty = stage, True
                else:  # a newer stage holds these bytes and more
                    stage.close()
                    self._staging.remove(stage.name)
                raise
            if old_reader is not None:
                old_reader.close()  # a read using it retries with the new state
            if previous is not None:
                self._staging.unpin(previous)
            node.base_seq = seq
            node.remote = True
            node.entry = None
            return stage.name

    # --- extended attributes ----------------------------------------------------------------

    async def getxattr(self, inode: int, name: bytes) -> bytes:
        node = self._node(inode)
        _check_xattr_namespace(name)
        for key, value in node.xattrs:
            if key == name:
                return value
        raise FsError(errno.ENODATA)

    async def listxattr(self, inode: int) -> list[bytes]:
        return [key for key, _ in self._node(inode).xattrs if key.startswith(XATTR_NAMESPACE)]

    async def setxattr(self, inode: int, name: bytes, value: bytes) -> None:
        node = self._node(inode)
        self._check_writable(node)
        if not name or b"\0" in name:
            raise FsError(errno.EINVAL)
        _check_xattr_namespace(name)
        if len(name) > MAX_XATTR_NAME_BYTES:
            raise FsError(errno.ERANGE)
        if len(value) > MAX_XATTR_VALUE_BYTES:
            raise FsError(errno.E2BIG)
        xattrs = dict(node.xattrs)
        xattrs[name] = value
        if sum(len(k) + len(v) for k, v in xattrs.items()) > MAX_XATTRS_TOTAL_BYTES:
            raise FsError(errno.ENOSPC)
        await self._set_xattrs(node, tuple(sorted(xattrs.items())))

    async def removexattr(self, inode: int, name: bytes) -> None:
        node = self._node(inode)
        self._check_writable(node)
        _check_xattr_namespace(name)
        xattrs = dict(node.xattrs)
        if xattrs.pop(name, None) is None:
            raise FsError(errno.ENODATA)
        await self._set_xattrs(node, tuple(sorted(xattrs.items())))

    async def _set_xattrs(self, node: _Node, xattrs: tuple[tuple[bytes, bytes], ...]) -> None:
        if node is self._root:
            raise FsError(errno.EPERM)  # the drive's root is no entry: it has no xattrs
        async with self._lock:
            if self._journals_attrs(node):
                await self._append(PendingSetattr(self._path(node), AttrChanges(xattrs=xattrs)))
            node.xattrs = xattrs
            node.ctime_ns = _now_ns()
            node.changed = True

    # --- the rest ---------------------------------------------------------------------------

    async def statfs(self) -> StatFs:
        """Space as the staging directory's disk has it (what bounds local writes until
        they are uploaded); inode counts are nominal."""
        blocks, free = _STATFS_BLOCKS, _STATFS_BLOCKS // 2
        try:
            local = await self._thread(os.statvfs, self._staging.directory)
        except OSError:
            pass
        else:
            blocks = max(1, local.f_blocks * local.f_frsize // BLOCK_SIZE)
            free = min(blocks, local.f_bavail * local.f_frsize // BLOCK_SIZE)
        return StatFs(
            block_size=BLOCK_SIZE, blocks=blocks, blocks_free=free,
            files=1 << 32, files_free=1 << 31, name_max=MAX_NAME_BYTES,
        )  # fmt: skip

    def take_invalidations(self) -> list[Invalidation]:
        """What the notifier task should tell the kernel, oldest first."""
        taken, self._invalidations = self._invalidations, []
        return taken

    # --- introspection for tests and status -------------------------------------------------

    def inode_count(self) -> int:
        """How many inodes the table holds (the kernel may know them)."""
        return len(self._inodes)

    def iter_open_handles(self) -> Iterator[int]:
        return iter(list(self._files))
