"""Merkle operations on trees: build one from a local directory, diff two, edit one, walk one.

Owns the algorithms over ``store.objects`` trees (``docs/format.md``, "Merkle operations"):

- ``build_tree`` turns a local directory into trees (reading it, never writing it).
- ``diff_trees`` compares two roots, skipping every subtree whose id is equal, so its cost
  follows the size of the change, not the size of the drive.
- ``apply_edits`` applies a batch of ``Put``/``Mkdir``/``Delete``/``Move``/``SetAttr`` to a
  root, loading only the directories on the touched paths, and returns the new root with
  only the trees it had to rewrite. ``changes_to_edits`` turns a diff into such a batch.
- ``walk`` and ``lookup`` read a drive by path.

Edits are the store's operations (``store.ops``: ``Put``, ``Mkdir``, ``Delete``, ``Move``,
``SetAttr``), whose paths are ``DrivePath``s; their ``base`` is not looked at here (the
server's commit path compares it with the head first). Diffs, walks and lookups speak of
paths as bytes, components joined by ``/`` with no leading or trailing slash (``b"a/b"``);
``b""`` is the root. The root directory has no entry (a directory's attributes live in its
parent's entry), so no edit names it and ``lookup`` refuses it.

It must not: do network or database I/O, import an I/O framework, or keep state between
calls. Trees come from a ``TreeSource`` the caller supplies; new trees go back to the caller
as encodings (``TreeId -> bytes``) for it to store. The empty tree is known to everyone and
is never asked of a source. Only ``build_tree`` touches the local filesystem.

Who calls it: the client's sync engine (what did a new head change; which edits to journal)
and the server's commit path (apply an operation batch to the head tree), history and
search. Pure and synchronous, so any thread may call it: the client through
``trio.to_thread.run_sync``, the server through ``anyio.to_thread.run_sync``. It is as
thread-safe as the ``TreeSource`` passed in.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from store.chunking import ChunkStream
from store.errors import ConflictError, FormatError, NotFoundError, TransientError
from store.ids import ChunkId, ContentHash, TreeId, tree_id_of
from store.objects import (
    DEVICE_KINDS,
    EMPTY_TREE,
    MAX_FILE_BYTES,
    ChunkRef,
    EntryKind,
    FileEntry,
    Tree,
    decode_tree,
    validate_name,
)
from store.ops import AttrChanges, Delete, Mkdir, Move, Op, Put, SetAttr
from store.paths import DrivePath

EMPTY_TREE_ID: TreeId = EMPTY_TREE.id

Xattrs: TypeAlias = tuple[tuple[bytes, bytes], ...]


# --- paths ------------------------------------------------------------------------------


def split_path(path: bytes) -> tuple[bytes, ...]:
    """The components of a drive path; ``b""`` (the root) gives ``()``.

    Every component must be a valid name (``validate_name``), so a leading, trailing or
    doubled slash, ``.`` and ``..`` are refused with ``FormatError``.
    """
    if not isinstance(path, bytes):
        raise FormatError(f"a path must be bytes, not {type(path).__name__}")
    if not path:
        return ()
    parts = tuple(path.split(b"/"))
    for part in parts:
        try:
            validate_name(part)
        except FormatError as exc:
            raise FormatError(f"bad path {_show(path)}: {exc}") from exc
    return parts


def join_path(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def _show(path: bytes | DrivePath) -> str:
    """A path for messages: undecodable bytes stay visible as escapes."""
    return bytes(path).decode("utf-8", "backslashreplace") or "/"


def _path_order(path: bytes) -> list[bytes]:
    # Sorting by components is a depth-first walk in tree (bytewise name) order: a
    # directory comes right before its contents, and parents before children.
    return path.split(b"/")


# --- where trees come from ----------------------------------------------------------------


class TreeSource(Protocol):
    """Anything that hands out trees by id: the client's cache, the server's metadata DB."""

    def load_tree(self, tree_id: TreeId) -> Tree:
        """The tree with this id, verified against it; ``NotFoundError`` if unknown."""
        ...


class MemoryTrees:
    """Tree encodings in a dict, verified on every load. For tests, and for callers that
    collect a batch of trees (``new_trees`` of a build or an edit) before storing them."""

    def __init__(self, encodings: Mapping[TreeId, bytes] | None = None) -> None:
        self._encodings: dict[TreeId, bytes] = dict(encodings or {})

    def add(self, tree: Tree) -> TreeId:
        encoding = tree.encode()
        tree_id = tree_id_of(encoding)
        self._encodings[tree_id] = encoding
        return tree_id

    def update(self, encodings: Mapping[TreeId, bytes]) -> None:
        """Keep these encodings too (checked against their ids when loaded)."""
        self._encodings.update(encodings)

    def load_tree(self, tree_id: TreeId) -> Tree:
        data = self._encodings.get(tree_id)
        if data is None:
            raise NotFoundError("tree", tree_id.hex())
        return decode_tree(data, expected=tree_id)

    def __contains__(self, tree_id: object) -> bool:
        return tree_id in self._encodings

    def __len__(self) -> int:
        return len(self._encodings)


def _load(source: TreeSource, tree_id: TreeId) -> Tree:
    # The empty tree has exactly one encoding and everyone knows it: never ask for it.
    if tree_id == EMPTY_TREE_ID:
        return EMPTY_TREE
    return source.load_tree(tree_id)


# --- reading ------------------------------------------------------------------------------


def walk(source: TreeSource, root: TreeId) -> Iterator[tuple[bytes, FileEntry]]:
    """Every ``(path, entry)`` below ``root``, depth-first in name order, a directory before
    its contents. Trees are loaded as the walk reaches them; only the trees on the current
    path are held."""
    stack: list[tuple[bytes, Iterator[FileEntry]]] = [(b"", iter(_load(source, root)))]
    while stack:
        prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        path = join_path(prefix, entry.name)
        yield path, entry
        if entry.kind is EntryKind.DIR:
            assert entry.tree_id is not None
            stack.append((path, iter(_load(source, entry.tree_id))))


def lookup(source: TreeSource, root: TreeId, path: bytes) -> FileEntry | None:
    """The entry at ``path``, or ``None`` if a component is missing or a component before
    the last is not a directory. The root has no entry: ``b""`` is a ``FormatError``."""
    parts = split_path(path)
    if not parts:
        raise FormatError("the root directory has no entry to look up")
    tree = _load(source, root)
    for name in parts[:-1]:
        entry = tree.get(name)
        if entry is None or entry.kind is not EntryKind.DIR:
            return None
        assert entry.tree_id is not None
        tree = _load(source, entry.tree_id)
    return tree.get(parts[-1])


# --- diff ---------------------------------------------------------------------------------


class ChangeKind(enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two trees. ADDED has only ``new``, REMOVED only ``old``,
    MODIFIED both. A directory that was added or removed is one change (its entry carries
    the subtree id); a directory MODIFIED into a directory means its own attributes changed
    (its contents, if changed, come as changes to the paths below it)."""

    kind: ChangeKind
    path: bytes
    old: FileEntry | None
    new: FileEntry | None

    def __post_init__(self) -> None:
        if (self.old is None) != (self.kind is ChangeKind.ADDED) or (self.new is None) != (
            self.kind is ChangeKind.REMOVED
        ):
            raise FormatError(f"{self.kind.value} change at {_show(self.path)}: wrong entries")


