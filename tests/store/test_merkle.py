"""Merkle operations: build, diff, edit, walk (store.merkle)."""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
from pathlib import Path
from typing import TypeAlias

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.chunking import chunk_bytes
from store.errors import (
    ConflictError,
    FormatError,
    IntegrityError,
    InvalidPathError,
    NotFoundError,
)
from store.ids import ChunkId, TreeId
from store.merkle import (
    EMPTY_TREE_ID,
    Change,
    ChangeKind,
    MemoryTrees,
    apply_edits,
    build_tree,
    changes_to_edits,
    diff_trees,
    lookup,
    split_path,
    walk,
)
from store.objects import EMPTY_TREE, EntryKind, FileEntry, Tree, decode_tree
from store.ops import AttrChanges, Attrs, Delete, Mkdir, Move, Op, Put, SetAttr
from store.paths import DrivePath

P = DrivePath.from_bytes
# What ``dir_entry`` gives a directory by default.
DIR_ATTRS = Attrs(mode=0o755, uid=1000, gid=1000, mtime_ns=7)

# --- building drives in memory ------------------------------------------------------------
#
# A spec is a dict name -> node, where a node is one of
#   ("file", data, mode)   ("link", target)   ("fifo",)   ("dir", mode, spec)

Node: TypeAlias = tuple[object, ...]
Spec: TypeAlias = dict[bytes, Node]


def file_entry(name: bytes, data: bytes = b"", mode: int = 0o644, mtime_ns: int = 7) -> FileEntry:
    described = chunk_bytes(data)
    return FileEntry(
        name=name,
        kind=EntryKind.FILE,
        mode=mode,
        uid=1000,
        gid=1000,
        size=described.size,
        mtime_ns=mtime_ns,
        chunks=described.chunks,
        content_hash=described.content_hash,
    )


def dir_entry(name: bytes, tree_id: TreeId, mode: int = 0o755, mtime_ns: int = 7) -> FileEntry:
    return FileEntry(
        name=name,
        kind=EntryKind.DIR,
        mode=mode,
        uid=1000,
        gid=1000,
        size=0,
        mtime_ns=mtime_ns,
        tree_id=tree_id,
    )


def store_spec(trees: MemoryTrees, spec: Spec) -> TreeId:
    entries = []
    for name, node in spec.items():
        match node:
            case ("file", bytes(data), int(mode)):
                entries.append(file_entry(name, data, mode))
            case ("link", bytes(target)):
                entries.append(
                    FileEntry(
                        name, EntryKind.SYMLINK, 0o777, 1000, 1000, len(target), 7, target=target
                    )
                )
            case ("fifo",):
                entries.append(FileEntry(name, EntryKind.FIFO, 0o600, 1000, 1000, 0, 7))
            case ("dir", int(mode), dict(children)):
                entries.append(dir_entry(name, store_spec(trees, children), mode))
            case _:
                raise AssertionError(node)
    return trees.add(Tree.of(entries))


def reachable_trees(trees: MemoryTrees, root: TreeId) -> set[TreeId]:
    found = {root}
    for _, entry in walk(trees, root):
        if entry.tree_id is not None:
            found.add(entry.tree_id)
    return found


class CountingTrees:
    """A TreeSource that counts what it is asked for."""

    def __init__(self, inner: MemoryTrees) -> None:
        self.inner = inner
        self.loads = 0

    def load_tree(self, tree_id: TreeId) -> Tree:
        self.loads += 1
        return self.inner.load_tree(tree_id)


def deep_drive(trees: MemoryTrees, fanout: int, depth: int) -> TreeId:
    """A drive with ``fanout`` subdirectories per level and ``fanout`` files at the bottom."""

    def level(remaining: int) -> Spec:
        if remaining == 0:
            return {b"f%d" % i: ("file", b"data %d" % i, 0o644) for i in range(fanout)}
        return {b"d%d" % i: ("dir", 0o755, level(remaining - 1)) for i in range(fanout)}

    return store_spec(trees, level(depth))


