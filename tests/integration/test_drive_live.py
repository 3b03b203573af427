"""Over a real server process: the headless drive the CLI uses (``boxfs/drive.py``) reads
the head through the mount's fetcher, whole files exactly, from a mount's cache opened
read-only without downloading what it holds and without writing to it (and without it
when it is damaged), and refuses content whose hash is not the entry's before handing
over its last piece."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import trio

from boxfs.cli.drive import opened_drive
from boxfs.drive import READ_PIECE_BYTES, open_drive
from boxfs.fetcher import Fetcher
from boxfs.home import Home
from store.cache import ObjectCache, ObjectKind
from store.errors import IntegrityError, NotFoundError
from store.ids import ContentHash
from store.paths import DrivePath
from tests.integration.server_process import ServerProcess
from tests.integration.test_fetcher_live import (
    RANDOM_NAME,
    SUBDIR,
    TEXT_NAME,
    CountingRemote,
    MiB,
    cached_object,
    make_drive,
    running,
)

LIMIT_S = 50


def test_the_drive_finds_entries_and_reads_whole_files_without_a_cache(
    server_process: ServerProcess,
) -> None:
    async def main() -> None:
        with trio.fail_after(LIMIT_S):
            await check()

    async def check() -> None:
        async with CountingRemote(server_process.url) as remote:
            made = await make_drive(remote)
            async with open_drive(remote, trio.CapacityLimiter(2)) as drive:
                assert drive.namespace_id == made.home and drive.root == made.root
                entry = await drive.lookup(DrivePath.from_bytes(RANDOM_NAME))
                assert entry == made.entries[RANDOM_NAME]
                assert await drive.lookup(DrivePath.from_bytes(b"missing/x")) is None
                folder = await drive.lookup(DrivePath.from_bytes(SUBDIR))
                assert folder is not None and folder.tree_id is not None
                assert list(await drive.subtree(folder.tree_id)) == [TEXT_NAME]
                pieces: list[bytes] = []
                progress: list[int] = []
                await drive.read(entry, pieces.append, progress.append)
        assert b"".join(pieces) == made.contents[RANDOM_NAME]
        assert max(len(piece) for piece in pieces) <= READ_PIECE_BYTES
        assert sum(progress) == entry.size and len(pieces) > 1
        assert len(set(remote.downloaded)) == len(entry.chunks)

    trio.run(main)


def test_content_whose_hash_is_not_the_entry_s_is_refused_before_its_last_piece(
    server_process: ServerProcess,
) -> None:
    async def main() -> None:
        async with CountingRemote(server_process.url) as remote:
            made = await make_drive(remote)
            entry = made.entries[RANDOM_NAME]
            wrong = dataclasses.replace(entry, content_hash=ContentHash(bytes(32)))
            received: list[bytes] = []
            async with open_drive(remote, trio.CapacityLimiter(2)) as drive:
                with pytest.raises(IntegrityError, match="file integrity error"):
                    await drive.read(wrong, received.append)
        assert sum(len(piece) for piece in received) < entry.size

    trio.run(main)


def test_a_mount_s_cache_opened_read_only_serves_what_it_holds_and_is_never_written(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"

    async def main() -> None:
        async with CountingRemote(server_process.url) as remote:
            made = await make_drive(remote)
            entry, other = made.entries[RANDOM_NAME], made.entries[TEXT_NAME]
            # What a mount leaves behind: the file's chunks in its (writable) cache.
            writable = ObjectCache.open(cache_dir, 64 * MiB)
            try:
                fetcher = Fetcher(remote, made.home, writable, trio.CapacityLimiter(2))
                async with running(fetcher):
                    await fetcher.read(entry, 0, entry.size)
                    for ref in entry.chunks:
                        await cached_object(writable, ObjectKind.FRAME, ref.chunk_id)
                    await fetcher.trees([made.root])
            finally:
                writable.close()
            readonly = ObjectCache.open(cache_dir, readonly=True)
            try:
                before = readonly.stats()
                remote.downloaded.clear()
                remote.download_calls = remote.tree_calls = 0
                async with open_drive(remote, trio.CapacityLimiter(2), readonly) as drive:
                    assert await drive.lookup(DrivePath.from_bytes(RANDOM_NAME)) == entry
                    cached: list[bytes] = []
                    await drive.read(entry, cached.append)
                    assert (remote.download_calls, remote.tree_calls) == (0, 0)
                    fetched: list[bytes] = []
                    await drive.read(other, fetched.append)  # not cached: downloaded
                after = readonly.stats()
                assert not any(
                    readonly.contains(ObjectKind.FRAME, ref.chunk_id) for ref in other.chunks
                )
            finally:
                readonly.close()
        assert b"".join(cached) == made.contents[RANDOM_NAME]
        assert b"".join(fetched) == made.contents[TEXT_NAME]
        assert set(remote.downloaded) == {ref.chunk_id for ref in other.chunks}
        assert (after.object_count, after.stored_bytes) == (
            before.object_count,
            before.stored_bytes,
        )

    trio.run(main)


def test_a_damaged_cache_in_the_home_is_passed_over_with_a_warning(
    server_process: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = Home(tmp_path / "home")
    (home.cache_dir / "data.mdb").write_bytes(b"not an LMDB file" * 1024)

    async def main() -> None:
        async with CountingRemote(server_process.url) as remote:
            made = await make_drive(remote)
            async with opened_drive(home, remote, trio.CapacityLimiter(2)) as drive:
                entry = await drive.lookup(DrivePath.from_bytes(TEXT_NAME))
                assert entry == made.entries[TEXT_NAME]
                pieces: list[bytes] = []
                await drive.read(entry, pieces.append)
        assert b"".join(pieces) == made.contents[TEXT_NAME]

    with caplog.at_level(logging.WARNING, logger="boxfs.cli.drive"):
        trio.run(main)
    assert any("not using the object cache" in record.getMessage() for record in caplog.records)


def test_what_the_caller_s_block_raises_leaves_the_drive_as_itself(
    server_process: ServerProcess,
) -> None:
    async def main() -> None:
        async with CountingRemote(server_process.url) as remote:
            await make_drive(remote)
            with pytest.raises(NotFoundError, match="drive folder not found: nowhere"):
                async with open_drive(remote, trio.CapacityLimiter(2)):
                    raise NotFoundError("drive folder", "nowhere")  # not in an exception group

    trio.run(main)