def _attributes(entry: FileEntry) -> tuple[int, int, int, int, Xattrs]:
    """What ``SetAttr`` can change: everything but the name, kind and content."""
    return (entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs)


def _pair_entries(
    old: Tree, new: Tree
) -> Iterator[tuple[bytes, FileEntry | None, FileEntry | None]]:
    for name in sorted({entry.name for entry in old} | {entry.name for entry in new}):
        yield name, old.get(name), new.get(name)


def diff_trees(source: TreeSource, old: TreeId | None, new: TreeId | None) -> list[Change]:
    """What changed from ``old`` to ``new`` (``None`` is an empty drive), sorted by path
    components (parents before children).

    A subtree whose id is the same on both sides is never loaded: one changed file at depth
    d costs 2·(d+1) tree loads, whatever the size of the drive.
    """
    changes: list[Change] = []
    pending: list[tuple[bytes, TreeId | None, TreeId | None]] = [(b"", old, new)]
    while pending:
        prefix, old_id, new_id = pending.pop()
        if old_id == new_id:
            continue
        old_tree = EMPTY_TREE if old_id is None else _load(source, old_id)
        new_tree = EMPTY_TREE if new_id is None else _load(source, new_id)
        for name, before, after in _pair_entries(old_tree, new_tree):
            path = join_path(prefix, name)
            if before is None:
                changes.append(Change(ChangeKind.ADDED, path, None, after))
            elif after is None:
                changes.append(Change(ChangeKind.REMOVED, path, before, None))
            elif before == after:
                continue
            elif before.kind is EntryKind.DIR and after.kind is EntryKind.DIR:
                if _attributes(before) != _attributes(after):
                    changes.append(Change(ChangeKind.MODIFIED, path, before, after))
                if before.tree_id != after.tree_id:
                    pending.append((path, before.tree_id, after.tree_id))
            else:
                changes.append(Change(ChangeKind.MODIFIED, path, before, after))
    changes.sort(key=lambda change: _path_order(change.path))
    return changes


