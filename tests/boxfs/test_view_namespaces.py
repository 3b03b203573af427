"""A view of two namespaces: the home namespace at ``/`` and a shared folder ("Team"),
shown where the home's mount entry for it stands, driven directly (no kernel, no server).

Each namespace is an in-memory drive (``tests/boxfs/memory_drive.py``) with its own
upload signal; one real journal and staging directory serve both, as on a device. Nothing
drains the journal, so the tests see exactly what the model appended, and for which
namespace. The home drive's mount entries are made as the server makes them (a put of an
``EntryKind.MOUNT`` entry in its history)."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from boxfs.journal import Journal, JournalOp, StagedPut
from boxfs.staging import Staging
from boxfs.view import ROOT_INODE, VERSIONS_NAME, FileSystemModel, NamespacePorts
from store.ids import NamespaceId
from store.objects import EntryKind, FileEntry, decode_commit
from store.ops import Attrs, Delete, Mkdir, Move, Op, Put, SetAttr
from store.protocol import DrivePath
from tests.boxfs.memory_drive import MemoryDrive, NoUploads
from tests.boxfs.test_view import GID, TIMEOUT_S, UID, fails, names_of, read_all, write_file

TEAM = b"Team"


@dataclass
class TwoNamespaces:
    model: FileSystemModel
    home: MemoryDrive
    team: MemoryDrive
    journal: Journal
    home_uploads: NoUploads
    team_uploads: NoUploads
    opened: list[NamespaceId] = field(default_factory=list)

    async def pending(self, drive: MemoryDrive) -> list[tuple[str, ...]]:
        """The journal's pending entries of ``drive``'s namespace, as (kind, path ...)."""
        entries = await trio.to_thread.run_sync(self.journal.pending, drive.namespace_id, 10_000)
        return [described(entry.op) for entry in entries]

    async def team_inode(self) -> int:
        return (await self.model.lookup(ROOT_INODE, TEAM)).inode


def described(op: JournalOp) -> tuple[str, ...]:
    """A journal entry's op as its kind and path(s) inside its namespace."""
    match op:
        case Move():
            return ("move", bytes(op.src).decode(), bytes(op.dst).decode())
        case StagedPut():
            return ("put", bytes(op.path).decode())
        case Mkdir():
            return ("mkdir", bytes(op.path).decode())
        case Delete():
            return ("delete", bytes(op.path).decode())
        case SetAttr():
            return ("setattr", bytes(op.path).decode())


def home_entries_below(name: bytes) -> list[JournalOp]:
    """Home journal entries naming ``name`` and a folder below it (a path through the mount
    entry, and its delete: the server refuses both, and so does the view's replay)."""
    attrs = Attrs(mode=0o755, uid=UID, gid=GID, mtime_ns=1)
    return [Mkdir(DrivePath([name, b"stray"]), attrs), Delete(DrivePath([name]))]


def new_drive() -> MemoryDrive:
    return MemoryDrive(NamespaceId(secrets.token_bytes(16)))


def put(drive: MemoryDrive, path: bytes, data: bytes) -> Op:
    """An edit of ``drive``'s history: the file ``path`` with ``data`` (held by ``drive``)."""
    where = DrivePath.from_bytes(path)
    return Put(where, drive.file_entry(where.name, data))


def mount(shared: MemoryDrive, path: bytes = TEAM, mode: int = 0o750) -> Op:
    """An edit of a home's history: the mount entry of ``shared`` at ``path``."""
    where = DrivePath.from_bytes(path)
    entry = FileEntry(
        name=where.name, kind=EntryKind.MOUNT, mode=mode, uid=1, gid=1, size=0, mtime_ns=7,
        namespace_id=shared.namespace_id,
    )  # fmt: skip
    return Put(where, entry)


def mkdir(path: bytes) -> Op:
    return Mkdir(DrivePath.from_bytes(path), Attrs(mode=0o755, uid=1, gid=1, mtime_ns=1))


def delete(path: bytes) -> Op:
    return Delete(DrivePath.from_bytes(path))


