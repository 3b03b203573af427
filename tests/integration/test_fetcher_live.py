"""Over a real server process: the fetcher reads files back exactly, keeps the cache within
its budget, asks the server once per chunk (concurrent readers share, cached ranges stay
local), refuses corrupt frames without caching them, prefetches ahead of sequential
readers, and with the server frozen or gone serves what it has and fails the rest within
its timeout."""

from __future__ import annotations

import functools
import io
import os
import random
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from boxfs.fetcher import Fetcher, chunk_starts
from boxfs.remote import Remote
from store import protocol
from store.cache import ObjectCache, ObjectKind
from store.chunking import ChunkStream
from store.errors import IntegrityError, NotFoundError
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId, NamespaceId, TreeId
from store.objects import EMPTY_TREE, ChunkRef, EntryKind, FileEntry, Tree, decode_commit
from store.protocol import Record
from tests.integration.server_process import ServerProcess

MiB = 1024 * 1024
PASSWORD = "fetcher test password"  # noqa: S105  (a test account)
RANDOM_NAME = b"random.bin"
TEXT_NAME = b"notes.txt"
SUBDIR = b"docs"
DIR_ATTRS = protocol.AttrsModel(mode=0o755, uid=0, gid=0, mtime_ns=0)


@functools.cache
def random_content() -> bytes:
    return random.Random(20261128).randbytes(12 * MiB)


@functools.cache
def text_content() -> bytes:
    rng = random.Random(7)
    words = ["box", "drive", "chunk", "frame", "tree", "commit", "merkle", "cache", "fuse"]
    lines = (
        f"{number:07d} {' '.join(rng.choice(words) for _ in range(12))}\n"
        for number in range(90_000)
    )
    return "".join(lines).encode()


class CountingRemote(Remote):
    """The real client, counting what it asks the server for."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.download_calls = 0
        self.downloaded: list[ChunkId] = []
        self.tree_calls = 0

    async def download_chunks(
        self, namespace_id: NamespaceId, ids: Sequence[ChunkId]
    ) -> AsyncIterator[Record[ChunkId]]:
        self.download_calls += 1
        self.downloaded.extend(ids)
        async for record in super().download_chunks(namespace_id, ids):
            yield record

    async def trees(
        self, namespace_id: NamespaceId, ids: Sequence[TreeId]
    ) -> dict[TreeId, bytes | None]:
        self.tree_calls += 1
        return await super().trees(namespace_id, ids)


class FaultyRemote(CountingRemote):
    """Flips one byte in the frames of ``corrupt`` chunks (and in every tree if
    ``corrupt_trees``), as a faulty server or network would."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.corrupt: set[ChunkId] = set()
        self.corrupt_trees = False

    async def download_chunks(
        self, namespace_id: NamespaceId, ids: Sequence[ChunkId]
    ) -> AsyncIterator[Record[ChunkId]]:
        async for record in super().download_chunks(namespace_id, ids):
            if record.object_id in self.corrupt and record.payload is not None:
                yield Record(record.object_id, flip_a_byte(record.payload))
            else:
                yield record

    async def trees(
        self, namespace_id: NamespaceId, ids: Sequence[TreeId]
    ) -> dict[TreeId, bytes | None]:
        found = await super().trees(namespace_id, ids)
        if self.corrupt_trees:
            return {tree_id: flip_a_byte(data) if data else data for tree_id, data in found.items()}
        return found