SAMPLE: Spec = {
    b"docs": (
        "dir",
        0o755,
        {
            b"a.txt": ("file", b"alpha", 0o644),
            b"b.txt": ("file", b"beta", 0o644),
            b"deep": ("dir", 0o755, {b"x": ("file", b"x", 0o600)}),
        },
    ),
    b"empty": ("dir", 0o700, {}),
    b"link": ("link", b"docs/a.txt"),
    b"notes": ("file", b"", 0o644),
}


# --- MemoryTrees, walk, lookup -------------------------------------------------------------


def test_memory_trees_verifies_stored_bytes_against_the_id() -> None:
    trees = MemoryTrees()
    tree_id = trees.add(Tree.of([file_entry(b"a")]))
    assert trees.load_tree(tree_id) == Tree.of([file_entry(b"a")])
    forged = MemoryTrees({tree_id: Tree.of([file_entry(b"b")]).encode()})
    with pytest.raises(IntegrityError):
        forged.load_tree(tree_id)
    with pytest.raises(NotFoundError):
        trees.load_tree(TreeId(bytes(32)))


def test_walk_is_depth_first_in_name_order_with_directories_before_their_contents() -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    paths = [path for path, _ in walk(trees, root)]
    assert paths == [
        b"docs",
        b"docs/a.txt",
        b"docs/b.txt",
        b"docs/deep",
        b"docs/deep/x",
        b"empty",
        b"link",
        b"notes",
    ]


def test_walk_of_an_empty_tree_needs_no_source() -> None:
    assert list(walk(MemoryTrees(), EMPTY_TREE_ID)) == []


def test_lookup_finds_entries_and_answers_none_for_missing_or_through_a_file() -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    found = lookup(trees, root, b"docs/deep/x")
    assert found is not None
    assert found.name == b"x"
    assert lookup(trees, root, b"docs/nothing") is None
    assert lookup(trees, root, b"notes/inside") is None
    with pytest.raises(FormatError):
        lookup(trees, root, b"")


@pytest.mark.parametrize("bad", [b"/a", b"a/", b"a//b", b"a/./b", b"a/../b", b"a\0b"])
def test_paths_with_empty_or_special_components_are_refused(bad: bytes) -> None:
    with pytest.raises(FormatError):
        split_path(bad)


# --- build_tree ------------------------------------------------------------------------------


FIXED_NS = 1_700_000_000_123_456_789


def make_local_tree(top: Path, content: dict[str, bytes | None]) -> None:
    """Files (bytes) and directories (None) by relative path, then every mtime fixed."""
    top.mkdir(exist_ok=True)
    for relative, data in sorted(content.items()):
        target = top / relative
        if data is None:
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    fix_mtimes(top)