@asynccontextmanager
async def two_namespaces(
    directory: Path, home: MemoryDrive, team: MemoryDrive
) -> AsyncIterator[TwoNamespaces]:
    """A started view of ``home`` at ``/``, which opens ``team`` wherever the home holds a
    mount entry of it, with the journal and staging directory in ``directory`` (a second
    view over the same directory is the next mount of the same device)."""
    directory.mkdir(parents=True, exist_ok=True)
    home_uploads, team_uploads = NoUploads(), NoUploads()
    opened: list[NamespaceId] = []

    async def open_namespace(namespace_id: NamespaceId) -> NamespacePorts | None:
        opened.append(namespace_id)
        if namespace_id != team.namespace_id:
            return None
        return NamespacePorts(team.namespace_id, team, team, team_uploads)

    with Journal(directory / "journal.sqlite") as journal:
        model = FileSystemModel(
            home=NamespacePorts(home.namespace_id, home, home, home_uploads),
            open_namespace=open_namespace,
            journal=journal, staging=Staging(directory / "staging"),
            limiter=trio.CapacityLimiter(4), uid=UID, gid=GID,
        )  # fmt: skip
        await model.start()
        yield TwoNamespaces(model, home, team, journal, home_uploads, team_uploads, opened)


def run_two(
    directory: Path,
    test: Callable[[TwoNamespaces], Awaitable[None]],
    home: MemoryDrive | None = None,
    team: MemoryDrive | None = None,
    *,
    mounted: bool = True,
) -> None:
    """Run ``test`` on a view of ``home`` and ``team``; with ``mounted``, the home's head
    first gets the mount entry of ``team`` at ``/Team``."""
    home, team = home or new_drive(), team or new_drive()
    if mounted:
        home.commit([mount(team)])

    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with two_namespaces(directory, home, team) as view:
                await test(view)

    trio.run(main)


async def server_names(drive: MemoryDrive, path: list[bytes]) -> list[bytes]:
    """The names in the folder at ``path`` of ``drive``'s head (the server's side)."""
    info = await drive.head(drive.namespace_id)
    assert info.head is not None
    raw = (await drive.commits(drive.namespace_id, [info.head]))[info.head]
    assert raw is not None
    tree = drive.trees.load_tree(decode_commit(raw, info.head).root)
    for name in path:
        entry = tree.get(name)
        assert entry is not None and entry.tree_id is not None
        tree = drive.trees.load_tree(entry.tree_id)
    return sorted(entry.name for entry in tree)


async def child(model: FileSystemModel, parent: int, name: bytes) -> int:
    return (await model.lookup(parent, name)).inode


async def sequence_of(drive: MemoryDrive) -> int:
    return (await drive.head(drive.namespace_id)).sequence


# --------------------------------------------------------------------------------------


def test_the_mount_entry_shows_the_shared_folder_where_it_stands(tmp_path: Path) -> None:
    home, team = new_drive(), new_drive()
    home.commit([put(home, b"a.txt", b"home a")])
    team.commit([put(team, b"plan.txt", b"the plan")])

    async def test(view: TwoNamespaces) -> None:
        model = view.model
        assert sorted(await names_of(model, ROOT_INODE)) == [TEAM, b"a.txt"]
        team_attr = await model.lookup(ROOT_INODE, TEAM)
        assert team_attr.mode & 0o7777 == 0o750  # the mount entry's own attributes
        team_inode = team_attr.inode
        assert await names_of(model, team_inode) == [b"plan.txt"]
        assert await read_all(model, await child(model, team_inode, b"plan.txt")) == b"the plan"
        # The name is taken in the home: nothing else can be made there.
        await fails(errno.EEXIST, model.mkdir(ROOT_INODE, TEAM, 0o755))
        await fails(errno.EEXIST, model.create(ROOT_INODE, TEAM, 0o644, os.O_WRONLY))
        await fails(errno.EEXIST, model.symlink(ROOT_INODE, TEAM, b"x"))
        # A new home head that changes other names leaves the shared folder as it is.
        head = home.commit([put(home, b"b.txt", b"home b")])
        await model.apply_head(head, await sequence_of(home))
        assert model.head == head
        assert sorted(await names_of(model, ROOT_INODE)) == [TEAM, b"a.txt", b"b.txt"]
        assert await view.team_inode() == team_inode
        assert await names_of(model, team_inode) == [b"plan.txt"]
        assert await view.pending(view.home) == []
        assert await view.pending(view.team) == []

    run_two(tmp_path, test, home, team)