# --- edits --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EditResult:
    """The new root, and the encodings of the trees the edits wrote (each one reachable from
    ``root`` and not the tree that was there before). Trees referenced by ``Put`` directory
    entries are not included: they were the caller's to begin with."""

    root: TreeId
    new_trees: dict[TreeId, bytes]


class _Dir:
    """One directory on a touched path, loaded and mutable while a batch is applied.

    Invariant: for each name in ``subdirs``, ``entries[name]`` is a DIR entry and the node
    holds that directory's current contents; the entry's ``tree_id`` is stale (still the id
    the node was loaded from) until ``_Overlay.seal`` rewrites it bottom-up.
    """

    __slots__ = ("dirty", "entries", "loaded_from", "subdirs")

    def __init__(self, tree: Tree, loaded_from: TreeId | None) -> None:
        self.entries: dict[bytes, FileEntry] = {entry.name: entry for entry in tree}
        self.subdirs: dict[bytes, _Dir] = {}
        self.dirty = False
        self.loaded_from = loaded_from  # None: created by this batch


class _Overlay:
    """The touched part of a drive, as a tree of ``_Dir`` nodes hanging from the root.
    Everything else stays in the source, unloaded."""

    def __init__(self, source: TreeSource, root: TreeId) -> None:
        self._source = source
        self._root_id = root
        self._root: _Dir | None = None

    def directory(self, parts: Sequence[bytes]) -> _Dir:
        """The directory at these components (the root for none), loading it on the way."""
        if self._root is None:
            self._root = _Dir(_load(self._source, self._root_id), self._root_id)
        node = self._root
        for depth, name in enumerate(parts):
            child = node.subdirs.get(name)
            if child is None:
                here = b"/".join(parts[: depth + 1])
                entry = node.entries.get(name)
                if entry is None:
                    raise NotFoundError("directory", _show(here))
                if entry.kind is not EntryKind.DIR:
                    kind = entry.kind.name.lower()
                    raise ConflictError(_show(here), f"is a {kind}, not a directory")
                assert entry.tree_id is not None
                child = _Dir(_load(self._source, entry.tree_id), entry.tree_id)
                node.subdirs[name] = child
            node = child
        return node

    def apply(self, edit: Op) -> None:
        if isinstance(edit, Put):
            self._put(edit)
        elif isinstance(edit, Mkdir):
            self._mkdir(edit)
        elif isinstance(edit, Delete):
            self._delete(edit)
        elif isinstance(edit, Move):
            self._move(edit)
        else:
            self._setattr(edit)

    def _put(self, edit: Put) -> None:
        parts = edit.path.components
        parent = self.directory(parts[:-1])
        existing = parent.entries.get(parts[-1])
        if existing is not None and existing.kind is EntryKind.DIR:
            raise ConflictError(_show(edit.path), "is a directory: delete it before replacing it")
        if existing is not None and existing.kind is EntryKind.MOUNT:
            raise ConflictError(_show(edit.path), "is a shared folder: it is not replaced")
        parent.entries[parts[-1]] = edit.entry
        parent.dirty = True

    def _mkdir(self, edit: Mkdir) -> None:
        parts = edit.path.components
        parent = self.directory(parts[:-1])
        if parts[-1] in parent.entries:
            raise ConflictError(_show(edit.path), "exists already")
        parent.entries[parts[-1]] = edit.entry()
        # A node of its own, so the empty tree is written even if nothing goes in it.
        parent.subdirs[parts[-1]] = _Dir(EMPTY_TREE, None)
        parent.dirty = True

    def _delete(self, edit: Delete) -> None:
        parts = edit.path.components
        parent = self.directory(parts[:-1])
        if parent.entries.pop(parts[-1], None) is None:
            raise NotFoundError("path", _show(edit.path))
        parent.subdirs.pop(parts[-1], None)
        parent.dirty = True

    def _move(self, edit: Move) -> None:
        src, dst = edit.src.components, edit.dst.components
        src_parent = self.directory(src[:-1])
        entry = src_parent.entries.get(src[-1])
        if entry is None:
            raise NotFoundError("path", _show(edit.src))
        dst_parent = self.directory(dst[:-1])
        existing = dst_parent.entries.get(dst[-1])
        if existing is not None and not self._replaceable(dst_parent, existing):
            what = "a shared folder" if existing.kind is EntryKind.MOUNT else "a directory"
            raise ConflictError(_show(edit.dst), f"is {what} that is not empty")
        # Checks done: mutate (an error above leaves the overlay as it was).
        del src_parent.entries[src[-1]]
        node = src_parent.subdirs.pop(src[-1], None)
        dst_parent.entries[dst[-1]] = dataclasses.replace(entry, name=dst[-1])
        dst_parent.subdirs.pop(dst[-1], None)
        if node is not None:
            dst_parent.subdirs[dst[-1]] = node
        src_parent.dirty = dst_parent.dirty = True

    @staticmethod
    def _replaceable(parent: _Dir, entry: FileEntry) -> bool:
        """A non-directory other than a shared folder's mount point, or an empty directory."""
        if entry.kind is EntryKind.MOUNT:
            return False
        if entry.kind is not EntryKind.DIR:
            return True
        node = parent.subdirs.get(entry.name)
        if node is not None:
            return not node.entries
        # Encodings are canonical: the only tree without entries has the empty tree's id.
        return entry.tree_id == EMPTY_TREE_ID

    def _setattr(self, edit: SetAttr) -> None:
        parts = edit.path.components
        parent = self.directory(parts[:-1])
        entry = parent.entries.get(parts[-1])
        if entry is None:
            raise NotFoundError("path", _show(edit.path))
        changed = edit.changes.applied_to(entry)
        if changed != entry:
            parent.entries[parts[-1]] = changed
            parent.dirty = True

    def seal(self) -> EditResult:
        """Rewrite the dirty directories bottom-up and fix the tree ids on the way to the
        root. Only trees whose id differs from the one they were loaded from are new."""
        if self._root is None:
            return EditResult(self._root_id, {})
        new_trees: dict[TreeId, bytes] = {}
        # Pre-order (each node after its parent); walked in reverse, children come first.
        order: list[tuple[_Dir | None, bytes, _Dir]] = []
        stack: list[tuple[_Dir | None, bytes, _Dir]] = [(None, b"", self._root)]
        while stack:
            item = stack.pop()
            order.append(item)
            node = item[2]
            stack.extend((node, name, child) for name, child in node.subdirs.items())
        root_id = self._root_id
        for parent, name, node in reversed(order):
            tree_id = node.loaded_from
            if node.dirty or tree_id is None:
                encoding = Tree.of(node.entries.values()).encode()
                tree_id = tree_id_of(encoding)
                if tree_id != node.loaded_from:
                    new_trees[tree_id] = encoding
            if parent is None:
                root_id = tree_id
                continue
            entry = parent.entries[name]
            if entry.tree_id != tree_id:
                parent.entries[name] = dataclasses.replace(entry, tree_id=tree_id)
                parent.dirty = True
        return EditResult(root_id, new_trees)


