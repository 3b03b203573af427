"""The filesystem model, driven directly (no kernel): POSIX semantics of the overlay,
handles, errnos and the journal entries each change leaves.

The view runs on an in-memory drive (``tests/boxfs/memory_drive.py``: history and content
as the view's ports want them) with a real journal and staging directory; nothing drains
the journal, so the tests see exactly what the model appended. The tests that upload (a
replay of an earlier mount's journal, that must reach the server) run against one real
``boxfs-server`` for the module. Uploads and ``.versions`` are
in ``tests/integration/test_view_live.py``."""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from boxfs.fetcher import Fetcher
from boxfs.journal import Journal, JournalEntry, JournalOp, StagedPut
from boxfs.remote import Remote
from boxfs.staging import Staging
from boxfs.uploader import Uploader
from boxfs.view import (
    RENAME_NOREPLACE,
    ROOT_INODE,
    VERSIONS_NAME,
    FileSystemModel,
    FsError,
    NamespacePorts,
    version_names,
)
from store.cache import ObjectCache
from store.ids import NamespaceId, TreeId
from store.objects import MAX_FILE_BYTES, MAX_XATTR_VALUE_BYTES, EntryKind, FileEntry, Tree
from store.ops import Attrs, Delete, Mkdir, Move, Op, Put, SetAttr
from store.paths import DrivePath
from tests.boxfs.memory_drive import MemoryDrive, NoUploads
from tests.integration.server_process import ServerProcess

PASSWORD = "fs model test password"  # noqa: S105  (a test account)
UID, GID = 4242, 4343
TIMEOUT_S = 30
RW = os.O_RDWR


@dataclass
class _Journaled:
    """What every view under test has: its namespace and journal, and what is pending."""

    model: FileSystemModel
    namespace: NamespaceId
    journal: Journal
    staging: Staging

    async def entries(self) -> list[JournalEntry]:
        return await trio.to_thread.run_sync(self.journal.pending, self.namespace, 10_000)

    async def pending(self) -> list[JournalOp]:
        return [entry.op for entry in await self.entries()]


@dataclass
class Mount(_Journaled):
    remote: Remote
    uploader: Uploader
    fetcher: Fetcher


async def new_account(url: str) -> tuple[Remote, NamespaceId]:
    remote = Remote(url)
    user = f"fs{secrets.token_hex(5)}"
    await remote.register(user, f"{user}@example.com", PASSWORD)
    await remote.login(user, PASSWORD, "laptop")
    return remote, (await remote.home()).namespace_id


@asynccontextmanager
async def mounted(
    remote: Remote,
    namespace: NamespaceId,
    home: Path,
    *,
    upload: bool = False,
    preserve_ownership: bool = False,
    request_timeout_s: float = 10.0,
) -> AsyncIterator[Mount]:
    """A model over ``namespace`` with its own device home (cache, journal, staging), its
    fetcher running and, with ``upload``, its uploader."""
    home.mkdir(parents=True, exist_ok=True)
    limiter = trio.CapacityLimiter(4)
    with (
        ObjectCache.open(home / "cache", 64 << 20) as cache,
        Journal(home / "journal.sqlite") as journal,
    ):
        staging = Staging(home / "staging")
        fetcher = Fetcher(remote, namespace, cache, limiter, request_timeout_s=request_timeout_s)
        uploader = Uploader(
            journal, staging, remote, namespace, limiter, quiet_s=0.01, max_delay_s=0.05
        )
        model = FileSystemModel(
            home=NamespacePorts(namespace, remote, fetcher, uploader), journal=journal,
            staging=staging, limiter=limiter, uid=UID, gid=GID,
            preserve_ownership=preserve_ownership,
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(fetcher.run)
            await model.start()  # before the uploader: it replays the journal
            if upload:
                nursery.start_soon(uploader.run)
            yield Mount(model, namespace, journal, staging, remote, uploader, fetcher)
            nursery.cancel_scope.cancel()


@dataclass
class ModelMount(_Journaled):
    """A view over a namespace kept in memory: no server, no kernel."""

    drive: MemoryDrive
    uploads: NoUploads


@asynccontextmanager
async def in_memory(
    home: Path, drive: MemoryDrive | None = None, *, preserve_ownership: bool = False
) -> AsyncIterator[ModelMount]:
    """The view wired to an in-memory drive (``MemoryDrive``: its history and content),
    with its own journal and staging in ``home``; nothing drains the journal."""
    home.mkdir(parents=True, exist_ok=True)
    drive = drive or MemoryDrive(NamespaceId(secrets.token_bytes(16)))
    uploads = NoUploads()
    with Journal(home / "journal.sqlite") as journal:
        staging = Staging(home / "staging")
        model = FileSystemModel(
            home=NamespacePorts(drive.namespace_id, drive, drive, uploads), journal=journal,
            staging=staging, limiter=trio.CapacityLimiter(4), uid=UID, gid=GID,
            preserve_ownership=preserve_ownership,
        )  # fmt: skip
        await model.start()
        yield ModelMount(model, drive.namespace_id, journal, staging, drive, uploads)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("fs-model-server") / "data").start()
    try:
        yield process
    finally:
        process.stop()


