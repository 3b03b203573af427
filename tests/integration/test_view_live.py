"""The filesystem model against a real server process, with its fetcher and uploader
running: closed files reach the server and read back on another device, a directory
renamed while its files are still uploading lands whole, ``.versions`` holds the old
content after an edit and refuses writes, a corrupt chunk breaks only its file, and an
unreachable server fails an uncached read with EIO in bounded time."""

from __future__ import annotations

import errno
import os
import random
import secrets
import time
from pathlib import Path

import blake3
import pytest
import trio

from boxfs.remote import Remote
from boxfs.view import ROOT_INODE, VERSIONS_NAME, FileSystemModel, FsError
from store.ids import NamespaceId
from tests.boxfs.test_view import PASSWORD, fails, mounted, names_of, read_all, write_file
from tests.integration.drive_api import head_entries
from tests.integration.server_process import ServerProcess
from tests.integration.test_fetcher_live import FaultyRemote

TIMEOUT_S = 40
MIB = 1 << 20


async def login(remote: Remote) -> NamespaceId:
    user = f"live{secrets.token_hex(5)}"
    await remote.register(user, f"{user}@example.com", PASSWORD)
    await remote.login(user, PASSWORD, "laptop")
    return (await remote.home()).namespace_id


async def read_range(model: FileSystemModel, inode: int, size: int) -> tuple[bytes, bool]:
    fh, keep_cache = await model.open(inode, os.O_RDONLY)
    try:
        pieces = [await model.read(fh, offset, MIB) for offset in range(0, size, MIB)]
    finally:
        await model.release(fh)
    return b"".join(pieces), keep_cache