def test_a_mount_entry_deeper_in_the_home_and_one_not_opened(tmp_path: Path) -> None:
    home, team, stranger = new_drive(), new_drive(), new_drive()
    home.commit([mkdir(b"work"), mount(team, b"work/Team"), mount(stranger, b"work/Other")])
    team.commit([put(team, b"plan.txt", b"the plan")])

    async def test(view: TwoNamespaces) -> None:
        model = view.model
        work = await child(model, ROOT_INODE, b"work")
        assert await names_of(model, work) == [TEAM]  # Other's namespace is not opened
        assert stranger.namespace_id in view.opened
        team_inode = await child(model, work, TEAM)
        assert await names_of(model, team_inode) == [b"plan.txt"]
        await write_file(model, team_inode, b"new.txt", b"new")
        assert await view.pending(view.team) == [("put", "new.txt")]

    run_two(tmp_path, test, home, team, mounted=False)


def test_changes_below_the_mount_point_are_journaled_for_its_namespace_with_its_paths(
    tmp_path: Path,
) -> None:
    async def test(view: TwoNamespaces) -> None:
        model = view.model
        team_inode = await view.team_inode()
        docs = await model.mkdir(team_inode, b"docs", 0o755)
        await write_file(model, docs.inode, b"a", b"alpha")
        await model.rename(docs.inode, b"a", team_inode, b"b", 0)
        await model.setxattr(await child(model, team_inode, b"b"), b"user.k", b"v")
        await model.symlink(docs.inode, b"l", b"../b")
        await model.unlink(docs.inode, b"l")
        await model.rmdir(team_inode, b"docs")
        await write_file(model, ROOT_INODE, b"home.txt", b"home")
        assert await view.pending(view.team) == [
            ("mkdir", "docs"),
            ("put", "docs/a"),
            ("move", "docs/a", "b"),
            ("setattr", "b"),
            ("put", "docs/l"),
            ("delete", "docs/l"),
            ("delete", "docs"),
        ]
        assert await view.pending(view.home) == [("put", "home.txt")]
        assert view.team_uploads.nudges == 7
        assert view.home_uploads.nudges == 1
        assert await read_all(model, await child(model, team_inode, b"b")) == b"alpha"
        # The mount point's own attributes are the namespace root's: no entry stores them.
        await model.setattr(team_inode, mode=0o700)
        await fails(errno.EPERM, model.setxattr(team_inode, b"user.k", b"v"))
        assert len(await view.pending(view.team)) == 7

    run_two(tmp_path, test)


def test_a_rename_or_link_from_one_namespace_to_another_is_exdev_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async def test(view: TwoNamespaces) -> None:
        model = view.model
        team_inode = await view.team_inode()
        await write_file(model, ROOT_INODE, b"a", b"home a")
        await write_file(model, team_inode, b"b", b"team b")
        folder_attr = await model.mkdir(team_inode, b"folder", 0o755)
        before = (await view.pending(view.home), await view.pending(view.team))
        await fails(errno.EXDEV, model.rename(ROOT_INODE, b"a", team_inode, b"a", 0))
        await fails(errno.EXDEV, model.rename(team_inode, b"b", ROOT_INODE, b"b", 0))
        await fails(errno.EXDEV, model.rename(team_inode, b"folder", ROOT_INODE, b"f", 0))
        await fails(errno.EXDEV, model.rename(ROOT_INODE, b"a", folder_attr.inode, b"b", 0))
        a = await child(model, ROOT_INODE, b"a")
        await fails(errno.EXDEV, model.link(a, team_inode, b"a"))
        await fails(errno.EPERM, model.link(a, ROOT_INODE, b"a2"))  # within: no hard links
        assert (await view.pending(view.home), await view.pending(view.team)) == before
        assert sorted(await names_of(model, ROOT_INODE)) == [TEAM, b"a"]
        assert sorted(await names_of(model, team_inode)) == [b"b", b"folder"]
        assert await read_all(model, a) == b"home a"

    run_two(tmp_path, test)