def run_model(
    home: Path, test: Callable[[ModelMount], Awaitable[None]], *, preserve_ownership: bool = False
) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with in_memory(home, preserve_ownership=preserve_ownership) as mount:
                await test(mount)

    trio.run(main)


async def fails(errno_value: int, call: Awaitable[object]) -> None:
    with pytest.raises(FsError) as info:
        await call
    assert info.value.errno == errno_value, os.strerror(info.value.errno)


async def write_file(model: FileSystemModel, parent: int, name: bytes, data: bytes) -> int:
    fh, attr = await model.create(parent, name, 0o644, os.O_WRONLY)
    assert await model.write(fh, 0, data) == len(data)
    await model.release(fh)
    return attr.inode


async def read_all(model: FileSystemModel, inode: int) -> bytes:
    fh, _ = await model.open(inode, os.O_RDONLY)
    try:
        return await model.read(fh, 0, 1 << 22)
    finally:
        await model.release(fh)


async def names_of(model: FileSystemModel, inode: int) -> list[bytes]:
    dh = await model.opendir(inode)
    found: list[bytes] = []
    start = 0
    while page := await model.readdir(dh, start):
        found.extend(name for name, _, _ in page if name not in (b".", b".."))
        start = page[-1][2]
    await model.releasedir(dh)
    return found


# --------------------------------------------------------------------------------------


