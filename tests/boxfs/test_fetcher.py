"""The offset -> chunk mapping of ``boxfs.fetcher``: which chunk pieces make up a byte range.

Pure functions, no server: every edge a read can hit (the first byte, chunk boundaries, the
last byte, past the end, nothing at all, an empty file) and a brute-force comparison. Then
``Fetcher.read`` over a cache that holds the chunks, with no server to ask (the network
paths are pinned against a real server in tests/integration/test_fetcher_live.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
import trio

from boxfs.fetcher import MAX_READ_BYTES, ChunkSlice, Fetcher, chunk_starts, slices_for_range
from boxfs.remote import Remote
from store import protocol
from store.cache import ObjectCache, ObjectKind
from store.frames import BLOCK_BYTES, HEADER_BYTES, encode_frame
from store.ids import ChunkId, NamespaceId, TreeId, chunk_id_of, content_hash_of
from store.objects import ChunkRef, EntryKind, FileEntry, Tree

LENGTHS = (100, 50, 1, 200)  # a file of 351 bytes; the 1-byte chunk makes boundaries tight


def refs(*lengths: int) -> tuple[ChunkRef, ...]:
    return tuple(
        ChunkRef(ChunkId(bytes([index]) * 32), length) for index, length in enumerate(lengths)
    )


STARTS = chunk_starts(refs(*LENGTHS))


def test_chunk_starts_lists_each_chunks_offset_then_the_file_size() -> None:
    assert list(STARTS) == [0, 100, 150, 151, 351]
    assert list(chunk_starts(())) == [0]


def test_a_range_inside_one_chunk_is_one_piece() -> None:
    assert slices_for_range(STARTS, 10, 20) == [ChunkSlice(0, 10, 30)]
    assert slices_for_range(STARTS, 0, 100) == [ChunkSlice(0, 0, 100)]


def test_a_range_starting_exactly_at_a_chunk_boundary_starts_in_that_chunk() -> None:
    assert slices_for_range(STARTS, 100, 50) == [ChunkSlice(1, 0, 50)]
    assert slices_for_range(STARTS, 150, 1) == [ChunkSlice(2, 0, 1)]
    assert slices_for_range(STARTS, 151, 10) == [ChunkSlice(3, 0, 10)]


def test_a_range_ending_exactly_at_a_chunk_boundary_does_not_touch_the_next_chunk() -> None:
    assert slices_for_range(STARTS, 90, 10) == [ChunkSlice(0, 90, 100)]
    assert slices_for_range(STARTS, 0, 150) == [ChunkSlice(0, 0, 100), ChunkSlice(1, 0, 50)]


def test_a_range_across_chunks_takes_a_piece_of_each() -> None:
    assert slices_for_range(STARTS, 99, 53) == [
        ChunkSlice(0, 99, 100),
        ChunkSlice(1, 0, 50),
        ChunkSlice(2, 0, 1),
        ChunkSlice(3, 0, 1),
    ]


def test_the_last_byte_is_the_last_piece_of_the_last_chunk() -> None:
    assert slices_for_range(STARTS, 350, 1) == [ChunkSlice(3, 199, 200)]


def test_a_range_past_the_end_is_cut_at_the_end() -> None:
    assert slices_for_range(STARTS, 340, 1000) == [ChunkSlice(3, 189, 200)]
    assert slices_for_range(STARTS, 0, 10**18) == [
        ChunkSlice(0, 0, 100),
        ChunkSlice(1, 0, 50),
        ChunkSlice(2, 0, 1),
        ChunkSlice(3, 0, 200),
    ]


def test_a_range_at_or_past_the_end_or_of_no_bytes_has_no_pieces() -> None:
    assert slices_for_range(STARTS, 351, 10) == []
    assert slices_for_range(STARTS, 10**15, 10) == []
    assert slices_for_range(STARTS, 0, 0) == []
    assert slices_for_range(STARTS, 120, 0) == []


def test_an_empty_file_has_no_pieces() -> None:
    assert slices_for_range(chunk_starts(()), 0, 4096) == []


def test_a_negative_offset_or_size_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        slices_for_range(STARTS, -1, 10)
    with pytest.raises(ValueError, match="non-negative"):
        slices_for_range(STARTS, 0, -1)


def test_pieces_match_slicing_the_whole_file_for_random_layouts_and_ranges() -> None:
    rng = random.Random(4)
    for _ in range(300):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 12))]
        content = bytes(rng.randrange(256) for _ in range(sum(lengths)))
        chunks, position = [], 0
        for length in lengths:
            chunks.append(content[position : position + length])
            position += length
        starts = chunk_starts(refs(*lengths))
        offset = rng.randint(0, len(content) + 5)
        size = rng.randint(0, len(content) + 5)
        pieces = slices_for_range(starts, offset, size)
        assert (
            b"".join(chunks[p.index][p.start : p.stop] for p in pieces)
            == content[offset : offset + size]
        )
        assert all(0 <= p.start < p.stop <= lengths[p.index] for p in pieces)
        indexes = [p.index for p in pieces]
        assert indexes == sorted(set(indexes))  # each chunk once, in file order
        assert not indexes or indexes == list(range(indexes[0], indexes[-1] + 1))


# --------------------------------------------------------------------------------------
# Fetcher.read from the cache alone


def file_of(pieces: list[bytes]) -> FileEntry:
    content = b"".join(pieces)
    return FileEntry(
        name=b"f", kind=EntryKind.FILE, mode=0o644, uid=0, gid=0, size=len(content),
        mtime_ns=0, chunks=tuple(ChunkRef(chunk_id_of(p), len(p)) for p in pieces),
        content_hash=content_hash_of(content),
    )  # fmt: skip


def test_cached_chunks_are_read_with_no_server_and_a_miss_needs_run(tmp_path: Path) -> None:
    rng = random.Random(9)
    pieces = [rng.randbytes(length) for length in (3000, 1, 5000, 2000)]
    content = b"".join(pieces)
    entry = file_of(pieces)
    with ObjectCache.open(tmp_path / "cache", 1 << 20) as cache:
        for piece in pieces[:3]:
            cache.put(ObjectKind.FRAME, chunk_id_of(piece), encode_frame(piece))

        async def main() -> None:
            # Nothing listens on the discard port: any request would fail.
            async with Remote("http://127.0.0.1:9") as remote:
                fetcher = Fetcher(remote, NamespaceId(bytes(16)), cache, trio.CapacityLimiter(2))
                for offset, size in [(0, 3001), (2999, 3), (10, 7990), (3001, 0), (0, 8001)]:
                    assert (
                        await fetcher.read(entry, offset, size) == content[offset : offset + size]
                    )
                assert await fetcher.read(entry, len(content), 10) == b""
                with pytest.raises(RuntimeError, match="run"):
                    await fetcher.read(entry, 8001, 1)  # the fourth chunk is not cached
                assert fetcher.stats().chunks_downloaded == 0

        trio.run(main)


def test_a_read_holding_more_than_the_maximum_is_refused(tmp_path: Path) -> None:
    big = FileEntry(
        name=b"big", kind=EntryKind.FILE, mode=0o644, uid=0, gid=0, size=2 * MAX_READ_BYTES,
        mtime_ns=0, chunks=(ChunkRef(ChunkId(bytes(32)), 2 * MAX_READ_BYTES),),
        content_hash=content_hash_of(b"not read"),
    )  # fmt: skip
    with ObjectCache.open(tmp_path / "cache", 1 << 20) as cache:

        async def main() -> None:
            async with Remote("http://127.0.0.1:9") as remote:
                fetcher = Fetcher(remote, NamespaceId(bytes(16)), cache, trio.CapacityLimiter(2))
                with pytest.raises(ValueError, match="over"):
                    await fetcher.read(big, 0, MAX_READ_BYTES + 1)
                with pytest.raises(ValueError, match="non-negative"):
                    await fetcher.read(big, -1, 10)
                # Asking for more than the file holds is fine: the read ends at its end.
                assert await fetcher.read(big, 2 * MAX_READ_BYTES, 1 << 40) == b""

        trio.run(main)


def test_plaintexts_kept_in_memory_stay_within_their_bound(tmp_path: Path) -> None:
    pieces = [bytes([index]) * length for index, length in enumerate((3000, 5000, 100))]
    entry = file_of(pieces)
    with ObjectCache.open(tmp_path / "cache", 1 << 20) as cache:
        for piece in pieces:
            cache.put(ObjectKind.FRAME, chunk_id_of(piece), encode_frame(piece))

        async def main() -> None:
            async with Remote("http://127.0.0.1:9") as remote:
                fetcher = Fetcher(
                    remote, NamespaceId(bytes(16)), cache, trio.CapacityLimiter(2),
                    recent_plaintext_bytes=5100,
                )  # fmt: skip
                await fetcher.read(entry, 0, 10)  # chunk 0 from the cache, kept
                await fetcher.read(entry, 5, 10)  # from memory
                assert (fetcher.stats().chunk_cache_hits, fetcher.stats().chunk_memory_hits) == (
                    1,
                    1,
                )
                await fetcher.read(entry, 3000, 5100)  # chunks 1 and 2 push chunk 0 out
                await fetcher.read(entry, 8000, 100)  # chunk 2 still in memory
                await fetcher.read(entry, 0, 10)  # chunk 0 from the cache again
                assert (fetcher.stats().chunk_cache_hits, fetcher.stats().chunk_memory_hits) == (
                    4,
                    2,
                )

        trio.run(main)


def test_trees_used_again_come_from_memory_within_their_byte_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    def tree_of(*names: bytes) -> Tree:
        entries = [
            FileEntry(
                name=name, kind=EntryKind.SYMLINK, mode=0o777, uid=0, gid=0, size=1, mtime_ns=0,
                target=b"x",
            )
            for name in names
        ]  # fmt: skip
        return Tree.of(entries)

    small, other = tree_of(b"a", b"b"), tree_of(b"c", b"d", b"e")
    big = tree_of(b"f", b"g", b"h", b"i", b"j", b"k")
    # Room for small and other (2 and 3 entries) together, not for big (6) at all.
    room = len(small.encode()) + len(other.encode())
    assert len(big.encode()) > room
    monkeypatch.setattr("boxfs.fetcher.RECENT_TREE_BYTES", room)
    with ObjectCache.open(tmp_path / "cache", 1 << 20) as cache:
        for tree in (small, other, big):
            cache.put(ObjectKind.TREE, tree.id, tree.encode())

        async def main() -> None:
            async with Remote("http://127.0.0.1:9") as remote:
                fetcher = Fetcher(remote, NamespaceId(bytes(16)), cache, trio.CapacityLimiter(2))
                assert await fetcher.tree(small.id) == small  # from the cache, kept
                touched: list[list[TreeId]] = []
                real_touch = cache.touch

                def touch(kind: ObjectKind, ids: Iterable[TreeId]) -> None:
                    touched.append(list(ids))
                    real_touch(kind, touched[-1])

                monkeypatch.setattr(cache, "touch", touch)
                cache.delete(ObjectKind.TREE, small.id)
                assert await fetcher.tree(small.id) == small  # from memory
                assert await fetcher.tree(big.id) == big  # over the bound: not kept
                # The memory hit's recency went to the cache with that lookup.
                assert touched == [[small.id]]
                assert await fetcher.tree(other.id) == other  # small and other: both kept
                assert await fetcher.tree(small.id) == small
                stats = fetcher.stats()
                assert (stats.tree_cache_hits, stats.tree_memory_hits) == (3, 2)
                cache.delete(ObjectKind.TREE, big.id)
                with pytest.raises(protocol.UnavailableError):  # not kept: needs the server
                    await fetcher.tree(big.id)

        trio.run(main)


class SlowTrees(Remote):
    """Fault injection: answers tree requests from memory, each taking ``delay_s``, in
    requests of at most ``MAX_IDS_PER_REQUEST`` ids as the real client sends them."""

    def __init__(self, encodings: dict[TreeId, bytes], delay_s: float) -> None:
        super().__init__("http://127.0.0.1:9")
        self.encodings = encodings
        self.delay_s = delay_s
        self.requests = 0

    async def trees(
        self, namespace_id: NamespaceId, ids: Sequence[TreeId]
    ) -> dict[TreeId, bytes | None]:
        found: dict[TreeId, bytes | None] = {}
        for start in range(0, len(ids), protocol.MAX_IDS_PER_REQUEST):
            self.requests += 1
            await trio.sleep(self.delay_s)
            found.update(
                (tree_id, self.encodings.get(tree_id))
                for tree_id in ids[start : start + protocol.MAX_IDS_PER_REQUEST]
            )
        return found


def test_many_trees_are_fetched_with_a_deadline_per_request_not_one_for_all() -> None:
    trees = [
        Tree.of([FileEntry(name=b"f%d" % n, kind=EntryKind.FIFO, mode=0o644, uid=0, gid=0,
                           size=0, mtime_ns=n)])
        for n in range(protocol.MAX_IDS_PER_REQUEST + 200)
    ]  # fmt: skip
    encodings = {tree.id: tree.encode() for tree in trees}
    # Each request takes 60% of the timeout; the two together would take 120% of it.
    remote = SlowTrees(encodings, delay_s=0.3)

    async def main() -> dict[TreeId, Tree]:
        fetcher = Fetcher(
            remote, NamespaceId(bytes(16)), None, trio.CapacityLimiter(2), request_timeout_s=0.5
        )
        return await fetcher.trees(list(encodings))

    found = trio.run(main)
    assert found == {tree.id: tree for tree in trees}
    assert remote.requests == 2


def test_random_reads_of_a_cached_raw_chunk_check_only_the_blocks_they_touch(
    tmp_path: Path,
) -> None:
    # Incompressible (a raw frame), and long enough for reads over 1 MiB apart: one near
    # where the last read ended counts as sequential, and a sequential read decodes whole.
    chunk = random.Random(5).randbytes(60 * BLOCK_BYTES)
    entry = file_of([chunk])
    chunk_id = chunk_id_of(chunk)
    with ObjectCache.open(tmp_path / "cache", 16 << 20) as cache:
        cache.put(ObjectKind.FRAME, chunk_id, encode_frame(chunk))

        async def main() -> None:
            async with Remote("http://127.0.0.1:9") as remote:
                fetcher = Fetcher(
                    remote, NamespaceId(bytes(16)), cache, trio.CapacityLimiter(2),
                    recent_plaintext_bytes=0,  # nothing kept in memory: every read looks
                )  # fmt: skip
                offsets = [50 * BLOCK_BYTES + 17, 9000, 40 * BLOCK_BYTES - 2, 17 * BLOCK_BYTES]
                for offset in offsets:
                    assert await fetcher.read(entry, offset, 4096) == chunk[offset : offset + 4096]
                stats = fetcher.stats()
                # The first read verified the whole chunk and kept its digests.
                assert (stats.chunk_cache_hits, stats.chunk_range_hits) == (1, 3)
                assert cache.contains(ObjectKind.BLOCKS, chunk_id)

                # Damage in block 55: a read of block 0 is still served by its own digest;
                # one touching block 55 is caught, and the whole chunk then fails its id.
                damaged = bytearray(encode_frame(chunk))
                damaged[HEADER_BYTES + 55 * BLOCK_BYTES + 1] ^= 1
                cache.delete(ObjectKind.FRAME, chunk_id)
                cache.put(ObjectKind.FRAME, chunk_id, bytes(damaged))
                assert await fetcher.read(entry, 100, 4096) == chunk[100:4196]
                with pytest.raises(RuntimeError, match="run"):  # it must be downloaded
                    await fetcher.read(entry, 55 * BLOCK_BYTES, 4096)
                stats = fetcher.stats()
                assert (stats.chunk_range_hits, stats.corrupt_cache_objects) == (4, 2)
                assert not cache.contains(ObjectKind.BLOCKS, chunk_id)
                assert not cache.contains(ObjectKind.FRAME, chunk_id)

        trio.run(main)