def test_the_mount_point_moves_in_the_home_but_is_not_removed_or_replaced(
    tmp_path: Path,
) -> None:
    async def test(view: TwoNamespaces) -> None:
        model = view.model
        team_inode = await view.team_inode()
        await write_file(model, team_inode, b"t", b"team t")
        await model.mkdir(ROOT_INODE, b"empty", 0o755)
        await write_file(model, ROOT_INODE, b"file", b"")
        before = await view.pending(view.home)
        await fails(errno.EBUSY, model.rmdir(ROOT_INODE, TEAM))
        await fails(errno.EBUSY, model.unlink(ROOT_INODE, TEAM))
        await fails(errno.EBUSY, model.rename(ROOT_INODE, b"empty", ROOT_INODE, TEAM, 0))
        await fails(errno.EBUSY, model.rename(ROOT_INODE, b"file", ROOT_INODE, TEAM, 0))
        assert await view.pending(view.home) == before
        # A rename moves the mount entry, in the home: the folder comes along.
        await model.rename(ROOT_INODE, TEAM, ROOT_INODE, b"Work", 0)
        await model.rename(ROOT_INODE, b"Work", await child(model, ROOT_INODE, b"empty"), TEAM, 0)
        assert (await view.pending(view.home))[len(before) :] == [
            ("move", "Team", "Work"), ("move", "Work", "empty/Team"),
        ]  # fmt: skip
        assert await view.pending(view.team) == [("put", "t")]
        assert sorted(await names_of(model, ROOT_INODE)) == [b"empty", b"file"]
        empty = await child(model, ROOT_INODE, b"empty")
        assert await child(model, empty, TEAM) == team_inode
        assert await names_of(model, team_inode) == [b"t"]

    run_two(tmp_path, test)


def test_each_namespace_has_its_own_versions_folder_at_its_root(tmp_path: Path) -> None:
    home, team = new_drive(), new_drive()
    home.commit([put(home, b"h", b"home"), mount(team)])
    team.commit([put(team, b"t", b"team")])
    team.commit([put(team, b"u", b"team u")])

    async def test(view: TwoNamespaces) -> None:
        model = view.model
        versions = await child(model, ROOT_INODE, VERSIONS_NAME)
        (snapshot,) = await names_of(model, versions)  # the home's one commit, not Team's two
        assert await names_of(model, await child(model, versions, snapshot)) == [b"h"]  # no mount
        team_inode = await view.team_inode()
        assert VERSIONS_NAME not in await names_of(model, team_inode)  # by name only, as at /
        team_versions = await child(model, team_inode, VERSIONS_NAME)
        first, second = sorted(await names_of(model, team_versions))
        assert await names_of(model, await child(model, team_versions, first)) == [b"t"]
        newest = await child(model, team_versions, second)
        assert sorted(await names_of(model, newest)) == [b"t", b"u"]
        u = await child(model, newest, b"u")
        assert await read_all(model, u) == b"team u"
        await fails(errno.EROFS, model.mkdir(team_versions, b"x", 0o755))
        await fails(errno.EROFS, model.unlink(newest, b"u"))
        await fails(errno.EEXIST, model.mkdir(team_inode, VERSIONS_NAME, 0o755))
        # A new head of Team shows in its .versions at the next listing.
        head = team.commit([delete(b"t")])
        await model.apply_head(head, await sequence_of(team), namespace_id=team.namespace_id)
        assert len(await names_of(model, team_versions)) == 3
        assert len(await names_of(model, versions)) == 1

    run_two(tmp_path, test, home, team, mounted=False)


def test_a_home_head_that_adds_a_mount_entry_shows_the_folder(tmp_path: Path) -> None:
    home, team = new_drive(), new_drive()
    home.commit([put(home, b"a.txt", b"a")])
    team.commit([put(team, b"plan.txt", b"the plan")])

    async def test(view: TwoNamespaces) -> None:
        model = view.model
        assert await names_of(model, ROOT_INODE) == [b"a.txt"]
        await fails(errno.ENOENT, model.lookup(ROOT_INODE, TEAM))  # a negative entry
        model.take_invalidations()
        head = home.commit([mount(team)])  # the invitation was accepted
        await model.apply_head(head, await sequence_of(home))
        assert (ROOT_INODE, TEAM) in {(i.inode, i.name) for i in model.take_invalidations()}
        team_inode = await view.team_inode()
        assert await names_of(model, team_inode) == [b"plan.txt"]
        assert model.head_of(team.namespace_id) is not None

    run_two(tmp_path, test, home, team, mounted=False)