def test_created_file_reads_back_and_is_journaled_as_one_put_at_release(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        fh, attr = await model.create(ROOT_INODE, b"hello.txt", 0o640, os.O_RDWR)
        assert stat.S_ISREG(attr.mode) and attr.mode & 0o777 == 0o640
        assert (attr.uid, attr.gid, attr.size) == (UID, GID, 0)
        assert await model.write(fh, 0, b"hello ") == 6
        assert await model.write(fh, 6, b"world") == 5
        assert await model.read(fh, 0, 100) == b"hello world"
        assert (await model.getattr(attr.inode)).size == 11
        assert await mount.pending() == []  # nothing journaled while open
        await model.release(fh)
        ops = await mount.pending()
        assert len(ops) == 1 and isinstance(ops[0], StagedPut)
        assert bytes(ops[0].path) == b"hello.txt" and ops[0].base is None
        assert ops[0].attrs.mode == 0o640
        assert (await model.lookup(ROOT_INODE, b"hello.txt")).inode == attr.inode
        assert await read_all(model, attr.inode) == b"hello world"
        # A second edit names the first put as its base (still pending).
        fh, keep_cache = await model.open(attr.inode, os.O_WRONLY)
        assert keep_cache is True  # written through the kernel: its pages stay right
        await model.write(fh, 0, b"J")
        await model.release(fh)
        first, second = await mount.entries()
        assert isinstance(second.op, StagedPut) and second.base_seq == first.seq
        assert await read_all(model, attr.inode) == b"Jello world"
        assert await names_of(model, ROOT_INODE) == [b"hello.txt"]

    run_model(tmp_path, test)


def test_metadata_changes_apply_at_once_and_are_journaled_in_order(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        a = await model.mkdir(ROOT_INODE, b"a", 0o755)
        assert stat.S_ISDIR(a.mode)
        await fails(errno.EEXIST, model.mkdir(ROOT_INODE, b"a", 0o755))
        await write_file(model, a.inode, b"x", b"xx")
        await model.rename(ROOT_INODE, b"a", ROOT_INODE, b"b", 0)
        await fails(errno.ENOENT, model.lookup(ROOT_INODE, b"a"))
        b = await model.lookup(ROOT_INODE, b"b")
        assert b.inode == a.inode
        x = await model.lookup(b.inode, b"x")
        assert await read_all(model, x.inode) == b"xx"
        await fails(errno.ENOTEMPTY, model.rmdir(ROOT_INODE, b"b"))
        await fails(errno.ENOTDIR, model.rmdir(b.inode, b"x"))
        await fails(errno.EISDIR, model.unlink(ROOT_INODE, b"b"))
        await model.unlink(b.inode, b"x")
        await fails(errno.ENOENT, model.unlink(b.inode, b"x"))
        await model.rmdir(ROOT_INODE, b"b")
        ops = await mount.pending()
        assert [type(op) for op in ops] == [
            Mkdir, StagedPut, Move, Delete, Delete
        ]  # fmt: skip
        move = ops[2]
        assert isinstance(move, Move)
        assert (bytes(move.src), bytes(move.dst)) == (b"a", b"b")
        assert [bytes(op.path) for op in ops[3:] if isinstance(op, Delete)] == [b"b/x", b"b"]

    run_model(tmp_path, test)


def test_rename_follows_rename2_for_replaced_targets(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        one = await write_file(model, ROOT_INODE, b"one", b"1")
        await write_file(model, ROOT_INODE, b"two", b"2")
        await fails(
            errno.EEXIST, model.rename(ROOT_INODE, b"one", ROOT_INODE, b"two", RENAME_NOREPLACE)
        )
        await fails(errno.EINVAL, model.rename(ROOT_INODE, b"one", ROOT_INODE, b"two", 2))
        await model.rename(ROOT_INODE, b"one", ROOT_INODE, b"two", 0)  # replaces a file
        assert (await model.lookup(ROOT_INODE, b"two")).inode == one
        assert await read_all(model, one) == b"1"
        await fails(errno.ENOENT, model.lookup(ROOT_INODE, b"one"))
        full = await model.mkdir(ROOT_INODE, b"full", 0o755)
        await write_file(model, full.inode, b"f", b"")
        await model.mkdir(ROOT_INODE, b"empty", 0o755)
        src = await model.mkdir(ROOT_INODE, b"src", 0o755)
        await fails(errno.ENOTEMPTY, model.rename(ROOT_INODE, b"src", ROOT_INODE, b"full", 0))
        await fails(errno.EISDIR, model.rename(ROOT_INODE, b"two", ROOT_INODE, b"empty", 0))
        await fails(errno.ENOTDIR, model.rename(ROOT_INODE, b"src", ROOT_INODE, b"two", 0))
        await fails(errno.EINVAL, model.rename(ROOT_INODE, b"src", src.inode, b"inside", 0))
        await model.rename(ROOT_INODE, b"src", ROOT_INODE, b"empty", 0)  # replaces empty dir
        assert (await model.lookup(ROOT_INODE, b"empty")).inode == src.inode
        assert sorted(await names_of(model, ROOT_INODE)) == [b"empty", b"full", b"two"]
        # A file still open and never journaled moves with its handle; its put, at
        # release, names the new path.
        fh, attr = await model.create(full.inode, b"new", 0o600, RW)
        await model.write(fh, 0, b"moving")
        await model.rename(full.inode, b"new", ROOT_INODE, b"moved", 0)
        await model.write(fh, 6, b"!")
        await model.release(fh)
        last = (await mount.pending())[-1]
        assert isinstance(last, StagedPut) and bytes(last.path) == b"moved"
        assert await read_all(model, attr.inode) == b"moving!"

    run_model(tmp_path, test)


def test_a_folders_link_count_follows_the_folders_in_it(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model

        async def links(inode: int) -> int:
            return (await model.getattr(inode)).nlink

        assert await links(ROOT_INODE) == 1  # not listed yet: unknown, as find(1) reads it
        assert await names_of(model, ROOT_INODE) == []
        assert await links(ROOT_INODE) == 2
        a = await model.mkdir(ROOT_INODE, b"a", 0o755)
        await model.mkdir(ROOT_INODE, b"b", 0o755)
        await write_file(model, ROOT_INODE, b"f", b"")
        assert (await links(ROOT_INODE), await links(a.inode)) == (4, 2)
        await model.mkdir(a.inode, b"inner", 0o755)
        await model.rename(a.inode, b"inner", ROOT_INODE, b"moved", 0)  # out of a
        assert (await links(ROOT_INODE), await links(a.inode)) == (5, 2)
        await model.rename(ROOT_INODE, b"moved", ROOT_INODE, b"b", 0)  # replaces empty b
        assert await links(ROOT_INODE) == 4
        await model.unlink(ROOT_INODE, b"f")
        await model.rmdir(ROOT_INODE, b"b")
        assert await links(ROOT_INODE) == 3

    run_model(tmp_path, test)


def test_an_unlinked_open_file_stays_readable_until_its_last_release(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        inode = await write_file(model, ROOT_INODE, b"doomed", b"still here")
        fh, _ = await model.open(inode, os.O_RDONLY)
        await model.unlink(ROOT_INODE, b"doomed")
        await fails(errno.ENOENT, model.lookup(ROOT_INODE, b"doomed"))
        assert await model.read(fh, 0, 100) == b"still here"
        assert (await model.getattr(inode)).nlink == 0
        staged_before = mount.staging.names()
        assert staged_before  # the content is still staged (the put is pending)
        await model.release(fh)
        model.forget(inode, 1)  # the create's lookup
        await fails(errno.ENOENT, model.getattr(inode))
        # Written, unlinked while open, then released: never journaled as a put.
        fh, attr = await model.create(ROOT_INODE, b"temp", 0o600, RW)
        await model.write(fh, 0, b"scratch")
        await model.unlink(ROOT_INODE, b"temp")
        assert await model.read(fh, 0, 100) == b"scratch"
        await model.release(fh)
        model.forget(attr.inode, 1)
        assert [type(op) for op in await mount.pending()] == [StagedPut, Delete]

    run_model(tmp_path, test)


def test_truncate_up_and_down_and_sizes_over_the_maximum_are_efbig(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        inode = await write_file(model, ROOT_INODE, b"t", b"0123456789")
        attr = await model.setattr(inode, size=4)
        assert attr.size == 4
        assert await read_all(model, inode) == b"0123"
        assert (await model.setattr(inode, size=8)).size == 8
        assert await read_all(model, inode) == b"0123\0\0\0\0"
        assert [type(op) for op in await mount.pending()] == [StagedPut] * 3
        fh, _ = await model.open(inode, os.O_WRONLY | os.O_TRUNC)
        assert (await model.getattr(inode)).size == 0
        await fails(errno.EFBIG, model.write(fh, MAX_FILE_BYTES, b"x"))
        await fails(errno.EFBIG, model.setattr(inode, size=MAX_FILE_BYTES + 1, fh=fh))
        await model.write(fh, 0, b"ab")
        await model.release(fh)
        assert await read_all(model, inode) == b"ab"
        await fails(errno.EISDIR, model.setattr(ROOT_INODE, size=0))

    run_model(tmp_path, test)


def test_a_sparse_truncate_to_1e11_then_unlink_is_fast_and_small(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        fh, attr = await model.create(ROOT_INODE, b"huge", 0o644, RW)
        began = time.monotonic()
        assert (await model.setattr(attr.inode, size=10**11, fh=fh)).size == 10**11
        await model.write(fh, 10**11 - 3, b"end")
        assert await model.read(fh, 10**11 - 5, 10) == b"\0\0end"
        used = sum(
            (mount.staging.directory / name).stat().st_blocks * 512
            for name in mount.staging.names()
        )
        assert used < 1 << 20
        await model.unlink(ROOT_INODE, b"huge")
        await model.release(fh)
        model.forget(attr.inode, 1)
        assert time.monotonic() - began < 2
        assert mount.staging.names() == set()
        assert await mount.pending() == []

    run_model(tmp_path, test)


def test_symlinks_fifos_device_nodes_and_the_refused_kinds(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        link = await model.symlink(ROOT_INODE, b"link", b"../target/path")
        assert stat.S_ISLNK(link.mode) and link.size == len(b"../target/path")
        assert await model.readlink(link.inode) == b"../target/path"
        await fails(errno.EINVAL, model.readlink(ROOT_INODE))
        fifo = await model.mknod(ROOT_INODE, b"pipe", stat.S_IFIFO | 0o600, 0)
        assert stat.S_ISFIFO(fifo.mode) and fifo.mode & 0o777 == 0o600
        sock = await model.mknod(ROOT_INODE, b"sock", stat.S_IFSOCK | 0o600, 0)
        assert stat.S_ISSOCK(sock.mode)
        char = await model.mknod(ROOT_INODE, b"tty", stat.S_IFCHR | 0o620, 0x0501)
        assert stat.S_ISCHR(char.mode) and char.rdev == 0x0501 and char.mode & 0o777 == 0o620
        block = await model.mknod(ROOT_INODE, b"disk", stat.S_IFBLK | 0o600, 0x0802)
        assert stat.S_ISBLK(block.mode) and block.rdev == 0x0802
        assert (await model.getattr(char.inode)).rdev == 0x0501
        await fails(errno.EPERM, model.mknod(ROOT_INODE, b"file", stat.S_IFREG | 0o600, 0))
        await fails(errno.EPERM, model.link(link.inode, ROOT_INODE, b"hard"))
        await fails(errno.EEXIST, model.symlink(ROOT_INODE, b"pipe", b"x"))
        ops = await mount.pending()
        puts = [op for op in ops if isinstance(op, StagedPut)]
        assert [op.kind for op in puts] == [
            EntryKind.SYMLINK, EntryKind.FIFO, EntryKind.SOCKET, EntryKind.CHAR_DEVICE,
            EntryKind.BLOCK_DEVICE,
        ]  # fmt: skip
        assert [op.rdev for op in puts] == [0, 0, 0, 0x0501, 0x0802]

    run_model(tmp_path, test)


def test_xattrs_round_trip_within_the_format_bounds(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        inode = await write_file(model, ROOT_INODE, b"x", b"data")
        await fails(errno.ENODATA, model.getxattr(inode, b"user.none"))
        await model.setxattr(inode, b"user.b", b"2")
        await model.setxattr(inode, b"user.a", b"1")
        assert await model.getxattr(inode, b"user.a") == b"1"
        assert await model.listxattr(inode) == [b"user.a", b"user.b"]
        await model.removexattr(inode, b"user.a")
        await fails(errno.ENODATA, model.removexattr(inode, b"user.a"))
        assert await model.listxattr(inode) == [b"user.b"]
        await fails(errno.ERANGE, model.setxattr(inode, b"user." + b"u" * 251, b""))
        await fails(errno.E2BIG, model.setxattr(inode, b"user.big", b"v" * 65537))
        await model.setxattr(inode, b"user.half", b"v" * (MAX_XATTR_VALUE_BYTES // 2))
        await fails(
            errno.ENOSPC, model.setxattr(inode, b"user.more", b"v" * (MAX_XATTR_VALUE_BYTES // 2))
        )
        setattrs = [op for op in await mount.pending() if isinstance(op, SetAttr)]
        assert setattrs[-1].changes.xattrs == (
            (b"user.b", b"2"), (b"user.half", b"v" * (MAX_XATTR_VALUE_BYTES // 2))
        )  # fmt: skip

    run_model(tmp_path, test)


def test_xattrs_outside_the_user_namespace_answer_eopnotsupp(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        inode = await write_file(model, ROOT_INODE, b"x", b"data")
        await model.setxattr(inode, b"user.kept", b"1")
        for name in (b"security.selinux", b"system.posix_acl_access", b"trusted.x", b"plain"):
            await fails(errno.EOPNOTSUPP, model.getxattr(inode, name))
            await fails(errno.EOPNOTSUPP, model.setxattr(inode, name, b"v"))
            await fails(errno.EOPNOTSUPP, model.removexattr(inode, name))
        assert await model.listxattr(inode) == [b"user.kept"]

    run_model(tmp_path, test)


def test_lookup_counts_and_forget_keep_numbers_unique(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        first = await write_file(model, ROOT_INODE, b"f", b"1")  # create counts one lookup
        assert (await model.lookup(ROOT_INODE, b"f")).inode == first
        await model.unlink(ROOT_INODE, b"f")
        model.forget(first, 1)
        assert (await model.getattr(first)).nlink == 0  # the kernel still holds one
        model.forget(first, 1)
        await fails(errno.ENOENT, model.getattr(first))
        second = await write_file(model, ROOT_INODE, b"f", b"2")
        assert second != first  # never reused
        model.forget(ROOT_INODE, 100)  # the root is never forgotten
        assert (await model.getattr(ROOT_INODE)).inode == ROOT_INODE

    run_model(tmp_path, test)


def test_bad_names_ownership_and_statfs(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        await fails(errno.ENAMETOOLONG, model.lookup(ROOT_INODE, b"n" * 256))
        await fails(errno.ENAMETOOLONG, model.create(ROOT_INODE, b"n" * 256, 0o644, RW))
        await fails(errno.ENAMETOOLONG, model.mkdir(ROOT_INODE, b"n" * 256, 0o755))
        await fails(errno.EINVAL, model.mkdir(ROOT_INODE, b"..", 0o755))
        await fails(errno.EEXIST, model.mkdir(ROOT_INODE, VERSIONS_NAME, 0o755))
        inode = await write_file(model, ROOT_INODE, b"n" * 255, b"")
        attr = await model.setattr(inode, mode=0o600, uid=0, gid=0, mtime_ns=5_000_000_000)
        assert (attr.mode & 0o7777, attr.uid, attr.gid) == (0o600, UID, GID)  # chown ignored
        assert attr.mtime_ns == 5_000_000_000
        last = (await mount.pending())[-1]
        assert isinstance(last, SetAttr) and last.changes.uid is None
        stats = await model.statfs()
        assert (stats.block_size, stats.name_max) == (4096, 255)
        assert 0 < stats.blocks_free <= stats.blocks

    run_model(tmp_path, test)


def test_preserve_ownership_shows_and_stores_ids(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        inode = await write_file(model, ROOT_INODE, b"mine", b"")
        attr = await model.setattr(inode, uid=77, gid=88)
        assert (attr.uid, attr.gid) == (77, 88)
        last = (await mount.pending())[-1]
        assert isinstance(last, SetAttr) and (last.changes.uid, last.changes.gid) == (77, 88)

    run_model(tmp_path, test, preserve_ownership=True)


def test_readdir_pages_through_3000_committed_entries(tmp_path: Path) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            drive = MemoryDrive(NamespaceId(secrets.token_bytes(16)))
            commit_symlinks(drive, [b"big"], 3000)
            async with in_memory(tmp_path, drive) as mount:
                model = mount.model
                directory = await model.lookup(ROOT_INODE, b"big")
                dh = await model.opendir(directory.inode)
                seen: list[bytes] = []
                pages = 0
                start = 0
                while page := await model.readdir(dh, start):
                    pages += 1
                    seen.extend(name for name, _, _ in page)
                    start = page[-1][2]
                    if pages == 2:  # an entry removed mid-listing is skipped
                        await model.unlink(directory.inode, entry_name(2999))
                await model.releasedir(dh)
                assert pages > 1
                assert seen == [b".", b"..", *(entry_name(n) for n in range(2999))]
                inodes = {(await model.lookup(directory.inode, n)).inode for n in seen[2:52]}
                assert len(inodes) == 50

    trio.run(main)


def commit_symlinks(drive: MemoryDrive, directories: list[bytes], count: int) -> None:
    """Commit ``directories`` each holding ``count`` symlinks named by ``entry_name``."""
    edits: list[Op] = []
    for directory in directories:
        folder = DrivePath.from_bytes(directory)
        edits.append(Mkdir(folder, Attrs(mode=0o755, uid=1, gid=1, mtime_ns=1)))
        for number in range(count):
            name = entry_name(number)
            edits.append(Put(folder.child(name), _symlink(name, b"target")))
    drive.commit(edits)


def entry_name(number: int) -> bytes:
    return f"entry-{number:05d}".encode()


def _symlink(name: bytes, target: bytes) -> FileEntry:
    return FileEntry(
        name=name, kind=EntryKind.SYMLINK, mode=0o777, uid=1, gid=1, size=len(target),
        mtime_ns=1, target=target,
    )  # fmt: skip


def test_version_names_are_utc_seconds_with_suffixes_for_shared_seconds() -> None:
    second = 1_795_000_000 * 1_000_000_000
    assert version_names([second, second + 5, second + 1_000_000_000, second + 7]) == [
        "2026-11-18T11-06-40Z",
        "2026-11-18T11-06-40Z.2",
        "2026-11-18T11-06-41Z",
        "2026-11-18T11-06-40Z.3",
    ]


def test_fsync_journals_at_once_and_later_writes_copy_on_write(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        fh, attr = await model.create(ROOT_INODE, b"db", 0o600, RW)
        await model.write(fh, 0, b"page one")
        await model.fsync(fh, False)
        first = await mount.pending()
        assert len(first) == 1 and isinstance(first[0], StagedPut)
        frozen = first[0].staged
        assert frozen is not None
        await model.write(fh, 5, b"two!")
        assert await model.read(fh, 0, 100) == b"page two!"
        await model.fsync(fh, True)  # fsync with nothing new journals nothing more
        await model.fsync(fh, True)
        await model.release(fh)
        entries = await mount.entries()
        assert len(entries) == 2 and isinstance(entries[1].op, StagedPut)
        assert entries[1].base_seq == entries[0].seq and entries[1].op.staged != frozen
        # The frozen stage of the first put is untouched: the uploader may still send it.
        with mount.staging.open(frozen) as staged:
            assert staged.read_at(0, 100) == b"page one"
        assert await read_all(model, attr.inode) == b"page two!"

    run_model(tmp_path, test)


def test_fsync_after_a_close_makes_the_closed_content_and_its_entry_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        fh, _ = await model.create(ROOT_INODE, b"log", 0o600, RW)
        await model.write(fh, 0, b"closed before the fsync")  # buffered in memory
        await model.flush(fh)  # a close(2) of a dup: journaled, not fsynced
        (put,) = await mount.pending()
        assert isinstance(put, StagedPut) and put.staged is not None
        synced: list[str] = []
        monkeypatch.setattr(mount.staging, "fsync", synced.append)
        monkeypatch.setattr(mount.journal, "sync", lambda: synced.append("journal"))
        await model.fsync(fh, False)  # nothing new to journal: sync what the close did
        assert synced == [put.staged, "journal"]
        with mount.staging.open(put.staged) as staged:  # spilled at the close
            assert staged.read_at(0, 100) == b"closed before the fsync"
        await model.release(fh)

    run_model(tmp_path, test)


def test_a_close_journals_the_put_before_the_release_arrives(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        fh, attr = await model.create(ROOT_INODE, b"note", 0o644, RW)
        await model.write(fh, 0, b"written")
        await model.flush(fh)  # close(2) returns after this; RELEASE comes later
        ops = await mount.pending()
        assert len(ops) == 1 and isinstance(ops[0], StagedPut)
        await model.release(fh)
        assert len(await mount.pending()) == 1  # nothing new to journal at the release
        reader, _ = await model.open(attr.inode, os.O_RDONLY)
        await model.flush(reader)  # a read-only close journals nothing
        await model.release(reader)
        assert len(await mount.pending()) == 1
        assert await read_all(model, attr.inode) == b"written"

    run_model(tmp_path, test)


def test_the_roots_attributes_change_in_memory_only(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        attr = await model.setattr(ROOT_INODE, mode=0o700, mtime_ns=7)
        assert (attr.mode & 0o7777, attr.mtime_ns) == (0o700, 7)
        await fails(errno.EPERM, model.setxattr(ROOT_INODE, b"user.x", b"1"))
        assert await mount.pending() == []

    run_model(tmp_path, test)


def test_a_new_mount_shows_the_changes_still_in_the_journal(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            remote, namespace = await new_account(server.url)
            async with remote:
                async with mounted(remote, namespace, tmp_path) as mount:  # no uploader
                    model = mount.model
                    docs = await model.mkdir(ROOT_INODE, b"docs", 0o755)
                    await write_file(model, docs.inode, b"a", b"alpha")
                    await write_file(model, docs.inode, b"gone", b"")
                    await model.unlink(docs.inode, b"gone")
                    await model.symlink(docs.inode, b"l", b"a")
                    await model.setxattr(docs.inode, b"user.k", b"v")
                    await model.rename(ROOT_INODE, b"docs", ROOT_INODE, b"papers", 0)
                    await write_file(model, ROOT_INODE, b"b", b"beta")
                    fh, _ = await model.open((await model.lookup(ROOT_INODE, b"b")).inode, RW)
                    await model.write(fh, 0, b"B")
                    await model.release(fh)
                async with mounted(remote, namespace, tmp_path, upload=True) as mount:
                    model = mount.model
                    assert sorted(await names_of(model, ROOT_INODE)) == [b"b", b"papers"]
                    papers = await model.lookup(ROOT_INODE, b"papers")
                    assert await model.listxattr(papers.inode) == [b"user.k"]
                    assert sorted(await names_of(model, papers.inode)) == [b"a", b"l"]
                    a = await model.lookup(papers.inode, b"a")
                    assert await read_all(model, a.inode) == b"alpha"
                    link = await model.lookup(papers.inode, b"l")
                    assert await model.readlink(link.inode) == b"a"
                    b = await model.lookup(ROOT_INODE, b"b")
                    assert await read_all(model, b.inode) == b"Beta"
                    await mount.uploader.wait_idle()
                    assert mount.uploader.last_error is None
                    assert await read_all(model, b.inode) == b"Beta"  # pinned while shown
                async with mounted(remote, namespace, tmp_path / "other") as mount:
                    model = mount.model
                    assert sorted(await names_of(model, ROOT_INODE)) == [b"b", b"papers"]
                    b = await model.lookup(ROOT_INODE, b"b")
                    assert await read_all(model, b.inode) == b"Beta"

    trio.run(main)


def test_a_forgotten_unchanged_directory_drops_its_listing(tmp_path: Path) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            drive = MemoryDrive(NamespaceId(secrets.token_bytes(16)))
            commit_symlinks(drive, [b"d", b"d/sub", b"keep"], 20)
            async with in_memory(tmp_path, drive) as mount:
                model = mount.model
                d = await model.lookup(ROOT_INODE, b"d")
                sub = await model.lookup(d.inode, b"sub")
                listed = await names_of(model, sub.inode)  # one lookup per entry
                assert len(listed) == 20
                inodes = {(await model.lookup(sub.inode, n)).inode for n in listed}
                keep = await model.lookup(ROOT_INODE, b"keep")
                await model.unlink(keep.inode, entry_name(0))  # changed: stays
                before = model.inode_count()
                for inode in inodes:
                    model.forget(inode, 2)
                model.forget(sub.inode, 1)
                model.forget(d.inode, 1)
                model.forget(keep.inode, 1)
                assert model.inode_count() == before - len(inodes) - 3 == 1  # the root
                await fails(errno.ENOENT, model.getattr(sub.inode))
                # Looked up again: fetched again, under new numbers.
                d2 = await model.lookup(ROOT_INODE, b"d")
                sub2 = await model.lookup(d2.inode, b"sub")
                assert d2.inode == d.inode  # the same node, still in the root's listing
                assert sub2.inode != sub.inode  # fetched again: a new node
                again = await model.lookup(sub2.inode, entry_name(3))
                assert again.inode not in inodes
                assert await model.readlink(again.inode) == b"target"
                keep2 = await model.lookup(ROOT_INODE, b"keep")
                assert keep2.inode == keep.inode
                assert len(await names_of(model, keep2.inode)) == 19

    trio.run(main)


def test_rewriting_a_journaled_sparse_file_copies_only_its_data(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        inode = await write_file(model, ROOT_INODE, b"sparse", b"head")
        began = time.monotonic()
        await model.setattr(inode, size=10**11)  # closed: journaled as a put at once
        fh, _ = await model.open(inode, os.O_WRONLY)
        await model.write(fh, 10**11 - 4, b"tail")
        await model.release(fh)
        assert time.monotonic() - began < 2
        ops = await mount.pending()
        assert [type(op) for op in ops] == [StagedPut] * 3
        last = ops[-1]
        assert isinstance(last, StagedPut) and last.staged is not None
        staged = mount.staging.path_of(last.staged).stat()
        assert staged.st_size == 10**11 and staged.st_blocks * 512 < 1 << 20
        fh, _ = await model.open(inode, os.O_RDONLY)
        assert await model.read(fh, 0, 6) == b"head\0\0"
        assert await model.read(fh, 10**11 - 6, 100) == b"\0\0tail"
        await model.release(fh)

    run_model(tmp_path, test)


def test_concurrent_requests_leave_a_consistent_view_and_journal(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        work = await model.mkdir(ROOT_INODE, b"work", 0o755)

        async def writer(number: int) -> None:
            name = f"w{number:02d}".encode()
            fh, _ = await model.create(work.inode, name, 0o644, RW)
            for offset in range(0, 4000, 1000):
                await model.write(fh, offset, bytes([number]) * 1000)
                await trio.sleep(0)
            await model.release(fh)

        async with trio.open_nursery() as nursery:
            for number in range(20):
                nursery.start_soon(writer, number)
            await trio.sleep(0)
            nursery.start_soon(model.rename, ROOT_INODE, b"work", ROOT_INODE, b"done", 0)
        done = await model.lookup(ROOT_INODE, b"done")
        assert len(await names_of(model, done.inode)) == 20
        for number in range(20):
            inode = (await model.lookup(done.inode, f"w{number:02d}".encode())).inode
            assert await read_all(model, inode) == bytes([number]) * 4000
        ops = await mount.pending()
        assert sum(isinstance(op, StagedPut) for op in ops) == 20
        assert sum(isinstance(op, Move) for op in ops) == 1

    run_model(tmp_path, test)


def test_a_listing_starts_with_dot_and_dotdot_which_count_no_lookup(tmp_path: Path) -> None:
    async def test(mount: ModelMount) -> None:
        model = mount.model
        folder = await model.mkdir(ROOT_INODE, b"folder", 0o755)
        await write_file(model, folder.inode, b"a", b"x")
        root_lookups = model._node(ROOT_INODE).lookups
        dh = await model.opendir(folder.inode)
        page = await model.readdir(dh, 0)
        assert [(name, attr.inode, offset) for name, attr, offset in page[:2]] == [
            (b".", folder.inode, 1),
            (b"..", ROOT_INODE, 2),
        ]
        assert [name for name, _, _ in page[2:]] == [b"a"]
        # A listing resumed after `.` gives `..` and the rest, once each.
        assert [name for name, _, _ in await model.readdir(dh, 1)] == [b"..", b"a"]
        assert await model.readdir(dh, page[-1][2]) == []
        await model.releasedir(dh)
        # The kernel links no entry for `.` and `..` and will never forget them: the
        # folder keeps the one lookup its mkdir gave it, the root none.
        assert model._node(folder.inode).lookups == 1
        assert model._node(ROOT_INODE).lookups == root_lookups

    run_model(tmp_path, test)


def test_a_slow_tree_fetch_for_one_change_holds_up_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename into a folder whose listing is not in memory fetches it (here: a fetch
    held until the test lets it go, as from a slow server) without the model's lock: a
    mkdir elsewhere finishes meanwhile, and the rename completes once the listing came."""

    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            drive = MemoryDrive(NamespaceId(secrets.token_bytes(16)))
            commit_symlinks(drive, [b"far"], 3)
            async with in_memory(tmp_path, drive) as mount:
                model = mount.model
                far = await model.lookup(ROOT_INODE, b"far")  # its listing: not fetched
                await write_file(model, ROOT_INODE, b"moving", b"content")
                fetching, release = trio.Event(), trio.Event()
                real_tree = drive.tree

                async def slow_tree(tree_id: TreeId) -> Tree:
                    fetching.set()
                    await release.wait()
                    return await real_tree(tree_id)

                monkeypatch.setattr(drive, "tree", slow_tree)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(model.rename, ROOT_INODE, b"moving", far.inode, b"m", 0)
                    await fetching.wait()
                    with trio.fail_after(5):  # held behind the fetch, it would hang
                        await model.mkdir(ROOT_INODE, b"meanwhile", 0o755)
                    release.set()
                assert b"m" in await names_of(model, far.inode)
                assert b"moving" not in await names_of(model, ROOT_INODE)
                kinds = [type(op) for op in await mount.pending()]
                assert kinds[-2:] == [Mkdir, Move]

    trio.run(main)


def test_an_fsync_stalled_on_the_disk_holds_up_no_other_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync(2) of a written file journals its put under the model's lock and flushes to
    disk after it: with the disk flush held (a fault-injecting os.fsync), a mkdir and a
    create finish, and the fsync returns once the flush does, its put journaled."""
    flushing, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def held_fsync(fd: int) -> None:
        if not release.is_set():
            flushing.set()
            release.wait(TIMEOUT_S)
        real_fsync(fd)

    async def test(mount: ModelMount) -> None:
        model = mount.model
        fh, attr = await model.create(ROOT_INODE, b"big.bin", 0o644, os.O_WRONLY)
        await model.write(fh, 0, b"x" * (2 << 20))
        monkeypatch.setattr(os, "fsync", held_fsync)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(model.fsync, fh, False)
            await trio.to_thread.run_sync(flushing.wait, TIMEOUT_S)
            with trio.fail_after(5):  # behind the flush, these would wait for it
                await model.mkdir(ROOT_INODE, b"during-fsync", 0o755)
                other = await write_file(model, ROOT_INODE, b"small", b"y")
            release.set()
        await model.release(fh)
        assert other != attr.inode
        puts = [op for op in await mount.pending() if isinstance(op, StagedPut)]
        assert [bytes(op.path) for op in puts] == [b"big.bin", b"small"]

    run_model(tmp_path, test)
