"""Entries, trees and commits: golden encodings, strict decoding, and round trips."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.errors import FormatError, IntegrityError
from store.ids import (
    ChunkId,
    CommitId,
    ContentHash,
    NamespaceId,
    TreeId,
    chunk_id_of,
    content_hash_of,
    tree_id_of,
)
from store.objects import (
    DEVICE_KINDS,
    EMPTY_TREE,
    MAX_NAME_BYTES,
    MAX_RDEV,
    ChunkRef,
    Commit,
    EntryKind,
    FileEntry,
    Tree,
    decode_commit,
    decode_entry,
    decode_tree,
    encode_entry,
)

NOTES = FileEntry(
    name=b"notes.txt",
    kind=EntryKind.FILE,
    mode=0o644,
    uid=1000,
    gid=1000,
    size=5,
    mtime_ns=1_764_300_000_123_456_789,
    xattrs=((b"user.tag", b"blue"),),
    chunks=(ChunkRef(chunk_id_of(b"hello"), 5),),
    content_hash=content_hash_of(b"hello"),
)
DOCS = FileEntry(
    name=b"docs",
    kind=EntryKind.DIR,
    mode=0o755,
    uid=1000,
    gid=1000,
    size=0,
    mtime_ns=1_764_300_000_000_000_000,
    tree_id=EMPTY_TREE.id,
)
LINK = FileEntry(
    name=b"link", kind=EntryKind.SYMLINK, mode=0o777, uid=1000, gid=1000, size=9, mtime_ns=0,
    target=b"notes.txt",
)  # fmt: skip
PIPE = FileEntry(name=b"pipe", kind=EntryKind.FIFO, mode=0o600, uid=0, gid=0, size=0, mtime_ns=-5)
TREE = Tree.of([NOTES, DOCS, LINK, PIPE])
COMMIT = Commit(
    namespace_id=NamespaceId(bytes(range(16))),
    root=TREE.id,
    parents=(CommitId(b"\x11" * 32),),
    author="alice",
    device="laptop",
    time_ns=1_764_300_000_000_000_000,
    summary="put notes.txt",
)

GOLDEN_EMPTY_TREE = "920190"
GOLDEN_EMPTY_TREE_ID = "0a12ac8ec65d8b7e96c35ada4f18e60de8f264d3041f086901ddb2a346bcbe20"
GOLDEN_TREE = (
    "92019499c404646f637302cd01edcd03e8cd03e800cf187c0d809938c00090c4200a12ac8ec65d8b7e96c3"
    "5ada4f18e60de8f264d3041f086901ddb2a346bcbe2099c4046c696e6b03cd01ffcd03e8cd03e8090090c4"
    "096e6f7465732e74787499c4096e6f7465732e74787401cd01a4cd03e8cd03e805cf187c0d80a0948d1591"
    "92c408757365722e746167c404626c756592c420ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a"
    "86e908c5624a67200f9192c420ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67"
    "200f0599c4047069706504cd0180000000fb90c0"
)
GOLDEN_TREE_ID = "ad48dadc68d6f57c9d0d7b1b96f7e672a8b6444923d4abc0dcf7ca37260de892"
GOLDEN_COMMIT = (
    "9801c410000102030405060708090a0b0c0d0e0fc420ad48dadc68d6f57c9d0d7b1b96f7e672a8b6444923"
    "d4abc0dcf7ca37260de89291c4201111111111111111111111111111111111111111111111111111111111"
    "111111a5616c696365a66c6170746f70cf187c0d809938c000ad707574206e6f7465732e747874"
)
GOLDEN_COMMIT_ID = "e532cc55f8c2b877f1ec42ffc6d8c5f7712b0f1b0408ac85cefb4282d37ffffa"


def test_golden_tree_and_commit_bytes_and_ids() -> None:
    assert EMPTY_TREE.encode().hex() == GOLDEN_EMPTY_TREE
    assert EMPTY_TREE.id.hex() == GOLDEN_EMPTY_TREE_ID
    assert TREE.encode().hex() == GOLDEN_TREE
    assert TREE.id.hex() == GOLDEN_TREE_ID
    assert COMMIT.encode().hex() == GOLDEN_COMMIT
    assert COMMIT.id.hex() == GOLDEN_COMMIT_ID


# A shared folder's mount point: kind 6, its content the 16-byte namespace id.
MOUNT_TREE = Tree(
    (
        FileEntry(
            name=b"Team", kind=EntryKind.MOUNT, mode=0o755, uid=0, gid=0, size=0, mtime_ns=5,
            namespace_id=NamespaceId(bytes(range(16))),
        ),
    )
)  # fmt: skip
GOLDEN_MOUNT_TREE = "92019199c4045465616d06cd01ed0000000590c410000102030405060708090a0b0c0d0e0f"


def test_golden_mount_entry_bytes() -> None:
    assert MOUNT_TREE.encode().hex() == GOLDEN_MOUNT_TREE
    assert decode_tree(bytes.fromhex(GOLDEN_MOUNT_TREE)) == MOUNT_TREE


# Device nodes: kinds 7 (block) and 8 (character), their content the rdev; an access time
# apart from the mtime is a 10th element (the pipe's 3), absent when they are the same.
DEVICE_TREE = Tree(
    (
        FileEntry(
            name=b"disk", kind=EntryKind.BLOCK_DEVICE, mode=0o640, uid=0, gid=6, size=0,
            mtime_ns=5, rdev=(8 << 8) | 1,
        ),
        FileEntry(
            name=b"pipe", kind=EntryKind.FIFO, mode=0o644, uid=1, gid=1, size=0, mtime_ns=5,
            atime_ns=3,
        ),
        FileEntry(
            name=b"tty", kind=EntryKind.CHAR_DEVICE, mode=0o620, uid=0, gid=5, size=0,
            mtime_ns=5, rdev=(4 << 8) | 1,
        ),
    )
)  # fmt: skip
GOLDEN_DEVICE_TREE = (
    "92019399c4046469736b07cd01a00006000590cd08019ac4047069706504cd01a40101000590c00399c403"
    "74747908cd01900005000590cd0401"
)


def test_golden_device_and_access_time_entry_bytes() -> None:
    assert DEVICE_TREE.encode().hex() == GOLDEN_DEVICE_TREE
    assert decode_tree(bytes.fromhex(GOLDEN_DEVICE_TREE)) == DEVICE_TREE
    pipe = DEVICE_TREE.get(b"pipe")
    assert pipe is not None and pipe.accessed_ns == 3
    # An access time equal to the mtime is not one apart: one form only.
    same = dataclasses.replace(pipe, atime_ns=5)
    assert same.atime_ns is None and same.accessed_ns == 5


def test_tree_id_is_domain_separated_from_a_chunk_id() -> None:
    encoding = TREE.encode()
    assert TREE.id == tree_id_of(encoding)
    assert bytes(TREE.id) != bytes(chunk_id_of(encoding))


def test_decode_reproduces_the_objects() -> None:
    assert decode_tree(TREE.encode(), TREE.id) == TREE
    assert decode_commit(COMMIT.encode(), COMMIT.id) == COMMIT
    assert decode_entry(encode_entry(NOTES)) == NOTES


def test_decode_with_the_wrong_expected_id_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError):
        decode_tree(TREE.encode(), EMPTY_TREE.id)
    with pytest.raises(IntegrityError):
        decode_commit(COMMIT.encode(), CommitId(b"\0" * 32))


def raw_tree(entries: list[list[object]], version: int = 1) -> bytes:
    packed = msgpack.packb([version, entries], use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def raw_entry(name: bytes, kind: int = 4, content: object = None) -> list[object]:
    return [name, kind, 0o600, 0, 0, 0, 0, [], content]


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (raw_tree([raw_entry(b"b"), raw_entry(b"a")]), "unsorted"),
        (raw_tree([raw_entry(b"a"), raw_entry(b"a")]), "duplicate"),
        (raw_tree([raw_entry(b"a/b")]), "'/'"),
        (raw_tree([raw_entry(b"a\0b")]), "NUL"),
        (raw_tree([raw_entry(b".")]), "not a name"),
        (raw_tree([raw_entry(b"..")]), "not a name"),
        (raw_tree([raw_entry(b"")]), "empty name"),
        (raw_tree([raw_entry(b"x" * (MAX_NAME_BYTES + 1))]), "over 255"),
        (raw_tree([raw_entry(b"a")], version=2), "unknown tree version"),
        (raw_tree([raw_entry(b"a", kind=9)]), "unknown entry kind"),
        (raw_tree([raw_entry(b"a", kind=2)]), "tree id"),
        (raw_tree([raw_entry(b"a", kind=6)]), "namespace id"),
        (raw_tree([raw_entry(b"a", kind=6, content=b"x" * 15)]), "namespace id"),
        (raw_tree([raw_entry(b"a", content=b"x")]), "no content"),
        (raw_tree([raw_entry(b"a", kind=7)]), "rdev"),
        (raw_tree([raw_entry(b"a", kind=8, content=-1)]), "rdev"),
        (raw_tree([raw_entry(b"a", kind=8, content=b"1")]), "rdev"),
        (raw_tree([[*raw_entry(b"a"), 0]]), "canonical"),  # an atime equal to the mtime
        (raw_tree([[*raw_entry(b"a"), "x"]]), "time out of range"),
        (raw_tree([[*raw_entry(b"a"), 1, 2]]), "9, or 10"),
        (raw_tree([["a", 4, 0, 0, 0, 0, 0, [], None]]), "must be some bytes"),
        (raw_tree([raw_entry(b"a")])[:-1], "not valid msgpack"),
        (raw_tree([raw_entry(b"a")]) + b"\xc0", "not valid msgpack"),
        (b"", "not valid msgpack"),
        (b"\x92\x01", "not valid msgpack"),
    ],
)
def test_strict_decoding_refuses_bad_trees(data: bytes, complaint: str) -> None:
    with pytest.raises(FormatError, match=complaint):
        decode_tree(data)


def test_non_canonical_integer_encoding_is_refused() -> None:
    canonical = raw_tree([raw_entry(b"a")])
    # mode 0o600 = 384 as uint32 (0xce) instead of the shortest uint16 (0xcd 01 80)
    padded = canonical.replace(b"\xcd\x01\x80", b"\xce\x00\x00\x01\x80")
    assert padded != canonical
    with pytest.raises(FormatError, match="canonical"):
        decode_tree(padded)


def test_every_truncation_of_a_tree_is_refused() -> None:
    data = TREE.encode()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            decode_tree(data[:cut])


def test_every_truncation_of_a_commit_is_refused() -> None:
    data = COMMIT.encode()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            decode_commit(data[:cut])


def test_commit_with_unknown_version_is_refused() -> None:
    data = bytearray(COMMIT.encode())
    data[1] = 7
    with pytest.raises(FormatError, match="unknown commit version"):
        decode_commit(bytes(data))


@pytest.mark.parametrize(
    "changes",
    [
        {"size": 6},  # chunk lengths no longer add up
        {"content_hash": None},
        {"tree_id": EMPTY_TREE.id},
        {"mode": 0o10000},
        {"uid": -1},
        {"xattrs": ((b"b", b""), (b"a", b""))},
        {"xattrs": ((b"user.big", b"x" * 70_000),)},
        {"target": b"elsewhere"},
        {"namespace_id": NamespaceId(bytes(16))},  # only mounts name a namespace
        {"rdev": 5},  # only device nodes have one
        {"atime_ns": 2**63},
    ],
)
def test_entry_invariants_are_enforced(changes: dict[str, object]) -> None:
    fields = {slot: getattr(NOTES, slot) for slot in FileEntry.__slots__}
    fields.update(changes)
    with pytest.raises(FormatError):
        FileEntry(**fields)


def test_tree_of_refuses_duplicate_names() -> None:
    with pytest.raises(FormatError, match="duplicate"):
        Tree.of([PIPE, PIPE])


def test_tree_lookup_by_name() -> None:
    assert TREE.get(b"notes.txt") == NOTES
    assert TREE.get(b"missing") is None
    assert [entry.name for entry in TREE] == [b"docs", b"link", b"notes.txt", b"pipe"]


# --- properties -------------------------------------------------------------------------

names = st.binary(min_size=1, max_size=MAX_NAME_BYTES).filter(
    lambda name: b"/" not in name and b"\0" not in name and name not in (b".", b"..")
)
ids32 = st.binary(min_size=32, max_size=32)
attrs = {
    "mode": st.integers(0, 0o7777),
    "uid": st.integers(0, 2**32 - 1),
    "gid": st.integers(0, 2**32 - 1),
    "mtime_ns": st.integers(-(2**63), 2**63 - 1),
    "atime_ns": st.none() | st.integers(-(2**63), 2**63 - 1),
    "xattrs": st.dictionaries(
        st.binary(min_size=1, max_size=20).filter(lambda name: b"\0" not in name),
        st.binary(max_size=50),
        max_size=3,
    ).map(lambda pairs: tuple(sorted(pairs.items()))),
}


@st.composite
def entries(draw: st.DrawFn) -> FileEntry:
    name = draw(names)
    kind = draw(st.sampled_from(EntryKind))
    common: dict[str, Any] = {key: draw(strategy) for key, strategy in attrs.items()}
    if kind is EntryKind.FILE:
        lengths = draw(st.lists(st.integers(1, 4 << 20), max_size=4))
        chunks = tuple(ChunkRef(ChunkId(draw(ids32)), length) for length in lengths)
        return FileEntry(
            name=name, kind=kind, size=sum(lengths), chunks=chunks,
            content_hash=ContentHash(draw(ids32)), **common,
        )  # fmt: skip
    if kind is EntryKind.DIR:
        return FileEntry(name=name, kind=kind, size=0, tree_id=TreeId(draw(ids32)), **common)
    if kind is EntryKind.SYMLINK:
        target = draw(st.binary(min_size=1, max_size=100).filter(lambda t: b"\0" not in t))
        return FileEntry(name=name, kind=kind, size=len(target), target=target, **common)
    if kind is EntryKind.MOUNT:
        namespace_id = NamespaceId(draw(st.binary(min_size=16, max_size=16)))
        return FileEntry(name=name, kind=kind, size=0, namespace_id=namespace_id, **common)
    if kind in DEVICE_KINDS:
        rdev = draw(st.integers(0, MAX_RDEV))
        return FileEntry(name=name, kind=kind, size=0, rdev=rdev, **common)
    return FileEntry(name=name, kind=kind, size=0, **common)


@settings(max_examples=150, deadline=None)
@given(st.lists(entries(), max_size=8, unique_by=lambda entry: entry.name))
def test_tree_round_trips(items: list[FileEntry]) -> None:
    tree = Tree.of(items)
    assert decode_tree(tree.encode(), tree.id) == tree


@settings(max_examples=100, deadline=None)
@given(
    namespace=st.binary(min_size=16, max_size=16),
    parents=st.lists(ids32, max_size=3, unique=True),
    text=st.text(max_size=40),
    time_ns=st.integers(0, 2**63 - 1),
)
def test_commit_round_trips(
    namespace: bytes, parents: list[bytes], text: str, time_ns: int
) -> None:
    commit = Commit(
        NamespaceId(namespace), TREE.id, tuple(map(CommitId, parents)), text, text, time_ns, text
    )
    assert decode_commit(commit.encode(), commit.id) == commit


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_to_a_valid_tree_or_a_format_error(data: bytes) -> None:
    try:
        tree = decode_tree(data)
    except FormatError:
        return
    assert tree.encode() == data