def test_a_home_head_that_removes_the_mount_entry_takes_the_folder_away(tmp_path: Path) -> None:
    home, team = new_drive(), new_drive()
    team.commit([put(team, b"plan.txt", b"the plan")])

    async def test(view: TwoNamespaces) -> None:
        model = view.model
        team_inode = await view.team_inode()
        plan = await child(model, team_inode, b"plan.txt")
        assert await read_all(model, plan) == b"the plan"
        model.take_invalidations()
        head = home.commit([delete(TEAM)])  # removed from the folder, or it was unshared
        await model.apply_head(head, await sequence_of(home))
        assert (ROOT_INODE, TEAM) in {(i.inode, i.name) for i in model.take_invalidations()}
        assert await names_of(model, ROOT_INODE) == []
        await fails(errno.ENOENT, model.lookup(ROOT_INODE, TEAM))
        # What the kernel still holds of it changes nothing any more.
        await fails(errno.ENOENT, model.mkdir(team_inode, b"x", 0o755))
        await fails(errno.ENOENT, model.create(team_inode, b"y", 0o644, os.O_WRONLY))
        await fails(errno.ENOENT, model.open(plan, os.O_WRONLY))
        assert await view.pending(view.team) == []

    run_two(tmp_path, test, home, team)


def test_a_folder_this_user_shared_becomes_the_shared_folder(tmp_path: Path) -> None:
    home, team = new_drive(), new_drive()
    home.commit([mkdir(TEAM), put(home, b"Team/plan.txt", b"the plan")])
    team.commit([put(team, b"plan.txt", b"the plan")])  # its history starts from the folder

    async def test(view: TwoNamespaces) -> None:
        model = view.model
        folder = await view.team_inode()
        assert await names_of(model, folder) == [b"plan.txt"]
        head = home.commit([delete(b"Team/plan.txt"), delete(TEAM), mount(team)])
        await model.apply_head(head, await sequence_of(home))
        team_inode = await view.team_inode()
        assert team_inode != folder
        assert await names_of(model, team_inode) == [b"plan.txt"]
        await write_file(model, team_inode, b"next.txt", b"next")
        assert await view.pending(view.team) == [("put", "next.txt")]
        assert await view.pending(view.home) == []

    run_two(tmp_path, test, home, team, mounted=False)


def test_a_mount_entry_moved_elsewhere_keeps_the_folder_and_its_inode(tmp_path: Path) -> None:
    home, team = new_drive(), new_drive()
    team.commit([put(team, b"plan.txt", b"the plan")])

    async def test(view: TwoNamespaces) -> None:
        model = view.model
        team_inode = await view.team_inode()
        assert await names_of(model, team_inode) == [b"plan.txt"]
        head = home.commit([mkdir(b"a"), Move(DrivePath([TEAM]), DrivePath([b"a", b"Work"]))])
        await model.apply_head(head, await sequence_of(home))
        assert await names_of(model, ROOT_INODE) == [b"a"]
        a = await child(model, ROOT_INODE, b"a")
        assert await child(model, a, b"Work") == team_inode
        assert await names_of(model, team_inode) == [b"plan.txt"]
        assert model.head_of(team.namespace_id) is not None

    run_two(tmp_path, test, home, team)