def apply_edits(source: TreeSource, root: TreeId, edits: Sequence[Op]) -> EditResult:
    """Apply ``edits`` in order to the drive at ``root``.

    Loads only the directories on the edited paths; ``new_trees`` holds only the trees that
    changed (for one edit at depth d: the d+1 trees from its directory up to the root).
    Pure: it returns a new root or raises, and the source is only read. Errors: a missing
    parent or path is ``NotFoundError``; a non-directory where a directory is expected, an
    existing name for ``Mkdir``, a directory under ``Put``, or a non-empty directory under
    a ``Move`` is ``ConflictError`` (a move into itself cannot be built: ``store.ops``).

    Nothing is implied: a parent directory's mtime changes only if an edit sets it.
    """
    overlay = _Overlay(source, root)
    for edit in edits:
        overlay.apply(edit)
    return overlay.seal()


def changes_to_edits(changes: Sequence[Change]) -> list[Op]:
    """Edits that turn the old side of ``diff_trees`` into the new side.

    Expects ``diff_trees`` output (a directory MODIFIED into a directory carries only its
    attributes). Edits come in path order, so a parent exists before its children are
    touched; a directory that becomes something else is deleted, then put.
    """
    edits: list[Op] = []
    for change in sorted(changes, key=lambda change: _path_order(change.path)):
        old, new, path = change.old, change.new, DrivePath.from_bytes(change.path)
        if new is None:
            edits.append(Delete(path))
        elif old is None or new.kind is not EntryKind.DIR or old.kind is not EntryKind.DIR:
            if old is not None and old.kind is EntryKind.DIR:
                edits.append(Delete(path))
            edits.append(Put(path, new))
        else:
            attr_changes = AttrChanges.between(old, new)
            if attr_changes is not None:
                edits.append(SetAttr(path, attr_changes))
    return edits


