"""The syncer and the model following another device, kernel-free, against a real server
process: two devices of one account (two sessions, two homes), each a model with its
fetcher, uploader and syncer running.

Pinned here: the invalidations a remote change queues name exactly what changed (a
file's inode with its pages; a renamed or deleted name in its directory); a file this
device is writing is never overwritten by a remote change, and once it is closed the
server's answer (a conflicted copy beside the other version) shows, nothing lost; this
device's own put, echoed back by the head, keeps its staged content (no invalidation of
pages, nothing fetched again); and a mount started with the server unreachable shows the
drive as this device last saw it and journals new changes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from boxfs.remote import Remote
from boxfs.view import ROOT_INODE, FileSystemModel, FsError, Invalidation
from boxfs.view.syncer import Syncer
from tests.boxfs.test_view import (
    PASSWORD,
    Mount,
    mounted,
    names_of,
    new_account,
    read_all,
    write_file,
)
from tests.integration.server_process import ServerProcess, free_port

TIMEOUT_S = 40


@asynccontextmanager
async def syncing(mount: Mount) -> AsyncIterator[Syncer]:
    """The mount's syncer running (fast rechecks), wired to its uploader."""
    syncer = Syncer(
        mount.model,
        mount.remote,
        mount.namespace,
        uploads=mount.uploader.answers,
        recheck_every_s=0.1,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(syncer.run)
        yield syncer
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def two_devices(url: str, tmp_path: Path) -> AsyncIterator[tuple[Mount, Mount]]:
    """A new account on two devices, each a model with its uploader and syncer running."""
    remote_a, namespace = await new_account(url)
    remote_b = await second_device(url, remote_a)
    async with (
        remote_a,
        remote_b,
        mounted(remote_a, namespace, tmp_path / "a", upload=True) as a,
        mounted(remote_b, namespace, tmp_path / "b", upload=True) as b,
        syncing(a),
        syncing(b),
    ):
        yield a, b


async def second_device(url: str, first: Remote) -> Remote:
    remote = Remote(url)
    username = (await first.whoami()).username
    await remote.login(username, PASSWORD, "phone")
    return remote


async def until(check: Callable[[], object], what: str, timeout_s: float = 15.0) -> None:
    with trio.move_on_after(timeout_s):
        while not check():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"not after {timeout_s} s: {what}")


async def child_inode(model: FileSystemModel, parent: int, name: bytes) -> int | None:
    try:
        return (await model.lookup(parent, name)).inode
    except FsError as exc:
        assert exc.errno == errno.ENOENT, exc
        return None


async def content_of(model: FileSystemModel, parent: int, name: bytes) -> bytes | None:
    inode = await child_inode(model, parent, name)
    return None if inode is None else await read_all(model, inode)


async def eventually_content(
    model: FileSystemModel, parent: int, name: bytes, expected: bytes | None, what: str
) -> None:
    with trio.move_on_after(15.0):
        while await content_of(model, parent, name) != expected:
            await trio.sleep(0.02)
        return
    raise AssertionError(f"{what}: {await content_of(model, parent, name)!r} != {expected!r}")


