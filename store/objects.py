"""File entries, trees and commits, and their canonical encodings.

Owns the byte form of every metadata object (``docs/format.md``): canonical msgpack arrays
behind a version tag, ids with domain separation (``store.ids``). Encoding is deterministic;
decoding is strict: anything that would not re-encode to the very same bytes (unsorted or
duplicate names, a bad name, an unknown version or kind, a truncated input, a field of the
wrong type) raises ``FormatError``, so one object has exactly one encoding and one id.

Pure values and functions, safe from any thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import pairwise
from typing import Any

import msgpack

from store.errors import FormatError, IntegrityError
from store.ids import (
    DIGEST_BYTES,
    NAMESPACE_ID_BYTES,
    ChunkId,
    CommitId,
    ContentHash,
    NamespaceId,
    TreeId,
    commit_id_of,
    tree_id_of,
)

TREE_VERSION = 1
COMMIT_VERSION = 1

MAX_NAME_BYTES = 255
MAX_SYMLINK_TARGET_BYTES = 4096
MAX_XATTR_NAME_BYTES = 255
MAX_XATTR_VALUE_BYTES = 64 * 1024
MAX_XATTRS_TOTAL_BYTES = 64 * 1024
MAX_COMMIT_TEXT_BYTES = 4096
MODE_BITS = 0o7777
MAX_ID_NUMBER = 2**32 - 1
# Larger files are refused (EFBIG at the mount): a file entry lists its chunks, so its size
# bounds the entry. 256 GiB is at most a million chunk references (at the 256 KiB minimum),
# which still fits one JSON put on the wire (``store.protocol.MAX_JSON_BODY_BYTES``).
MAX_FILE_BYTES = 2**38


class EntryKind(IntEnum):
    FILE = 1
    DIR = 2
    SYMLINK = 3
    FIFO = 4
    SOCKET = 5
    # A shared folder's mount point in a home namespace: the folder is another namespace
    # (``FileEntry.namespace_id``), shown here to whoever may read it. Only the server
    # writes these (sharing, accepting, leaving); a client may move one within its home.
    MOUNT = 6
    # Device nodes, stored as what they are (``FileEntry.rdev``); a mount is ``nodev``, so
    # none opens a device.
    BLOCK_DEVICE = 7
    CHAR_DEVICE = 8


DEVICE_KINDS = frozenset({EntryKind.BLOCK_DEVICE, EntryKind.CHAR_DEVICE})
MAX_RDEV = 2**64 - 1


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One piece of a file's content, in order: which chunk and how many bytes it holds."""

    chunk_id: ChunkId
    length: int


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One name in a directory. Which content fields are set depends on ``kind``:
    a FILE has ``chunks`` and ``content_hash``, a DIR has ``tree_id``, a SYMLINK has
    ``target``, a MOUNT has ``namespace_id``, a device node its ``rdev``; the others have
    none. ``mode`` holds the permission bits only. ``atime_ns`` is the access time a
    utime set, when it is not ``mtime_ns`` (``None``: the same; reads do not move it)."""

    name: bytes
    kind: EntryKind
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    chunks: tuple[ChunkRef, ...] = ()
    content_hash: ContentHash | None = None
    tree_id: TreeId | None = None
    target: bytes = b""
    namespace_id: NamespaceId | None = None
    rdev: int = 0
    atime_ns: int | None = None

    def __post_init__(self) -> None:
        if self.atime_ns == self.mtime_ns:  # one form only: the encoding omits it then
            object.__setattr__(self, "atime_ns", None)
        validate_entry(self)

    @property
    def accessed_ns(self) -> int:
        """The access time: ``atime_ns``, or the mtime when none is set apart."""
        return self.mtime_ns if self.atime_ns is None else self.atime_ns


@dataclass(frozen=True, slots=True)
class Tree:
    """One directory: its entries, sorted by name (bytewise), names unique."""

    entries: tuple[FileEntry, ...] = ()
    _by_name: dict[bytes, FileEntry] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        names = [entry.name for entry in self.entries]
        for before, after in pairwise(names):
            if before >= after:
                what = "duplicate" if before == after else "unsorted"
                raise FormatError(f"tree has {what} names: {before!r}, {after!r}")
        self._by_name.update((entry.name, entry) for entry in self.entries)

    @classmethod
    def of(cls, entries: Iterable[FileEntry]) -> Tree:
        """A tree from entries in any order (still refusing duplicates)."""
        return cls(tuple(sorted(entries, key=lambda entry: entry.name)))

    def get(self, name: bytes) -> FileEntry | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[FileEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def encode(self) -> bytes:
        return encode_tree(self)

    @property
    def id(self) -> TreeId:
        return tree_id_of(self.encode())


EMPTY_TREE = Tree()


@dataclass(frozen=True, slots=True)
class Commit:
    """A snapshot of a namespace: its root tree, where it came from, who made it and when."""

    namespace_id: NamespaceId
    root: TreeId
    parents: tuple[CommitId, ...]
    author: str
    device: str
    time_ns: int
    summary: str

    def __post_init__(self) -> None:
        for text_field in (self.author, self.device, self.summary):
            if len(text_field.encode()) > MAX_COMMIT_TEXT_BYTES:
                raise FormatError(f"commit text over {MAX_COMMIT_TEXT_BYTES} bytes")
        if len(set(self.parents)) != len(self.parents):
            raise FormatError("commit lists a parent twice")
        if self.time_ns < 0:
            raise FormatError("commit time is negative")

    def encode(self) -> bytes:
        return encode_commit(self)

    @property
    def id(self) -> CommitId:
        return commit_id_of(self.encode())


# --- validation -------------------------------------------------------------------------


def validate_name(name: bytes) -> None:
    """A POSIX file name as the format takes it: 1-255 bytes, no ``/`` or NUL, not ``.``/``..``"""
    if not isinstance(name, bytes):
        raise FormatError(f"a name must be bytes, not {type(name).__name__}")
    if not name:
        raise FormatError("empty name")
    if name in (b".", b".."):
        raise FormatError(f"{name!r} is not a name")
    if len(name) > MAX_NAME_BYTES:
        raise FormatError(f"name is {len(name)} bytes, over {MAX_NAME_BYTES}: {name[:40]!r}…")
    if b"/" in name or b"\0" in name:
        raise FormatError(f"name contains '/' or NUL: {name!r}")


def _check_uint(value: object, what: str, limit: int) -> None:
    if type(value) is not int or not 0 <= value <= limit:
        raise FormatError(f"{what} must be an integer in 0..{limit}, got {value!r}")


def validate_entry(entry: FileEntry) -> None:
    validate_name(entry.name)
    if not isinstance(entry.kind, EntryKind):
        raise FormatError(f"unknown entry kind {entry.kind!r}")
    _check_uint(entry.mode, "mode", MODE_BITS)
    _check_uint(entry.uid, "uid", MAX_ID_NUMBER)
    _check_uint(entry.gid, "gid", MAX_ID_NUMBER)
    _check_uint(entry.size, "size", MAX_FILE_BYTES)
    for time_ns in (entry.mtime_ns, entry.accessed_ns):
        if type(time_ns) is not int or not -(2**63) <= time_ns < 2**63:
            raise FormatError(f"a time out of range: {time_ns!r}")
    _validate_xattrs(entry.xattrs)
    _validate_content(entry)


def _validate_content(entry: FileEntry) -> None:
    """The content fields ``entry.kind`` calls for, and no others."""
    is_file = entry.kind is EntryKind.FILE
    if is_file != (entry.content_hash is not None):
        raise FormatError(f"{entry.name!r}: a content hash belongs to files, and files need one")
    if entry.chunks and not is_file:
        raise FormatError(f"{entry.name!r}: only files have chunks")
    if is_file and sum(ref.length for ref in entry.chunks) != entry.size:
        raise FormatError(f"{entry.name!r}: chunk lengths do not add up to size {entry.size}")
    if any(ref.length <= 0 for ref in entry.chunks):
        raise FormatError(f"{entry.name!r}: a chunk reference has no bytes")
    if (entry.kind is EntryKind.DIR) != (entry.tree_id is not None):
        raise FormatError(f"{entry.name!r}: a tree id belongs to directories, and they need one")
    if entry.kind is EntryKind.SYMLINK:
        if not entry.target or b"\0" in entry.target:
            raise FormatError(f"{entry.name!r}: symlink target is empty or contains NUL")
        if len(entry.target) > MAX_SYMLINK_TARGET_BYTES or entry.size != len(entry.target):
            raise FormatError(f"{entry.name!r}: symlink target too long or size mismatch")
    elif entry.target:
        raise FormatError(f"{entry.name!r}: only symlinks have a target")
    if (entry.kind is EntryKind.MOUNT) != (entry.namespace_id is not None):
        raise FormatError(f"{entry.name!r}: a namespace id belongs to mounts, and they need one")
    if entry.namespace_id is not None and not isinstance(entry.namespace_id, NamespaceId):
        raise FormatError(f"{entry.name!r}: a mount names its namespace by a NamespaceId")
    _validate_rdev(entry)
    sizeless = (EntryKind.DIR, EntryKind.FIFO, EntryKind.SOCKET, EntryKind.MOUNT, *DEVICE_KINDS)
    if entry.kind in sizeless and entry.size != 0:
        raise FormatError(f"{entry.name!r}: a {entry.kind.name.lower()} has size 0")


def _validate_rdev(entry: FileEntry) -> None:
    if entry.kind in DEVICE_KINDS:
        _check_uint(entry.rdev, f"{entry.name!r}: rdev", MAX_RDEV)
    elif entry.rdev != 0:
        raise FormatError(f"{entry.name!r}: only device nodes have an rdev")


def _validate_xattrs(xattrs: tuple[tuple[bytes, bytes], ...]) -> None:
    total = 0
    previous: bytes | None = None
    for pair in xattrs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise FormatError("an extended attribute is a (name, value) pair")
        name, value = pair
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise FormatError("extended attribute names and values are bytes")
        if not name or len(name) > MAX_XATTR_NAME_BYTES or b"\0" in name:
            raise FormatError(f"bad extended attribute name {name[:40]!r}")
        if len(value) > MAX_XATTR_VALUE_BYTES:
            raise FormatError(f"extended attribute {name!r} over {MAX_XATTR_VALUE_BYTES} bytes")
        if previous is not None and previous >= name:
            raise FormatError("extended attributes unsorted or duplicated")
        previous = name
        total += len(name) + len(value)
    if total > MAX_XATTRS_TOTAL_BYTES:
        raise FormatError(f"extended attributes total {total} bytes, over {MAX_XATTRS_TOTAL_BYTES}")


# --- encoding ---------------------------------------------------------------------------
#
# A tree:   [TREE_VERSION, [entry, ...]]
# An entry: [name, kind, mode, uid, gid, size, mtime_ns, [[xname, xvalue], ...], content]
#   and atime_ns after content, only when it differs from mtime_ns
#   where content is, by kind: FILE [content_hash, [[chunk_id, length], ...]],
#   DIR tree_id, SYMLINK target, MOUNT namespace_id, BLOCK_DEVICE/CHAR_DEVICE rdev,
#   FIFO/SOCKET nil.
# A commit: [COMMIT_VERSION, namespace_id, root, [parent, ...], author, device, time_ns,
#            summary]
# Byte strings are msgpack bin, text is msgpack str, integers use the smallest encoding
# (msgpack's own rule), so the encoding of a value is unique.


def _entry_to_list(entry: FileEntry) -> list[Any]:
    content: Any
    if entry.kind is EntryKind.FILE:
        assert entry.content_hash is not None
        content = [bytes(entry.content_hash), [[bytes(r.chunk_id), r.length] for r in entry.chunks]]
    elif entry.kind is EntryKind.DIR:
        assert entry.tree_id is not None
        content = bytes(entry.tree_id)
    elif entry.kind is EntryKind.SYMLINK:
        content = entry.target
    elif entry.kind is EntryKind.MOUNT:
        assert entry.namespace_id is not None
        content = bytes(entry.namespace_id)
    elif entry.kind in DEVICE_KINDS:
        content = entry.rdev
    else:
        content = None
    fields = [
        entry.name,
        int(entry.kind),
        entry.mode,
        entry.uid,
        entry.gid,
        entry.size,
        entry.mtime_ns,
        [[name, value] for name, value in entry.xattrs],
        content,
    ]
    if entry.atime_ns is not None:
        fields.append(entry.atime_ns)
    return fields


def encode_entry(entry: FileEntry) -> bytes:
    """One entry alone, in its canonical form (as it stands inside a tree)."""
    return _pack(_entry_to_list(entry))


def encode_tree(tree: Tree) -> bytes:
    return _pack([TREE_VERSION, [_entry_to_list(entry) for entry in tree.entries]])


def encode_commit(commit: Commit) -> bytes:
    return _pack(
        [
            COMMIT_VERSION,
            bytes(commit.namespace_id),
            bytes(commit.root),
            [bytes(parent) for parent in commit.parents],
            commit.author,
            commit.device,
            commit.time_ns,
            commit.summary,
        ]
    )


def _pack(value: Any) -> bytes:
    packed = msgpack.packb(value, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


# --- decoding ---------------------------------------------------------------------------


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
        raise FormatError(f"{what} is not valid msgpack: {exc}") from exc


def _expect_list(value: Any, length: int | None, what: str) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        want = "a list" if length is None else f"a list of {length}"
        raise FormatError(f"{what} must be {want}")
    return value


def _expect_bytes(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        raise FormatError(f"{what} must be {size or 'some'} bytes")
    return value


def _expect_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{what} must be text")
    return value


def _expect_version(value: Any, version: int, what: str) -> None:
    if type(value) is not int or value != version:
        raise FormatError(f"unknown {what} version {value!r} (this build reads {version})")


def _entry_from_list(raw: Any) -> FileEntry:
    fields = _expect_list(raw, None, "an entry")
    if len(fields) not in (9, 10):
        raise FormatError("an entry must be a list of 9, or 10 with its atime")
    name = _expect_bytes(fields[0], "an entry name")
    try:
        kind = EntryKind(fields[1])
    except ValueError as exc:
        raise FormatError(f"{name!r}: unknown entry kind {fields[1]!r}") from exc
    xattrs = tuple(
        (
            _expect_bytes(pair[0], "an xattr name"),
            _expect_bytes(pair[1], "an xattr value"),
        )
        for pair in (
            _expect_list(item, 2, "an xattr") for item in _expect_list(fields[7], None, "xattrs")
        )
    )
    content = fields[8]
    chunks: tuple[ChunkRef, ...] = ()
    content_hash = tree_id = namespace_id = None
    target = b""
    rdev = 0
    if kind is EntryKind.FILE:
        pair = _expect_list(content, 2, "file content")
        content_hash = ContentHash(_expect_bytes(pair[0], "a content hash", DIGEST_BYTES))
        refs = []
        for item in _expect_list(pair[1], None, "chunk list"):
            chunk_id, length = _expect_list(item, 2, "a chunk reference")
            _check_uint(length, "chunk length", MAX_FILE_BYTES)
            refs.append(
                ChunkRef(ChunkId(_expect_bytes(chunk_id, "a chunk id", DIGEST_BYTES)), length)
            )
        chunks = tuple(refs)
    elif kind is EntryKind.DIR:
        tree_id = TreeId(_expect_bytes(content, "a tree id", DIGEST_BYTES))
    elif kind is EntryKind.SYMLINK:
        target = _expect_bytes(content, "a symlink target")
    elif kind is EntryKind.MOUNT:
        namespace_id = NamespaceId(_expect_bytes(content, "a namespace id", NAMESPACE_ID_BYTES))
    elif kind in DEVICE_KINDS:
        _check_uint(content, f"{name!r}: rdev", MAX_RDEV)
        rdev = content
    elif content is not None:
        raise FormatError(f"{name!r}: a {kind.name.lower()} has no content")
    return FileEntry(
        name=name,
        kind=kind,
        mode=fields[2],
        uid=fields[3],
        gid=fields[4],
        size=fields[5],
        mtime_ns=fields[6],
        xattrs=xattrs,
        chunks=chunks,
        content_hash=content_hash,
        tree_id=tree_id,
        target=target,
        namespace_id=namespace_id,
        rdev=rdev,
        atime_ns=fields[9] if len(fields) == 10 else None,
    )


def _require_canonical(data: bytes, encoded: bytes, what: str) -> None:
    if encoded != data:
        raise FormatError(f"{what} is not in canonical form")


def decode_entry(data: bytes) -> FileEntry:
    entry = _entry_from_list(_unpack(data, "an entry"))
    _require_canonical(data, encode_entry(entry), "entry")
    return entry


def decode_tree(data: bytes, expected: TreeId | None = None) -> Tree:
    """Parse a tree; with ``expected``, also check that these bytes are that tree."""
    if expected is not None:
        actual = tree_id_of(data)
        if actual != expected:
            raise IntegrityError(expected.hex(), actual.hex(), what="tree")
    top = _expect_list(_unpack(data, "a tree"), 2, "a tree")
    _expect_version(top[0], TREE_VERSION, "tree")
    tree = Tree(tuple(_entry_from_list(raw) for raw in _expect_list(top[1], None, "entries")))
    _require_canonical(data, encode_tree(tree), "tree")
    return tree


def decode_commit(data: bytes, expected: CommitId | None = None) -> Commit:
    if expected is not None:
        actual = commit_id_of(data)
        if actual != expected:
            raise IntegrityError(expected.hex(), actual.hex(), what="commit")
    fields = _expect_list(_unpack(data, "a commit"), 8, "a commit")
    _expect_version(fields[0], COMMIT_VERSION, "commit")
    time_ns = fields[6]
    if type(time_ns) is not int:
        raise FormatError("commit time must be an integer")
    commit = Commit(
        namespace_id=NamespaceId(_expect_bytes(fields[1], "a namespace id")),
        root=TreeId(_expect_bytes(fields[2], "a root tree id", DIGEST_BYTES)),
        parents=tuple(
            CommitId(_expect_bytes(parent, "a parent id", DIGEST_BYTES))
            for parent in _expect_list(fields[3], None, "parents")
        ),
        author=_expect_str(fields[4], "author"),
        device=_expect_str(fields[5], "device"),
        time_ns=time_ns,
        summary=_expect_str(fields[7], "summary"),
    )
    _require_canonical(data, encode_commit(commit), "commit")
    return commit