def test_a_viewer_cannot_change_anything_in_the_folder(tmp_path: Path) -> None:
    team = new_drive()
    team.commit([put(team, b"plan.txt", b"the plan"), mkdir(b"docs")])

    async def test(view: TwoNamespaces) -> None:
        model = view.model
        model.set_role(team.namespace_id, "viewer")
        team_inode = await view.team_inode()
        plan = await child(model, team_inode, b"plan.txt")
        docs = await child(model, team_inode, b"docs")
        assert (await model.getattr(plan)).mode & 0o222 == 0
        assert await read_all(model, plan) == b"the plan"
        await fails(errno.EACCES, model.mkdir(team_inode, b"x", 0o755))
        await fails(errno.EACCES, model.create(team_inode, b"y", 0o644, os.O_WRONLY))
        await fails(errno.EACCES, model.open(plan, os.O_WRONLY))
        await fails(errno.EACCES, model.unlink(team_inode, b"plan.txt"))
        await fails(errno.EACCES, model.rmdir(team_inode, b"docs"))
        await fails(errno.EACCES, model.rename(team_inode, b"plan.txt", docs, b"p", 0))
        await fails(errno.EACCES, model.setattr(plan, mode=0o600))
        await fails(errno.EACCES, model.setxattr(plan, b"user.k", b"v"))
        await fails(errno.EACCES, model.symlink(team_inode, b"l", b"plan.txt"))
        assert await view.pending(view.team) == []
        assert view.team_uploads.nudges == 0
        # The mount point itself is the home's: the viewer may still move it there.
        await model.rename(ROOT_INODE, TEAM, ROOT_INODE, b"Seen", 0)
        assert await view.pending(view.home) == [("move", "Team", "Seen")]
        model.set_role(team.namespace_id, "editor")
        await model.mkdir(team_inode, b"x", 0o755)
        assert await view.pending(view.team) == [("mkdir", "x")]

    run_two(tmp_path, test, team=team)


def test_a_new_head_of_the_mounted_namespace_changes_only_below_its_mount_point(
    tmp_path: Path,
) -> None:
    home, team = new_drive(), new_drive()
    home_head = home.commit([put(home, b"same.txt", b"home"), mount(team)])
    team.commit([
        put(team, b"same.txt", b"team v1"),
        put(team, b"old.txt", b"old"),
    ])  # fmt: skip

    async def test(view: TwoNamespaces) -> None:
        model = view.model
        team_inode = await view.team_inode()
        home_same = await child(model, ROOT_INODE, b"same.txt")
        team_same = await child(model, team_inode, b"same.txt")
        assert await read_all(model, team_same) == b"team v1"
        await write_file(model, team_inode, b"mine.txt", b"local")  # pending: held back
        model.take_invalidations()
        head = team.commit([
            put(team, b"same.txt", b"team v2"),
            put(team, b"new.txt", b"new"),
            put(team, b"mine.txt", b"theirs"),
            delete(b"old.txt"),
        ])  # fmt: skip
        await model.apply_head(head, 2, namespace_id=team.namespace_id)
        assert model.head_of(team.namespace_id) == head
        assert model.head == home_head  # the home namespace's head did not move
        assert sorted(await names_of(model, team_inode)) == [b"mine.txt", b"new.txt", b"same.txt"]
        assert await child(model, team_inode, b"same.txt") == team_same  # the same inode
        assert await read_all(model, team_same) == b"team v2"
        assert await read_all(model, await child(model, team_inode, b"mine.txt")) == b"local"
        assert model.deferred_in(team.namespace_id) == 1
        assert model.deferred_in(home.namespace_id) == 0
        assert sorted(await names_of(model, ROOT_INODE)) == [TEAM, b"same.txt"]
        assert await read_all(model, home_same) == b"home"
        touched = {invalidation.inode for invalidation in model.take_invalidations()}
        assert team_inode in touched and team_same in touched
        assert ROOT_INODE not in touched and home_same not in touched
        remembered = await trio.to_thread.run_sync(view.journal.view_head, team.namespace_id)
        assert remembered is not None and remembered.commit_id == head
        remembered = await trio.to_thread.run_sync(view.journal.view_head, home.namespace_id)
        assert remembered is not None and remembered.commit_id == home_head
        # The home namespace follows on its own, and leaves Team's part alone.
        next_home_head = home.commit([delete(b"same.txt")])
        await model.apply_head(next_home_head, 2, namespace_id=home.namespace_id)
        assert model.head == next_home_head
        assert await names_of(model, ROOT_INODE) == [TEAM]
        assert model.head_of(team.namespace_id) == head
        assert await read_all(model, team_same) == b"team v2"
        # Once the server has answered for mine.txt, a recheck of Team shows its version;
        # a recheck of the home namespace has nothing to do with it.
        (entry,) = await trio.to_thread.run_sync(view.journal.pending, team.namespace_id, 10)
        await trio.to_thread.run_sync(view.journal.reject, entry.seq, "test", "answered")
        mine = await child(model, team_inode, b"mine.txt")
        await model.recheck()
        assert await read_all(model, mine) == b"local"
        await model.recheck(namespace_id=team.namespace_id)
        assert await read_all(model, mine) == b"theirs"
        assert model.deferred_in(team.namespace_id) == 0

    run_two(tmp_path, test, home, team, mounted=False)