def flip_a_byte(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x40
    return bytes(damaged)


@dataclass
class Drive:
    home: NamespaceId
    root: TreeId
    entries: dict[bytes, FileEntry]
    contents: dict[bytes, bytes]
    frames: dict[ChunkId, bytes]

    def chunk(self, name: bytes, index: int) -> ChunkRef:
        return self.entries[name].chunks[index]

    def chunk_start(self, name: bytes, index: int) -> int:
        return int(chunk_starts(self.entries[name].chunks)[index])


def describe(name: bytes, content: bytes) -> tuple[FileEntry, dict[ChunkId, bytes]]:
    stream = ChunkStream(io.BytesIO(content))
    refs, frames = [], {}
    for piece in stream:
        refs.append(ChunkRef(piece.chunk_id, piece.length))
        frames[piece.chunk_id] = encode_frame(piece.data)
    entry = FileEntry(
        name=name, kind=EntryKind.FILE, mode=0o644, uid=0, gid=0, size=stream.size,
        mtime_ns=time.time_ns(), chunks=tuple(refs), content_hash=stream.content_hash,
    )  # fmt: skip
    return entry, frames


async def make_drive(remote: Remote) -> Drive:
    """A new account whose drive holds the two test files, committed on the server."""
    username = f"reader{secrets.token_hex(4)}"
    await remote.register(username, f"{username}@example.com", PASSWORD)
    await remote.login(username, PASSWORD, "laptop")
    home = (await remote.home()).namespace_id
    entries, contents, all_frames = {}, {}, {}
    ops: list[protocol.PutOp | protocol.MkdirOp] = []
    for name, content in ((RANDOM_NAME, random_content()), (TEXT_NAME, text_content())):
        entry, frames = await trio.to_thread.run_sync(describe, name, content)
        await remote.upload_chunks(home, frames.items())
        entries[name], contents[name] = entry, content
        all_frames.update(frames)
        ops.append(
            protocol.PutOp(
                path=protocol.DrivePath.from_bytes(name), entry=protocol.entry_to_model(entry)
            )
        )
    # A subdirectory holding a copy of the text file, so the drive has two trees.
    ops.append(protocol.MkdirOp(path=protocol.DrivePath.from_bytes(SUBDIR), attrs=DIR_ATTRS))
    ops.append(
        protocol.PutOp(
            path=protocol.DrivePath.from_bytes(SUBDIR + b"/" + TEXT_NAME),
            entry=protocol.entry_to_model(entries[TEXT_NAME]),
        )
    )
    batch = protocol.OpsBatch(idempotency_key=secrets.token_hex(16), ops=tuple(ops))
    reply = await remote.apply_ops(home, batch)
    assert [result.status for result in reply.results] == ["applied"] * 4
    assert reply.head is not None
    commit = decode_commit((await remote.commits(home, [reply.head]))[reply.head] or b"")
    return Drive(home, commit.root, entries, contents, all_frames)


@asynccontextmanager
async def running(fetcher: Fetcher) -> AsyncIterator[Fetcher]:
    async with trio.open_nursery() as nursery:
        await nursery.start(fetcher.run)
        yield fetcher
        nursery.cancel_scope.cancel()


def run_live(
    server: ServerProcess,
    cache_dir: Path,
    test: Callable[[CountingRemote, ObjectCache, Drive], Coroutine[Any, Any, None]],
    *,
    budget_bytes: int = 64 * MiB,
    remote_class: type[CountingRemote] = CountingRemote,
) -> None:
    """Set up a drive on ``server`` and run ``test`` with a fresh cache, bounded in time."""
    cache = ObjectCache.open(cache_dir, budget_bytes)
    try:

        async def main() -> None:
            with trio.fail_after(50):
                async with remote_class(server.url) as remote:
                    drive = await make_drive(remote)
                    await test(remote, cache, drive)

        trio.run(main)
        cache.verify()
    finally:
        cache.close()


async def in_thread(function: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(function)


async def cached_object(cache: ObjectCache, kind: ObjectKind, object_id: ChunkId) -> bytes:
    """The object once it is in the cache: a download is written there just after the
    reader got its bytes."""
    with trio.fail_after(5):
        while (data := await trio.to_thread.run_sync(cache.get, kind, object_id)) is None:
            await trio.sleep(0.01)
    return data


def check_bytes(got: bytes, content: bytes, offset: int, size: int) -> None:
    expected = content[offset : offset + size]
    assert len(got) == len(expected), (offset, size, len(got), len(expected))
    assert got == expected, (offset, size)


# --------------------------------------------------------------------------------------


def test_random_ranges_read_back_exactly_the_original_bytes(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def test(remote: CountingRemote, cache: ObjectCache, drive: Drive) -> None:
        fetcher = Fetcher(remote, drive.home, cache, trio.CapacityLimiter(4))
        async with running(fetcher):
            # The head tree, fetched and verified by id, lists the files as committed.
            root = await fetcher.tree(drive.root)
            assert [entry.name for entry in root] == sorted([*drive.entries, SUBDIR])
            for name, committed in drive.entries.items():
                assert root.get(name) == committed
            assert remote.tree_calls == 1
            assert await fetcher.tree(drive.root) == root  # from the cache now
            assert await fetcher.tree(EMPTY_TREE.id) == EMPTY_TREE  # known without asking
            assert remote.tree_calls == 1

            # Several missing trees come in one request; concurrent askers share it.
            subdir = root.get(SUBDIR)
            assert subdir is not None and subdir.tree_id is not None
            ids = [drive.root, subdir.tree_id, EMPTY_TREE.id]
            await trio.to_thread.run_sync(cache.delete, ObjectKind.TREE, drive.root)
            found: list[dict[TreeId, Tree]] = []

            async def ask() -> None:
                found.append(await fetcher.trees(ids))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(ask)
            assert remote.tree_calls == 2
            for trees in found:
                assert list(trees) == ids
                assert trees[drive.root] == root
                assert [entry.name for entry in trees[subdir.tree_id]] == [TEXT_NAME]

            rng = random.Random(1)
            for name, content in drive.contents.items():
                entry = root.get(name)
                assert entry is not None
                assert len(entry.chunks) >= 4, "the test wants a multi-chunk file"
                size = entry.size
                edges = [(0, 0), (0, 1), (0, 4096), (size - 1, 1), (size - 1, 100), (0, size)]
                edges += [(size, 1), (size + 12345, 10), (size // 2, 0), (size - 10, 10)]
                for start in chunk_starts(entry.chunks)[1:-1]:
                    edges += [(start, 1), (start - 1, 1), (start - 1, 2), (start, 3 * MiB)]
                ranges = edges + [
                    (rng.randrange(size), rng.choice([1, 100, 4096, 131072, 1 * MiB, 3 * MiB]))
                    for _ in range(100)
                ]
                for offset, length in ranges:
                    check_bytes(await fetcher.read(entry, offset, length), content, offset, length)
            stats = fetcher.stats()
            assert stats.integrity_failures == 0
            assert stats.chunks_downloaded == len(drive.frames)  # each chunk came once

    run_live(server_process, tmp_path / "cache", test)


def test_reading_three_times_the_budget_keeps_the_cache_within_it(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    budget_bytes = 4 * MiB

    async def test(remote: CountingRemote, cache: ObjectCache, drive: Drive) -> None:
        entry, content = drive.entries[RANDOM_NAME], drive.contents[RANDOM_NAME]
        assert entry.size >= 3 * budget_bytes
        # No plaintexts kept in memory: every read goes through the cache.
        fetcher = Fetcher(
            remote, drive.home, cache, trio.CapacityLimiter(4), recent_plaintext_bytes=0
        )
        rng = random.Random(2)
        async with running(fetcher):
            ranges = [(offset, MiB) for offset in range(0, entry.size, MiB)]  # sequential
            ranges += [(rng.randrange(entry.size), 2 * MiB) for _ in range(20)]
            for offset, length in ranges:
                check_bytes(await fetcher.read(entry, offset, length), content, offset, length)
                stats = await in_thread(cache.stats)
                assert stats.stored_bytes <= budget_bytes
                assert stats.budget_bytes == budget_bytes
            assert fetcher.stats().chunks_downloaded > len(entry.chunks)  # evicted, fetched again

    run_live(server_process, tmp_path / "cache", test, budget_bytes=budget_bytes)


def test_a_second_read_of_a_cached_range_asks_the_server_nothing(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def test(remote: CountingRemote, cache: ObjectCache, drive: Drive) -> None:
        entry, content = drive.entries[TEXT_NAME], drive.contents[TEXT_NAME]
        fetcher = Fetcher(remote, drive.home, cache, trio.CapacityLimiter(4), prefetch_chunks=0)
        offset = drive.chunk_start(TEXT_NAME, 2) - 1000  # across chunks 1 and 2
        async with running(fetcher):
            check_bytes(await fetcher.read(entry, offset, 5000), content, offset, 5000)
            assert remote.download_calls == 1
            assert sorted(remote.downloaded) == sorted(
                [drive.chunk(TEXT_NAME, 1).chunk_id, drive.chunk(TEXT_NAME, 2).chunk_id]
            )
            for again_offset, length in [(offset, 5000), (offset + 10, 100), (offset + 999, 2)]:
                got = await fetcher.read(entry, again_offset, length)
                check_bytes(got, content, again_offset, length)
            # Once written to the cache (just after the first reader got its bytes), the
            # chunks are served from there, by a fetcher that never saw them too.
            for index in (1, 2):
                await cached_object(cache, ObjectKind.FRAME, drive.chunk(TEXT_NAME, index).chunk_id)
            another = Fetcher(remote, drive.home, cache, trio.CapacityLimiter(4))
            check_bytes(await another.read(entry, offset, 5000), content, offset, 5000)
            assert another.stats().chunk_cache_hits == 2
            assert remote.download_calls == 1

    run_live(server_process, tmp_path / "cache", test)


def test_concurrent_reads_share_one_download_and_close_misses_share_one_request(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def test(remote: CountingRemote, cache: ObjectCache, drive: Drive) -> None:
        entry, content = drive.entries[RANDOM_NAME], drive.contents[RANDOM_NAME]
        fetcher = Fetcher(
            remote, drive.home, cache, trio.CapacityLimiter(4),
            prefetch_chunks=0, batch_window_s=0.05,
        )  # fmt: skip
        results: dict[tuple[int, int], bytes] = {}

        async def read(offset: int, length: int) -> None:
            results[offset, length] = await fetcher.read(entry, offset, length)

        async with running(fetcher):
            # Eight readers of one chunk: one download of it.
            start, ref = drive.chunk_start(RANDOM_NAME, 2), drive.chunk(RANDOM_NAME, 2)
            ranges = [(start + part * 1000, 4000) for part in range(8)]
            async with trio.open_nursery() as nursery:
                for offset, length in ranges:
                    nursery.start_soon(read, offset, length)
            assert remote.download_calls == 1
            assert remote.downloaded == [ref.chunk_id]

            # Readers of four other chunks at once: one request for all of them.
            indexes = [4, 5, 6, 7]
            ranges = [(drive.chunk_start(RANDOM_NAME, index) + 10, 100) for index in indexes]
            async with trio.open_nursery() as nursery:
                for offset, length in ranges:
                    nursery.start_soon(read, offset, length)
            assert remote.download_calls == 2
            assert sorted(remote.downloaded[1:]) == sorted(
                drive.chunk(RANDOM_NAME, index).chunk_id for index in indexes
            )
            for (offset, length), got in results.items():
                check_bytes(got, content, offset, length)

    run_live(server_process, tmp_path / "cache", test)


def test_a_corrupt_frame_from_the_server_fails_only_the_reads_that_touch_it(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def test(remote: CountingRemote, cache: ObjectCache, drive: Drive) -> None:
        assert isinstance(remote, FaultyRemote)
        fetcher = Fetcher(remote, drive.home, cache, trio.CapacityLimiter(4), prefetch_chunks=2)
        async with running(fetcher):
            for name in (RANDOM_NAME, TEXT_NAME):  # a raw frame and a zstd frame
                entry, content = drive.entries[name], drive.contents[name]
                bad = drive.chunk(name, 1)
                remote.corrupt.add(bad.chunk_id)
                bad_start = drive.chunk_start(name, 1)
                for offset, length in [(bad_start, 10), (bad_start - 5, 10), (0, entry.size)]:
                    with pytest.raises(IntegrityError) as caught:
                        await fetcher.read(entry, offset, length)
                    assert caught.value.expected == bad.chunk_id.hex()
                    assert not await trio.to_thread.run_sync(
                        cache.contains, ObjectKind.FRAME, bad.chunk_id
                    )
                # The rest of the file, and the rest of the drive, stays readable.
                for offset, length in [(0, bad_start), (bad_start + bad.length, 2 * MiB)]:
                    check_bytes(await fetcher.read(entry, offset, length), content, offset, length)
            assert fetcher.stats().integrity_failures >= 6  # each read asked again, and failed

            # A corrupt tree is refused too, and not cached.
            remote.corrupt_trees = True
            with pytest.raises(IntegrityError) as caught_tree:
                await fetcher.tree(drive.root)
            assert caught_tree.value.what == "tree"
            assert not await in_thread(lambda: cache.contains(ObjectKind.TREE, drive.root))
            remote.corrupt_trees = False
            assert len(await fetcher.tree(drive.root)) == 3  # two files and a directory

            # A chunk the namespace does not hold is "not found", not data.
            with pytest.raises(NotFoundError):
                await fetcher.frame_plaintext(ChunkId(b"\x07" * 32))

    run_live(server_process, tmp_path / "cache", test, remote_class=FaultyRemote)


def test_a_damaged_cached_frame_is_dropped_and_fetched_again_once(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def test(remote: CountingRemote, cache: ObjectCache, drive: Drive) -> None:
        entry, content = drive.entries[TEXT_NAME], drive.contents[TEXT_NAME]
        ref = drive.chunk(TEXT_NAME, 0)
        key = (ObjectKind.FRAME, ref.chunk_id)
        fetcher = Fetcher(remote, drive.home, cache, trio.CapacityLimiter(4), prefetch_chunks=0)
        async with running(fetcher):
            check_bytes(await fetcher.read(entry, 0, 1000), content, 0, 1000)
            assert remote.download_calls == 1
            good = await cached_object(cache, *key)

            def damage() -> None:  # bit rot on the device's disk
                cache.delete(*key)
                cache.put(*key, flip_a_byte(good))

            await in_thread(damage)
        # The next mount (a fetcher with nothing in memory) finds the damage.
        fetcher = Fetcher(remote, drive.home, cache, trio.CapacityLimiter(4), prefetch_chunks=0)
        async with running(fetcher):
            check_bytes(await fetcher.read(entry, 0, 1000), content, 0, 1000)
            assert remote.download_calls == 2
            assert fetcher.stats().corrupt_cache_objects == 1
            frame = await cached_object(cache, *key)  # the good frame replaced it
            assert decode_frame(frame, ref.chunk_id) == content[: ref.length]

    run_live(server_process, tmp_path / "cache", test)


def test_without_the_server_cached_reads_work_and_uncached_ones_fail_within_the_timeout(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    timeout_s = 1.0

    async def test(remote: CountingRemote, cache: ObjectCache, drive: Drive) -> None:
        entry, content = drive.entries[RANDOM_NAME], drive.contents[RANDOM_NAME]
        fetcher = Fetcher(
            remote, drive.home, cache, trio.CapacityLimiter(4),
            request_timeout_s=timeout_s, prefetch_chunks=0,
        )  # fmt: skip

        async def fails_in_time(read: Callable[[], Coroutine[Any, Any, object]]) -> float:
            started = trio.current_time()
            with pytest.raises(protocol.UnavailableError):
                await read()
            return trio.current_time() - started

        async with running(fetcher):
            check_bytes(await fetcher.read(entry, 0, 4096), content, 0, 4096)
            calls = remote.download_calls

            # Frozen: connections are accepted, nothing is answered.
            os.kill(server_process.pid, signal.SIGSTOP)
            try:
                check_bytes(await fetcher.read(entry, 100, 4096), content, 100, 4096)
                assert remote.download_calls == calls  # served without any network
                far = drive.chunk_start(RANDOM_NAME, 5)
                elapsed = await fails_in_time(lambda: fetcher.read(entry, far, 4096))
                assert timeout_s * 0.9 <= elapsed <= timeout_s + 2
                elapsed = await fails_in_time(lambda: fetcher.tree(drive.root))
                assert timeout_s * 0.9 <= elapsed <= timeout_s + 2
            finally:
                os.kill(server_process.pid, signal.SIGCONT)

            # Gone: connections are refused.
            await in_thread(server_process.stop)
            check_bytes(await fetcher.read(entry, 0, 4096), content, 0, 4096)
            elapsed = await fails_in_time(lambda: fetcher.read(entry, far, 4096))
            assert elapsed <= timeout_s + 2
            # A reader waiting on a download that fails gets the error too.
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(fails_in_time, lambda: fetcher.read(entry, far + 1, 10))

    run_live(server_process, tmp_path / "cache", test)


def test_sequential_reads_prefetch_the_next_chunks(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def test(remote: CountingRemote, cache: ObjectCache, drive: Drive) -> None:
        entry, content = drive.entries[RANDOM_NAME], drive.contents[RANDOM_NAME]
        fetcher = Fetcher(remote, drive.home, cache, trio.CapacityLimiter(4), prefetch_chunks=4)

        def cached(indexes: range) -> list[bool]:
            return [cache.contains(ObjectKind.FRAME, entry.chunks[i].chunk_id) for i in indexes]

        async def wait_until_cached(indexes: range) -> None:
            with trio.fail_after(10):
                while not all(await in_thread(lambda: cached(indexes))):
                    await trio.sleep(0.02)

        async with running(fetcher):
            check_bytes(await fetcher.read(entry, 0, 65536), content, 0, 65536)
            await wait_until_cached(range(1, 5))  # the four after the one read
            assert await in_thread(lambda: cached(range(5, len(entry.chunks)))) == [False] * (
                len(entry.chunks) - 5
            )
            # Reading on into chunk 1 moves the window: chunk 5 joins the cache.
            offset, end = 65536, drive.chunk_start(RANDOM_NAME, 2)
            while offset < end:
                length = min(MiB, end - offset)
                check_bytes(await fetcher.read(entry, offset, length), content, offset, length)
                offset += length
            await wait_until_cached(range(1, 6))
            assert not any(await in_thread(lambda: cached(range(6, len(entry.chunks)))))
            assert fetcher.stats().chunks_prefetched >= 5
            assert len(remote.downloaded) == len(set(remote.downloaded))  # nothing twice

            # A random jump does not prefetch.
            before = fetcher.stats().chunks_prefetched
            far = drive.chunk_start(RANDOM_NAME, 9) + 5
            check_bytes(await fetcher.read(entry, far, 100), content, far, 100)
            assert fetcher.stats().chunks_prefetched == before

    run_live(server_process, tmp_path / "cache", test)


def test_sequential_reads_of_a_cached_file_find_the_next_chunks_loaded_ahead(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async def test(remote: CountingRemote, cache: ObjectCache, drive: Drive) -> None:
        entry, content = drive.entries[RANDOM_NAME], drive.contents[RANDOM_NAME]
        warmer = Fetcher(remote, drive.home, cache, trio.CapacityLimiter(4), prefetch_chunks=0)
        async with running(warmer):
            for offset in range(0, entry.size, MiB):
                check_bytes(await warmer.read(entry, offset, MiB), content, offset, MiB)
            for ref in entry.chunks:
                await cached_object(cache, ObjectKind.FRAME, ref.chunk_id)
        downloads = remote.download_calls

        fetcher = Fetcher(remote, drive.home, cache, trio.CapacityLimiter(4), prefetch_chunks=4)
        async with running(fetcher):
            check_bytes(await fetcher.read(entry, 0, 65536), content, 0, 65536)
            with trio.fail_after(10):  # chunk 0, then 1-4 loaded and verified ahead
                while fetcher.stats().chunk_cache_hits < 5:
                    await trio.sleep(0.01)
            memory_hits = fetcher.stats().chunk_memory_hits
            start, end = drive.chunk_start(RANDOM_NAME, 1), drive.chunk_start(RANDOM_NAME, 5)
            check_bytes(await fetcher.read(entry, start, end - start), content, start, end - start)
            assert fetcher.stats().chunk_memory_hits == memory_hits + 4
        assert remote.download_calls == downloads

    run_live(server_process, tmp_path / "cache", test)