def digest(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def test_closed_files_reach_the_server_and_read_back_on_another_device(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    content = random.Random(1).randbytes(3 * MIB + 12345)

    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with Remote(server_process.url) as remote:
                namespace = await login(remote)
                async with mounted(remote, namespace, tmp_path / "a", upload=True) as mount:
                    model = mount.model
                    docs = await model.mkdir(ROOT_INODE, b"docs", 0o750)
                    await write_file(model, docs.inode, b"big.bin", content)
                    await model.symlink(docs.inode, b"link", b"big.bin")
                    await mount.uploader.wait_idle()
                files = await head_entries(remote, namespace)
                assert set(files) == {b"docs", b"docs/big.bin", b"docs/link"}
                assert files[b"docs"].mode == 0o750
                big = files[b"docs/big.bin"]
                assert big.content_hash is not None and bytes(big.content_hash) == digest(content)
                assert files[b"docs/link"].target == b"big.bin"
                async with mounted(remote, namespace, tmp_path / "b", upload=True) as mount:
                    model = mount.model
                    docs = await model.lookup(ROOT_INODE, b"docs")
                    inode = (await model.lookup(docs.inode, b"big.bin")).inode
                    assert (await model.getattr(inode)).size == len(content)
                    data, keep_cache = await read_range(model, inode, len(content))
                    assert data == content
                    assert keep_cache  # nothing but the kernel's own writes changed it
                    # An edit copies the committed file into a stage, on top of its base.
                    fh, keep_cache = await model.open(inode, os.O_RDWR)
                    assert keep_cache  # the kernel keeps its pages right across writes
                    await model.write(fh, 10, b"PATCH")
                    await model.release(fh)
                    edited = content[:10] + b"PATCH" + content[15:]
                    data, keep_cache = await read_range(model, inode, len(edited))
                    assert data == edited and keep_cache
                    await mount.uploader.wait_idle()
                    assert mount.uploader.last_error is None
                files = await head_entries(remote, namespace)
                edited_hash = files[b"docs/big.bin"].content_hash
                assert edited_hash is not None and bytes(edited_hash) == digest(edited)

    trio.run(main)


def test_a_directory_renamed_while_its_files_upload_lands_whole(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with Remote(server_process.url) as remote:
                namespace = await login(remote)
                async with mounted(remote, namespace, tmp_path, upload=True) as mount:
                    model = mount.model
                    src = await model.mkdir(ROOT_INODE, b"src", 0o755)
                    for number in range(60):
                        await write_file(
                            model, src.inode, f"f{number:02d}".encode(), b"%d" % number
                        )
                    await model.rename(ROOT_INODE, b"src", ROOT_INODE, b"dst", 0)
                    await mount.uploader.wait_idle()
                    assert await names_of(model, ROOT_INODE) == [b"dst"]
                files = await head_entries(remote, namespace)
                assert sorted(files) == [b"dst", *(f"dst/f{n:02d}".encode() for n in range(60))]

    trio.run(main)


def test_versions_hold_old_content_are_hidden_from_the_root_listing_and_read_only(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with Remote(server_process.url) as remote:
                namespace = await login(remote)
                async with mounted(remote, namespace, tmp_path, upload=True) as mount:
                    model = mount.model
                    inode = await write_file(model, ROOT_INODE, b"notes.txt", b"first draft")
                    await mount.uploader.wait_idle()
                    await trio.sleep(1.05)  # the next commit gets its own second
                    fh, _ = await model.open(inode, os.O_WRONLY | os.O_TRUNC)
                    await model.write(fh, 0, b"second draft")
                    await model.release(fh)
                    await mount.uploader.wait_idle()
                    assert await names_of(model, ROOT_INODE) == [b"notes.txt"]
                    versions = await model.lookup(ROOT_INODE, VERSIONS_NAME)
                    names = await names_of(model, versions.inode)
                    assert len(names) == 2 and names == sorted(names, reverse=True)
                    for name in names:
                        time.strptime(name.decode(), "%Y-%m-%dT%H-%M-%SZ")
                    contents = []
                    for name in names:
                        snapshot = await model.lookup(versions.inode, name)
                        old = await model.lookup(snapshot.inode, b"notes.txt")
                        contents.append(await read_all(model, old.inode))
                    assert contents == [b"second draft", b"first draft"]
                    assert await read_all(model, inode) == b"second draft"
                    # Read-only, all the way down.
                    snapshot = await model.lookup(versions.inode, names[1])
                    old = await model.lookup(snapshot.inode, b"notes.txt")
                    assert old.mode & 0o222 == 0
                    for call in (
                        model.open(old.inode, os.O_WRONLY),
                        model.create(snapshot.inode, b"new", 0o644, os.O_RDWR),
                        model.mkdir(snapshot.inode, b"dir", 0o755),
                        model.mkdir(versions.inode, b"dir", 0o755),
                        model.unlink(snapshot.inode, b"notes.txt"),
                        model.rmdir(versions.inode, names[0]),
                        model.rename(snapshot.inode, b"notes.txt", snapshot.inode, b"n", 0),
                        model.rename(ROOT_INODE, b"notes.txt", snapshot.inode, b"n", 0),
                        model.rename(ROOT_INODE, VERSIONS_NAME, ROOT_INODE, b"v", 0),
                        model.setattr(old.inode, mode=0o777),
                        model.setattr(old.inode, size=0),
                        model.setxattr(old.inode, b"user.x", b"1"),
                        model.symlink(snapshot.inode, b"l", b"t"),
                    ):
                        await fails(errno.EROFS, call)

    trio.run(main)


def test_a_corrupt_chunk_breaks_only_its_file(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with FaultyRemote(server_process.url) as remote:
                namespace = await login(remote)
                async with mounted(remote, namespace, tmp_path / "a", upload=True) as mount:
                    await write_file(mount.model, ROOT_INODE, b"bad", b"bad " * 1000)
                    await write_file(mount.model, ROOT_INODE, b"good", b"good " * 1000)
                    await mount.uploader.wait_idle()
                files = await head_entries(remote, namespace)
                remote.corrupt = {ref.chunk_id for ref in files[b"bad"].chunks}
                async with mounted(remote, namespace, tmp_path / "b") as mount:
                    model = mount.model
                    bad = (await model.lookup(ROOT_INODE, b"bad")).inode
                    good = (await model.lookup(ROOT_INODE, b"good")).inode
                    await fails(errno.EIO, read_all(model, bad))
                    await fails(errno.EIO, model.open(bad, os.O_RDONLY))  # marked broken
                    assert await read_all(model, good) == b"good " * 1000

    trio.run(main)


def test_an_uncached_read_with_the_server_gone_fails_with_eio_in_bounded_time(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with Remote(server_process.url) as remote:
                namespace = await login(remote)
                async with mounted(remote, namespace, tmp_path / "a", upload=True) as mount:
                    await write_file(mount.model, ROOT_INODE, b"far", b"away" * 100)
                    await mount.uploader.wait_idle()
                async with mounted(
                    remote, namespace, tmp_path / "b", request_timeout_s=1.0
                ) as mount:
                    inode = (await mount.model.lookup(ROOT_INODE, b"far")).inode
                    await trio.to_thread.run_sync(server_process.stop)
                    began = time.monotonic()
                    with pytest.raises(FsError) as info:
                        await read_all(mount.model, inode)
                    assert info.value.errno in (errno.EIO, errno.ENOTCONN)
                    assert time.monotonic() - began < 10

    trio.run(main)