def test_invalidations_name_exactly_what_changed(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with two_devices(server_process.url, tmp_path) as (a, b):
                docs = await a.model.mkdir(ROOT_INODE, b"docs", 0o755)
                await write_file(a.model, docs.inode, b"one.txt", b"one\n")
                await write_file(a.model, docs.inode, b"two.txt", b"two\n")
                await a.uploader.wait_idle()
                b_docs = await wait_lookup(b.model, ROOT_INODE, b"docs")
                await eventually_content(b.model, b_docs, b"one.txt", b"one\n", "one.txt on B")
                one = await child_inode(b.model, b_docs, b"one.txt")
                two = await child_inode(b.model, b_docs, b"two.txt")
                assert one is not None and two is not None
                b.model.take_invalidations()

                inode = await child_inode(a.model, docs.inode, b"one.txt")
                assert inode is not None
                fh, _ = await a.model.open(inode, os.O_WRONLY | os.O_TRUNC)
                await a.model.write(fh, 0, b"one, edited\n")
                await a.model.release(fh)
                await eventually_content(b.model, b_docs, b"one.txt", b"one, edited\n", "edit")
                changed = b.model.take_invalidations()
                assert Invalidation(one, None, data=True) in changed
                assert all(item.inode != two for item in changed)  # untouched: left alone
                assert await child_inode(b.model, b_docs, b"one.txt") == one  # same inode

                # The next open after a replaced content drops the kernel's pages; the one
                # after that keeps them.
                fh, _ = await a.model.open(inode, os.O_WRONLY | os.O_TRUNC)
                await a.model.write(fh, 0, b"one, edited again\n")
                await a.model.release(fh)
                with trio.fail_after(15.0):
                    while Invalidation(one, None, data=True) not in b.model.take_invalidations():
                        await trio.sleep(0.02)
                keeps = []
                for _ in range(2):
                    fh, keep_cache = await b.model.open(one, os.O_RDONLY)
                    await b.model.release(fh)
                    keeps.append(keep_cache)
                assert keeps == [False, True]

                await a.model.rename(docs.inode, b"two.txt", docs.inode, b"deux.txt", 0)
                await wait_names(b.model, b_docs, {b"one.txt", b"deux.txt"})
                changed = b.model.take_invalidations()
                assert Invalidation(b_docs, b"two.txt") in changed

    trio.run(main)


async def wait_lookup(model: FileSystemModel, parent: int, name: bytes) -> int:
    with trio.move_on_after(15.0):
        while (inode := await child_inode(model, parent, name)) is None:
            await trio.sleep(0.02)
        return inode
    raise AssertionError(f"{name!r} never appeared")


async def wait_names(model: FileSystemModel, inode: int, names: set[bytes]) -> None:
    with trio.move_on_after(15.0):
        while set(await names_of(model, inode)) != names:
            await trio.sleep(0.02)
        return
    raise AssertionError(f"{sorted(await names_of(model, inode))} != {sorted(names)}")


def test_a_file_being_written_is_never_overwritten_and_the_conflict_shows_after_close(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with two_devices(server_process.url, tmp_path) as (a, b):
                await write_file(a.model, ROOT_INODE, b"plan.bin", b"\x00original\x00")
                await a.uploader.wait_idle()
                await eventually_content(
                    b.model, ROOT_INODE, b"plan.bin", b"\x00original\x00", "the file on B"
                )
                b_inode = await child_inode(b.model, ROOT_INODE, b"plan.bin")
                assert b_inode is not None
                fh, _ = await b.model.open(b_inode, os.O_WRONLY | os.O_TRUNC)
                await b.model.write(fh, 0, b"\x00B's version\x00")

                a_inode = await child_inode(a.model, ROOT_INODE, b"plan.bin")
                assert a_inode is not None
                a_fh, _ = await a.model.open(a_inode, os.O_WRONLY | os.O_TRUNC)
                await a.model.write(a_fh, 0, b"\x00A's version\x00")
                await a.model.release(a_fh)
                await a.uploader.wait_idle()
                await until(lambda: b.model.head == a.model.head, "B saw A's head")
                # B is still writing: its view keeps B's bytes.
                assert await b.model.read(fh, 0, 100) == b"\x00B's version\x00"
                await b.model.release(fh)
                await b.uploader.wait_idle()

                def both_versions(names: list[bytes]) -> bool:
                    return len(names) == 2 and b"plan.bin" in names

                for device in (a, b):
                    with trio.move_on_after(15.0):
                        while not both_versions(await names_of(device.model, ROOT_INODE)):
                            await trio.sleep(0.02)
                    names = await names_of(device.model, ROOT_INODE)
                    assert both_versions(names), names
                    copy = next(name for name in names if name != b"plan.bin")
                    assert b"conflicted copy" in copy
                    versions = {
                        await content_of(device.model, ROOT_INODE, b"plan.bin"),
                        await content_of(device.model, ROOT_INODE, copy),
                    }
                    assert versions == {b"\x00A's version\x00", b"\x00B's version\x00"}

    trio.run(main)


def test_an_echo_of_this_devices_own_put_keeps_its_staged_content(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            remote, namespace = await new_account(server_process.url)
            async with (
                remote,
                mounted(remote, namespace, tmp_path / "a", upload=True) as a,
                syncing(a),
            ):
                inode = await write_file(a.model, ROOT_INODE, b"mine.bin", os.urandom(500_000))
                await a.uploader.wait_idle()
                await until(lambda: a.model.head is not None and not a.model.deferred_count, "echo")
                assert not any(item.data for item in a.model.take_invalidations())
                assert a.fetcher.stats().chunks_downloaded == 0
                assert await child_inode(a.model, ROOT_INODE, b"mine.bin") == inode

    trio.run(main)


def test_an_offline_start_shows_the_last_seen_view_and_journals_changes(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            remote, namespace = await new_account(server_process.url)
            async with remote:
                async with mounted(remote, namespace, tmp_path / "a", upload=True) as a:
                    docs = await a.model.mkdir(ROOT_INODE, b"docs", 0o755)
                    await write_file(a.model, docs.inode, b"seen.txt", b"seen before\n")
                    await a.uploader.wait_idle()
                async with mounted(remote, namespace, tmp_path / "a", upload=True) as a:
                    # A fresh start lists the drive (so its trees are cached).
                    docs_inode = await wait_lookup(a.model, ROOT_INODE, b"docs")
                    assert await content_of(a.model, docs_inode, b"seen.txt") == b"seen before\n"
                unreachable = Remote(f"http://127.0.0.1:{free_port()}", remote.token)
                async with (
                    unreachable,
                    mounted(unreachable, namespace, tmp_path / "a", request_timeout_s=1.0) as a,
                ):
                    assert a.model.started_offline
                    docs_inode = await wait_lookup(a.model, ROOT_INODE, b"docs")
                    assert await names_of(a.model, docs_inode) == [b"seen.txt"]
                    assert await content_of(a.model, docs_inode, b"seen.txt") == b"seen before\n"
                    await write_file(a.model, docs_inode, b"offline.txt", b"made offline\n")
                    assert len(await a.pending()) == 1

    trio.run(main)


def test_a_recheck_uses_the_shown_heads_tree_even_when_the_directory_is_held_back(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    """A name held back while pending (``x``), confirmed by a head at which its directory
    was itself held back (a chmod of it pending): the recheck must look ``x`` up in that
    head's tree, not in the older tree the held-back directory still names (where ``x``
    is missing: the file used to vanish from the view)."""

    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            remote, namespace = await new_account(server_process.url)
            async with remote, mounted(remote, namespace, tmp_path / "a") as a:
                model, uploader = a.model, a.uploader

                async def send_and_show() -> None:
                    await uploader._drain()  # one round, in the test's order
                    head = await remote.head(namespace)
                    assert head.head is not None
                    await model.apply_head(head.head, head.sequence)

                d = await model.mkdir(ROOT_INODE, b"d", 0o755)
                await send_and_show()
                await write_file(model, d.inode, b"z", b"z\n")
                await uploader._drain()
                head_a = await remote.head(namespace)
                await write_file(model, d.inode, b"x", b"x\n")  # pending while head_a shows
                assert head_a.head is not None
                await model.apply_head(head_a.head, head_a.sequence)
                assert model.deferred_count == 1  # x, held back
                await uploader._drain()  # x confirmed
                await model.setattr(d.inode, mode=0o700)  # d itself now pending
                head_b = await remote.head(namespace)
                assert head_b.head is not None
                await model.apply_head(head_b.head, head_b.sequence)  # d held back
                await model.recheck()
                assert sorted(await names_of(model, d.inode)) == [b"x", b"z"]
                assert await content_of(model, d.inode, b"x") == b"x\n"

    trio.run(main)