# --- building from a local directory -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuiltTree:
    """The root of a built directory and the encodings of all its trees (root included)."""

    root: TreeId
    new_trees: dict[TreeId, bytes]


OnChunk: TypeAlias = Callable[[ChunkId, memoryview], None]

_XATTRS_UNSUPPORTED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})
_XATTR_GONE = frozenset({getattr(errno, "ENODATA", errno.ENOENT), errno.ENOENT})


@dataclass(slots=True)
class _Scanned:
    """One local directory read by ``build_tree``: its non-directory entries, and its
    subdirectories waiting for their tree ids."""

    path: bytes
    entries: list[FileEntry]
    subdirs: list[tuple[bytes, os.stat_result, Xattrs]]


def build_tree(
    path: str | bytes | os.PathLike[str] | os.PathLike[bytes], on_chunk: OnChunk | None = None
) -> BuiltTree:
    """The trees of a local directory and everything below it.

    Nothing is followed: symlinks are recorded as symlinks, and each file is opened with
    ``O_NOFOLLOW``. Every regular file is chunked (``store.chunking``); ``on_chunk`` sees
    each piece (its ``memoryview`` is valid only during the call) so a caller can store
    frames. Recorded per entry: kind, permission bits, uid, gid, size, mtime and every
    extended attribute the OS lists (none where unsupported). The root directory's own
    attributes are not recorded (the root has no entry). Hard links become independent
    files.

    Errors: a name or attribute the format refuses, or a device node, is ``FormatError``
    naming the local path; a file that changes kind while it is read is ``TransientError``;
    other ``OSError`` (permission denied, a file removed during the scan) propagates as is.
    """
    top = os.fsencode(path)
    scanned: list[_Scanned] = []  # pre-order: each directory after its parent
    to_scan = [top]
    while to_scan:
        item = _Scanned(to_scan.pop(), [], [])
        with os.scandir(item.path) as listing:
            for dirent in listing:
                _check_local_name(dirent.name, dirent.path)
                st = dirent.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    xattrs = _read_xattrs(dirent.path)
                    item.subdirs.append((dirent.name, st, xattrs))
                    to_scan.append(dirent.path)
                else:
                    item.entries.append(_leaf_entry(dirent.name, dirent.path, st, on_chunk))
        scanned.append(item)
    tree_ids: dict[bytes, TreeId] = {}
    new_trees: dict[TreeId, bytes] = {}
    for item in reversed(scanned):
        entries = list(item.entries)
        for name, st, xattrs in item.subdirs:
            child_id = tree_ids.pop(os.path.join(item.path, name))
            entries.append(_entry_from_stat(name, item.path, st, xattrs, tree_id=child_id))
        encoding = Tree.of(entries).encode()
        tree_ids[item.path] = tree_id_of(encoding)
        new_trees[tree_ids[item.path]] = encoding
    return BuiltTree(tree_ids[top], new_trees)


def _check_local_name(name: bytes, local_path: bytes) -> None:
    try:
        validate_name(name)
    except FormatError as exc:
        raise FormatError(f"{os.fsdecode(local_path)!r} cannot be stored: {exc}") from exc