def test_a_start_replays_each_namespaces_journal_entries_onto_its_own_root(
    tmp_path: Path,
) -> None:
    home, team = new_drive(), new_drive()
    home.commit([mount(team)])
    team.commit([put(team, b"kept.txt", b"kept")])

    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with two_namespaces(tmp_path, home, team) as view:  # nothing uploads
                model = view.model
                team_inode = await view.team_inode()
                home_docs = await model.mkdir(ROOT_INODE, b"docs", 0o755)
                team_docs = await model.mkdir(team_inode, b"docs", 0o755)
                await write_file(model, home_docs.inode, b"a", b"home alpha")
                await write_file(model, team_docs.inode, b"b", b"team beta")
                await model.rename(team_inode, b"kept.txt", team_docs.inode, b"kept.txt", 0)
                # Home entries naming the mount entry and below it: they must not land in
                # Team, nor remove its root.
                strays = home_entries_below(TEAM)
                await trio.to_thread.run_sync(view.journal.append_many, home.namespace_id, strays)
            async with two_namespaces(tmp_path, home, team) as view:
                model = view.model
                team_inode = await view.team_inode()
                assert sorted(await names_of(model, ROOT_INODE)) == [TEAM, b"docs"]
                assert await names_of(model, team_inode) == [b"docs"]
                home_docs_inode = await child(model, ROOT_INODE, b"docs")
                team_docs_inode = await child(model, team_inode, b"docs")
                assert await names_of(model, home_docs_inode) == [b"a"]
                assert sorted(await names_of(model, team_docs_inode)) == [b"b", b"kept.txt"]
                a = await child(model, home_docs_inode, b"a")
                assert await read_all(model, a) == b"home alpha"
                b = await child(model, team_docs_inode, b"b")
                assert await read_all(model, b) == b"team beta"
                kept = await child(model, team_docs_inode, b"kept.txt")
                assert await read_all(model, kept) == b"kept"
                await fails(errno.ENOENT, model.lookup(team_inode, b"stray"))
                # The replayed entries are still each namespace's, and new ones follow.
                await write_file(model, team_docs_inode, b"c", b"more")
                assert await view.pending(view.team) == [
                    ("mkdir", "docs"),
                    ("put", "docs/b"),
                    ("move", "kept.txt", "docs/kept.txt"),
                    ("put", "docs/c"),
                ]

    trio.run(main)


def test_a_forgotten_mount_point_drops_its_listing_and_lists_again_from_its_namespace(
    tmp_path: Path,
) -> None:
    home, team = new_drive(), new_drive()
    home.commit([put(home, b"h", b"home")])
    team.commit([put(team, b"t", b"team")])

    async def test(view: TwoNamespaces) -> None:
        model = view.model
        team_inode = await view.team_inode()  # one lookup
        assert await names_of(model, team_inode) == [b"t"]  # a lookup of t
        t_inode = await child(model, team_inode, b"t")
        model.forget(t_inode, 2)
        team_fetches, home_fetches = team.tree_fetches, home.tree_fetches
        model.forget(team_inode, 1)  # the kernel knows nothing below it any more
        assert await view.team_inode() == team_inode  # a mount point keeps its number
        assert await names_of(model, team_inode) == [b"t"]
        assert team.tree_fetches == team_fetches + 1  # listed again, from Team
        assert home.tree_fetches == home_fetches
        assert await read_all(model, await child(model, team_inode, b"t")) == b"team"

    run_two(tmp_path, test, home, team)