def fix_mtimes(top: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in [*dirnames, *filenames]:
            os.utime(os.path.join(dirpath, name), ns=(FIXED_NS, FIXED_NS), follow_symlinks=False)


def try_set_xattr(path: Path, name: str, value: bytes) -> bool:
    try:
        os.setxattr(path, name, value)
    except (OSError, AttributeError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        return False
    return True


def test_build_tree_records_files_dirs_symlinks_fifos_sockets_and_xattrs(tmp_path: Path) -> None:
    top = tmp_path / "drive"
    make_local_tree(
        top,
        {"empty.txt": b"", "hello.txt": b"hello", "sub/inner.bin": bytes(range(256)), "void": None},
    )
    (top / "sub" / "inner.bin").chmod(0o640)
    os.symlink(b"hello.txt", top / "link")
    os.mkfifo(top / "pipe")
    has_xattrs = try_set_xattr(top / "hello.txt", "user.color", b"blue")
    socket_made = False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.bind(str(top / "sock"))
            socket_made = True
        except OSError:  # a tmp path over the 108-byte sun_path limit
            pass
        seen: dict[ChunkId, bytes] = {}
        built = build_tree(
            top, on_chunk=lambda chunk_id, data: seen.update({chunk_id: bytes(data)})
        )

    trees = MemoryTrees(built.new_trees)
    entries = dict(walk(trees, built.root))
    assert entries[b"empty.txt"].kind is EntryKind.FILE
    assert entries[b"empty.txt"].size == 0
    assert entries[b"empty.txt"].chunks == ()
    hello = entries[b"hello.txt"]
    assert (hello.size, hello.content_hash) == (5, chunk_bytes(b"hello").content_hash)
    assert seen[hello.chunks[0].chunk_id] == b"hello"
    assert entries[b"sub"].kind is EntryKind.DIR
    assert entries[b"sub/inner.bin"].mode == 0o640
    assert entries[b"sub/inner.bin"].mtime_ns == FIXED_NS
    assert entries[b"sub/inner.bin"].uid == os.getuid()
    assert entries[b"void"].tree_id == EMPTY_TREE_ID
    assert entries[b"link"].kind is EntryKind.SYMLINK
    assert entries[b"link"].target == b"hello.txt"
    assert entries[b"pipe"].kind is EntryKind.FIFO
    if socket_made:
        assert entries[b"sock"].kind is EntryKind.SOCKET
    if has_xattrs:
        assert hello.xattrs == ((b"user.color", b"blue"),)
    # Every tree of the build is handed back, and every chunk went through on_chunk.
    assert reachable_trees(trees, built.root) == set(built.new_trees)
    assert {ref.chunk_id for e in entries.values() for ref in e.chunks} == set(seen)


def test_identical_directories_build_identical_ids(tmp_path: Path) -> None:
    content: dict[str, bytes | None] = {"a/b/c.txt": b"c", "a/d.txt": b"d", "e": None, "f": b""}
    make_local_tree(tmp_path / "one", content)
    make_local_tree(tmp_path / "two", content)
    assert build_tree(tmp_path / "one").root == build_tree(str(tmp_path / "two")).root


def test_changing_one_file_rewrites_only_the_trees_on_its_path_to_the_root(tmp_path: Path) -> None:
    top = tmp_path / "drive"
    make_local_tree(
        top,
        {"a/b/c.txt": b"c", "a/b/other": b"o", "a/side/s": b"s", "z/z.txt": b"z", "top": b"t"},
    )
    before = build_tree(top)
    (top / "a" / "b" / "c.txt").write_bytes(b"changed")
    fix_mtimes(top)
    after = build_tree(top)
    assert after.root != before.root
    # root, a and a/b are new; a/side and z are the very same trees as before.
    assert len(set(after.new_trees) - set(before.new_trees)) == 3
    trees = MemoryTrees({**before.new_trees, **after.new_trees})
    assert [change.path for change in diff_trees(trees, before.root, after.root)] == [b"a/b/c.txt"]


def test_build_tree_does_not_follow_a_symlinked_directory(tmp_path: Path) -> None:
    make_local_tree(tmp_path / "drive", {"real/x": b"x"})
    os.symlink("real", tmp_path / "drive" / "alias")
    built = build_tree(tmp_path / "drive")
    paths = [path for path, _ in walk(MemoryTrees(built.new_trees), built.root)]
    assert paths == [b"alias", b"real", b"real/x"]


def test_build_tree_passes_on_chunk_a_piece_per_chunk_of_a_multi_chunk_file(
    tmp_path: Path,
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    make_local_tree(tmp_path / "drive", {"big": data})
    pieces: list[bytes] = []
    built = build_tree(tmp_path / "drive", on_chunk=lambda _, view: pieces.append(bytes(view)))
    entry = lookup(MemoryTrees(built.new_trees), built.root, b"big")
    assert entry is not None
    assert b"".join(pieces) == data
    assert len(pieces) == len(entry.chunks) >= 1
    assert entry.chunks == chunk_bytes(data).chunks


# --- diff_trees ---------------------------------------------------------------------------


def test_diff_reports_adds_removes_modifies_kind_changes_and_attribute_changes() -> None:
    trees = MemoryTrees()
    old = store_spec(
        trees,
        {
            b"gone": ("file", b"bye", 0o644),
            b"gone_dir": ("dir", 0o755, {b"inside": ("file", b"i", 0o644)}),
            b"edited": ("file", b"v1", 0o644),
            b"chmod": ("file", b"same", 0o644),
            b"was_file": ("file", b"f", 0o644),
            b"was_dir": ("dir", 0o755, {b"child": ("file", b"c", 0o644)}),
            b"dir": ("dir", 0o755, {b"keep": ("file", b"k", 0o644), b"n": ("file", b"1", 0o644)}),
            b"attrs": ("dir", 0o755, {b"k": ("file", b"k", 0o644)}),
        },
    )
    new = store_spec(
        trees,
        {
            b"added": ("file", b"hi", 0o644),
            b"added_dir": ("dir", 0o755, {b"a": ("file", b"a", 0o644), b"b": ("fifo",)}),
            b"edited": ("file", b"v2", 0o644),
            b"chmod": ("file", b"same", 0o600),
            b"was_file": ("dir", 0o755, {b"now": ("file", b"n", 0o644)}),
            b"was_dir": ("link", b"elsewhere"),
            b"dir": ("dir", 0o700, {b"keep": ("file", b"k", 0o644), b"n": ("file", b"2", 0o644)}),
            b"attrs": ("dir", 0o711, {b"k": ("file", b"k", 0o644)}),
        },
    )
    changes = diff_trees(trees, old, new)
    summary = [(change.kind, change.path) for change in changes]
    assert summary == [
        (ChangeKind.ADDED, b"added"),
        (ChangeKind.ADDED, b"added_dir"),  # one change for the whole new directory
        (ChangeKind.MODIFIED, b"attrs"),  # attributes only: nothing below it
        (ChangeKind.MODIFIED, b"chmod"),
        (ChangeKind.MODIFIED, b"dir"),  # its mode and ...
        (ChangeKind.MODIFIED, b"dir/n"),  # ... its content, parent first
        (ChangeKind.MODIFIED, b"edited"),
        (ChangeKind.REMOVED, b"gone"),
        (ChangeKind.REMOVED, b"gone_dir"),
        (ChangeKind.MODIFIED, b"was_dir"),
        (ChangeKind.MODIFIED, b"was_file"),
    ]
    by_path = {change.path: change for change in changes}
    was_file = by_path[b"was_file"]
    assert was_file.old is not None and was_file.old.kind is EntryKind.FILE
    assert was_file.new is not None and was_file.new.kind is EntryKind.DIR
    assert by_path[b"gone_dir"].new is None


def test_diff_of_a_tree_with_itself_is_empty_and_loads_nothing() -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    counting = CountingTrees(trees)
    assert diff_trees(counting, root, root) == []
    assert counting.loads == 0


def test_diff_from_nothing_adds_each_top_level_entry_once() -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    added = diff_trees(trees, None, root)
    assert [(c.kind, c.path) for c in added] == [
        (ChangeKind.ADDED, name) for name in sorted(SAMPLE)
    ]
    removed = diff_trees(trees, root, None)
    assert {c.kind for c in removed} == {ChangeKind.REMOVED}
    assert diff_trees(trees, None, EMPTY_TREE_ID) == []


def test_diff_of_one_changed_leaf_loads_only_the_trees_on_its_path() -> None:
    trees = MemoryTrees()
    depth = 3
    old = deep_drive(trees, fanout=8, depth=depth)  # 585 trees, 4,096 files
    result = apply_edits(trees, old, [Put(P(b"d3/d5/d1/f2"), file_entry(b"f2", b"new"))])
    trees.update(result.new_trees)
    counting = CountingTrees(trees)
    changes = diff_trees(counting, old, result.root)
    assert [(c.kind, c.path) for c in changes] == [(ChangeKind.MODIFIED, b"d3/d5/d1/f2")]
    # One old and one new tree per level: the root and three directories.
    assert counting.loads == 2 * (depth + 1)


def test_diff_of_one_attribute_change_deep_down_loads_only_its_ancestors() -> None:
    trees = MemoryTrees()
    old = deep_drive(trees, fanout=6, depth=3)
    result = apply_edits(trees, old, [SetAttr(P(b"d0/d4/d2"), AttrChanges(mode=0o700))])
    trees.update(result.new_trees)
    counting = CountingTrees(trees)
    changes = diff_trees(counting, old, result.root)
    assert [(c.kind, c.path) for c in changes] == [(ChangeKind.MODIFIED, b"d0/d4/d2")]
    assert counting.loads == 2 * 3  # root, d0, d0/d4; d0/d4/d2's own tree is unchanged


# --- apply_edits ----------------------------------------------------------------------------


def test_a_one_file_edit_writes_exactly_the_trees_from_its_directory_to_the_root() -> None:
    trees = MemoryTrees()
    depth = 4
    root = deep_drive(trees, fanout=4, depth=depth)
    counting = CountingTrees(trees)
    result = apply_edits(counting, root, [Put(P(b"d1/d2/d3/d0/f9"), file_entry(b"f9", b"new"))])
    assert len(result.new_trees) == depth + 1
    assert counting.loads == depth + 1
    trees.update(result.new_trees)
    assert reachable_trees(trees, result.root) >= set(result.new_trees)


def test_edits_that_change_nothing_write_no_tree() -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    same = lookup(trees, root, b"docs/a.txt")
    assert same is not None
    assert apply_edits(trees, root, []) == apply_edits(trees, root, [Put(P(b"docs/a.txt"), same)])
    assert apply_edits(trees, root, [Put(P(b"docs/a.txt"), same)]).new_trees == {}
    assert apply_edits(trees, root, [SetAttr(P(b"docs"), AttrChanges(mode=0o755))]).root == root


def test_put_mkdir_move_delete_setattr_produce_the_expected_drive() -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    edits: list[Op] = [
        Mkdir(P(b"new"), DIR_ATTRS),
        Put(P(b"new/f"), file_entry(b"f", b"fresh")),
        Move(P(b"new"), P(b"moved")),  # carries its pending content along
        Put(P(b"moved/g"), file_entry(b"g", b"also")),
        Delete(P(b"docs/deep")),
        Move(P(b"docs/a.txt"), P(b"empty/a.txt")),
        Move(P(b"notes"), P(b"link")),  # replaces a non-directory
        SetAttr(P(b"docs"), AttrChanges(mode=0o700, mtime_ns=99, xattrs=((b"user.k", b"v"),))),
        Mkdir(P(b"void"), DIR_ATTRS),
    ]
    result = apply_edits(trees, root, edits)
    trees.update(result.new_trees)
    expected = MemoryTrees()
    docs = store_spec(expected, {b"b.txt": ("file", b"beta", 0o644)})
    moved = store_spec(expected, {b"f": ("file", b"fresh", 0o644), b"g": ("file", b"also", 0o644)})
    empty = store_spec(expected, {b"a.txt": ("file", b"alpha", 0o644)})
    expected_root = expected.add(
        Tree.of(
            [
                dataclasses.replace(
                    dir_entry(b"docs", docs, mode=0o700, mtime_ns=99), xattrs=((b"user.k", b"v"),)
                ),
                dir_entry(b"empty", empty, mode=0o700),
                file_entry(b"link", b""),
                dir_entry(b"moved", moved),
                dir_entry(b"void", EMPTY_TREE_ID),
            ]
        )
    )
    assert result.root == expected_root
    # The empty tree of a new directory is handed back too, so any reader can fetch it.
    assert result.new_trees[EMPTY_TREE_ID] == EMPTY_TREE.encode()
    assert set(result.new_trees) <= reachable_trees(trees, result.root)


def test_move_replaces_an_empty_directory_but_not_a_full_one() -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    result = apply_edits(trees, root, [Move(P(b"docs/deep"), P(b"empty"))])
    trees.update(result.new_trees)
    assert lookup(trees, result.root, b"empty/x") is not None
    assert lookup(trees, result.root, b"docs/deep") is None
    with pytest.raises(ConflictError, match="not empty"):
        apply_edits(trees, root, [Move(P(b"notes"), P(b"docs"))])
    # A directory emptied earlier in the same batch counts as empty.
    emptied = apply_edits(
        trees, root, [Delete(P(b"docs/deep/x")), Move(P(b"notes"), P(b"docs/deep"))]
    )
    trees.update(emptied.new_trees)
    moved = lookup(trees, emptied.root, b"docs/deep")
    assert moved is not None
    assert moved.kind is EntryKind.FILE


def test_a_move_onto_or_into_itself_is_refused_when_built() -> None:
    for dst in (b"docs", b"docs/inner", b"docs/deep/docs"):
        with pytest.raises(FormatError, match="onto or into itself"):
            Move(P(b"docs"), P(dst))


def test_setattr_keeps_a_directory_s_children_and_a_file_s_content() -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    result = apply_edits(
        trees,
        root,
        [SetAttr(P(b"docs"), AttrChanges(uid=0)), SetAttr(P(b"notes"), AttrChanges(gid=5))],
    )
    trees.update(result.new_trees)
    before_docs, after_docs = lookup(trees, root, b"docs"), lookup(trees, result.root, b"docs")
    assert before_docs is not None and after_docs is not None
    assert after_docs.tree_id == before_docs.tree_id
    assert after_docs.uid == 0
    after_notes = lookup(trees, result.root, b"notes")
    assert after_notes is not None
    assert (after_notes.gid, after_notes.content_hash) == (5, file_entry(b"n").content_hash)


def _assert_batch_refused(
    trees: MemoryTrees, root: TreeId, edits: list[Op], error: type[Exception], match: str
) -> None:
    """The batch raises, the source is untouched, and the earlier edits left nothing."""
    stored = len(trees)
    with pytest.raises(error, match=match):
        apply_edits(trees, root, edits)
    assert len(trees) == stored
    assert apply_edits(trees, root, []).root == root


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (Put(P(b"nowhere/f"), file_entry(b"f")), NotFoundError, "directory not found: nowhere"),
        (Put(P(b"notes/f"), file_entry(b"f")), ConflictError, "notes: is a file, not a directory"),
        (Put(P(b"link/f"), file_entry(b"f")), ConflictError, "is a symlink, not a directory"),
        (Put(P(b"docs"), file_entry(b"docs")), ConflictError, "is a directory"),
        (Move(P(b"missing"), P(b"somewhere")), NotFoundError, "path not found: missing"),
        (Move(P(b"notes"), P(b"docs")), ConflictError, "not empty"),
        (Move(P(b"notes"), P(b"nowhere/notes")), NotFoundError, "directory not found"),
        (Mkdir(P(b"docs"), DIR_ATTRS), ConflictError, "exists already"),
        (Mkdir(P(b"notes"), DIR_ATTRS), ConflictError, "exists already"),
        (Delete(P(b"docs/missing")), NotFoundError, "path not found: docs/missing"),
        (Delete(P(b"docs/deep/x/y")), ConflictError, "is a file, not a directory"),
        (SetAttr(P(b"missing"), AttrChanges(mode=0o600)), NotFoundError, "path not found"),
    ],
)
def test_apply_edits_refuses_a_bad_edit_and_leaves_no_partial_result(
    edit: Op, error: type[Exception], match: str
) -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    good_first: Op = Put(P(b"docs/new.txt"), file_entry(b"new.txt", b"n"))
    _assert_batch_refused(trees, root, [good_first, edit], error, match)


def test_edits_refuse_a_mismatched_name_bad_attributes_or_a_root_path_when_built() -> None:
    with pytest.raises(FormatError, match="named"):
        Put(P(b"docs/a.txt"), file_entry(b"b.txt"))
    with pytest.raises(FormatError, match="mode"):
        AttrChanges(mode=0o17777)
    with pytest.raises(FormatError, match="unsorted"):
        AttrChanges(xattrs=((b"b", b""), (b"a", b"")))
    with pytest.raises(FormatError, match="changes nothing"):
        AttrChanges()
    with pytest.raises(FormatError, match="mode"):
        Attrs(0o17777, 0, 0, 0)
    # The root has no entry, so no op names it; nor does a path with ``..`` or an empty name.
    for raw in (b"", b"a/../b", b"a//b", b"/a"):
        with pytest.raises(InvalidPathError):
            DrivePath.from_bytes(raw)
    with pytest.raises(InvalidPathError, match="at least one name"):
        DrivePath(())
    with pytest.raises(FormatError, match="onto or into itself"):
        Move(P(b"notes"), P(b"notes/x"))  # a file moved under itself


def test_parent_mtime_is_not_changed_by_edits_below_it() -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    result = apply_edits(
        trees, root, [Put(P(b"docs/new"), file_entry(b"new")), Delete(P(b"docs/b.txt"))]
    )
    trees.update(result.new_trees)
    before, after = lookup(trees, root, b"docs"), lookup(trees, result.root, b"docs")
    assert before is not None and after is not None
    assert after.mtime_ns == before.mtime_ns
    assert after.size == 0


def test_apply_edits_loads_nothing_outside_the_touched_paths() -> None:
    trees = MemoryTrees()
    root = store_spec(trees, SAMPLE)
    only_root = MemoryTrees({root: trees.load_tree(root).encode()})  # no subtree available
    result = apply_edits(
        only_root,
        root,
        [
            Put(P(b"top"), file_entry(b"top")),
            Move(P(b"docs"), P(b"documents")),
            Delete(P(b"empty")),
        ],
    )
    assert list(result.new_trees) == [result.root]


# --- changes_to_edits and the round-trip property --------------------------------------------


def test_changes_to_edits_deletes_a_directory_before_putting_a_file_in_its_place() -> None:
    trees = MemoryTrees()
    old = store_spec(trees, {b"x": ("dir", 0o755, {b"y": ("file", b"y", 0o644)})})
    new = store_spec(trees, {b"x": ("file", b"now a file", 0o644)})
    edits = changes_to_edits(diff_trees(trees, old, new))
    assert [type(edit) for edit in edits] == [Delete, Put]
    assert apply_edits(trees, old, edits).root == new


def test_changes_to_edits_sets_only_the_attributes_that_differ() -> None:
    old = dir_entry(b"d", EMPTY_TREE_ID, mode=0o755, mtime_ns=1)
    new = dir_entry(b"d", EMPTY_TREE_ID, mode=0o700, mtime_ns=1)
    edits = changes_to_edits([Change(ChangeKind.MODIFIED, b"d", old, new)])
    assert edits == [SetAttr(P(b"d"), AttrChanges(mode=0o700))]


def test_a_change_with_entries_that_do_not_match_its_kind_is_refused() -> None:
    with pytest.raises(FormatError):
        Change(ChangeKind.ADDED, b"a", file_entry(b"a"), None)
    with pytest.raises(FormatError):
        Change(ChangeKind.MODIFIED, b"a", None, file_entry(b"a"))


NAMES = st.sampled_from([b"a", b"b", b"c"])
LEAVES = st.one_of(
    st.tuples(
        st.just("file"), st.sampled_from([b"", b"x", b"yy"]), st.sampled_from([0o644, 0o600])
    ),
    st.tuples(st.just("link"), st.sampled_from([b"a", b"../b"])),
    st.just(("fifo",)),
)
NODES = st.recursive(
    LEAVES,
    lambda children: st.tuples(
        st.just("dir"),
        st.sampled_from([0o755, 0o700]),
        st.dictionaries(NAMES, children, max_size=3),
    ),
    max_leaves=10,
)
SPECS = st.dictionaries(NAMES, NODES, max_size=3)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPECS, SPECS)
def test_applying_the_edits_of_a_diff_turns_one_tree_into_the_other(a: Spec, b: Spec) -> None:
    trees = MemoryTrees()
    root_a, root_b = store_spec(trees, a), store_spec(trees, b)
    assert diff_trees(trees, root_a, root_a) == []
    changes = diff_trees(trees, root_a, root_b)
    assert (changes == []) == (root_a == root_b)
    assert [c.path.split(b"/") for c in changes] == sorted(c.path.split(b"/") for c in changes)
    result = apply_edits(trees, root_a, changes_to_edits(changes))
    assert result.root == root_b
    # Only trees of B were written, and none that A already had in the same place.
    assert set(result.new_trees) <= reachable_trees(trees, root_b)
    for tree_id, encoding in result.new_trees.items():
        decode_tree(encoding, expected=tree_id)
    back = apply_edits(trees, root_b, changes_to_edits(diff_trees(trees, root_b, root_a)))
    assert back.root == root_a


@settings(max_examples=50, deadline=None)
@given(SPECS)
def test_walking_a_stored_spec_then_rebuilding_it_from_puts_gives_the_same_id(a: Spec) -> None:
    trees = MemoryTrees()
    root = store_spec(trees, a)
    edits: list[Op] = []
    for path, entry in walk(trees, root):
        if entry.kind is EntryKind.DIR:
            edits.append(Mkdir(P(path), Attrs.of(entry)))
            edits.append(SetAttr(P(path), AttrChanges(mode=entry.mode)))
        else:
            edits.append(Put(P(path), entry))
    assert apply_edits(trees, EMPTY_TREE_ID, edits).root == root