def _entry_from_stat(
    name: bytes,
    local_path: bytes,
    st: os.stat_result,
    xattrs: Xattrs,
    *,
    tree_id: TreeId | None = None,
    target: bytes = b"",
    file: tuple[tuple[ChunkRef, ...], int, ContentHash] | None = None,
) -> FileEntry:
    """A ``FileEntry`` from an lstat result; ``FormatError`` names the local path."""
    kinds = {
        stat.S_IFDIR: EntryKind.DIR,
        stat.S_IFREG: EntryKind.FILE,
        stat.S_IFLNK: EntryKind.SYMLINK,
        stat.S_IFIFO: EntryKind.FIFO,
        stat.S_IFSOCK: EntryKind.SOCKET,
        stat.S_IFBLK: EntryKind.BLOCK_DEVICE,
        stat.S_IFCHR: EntryKind.CHAR_DEVICE,
    }
    kind = kinds.get(stat.S_IFMT(st.st_mode))
    shown = os.fsdecode(os.path.join(local_path, name))
    if kind is None:
        raise FormatError(f"{shown!r} is of an unknown file type")
    chunks: tuple[ChunkRef, ...] = ()
    size = len(target)
    content_hash: ContentHash | None = None
    if file is not None:
        chunks, size, content_hash = file
    try:
        return FileEntry(
            name=name,
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            size=size,
            mtime_ns=st.st_mtime_ns,
            xattrs=xattrs,
            chunks=chunks,
            content_hash=content_hash,
            tree_id=tree_id,
            target=target,
            rdev=st.st_rdev if kind in DEVICE_KINDS else 0,
        )
    except FormatError as exc:
        raise FormatError(f"{shown!r} cannot be stored: {exc}") from exc


def _leaf_entry(
    name: bytes, local_path: bytes, st: os.stat_result, on_chunk: OnChunk | None
) -> FileEntry:
    parent = os.path.dirname(local_path)
    if stat.S_ISREG(st.st_mode):
        return _file_entry(name, local_path, on_chunk)
    xattrs = _read_xattrs(local_path)
    if stat.S_ISLNK(st.st_mode):
        return _entry_from_stat(name, parent, st, xattrs, target=os.readlink(local_path))
    return _entry_from_stat(name, parent, st, xattrs)


def _file_entry(name: bytes, local_path: bytes, on_chunk: OnChunk | None) -> FileEntry:
    # O_NOFOLLOW and O_NONBLOCK: if the file was swapped for a symlink or a FIFO since it
    # was listed, the open fails or returns at once instead of following or blocking.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    with open(os.open(local_path, flags), "rb", buffering=0) as stream:
        st = os.fstat(stream.fileno())  # attributes of the very inode we read
        if not stat.S_ISREG(st.st_mode):
            raise TransientError(f"{os.fsdecode(local_path)!r} changed kind while being read")
        if st.st_size > MAX_FILE_BYTES:
            raise FormatError(
                f"{os.fsdecode(local_path)!r} is {st.st_size} bytes, over {MAX_FILE_BYTES}"
            )
        xattrs = _read_xattrs(stream.fileno())
        pieces = ChunkStream(stream)
        refs: list[ChunkRef] = []
        for piece in pieces:
            if on_chunk is not None:
                on_chunk(piece.chunk_id, piece.data)
            refs.append(ChunkRef(piece.chunk_id, piece.length))
        content = (tuple(refs), pieces.size, pieces.content_hash)
    return _entry_from_stat(name, os.path.dirname(local_path), st, xattrs, file=content)


def _read_xattrs(target: bytes | int) -> Xattrs:
    """The extended attributes of a path (not following a symlink) or an open file, sorted;
    none where the platform or the filesystem has no xattrs."""
    if not hasattr(os, "listxattr"):
        return ()
    try:
        if isinstance(target, int):
            names = os.listxattr(target)
        else:
            names = os.listxattr(target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _XATTRS_UNSUPPORTED:
            return ()
        raise
    pairs: list[tuple[bytes, bytes]] = []
    for name in names:
        try:
            if isinstance(target, int):
                value = os.getxattr(target, name)
            else:
                value = os.getxattr(target, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _XATTR_GONE:  # removed between list and get
                continue
            raise
        pairs.append((os.fsencode(name), value))
    return tuple(sorted(pairs))
