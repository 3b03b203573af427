"""``boxfs.drive.resolve``: where a home path leads, following one mount entry into its
shared folder, without a server (trees kept in memory)."""

from __future__ import annotations

import pytest
import trio

from boxfs.drive import Location, resolve
from store import protocol
from store.errors import NotFoundError
from store.ids import NamespaceId, TreeId
from store.merkle import EMPTY_TREE_ID, MemoryTrees
from store.objects import EntryKind, FileEntry, Tree
from store.paths import DrivePath

HOME = NamespaceId(bytes(16))
TEAM = NamespaceId(bytes([1]) * 16)
INNER = NamespaceId(bytes([2]) * 16)
GONE = NamespaceId(bytes([3]) * 16)
ROLES: dict[NamespaceId, protocol.Role] = {HOME: "owner", TEAM: "editor", INNER: "viewer"}


def mount(name: bytes, namespace_id: NamespaceId) -> FileEntry:
    return FileEntry(
        name=name, kind=EntryKind.MOUNT, mode=0o755, uid=1, gid=1, size=0, mtime_ns=7,
        namespace_id=namespace_id,
    )  # fmt: skip


def folder(name: bytes, tree_id: TreeId) -> FileEntry:
    return FileEntry(
        name=name, kind=EntryKind.DIR, mode=0o755, uid=1, gid=1, size=0, mtime_ns=7,
        tree_id=tree_id,
    )  # fmt: skip


def leaf(name: bytes) -> FileEntry:
    return FileEntry(name=name, kind=EntryKind.FIFO, mode=0o644, uid=1, gid=1, size=0, mtime_ns=7)


def home_tree() -> tuple[MemoryTrees, TreeId]:
    """``Team`` (a mount of TEAM), ``docs/Inner`` (a mount of INNER), ``docs/a``, ``f``,
    ``Gone`` (a mount of a namespace the caller no longer belongs to)."""
    trees = MemoryTrees()
    trees.add(Tree(()))
    docs = trees.add(Tree((mount(b"Inner", INNER), leaf(b"a"))))
    root = trees.add(
        Tree((mount(b"Gone", GONE), mount(b"Team", TEAM), folder(b"docs", docs), leaf(b"f")))
    )
    return trees, root


def where(text: str | None, *, follow_last: bool = True) -> Location:
    trees, root = home_tree()

    async def load(tree_id: TreeId) -> Tree:
        return trees.load_tree(tree_id)

    path = None if text is None else DrivePath(tuple(text.encode().split(b"/")))
    return trio.run(lambda: resolve(load, HOME, root, path, ROLES, follow_last=follow_last))


def p(text: str) -> DrivePath:
    return DrivePath(tuple(text.encode().split(b"/")))


def test_the_root_and_plain_paths_stay_in_the_home() -> None:
    assert where(None) == Location(HOME, None, "owner")
    assert where("docs/a") == Location(HOME, p("docs/a"), "owner")
    assert where("docs") == Location(HOME, p("docs"), "owner")
    assert not where("docs").shared


def test_missing_paths_and_paths_below_a_file_stay_in_the_home_for_the_lookup_to_refuse() -> None:
    assert where("missing/deeper") == Location(HOME, p("missing/deeper"), "owner")
    assert where("f/below") == Location(HOME, p("f/below"), "owner")


def test_a_path_through_a_mount_entry_is_relative_to_the_shared_folders_root() -> None:
    location = where("Team/x/y.txt")
    assert (location.namespace_id, location.path, location.role) == (TEAM, p("x/y.txt"), "editor")
    assert location.mount_path == p("Team")
    assert location.shared and location.writable
    assert location.outer(location.path) == p("Team/x/y.txt")
    assert location.outer(None) == p("Team")


def test_a_mount_entry_itself_is_the_shared_folders_root_unless_not_followed() -> None:
    followed = where("Team")
    assert (followed.namespace_id, followed.path) == (TEAM, None)
    assert where("Team", follow_last=False) == Location(HOME, p("Team"), "owner")
    # Only the last name is left unfollowed: a path through the entry still leads inside.
    assert where("Team/x", follow_last=False).namespace_id == TEAM


def test_a_mount_entry_deeper_in_the_home_is_followed_with_its_role() -> None:
    location = where("docs/Inner/z")
    assert (location.namespace_id, location.path, location.role) == (INNER, p("z"), "viewer")
    assert location.mount_path == p("docs/Inner")
    assert not location.writable


def test_the_root_entry_of_a_shared_folder_is_a_folder_with_the_mounts_attributes() -> None:
    location = where("Team")
    entry = location.root_entry(EMPTY_TREE_ID)
    assert entry.kind is EntryKind.DIR and entry.tree_id == EMPTY_TREE_ID
    assert (entry.name, entry.mode, entry.mtime_ns, entry.namespace_id) == (b"Team", 0o755, 7, None)


def test_a_mount_of_a_namespace_one_no_longer_belongs_to_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="shared folder not found: Gone"):
        where("Gone/x")
    assert where("Gone", follow_last=False).namespace_id == HOME
