"""The view's data: nodes, handles, attributes, the errors and limits of the view.

A ``Node`` is one entry of the view; its fields say where its content is (an open stage, a
frozen staged file, or the committed entry) and what the kernel and this device hold of it
(lookup count, handles, writers, pending puts). Module functions here are pure checks and
conversions on nodes. Owns no I/O and no lock; every layer of ``boxfs.view`` uses it, on
the mount's trio loop.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Final, NoReturn, TypeAlias

from boxfs import errno_map
from boxfs.errors import BoxfsError
from boxfs.staging import StagedFile
from store.ids import ContentHash, NamespaceId, TreeId
from store.objects import MAX_FILE_BYTES, MAX_NAME_BYTES, EntryKind, FileEntry
from store.ops import AttrChanges, Attrs

_log = logging.getLogger(__name__)


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
# Read-only, on a file of a shared folder: who else has it open for writing (the server's
# word at the last heartbeat); shown only while someone does.
EDITORS_XATTR: Final = b"user.boxfs.editors"
"""The extended attributes the drive keeps. The others are this machine's security state
(``security.*`` labels, ``system.posix_acl_*``, ``trusted.*``), meaningless on another
device and not enforced here, so they answer EOPNOTSUPP, as on a filesystem without them;
tools such as ``ls -l`` then stop asking for them."""
STATFS_BLOCKS: Final = (1 << 40) // BLOCK_SIZE
DIR_SIZE: Final = 4096
TYPE_BITS: Final = {
    EntryKind.FILE: stat.S_IFREG,
    EntryKind.DIR: stat.S_IFDIR,
    EntryKind.SYMLINK: stat.S_IFLNK,
    EntryKind.FIFO: stat.S_IFIFO,
    EntryKind.SOCKET: stat.S_IFSOCK,
    EntryKind.BLOCK_DEVICE: stat.S_IFBLK,
    EntryKind.CHAR_DEVICE: stat.S_IFCHR,
}


class FsError(BoxfsError):
    """A filesystem request fails with ``errno`` (the adapter raises ``FUSEError(errno)``)."""

    def __init__(self, errno_value: int, message: str = "") -> None:
        self.errno = errno_value
        super().__init__(message or os.strerror(errno_value))


Owner: TypeAlias = tuple[int, int]
"""The uid and gid of the process making a new entry (the request's context)."""


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


class ListingNeeded(Exception):
    """A change under ``_lock`` met a directory whose listing is not in memory: ``_change``
    fetches it with the lock free and starts the change over."""

    def __init__(self, node: Node) -> None:
        super().__init__(node.name)
        self.node = node


SHOWN_AS_FOLDERS: Final = (EntryKind.DIR, EntryKind.MOUNT)  # a shared folder shows as one


class Listing(dict[bytes, "Node"]):
    """A directory's children by name, counting those shown as folders as they come and go
    (a directory's link count, asked for at every getattr, without a walk of its
    children). Entries change by ``[name] = node`` and ``del`` only; a node's kind never
    changes (a new kind is a new node)."""

    __slots__ = ("folders",)

    def __init__(self) -> None:
        super().__init__()
        self.folders = 0

    def __setitem__(self, name: bytes, node: Node) -> None:
        old = self.get(name)
        if old is not None:
            self.folders -= old.kind in SHOWN_AS_FOLDERS
        super().__setitem__(name, node)
        self.folders += node.kind in SHOWN_AS_FOLDERS

    def __delitem__(self, name: bytes) -> None:
        self.folders -= self[name].kind in SHOWN_AS_FOLDERS
        super().__delitem__(name)

    def _unsupported(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a listing changes by [name] = node and del only")

    pop = popitem = setdefault = update = clear = __ior__ = _unsupported


@dataclass(eq=False, slots=True)
class Node:
    """One entry of the view. A directory's ``children`` is ``None`` until materialized
    (then its tree ``tree_id`` has been fetched); a file's content is, in order of
    precedence, its open ``stage``, its frozen ``staged`` file, or the committed
    ``entry``. A node belongs to the namespace of its parent, but for the root of a mounted
    namespace (``boxfs.view.namespaces``), which carries its own."""

    kind: EntryKind
    name: bytes
    parent: Node | None
    namespace_id: NamespaceId  # the namespace it belongs to (a mounted root: its own)
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
    children: Listing | None = None
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
    # The mtime of its server entry as last seen (or sent: mkdir, utime); a directory's own
    # ``mtime_ns`` also moves with its listing (``following._adopt_attrs``).
    seen_mtime_ns: int | None = None
    # The access time a utime set apart from the mtime (``None``: the mtime; as in
    # ``FileEntry.atime_ns``: reads do not move it).
    atime_ns: int | None = None
    # The kernel may hold pages of content this node no longer has (a sync replaced it):
    # the next open drops them. Writes and truncates made here go through the kernel, which
    # keeps its pages right itself.
    pages_stale: bool = False


@dataclass(slots=True)
class FileHandle:
    node: Node
    writable: bool


@dataclass(slots=True)
class DirHandle:
    node: Node
    names: list[bytes] = field(default_factory=list)


def now_ns() -> int:
    return time.time_ns()


def check_name(name: bytes) -> None:
    if len(name) > MAX_NAME_BYTES:
        raise FsError(errno.ENAMETOOLONG)
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise FsError(errno.EINVAL)


def failed(exc: BaseException, doing: str, subject: object) -> FsError:
    """``exc`` as the error a request answers (``boxfs.errno_map``: offline is ENOTCONN, a
    full disk ENOSPC, ...), logged unless it is a condition of the world."""
    if not errno_map.expected(exc):
        _log.error("%s %r: %s", doing, subject, exc)
    return FsError(errno_map.errno_for(exc))


def check_size(size: int) -> None:
    if size < 0:
        raise FsError(errno.EINVAL)
    if size > MAX_FILE_BYTES:
        raise FsError(errno.EFBIG)


def set_attrs(node: Node, attrs: Attrs) -> None:
    node.mode, node.uid, node.gid, node.xattrs = attrs.mode, attrs.uid, attrs.gid, attrs.xattrs
    node.mtime_ns = node.ctime_ns = node.seen_mtime_ns = attrs.mtime_ns
    node.atime_ns = attrs.atime_ns


def apply_changes(node: Node, changes: AttrChanges) -> None:
    node.changed = True
    if changes.mode is not None:
        node.mode = changes.mode
    if changes.uid is not None:
        node.uid = changes.uid
    if changes.gid is not None:
        node.gid = changes.gid
    if changes.mtime_ns is not None:
        node.mtime_ns = node.seen_mtime_ns = changes.mtime_ns
    if changes.xattrs is not None:
        node.xattrs = changes.xattrs
    if changes.atime_ns is not None:
        node.atime_ns = changes.atime_ns
    if node.atime_ns == node.mtime_ns:
        node.atime_ns = None
    node.ctime_ns = now_ns()


def listing_of(node: Node) -> Listing | None:
    """``node.children`` read afresh after an await (``forget`` may have dropped it)."""
    return node.children


def stage_of(node: Node) -> StagedFile | None:
    """``node.stage`` read afresh after an await (where another task may have set it)."""
    return node.stage
