"""The LMDB object cache: the byte budget, LRU order, reopening, readers, map growth."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from store.cache import (
    MAP_BUDGET_MULTIPLE,
    CacheError,
    CacheMapFullError,
    ObjectCache,
    ObjectKind,
    ObjectTooLargeError,
)
from store.errors import NotFoundError, StoreError, TransientError
from store.ids import ChunkId, TreeId, chunk_id_of

KiB = 1024
MiB = 1024 * KiB
REPO_ROOT = Path(__file__).resolve().parents[2]

FRAME = ObjectKind.FRAME
TREE = ObjectKind.TREE


def numbered(number: int, size_bytes: int) -> tuple[ChunkId, bytes]:
    """A frame-like object whose id is the BLAKE3 of its bytes, so readers can verify it."""
    data = number.to_bytes(8, "big") * (size_bytes // 8) + b"\xff" * (size_bytes % 8)
    return chunk_id_of(data), data


def assert_within_budget(cache: ObjectCache) -> None:
    stats = cache.stats()
    assert 0 <= stats.stored_bytes <= stats.budget_bytes


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def small_cache(cache_dir: Path) -> Iterator[ObjectCache]:
    """Budget for exactly ten 1 KiB objects."""
    with ObjectCache.open(cache_dir, budget_bytes=10 * KiB) as cache:
        yield cache


def test_put_then_get_returns_the_bytes_and_counts_them(small_cache: ObjectCache) -> None:
    chunk_id, data = numbered(1, 1000)
    assert small_cache.get(FRAME, chunk_id) is None
    assert not small_cache.contains(FRAME, chunk_id)
    small_cache.put(FRAME, chunk_id, data)
    assert small_cache.get(FRAME, chunk_id) == data
    assert small_cache.contains(FRAME, chunk_id)
    stats = small_cache.stats()
    assert (stats.object_count, stats.stored_bytes) == (1, 1000)
    assert stats.budget_bytes == 10 * KiB
    small_cache.verify()


def test_budget_holds_while_ten_times_the_budget_is_inserted(cache_dir: Path) -> None:
    budget_bytes = 256 * KiB
    rng = random.Random(7)
    inserted_bytes = 0
    with ObjectCache.open(cache_dir, budget_bytes=budget_bytes) as cache:
        number = 0
        while inserted_bytes < 10 * budget_bytes:
            chunk_id, data = numbered(number, rng.randint(1, 40 * KiB))
            cache.put(FRAME, chunk_id, data)
            inserted_bytes += len(data)
            number += 1
            stats = cache.stats()
            assert stats.stored_bytes <= budget_bytes
            assert cache.get(FRAME, chunk_id) == data  # the newest object always stays
            if number % 7 == 0:  # reads of older objects must not break the invariant
                cache.get(FRAME, numbered(number - 5, 0)[0])
        # The cache is full, not emptied by over-eager eviction.
        assert cache.stats().stored_bytes > budget_bytes - 40 * KiB
        cache.verify()


def test_get_with_hands_the_bytes_in_place_and_refreshes_recency(
    small_cache: ObjectCache,
) -> None:
    objects = [numbered(number, 1 * KiB) for number in range(10)]
    for chunk_id, data in objects:
        small_cache.put(FRAME, chunk_id, data)
    assert small_cache.get_with(FRAME, numbered(99, 8)[0], bytes) is None
    seen: list[memoryview] = []

    def keep(data: memoryview) -> bytes:
        seen.append(data)
        return bytes(data)

    assert small_cache.get_with(FRAME, objects[0][0], keep) == (objects[0][1],)
    assert isinstance(seen[0], memoryview)  # a view into the map, not a copy
    with pytest.raises(ValueError, match="refused"):
        small_cache.get_with(FRAME, objects[1][0], lambda data: int("refused"))
    # 0 was read and is now the most recent; 1's failed use left it the oldest.
    small_cache.put(FRAME, *numbered(100, 1 * KiB))
    small_cache.put(FRAME, *numbered(101, 1 * KiB))
    assert small_cache.contains(FRAME, objects[0][0])
    assert not small_cache.contains(FRAME, objects[1][0])
    assert not small_cache.contains(FRAME, objects[2][0])
    small_cache.verify()


def test_get_each_with_reads_several_objects_in_one_go_and_refreshes_those_found(
    small_cache: ObjectCache,
) -> None:
    objects = [numbered(number, 1 * KiB) for number in range(10)]
    for chunk_id, data in objects:
        small_cache.put(FRAME, chunk_id, data)
    missing = numbered(99, 8)[0]
    wanted = [(FRAME, objects[0][0]), (FRAME, missing), (FRAME, objects[1][0])]
    found = small_cache.get_each_with(
        wanted, lambda views: [None if view is None else bytes(view) for view in views]
    )
    assert found == [objects[0][1], None, objects[1][1]]
    with pytest.raises(ValueError, match="refused"):
        small_cache.get_each_with([(FRAME, objects[2][0])], lambda views: int("refused"))
    for number in (100, 101):
        small_cache.put(FRAME, *numbered(number, 1 * KiB))
    present = {number for number in range(10) if small_cache.contains(FRAME, objects[number][0])}
    assert present == {0, 1, 4, 5, 6, 7, 8, 9}  # 2's failed use left it among the oldest
    small_cache.verify()


def test_touch_refreshes_recency_without_reading_and_ignores_missing_ids(
    small_cache: ObjectCache,
) -> None:
    objects = [numbered(number, 1 * KiB) for number in range(10)]
    for chunk_id, data in objects:
        small_cache.put(FRAME, chunk_id, data)
    small_cache.touch(FRAME, [objects[0][0], numbered(99, 8)[0], objects[1][0]])
    for number in (100, 101):
        small_cache.put(FRAME, *numbered(number, 1 * KiB))
    present = {number for number in range(10) if small_cache.contains(FRAME, objects[number][0])}
    assert present == {0, 1, 4, 5, 6, 7, 8, 9}  # 2 and 3 were the oldest now
    small_cache.verify()


def test_recently_read_objects_survive_and_the_oldest_go_first(small_cache: ObjectCache) -> None:
    objects = [numbered(number, 1 * KiB) for number in range(10)]
    for chunk_id, data in objects:
        small_cache.put(FRAME, chunk_id, data)
    # Read 0, 1 and 2: they become the most recently used, 3 is now the oldest.
    for chunk_id, _ in objects[:3]:
        assert small_cache.get(FRAME, chunk_id) is not None
    newcomers = [numbered(number, 1 * KiB) for number in range(100, 104)]
    for chunk_id, data in newcomers:
        small_cache.put(FRAME, chunk_id, data)

    present = {number for number in range(10) if small_cache.contains(FRAME, objects[number][0])}
    assert present == {0, 1, 2, 7, 8, 9}
    assert all(small_cache.contains(FRAME, chunk_id) for chunk_id, _ in newcomers)
    small_cache.verify()


def test_putting_an_object_already_cached_refreshes_it_without_rewriting(
    small_cache: ObjectCache,
) -> None:
    objects = [numbered(number, 1 * KiB) for number in range(10)]
    for chunk_id, data in objects:
        small_cache.put(FRAME, chunk_id, data)
    small_cache.put(FRAME, *objects[0])  # 0 becomes the most recent; 1 is now the oldest
    small_cache.put(FRAME, *numbered(100, 1 * KiB))
    assert small_cache.contains(FRAME, objects[0][0])
    assert not small_cache.contains(FRAME, objects[1][0])
    assert small_cache.stats().object_count == 10


def test_an_object_bigger_than_the_budget_is_refused(small_cache: ObjectCache) -> None:
    small_cache.put(FRAME, *numbered(1, 1 * KiB))
    too_big_id, too_big = numbered(2, 10 * KiB + 1)
    with pytest.raises(ObjectTooLargeError, match="more than the whole cache budget") as caught:
        small_cache.put(FRAME, too_big_id, too_big)
    assert (caught.value.size_bytes, caught.value.budget_bytes) == (10 * KiB + 1, 10 * KiB)
    assert isinstance(caught.value, StoreError)
    assert small_cache.stats().object_count == 1, "a refused put evicts nothing"

    exactly_id, exactly = numbered(3, 10 * KiB)  # fits exactly, evicting everything else
    small_cache.put(FRAME, exactly_id, exactly)
    assert small_cache.stats().stored_bytes == 10 * KiB
    small_cache.verify()


def test_a_refused_put_keeps_the_recency_of_earlier_reads(cache_dir: Path) -> None:
    objects = [numbered(number, 10 * KiB) for number in range(5)]
    with ObjectCache.open(
        cache_dir, budget_bytes=8 * MiB, initial_map_bytes=64 * KiB, max_map_bytes=256 * KiB
    ) as cache:
        for chunk_id, data in objects:
            cache.put(FRAME, chunk_id, data)
        cache.get(FRAME, objects[0][0])  # 0 is now the most recent; 1 the oldest
        with pytest.raises(CacheMapFullError):  # the write holding that touch is undone
            cache.put(FRAME, *numbered(50, 1 * MiB))
    # The touch went back to the batch and was written at close: a smaller budget evicts
    # the oldest, which is 1, not 0.
    with ObjectCache.open(cache_dir, budget_bytes=40 * KiB) as cache:
        assert cache.contains(FRAME, objects[0][0])
        assert not cache.contains(FRAME, objects[1][0])
        cache.verify()


def test_chunk_and_tree_with_equal_id_bytes_do_not_collide(small_cache: ObjectCache) -> None:
    raw = bytes(range(32))
    small_cache.put(FRAME, ChunkId(raw), b"frame bytes")
    small_cache.put(TREE, TreeId(raw), b"tree bytes")
    assert small_cache.get(FRAME, ChunkId(raw)) == b"frame bytes"
    assert small_cache.get(TREE, TreeId(raw)) == b"tree bytes"
    assert small_cache.delete(TREE, TreeId(raw))
    assert small_cache.get(FRAME, ChunkId(raw)) == b"frame bytes"
    assert small_cache.stats().object_count == 1


def test_a_kind_with_the_wrong_id_type_is_refused(small_cache: ObjectCache) -> None:
    with pytest.raises(CacheError, match="keyed by a ChunkId"):
        small_cache.put(FRAME, TreeId(b"\x01" * 32), b"x")
    with pytest.raises(CacheError, match="keyed by a TreeId"):
        small_cache.get(TREE, ChunkId(b"\x01" * 32))


def test_delete_removes_an_object_once(small_cache: ObjectCache) -> None:
    chunk_id, data = numbered(1, 1 * KiB)
    small_cache.put(FRAME, chunk_id, data)
    assert small_cache.delete(FRAME, chunk_id)
    assert not small_cache.delete(FRAME, chunk_id)
    stats = small_cache.stats()
    assert (stats.object_count, stats.stored_bytes) == (0, 0)
    small_cache.verify()


def test_reopen_after_close_keeps_contents_totals_and_recency(cache_dir: Path) -> None:
    objects = [numbered(number, 1 * KiB) for number in range(10)]
    with ObjectCache.open(cache_dir, budget_bytes=10 * KiB) as cache:
        for chunk_id, data in objects:
            cache.put(FRAME, chunk_id, data)
        cache.put(TREE, TreeId(b"\x01" * 32), b"")  # empty objects count too
        cache.get(FRAME, objects[0][0])  # a touch still pending at close
        before = cache.stats()
    with ObjectCache.open(cache_dir, budget_bytes=10 * KiB) as cache:
        after = cache.stats()
        assert (after.object_count, after.stored_bytes) == (before.object_count, 10 * KiB)
        for chunk_id, data in objects:
            assert cache.get(FRAME, chunk_id) == data
        cache.verify()
    with ObjectCache.open(cache_dir, budget_bytes=10 * KiB) as cache:
        cache.put(FRAME, *numbered(100, 1 * KiB))
        # The reads above were flushed at close: 0 was read first, so it goes first now.
        assert not cache.contains(FRAME, objects[0][0])
        assert cache.contains(FRAME, objects[1][0])


def test_reopen_with_a_smaller_budget_evicts_the_oldest_down_to_it(cache_dir: Path) -> None:
    objects = [numbered(number, 1 * KiB) for number in range(10)]
    with ObjectCache.open(cache_dir, budget_bytes=10 * KiB) as cache:
        for chunk_id, data in objects:
            cache.put(FRAME, chunk_id, data)
    with ObjectCache.open(cache_dir, budget_bytes=4 * KiB) as cache:
        stats = cache.stats()
        assert (stats.stored_bytes, stats.budget_bytes) == (4 * KiB, 4 * KiB)
        present = [n for n in range(10) if cache.contains(FRAME, objects[n][0])]
        assert present == [6, 7, 8, 9]
        cache.verify()


CRASHING_READER_SCRIPT = r"""
import os
import sys
from pathlib import Path

from store.cache import ObjectCache, ObjectKind
from store.ids import ChunkId

cache = ObjectCache.open(Path(sys.argv[1]), budget_bytes=6000)
for number in range(600):
    cache.put(ObjectKind.FRAME, ChunkId(number.to_bytes(32, "big")), b"x" * 10)
for number in range(600):
    assert cache.get(ObjectKind.FRAME, ChunkId(number.to_bytes(32, "big"))) is not None
os._exit(0)  # a crash: no close, so touches still batched in memory are lost
"""


def test_a_full_batch_of_read_touches_is_written_without_waiting_for_a_put(
    cache_dir: Path,
) -> None:
    subprocess.run(
        [sys.executable, "-c", CRASHING_READER_SCRIPT, str(cache_dir)],
        check=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )
    with ObjectCache.open(cache_dir, budget_bytes=6000) as cache:
        assert cache.stats().object_count == 600
        cache.put(FRAME, ChunkId(b"\xee" * 32), b"y" * 10)  # evicts exactly the oldest
        # Reads of 0..511 filled one batch and were written; reads of 512..599 died with
        # the process, so 512 kept its put-time recency and is now the oldest.
        assert cache.contains(FRAME, ChunkId((0).to_bytes(32, "big")))
        assert not cache.contains(FRAME, ChunkId((512).to_bytes(32, "big")))
        cache.verify()


def test_a_closed_cache_refuses_every_call(cache_dir: Path) -> None:
    cache = ObjectCache.open(cache_dir, budget_bytes=10 * KiB)
    cache.close()
    cache.close()  # closing twice is fine
    with pytest.raises(CacheError, match="closed"):
        cache.get(FRAME, numbered(1, 1)[0])
    with pytest.raises(CacheError, match="closed"):
        cache.put(FRAME, *numbered(1, 1))


def test_opening_a_missing_cache_read_only_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="object cache not found"):
        ObjectCache.open(tmp_path / "nothing", readonly=True)


def test_a_read_only_cache_reads_but_never_writes(cache_dir: Path) -> None:
    chunk_id, data = numbered(1, 1 * KiB)
    with ObjectCache.open(cache_dir, budget_bytes=10 * KiB) as cache:
        cache.put(FRAME, chunk_id, data)
    data_file = cache_dir / "data.mdb"
    before = hashlib.sha256(data_file.read_bytes()).digest()
    with ObjectCache.open(cache_dir, readonly=True) as reader:
        assert reader.readonly
        for _ in range(2 * 512):  # more reads than a writer batches before writing
            assert reader.get(FRAME, chunk_id) == data
        assert reader.stats().budget_bytes == 10 * KiB
        with pytest.raises(CacheError, match="read-only"):
            reader.put(FRAME, *numbered(2, 1))
        with pytest.raises(CacheError, match="read-only"):
            reader.delete(FRAME, chunk_id)
        reader.verify()
    assert hashlib.sha256(data_file.read_bytes()).digest() == before


def test_map_grows_from_a_tiny_start_within_a_small_multiple_of_the_budget(
    cache_dir: Path,
) -> None:
    budget_bytes = 1 * MiB
    rng = random.Random(3)
    with ObjectCache.open(
        cache_dir,
        budget_bytes=budget_bytes,
        initial_map_bytes=64 * KiB,
        max_map_bytes=4 * budget_bytes,
    ) as cache:
        assert cache.stats().map_size_bytes == 64 * KiB
        recent: list[tuple[ChunkId, bytes]] = []
        for number in range(400):  # about 6 MiB: six budgets
            chunk_id, data = numbered(number, rng.randint(1, 32 * KiB))
            cache.put(FRAME, chunk_id, data)
            recent = [*recent[-9:], (chunk_id, data)]
            assert_within_budget(cache)
        map_size_bytes = cache.stats().map_size_bytes
        assert 64 * KiB < map_size_bytes <= 4 * budget_bytes
        for chunk_id, data in recent:
            assert cache.get(FRAME, chunk_id) == data
        cache.verify()
    assert (cache_dir / "data.mdb").stat().st_size <= 4 * budget_bytes


def test_tree_sized_objects_fit_a_map_of_four_budgets(cache_dir: Path) -> None:
    # Trees can be a few hundred bytes, where LMDB's per-object overhead (keys, entries,
    # recency rows, half-full pages) rivals the data itself.
    budget_bytes = 256 * KiB
    rng = random.Random(5)
    with ObjectCache.open(
        cache_dir,
        budget_bytes=budget_bytes,
        initial_map_bytes=64 * KiB,
        max_map_bytes=MAP_BUDGET_MULTIPLE * budget_bytes,
    ) as cache:
        inserted_bytes = 0
        number = 0
        while inserted_bytes < 10 * budget_bytes:
            size_bytes = rng.randint(100, 2000)
            cache.put(TREE, TreeId(number.to_bytes(32, "big")), b"t" * size_bytes)
            inserted_bytes += size_bytes
            number += 1
        assert_within_budget(cache)
        cache.verify()
    assert (cache_dir / "data.mdb").stat().st_size <= MAP_BUDGET_MULTIPLE * budget_bytes


def test_a_map_at_its_ceiling_refuses_with_a_transient_error_and_stays_consistent(
    cache_dir: Path,
) -> None:
    with ObjectCache.open(
        cache_dir, budget_bytes=8 * MiB, initial_map_bytes=64 * KiB, max_map_bytes=256 * KiB
    ) as cache:
        cache.put(FRAME, *numbered(1, 10 * KiB))
        with pytest.raises(CacheMapFullError, match="map is full") as caught:
            cache.put(FRAME, *numbered(2, 1 * MiB))
        assert isinstance(caught.value, TransientError)
        assert cache.stats().object_count == 1
        cache.put(FRAME, *numbered(3, 10 * KiB))
        cache.verify()


def test_two_threads_putting_at_once_keep_the_budget(cache_dir: Path) -> None:
    errors: list[BaseException] = []
    with ObjectCache.open(cache_dir, budget_bytes=64 * KiB) as cache:

        def worker(first: int) -> None:
            try:
                for number in range(first, first + 150):
                    chunk_id, data = numbered(number, 1 * KiB + number % 500)
                    cache.put(FRAME, chunk_id, data)
                    cache.get(FRAME, numbered(number - 3, 1 * KiB + (number - 3) % 500)[0])
            except BaseException as exc:  # reported to the test thread below
                errors.append(exc)
                raise

        threads = [threading.Thread(target=worker, args=((n + 1) * 1000,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert_within_budget(cache)
        cache.verify()


# A read-only reader in another process. It answers one line per command on stdin:
#   get HEX   -> "ok SIZE" (bytes verified against the id), "missing" or "corrupt"
#   stats     -> "stats OBJECT_COUNT STORED_BYTES MAP_SIZE_BYTES"
#   put       -> "refused" if the read-only cache refuses a write
READER_SCRIPT = r"""
import sys
from pathlib import Path

from store.cache import CacheError, ObjectCache, ObjectKind
from store.ids import ChunkId, chunk_id_of

with ObjectCache.open(Path(sys.argv[1]), readonly=True) as cache:
    print("ready", cache.stats().map_size_bytes, flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "get":
            data = cache.get(ObjectKind.FRAME, ChunkId.from_hex(argument))
            if data is None:
                print("missing", flush=True)
            elif chunk_id_of(data).hex() != argument:
                print("corrupt", flush=True)
            else:
                print("ok", len(data), flush=True)
        elif command == "stats":
            stats = cache.stats()
            print("stats", stats.object_count, stats.stored_bytes, stats.map_size_bytes,
                  flush=True)
        elif command == "put":
            try:
                cache.put(ObjectKind.FRAME, chunk_id_of(b"x"), b"x")
            except CacheError:
                print("refused", flush=True)
            else:
                print("wrote", flush=True)
"""


class Reader:
    """Talks to READER_SCRIPT running in a subprocess."""

    def __init__(self, cache_dir: Path) -> None:
        environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", READER_SCRIPT, str(cache_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=environment,
        )
        words = self.read_line().split()
        assert words[0] == "ready", words
        self.initial_map_size_bytes = int(words[1])

    def read_line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"reader exited with {self.process.wait(timeout=10)}"
        return line.strip()

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read_line()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            assert self.process.wait(timeout=10) == 0
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def test_a_reader_process_sees_objects_written_before_and_after_it_opened(
    cache_dir: Path,
) -> None:
    budget_bytes = 2 * MiB
    with ObjectCache.open(
        cache_dir, budget_bytes=budget_bytes, initial_map_bytes=64 * KiB
    ) as cache:
        early = [numbered(number, 8 * KiB) for number in range(5)]
        for chunk_id, data in early:
            cache.put(FRAME, chunk_id, data)
        reader = Reader(cache_dir)
        try:
            for chunk_id, _ in early:
                assert reader.ask(f"get {chunk_id}") == f"ok {8 * KiB}"

            # The writer keeps writing (six budgets, growing the map many times over)
            # while the reader reads whatever was committed last.
            committed: list[ChunkId] = []
            writer_errors: list[BaseException] = []

            def write() -> None:
                try:
                    for number in range(100, 900):
                        chunk_id, data = numbered(number, 16 * KiB)
                        # Early objects kept recent (the touch comes before the put's
                        # eviction), so they are never evicted below.
                        cache.touch(FRAME, [early_id for early_id, _ in early])
                        cache.put(FRAME, chunk_id, data)
                        committed.append(chunk_id)
                except BaseException as exc:  # reported to the test thread below
                    writer_errors.append(exc)
                    raise

            writer = threading.Thread(target=write)
            writer.start()
            answers: list[str] = []
            while writer.is_alive():
                if committed:
                    answers.append(reader.ask(f"get {committed[-1]}"))
            writer.join()
            assert writer_errors == []
            # Each answer is the verified object, or "missing" if it was evicted already.
            assert "corrupt" not in answers
            assert any(answer.startswith("ok") for answer in answers)

            for chunk_id in committed[-10:]:
                assert reader.ask(f"get {chunk_id}") == f"ok {16 * KiB}"
            for chunk_id, _ in early:
                assert reader.ask(f"get {chunk_id}") == f"ok {8 * KiB}"
            writer_stats = cache.stats()
            _, count, stored, reader_map_size = reader.ask("stats").split()
            assert (int(count), int(stored)) == (
                writer_stats.object_count,
                writer_stats.stored_bytes,
            )
            # The writer grew the map while the reader had it open; the reader adopted it.
            assert int(reader_map_size) == writer_stats.map_size_bytes
            assert int(reader_map_size) > reader.initial_map_size_bytes
            assert reader.ask("put") == "refused"
        finally:
            reader.close()
        cache.verify()


# --------------------------------------------------------------------------------------
# Random sequences of operations against a model of the cache.

BUDGET_BYTES = 1000
# An id names one content, so each object number has one size: empty, small, large,
# exactly the budget, and over it.
SIZES = (0, 90, 150, 260, 333, 400, 550, 700, 1000, 1001)
NUMBERS = st.integers(min_value=0, max_value=len(SIZES) - 1)
KINDS = st.sampled_from([FRAME, TREE])


def model_id(kind: ObjectKind, number: int) -> ChunkId | TreeId:
    raw = bytes([number]) * 32  # equal bytes for both kinds: they must not collide
    return ChunkId(raw) if kind is FRAME else TreeId(raw)


class CacheMachine(RuleBasedStateMachine):
    """Every operation is mirrored on a model: sizes and the LRU order."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="boxfs-cache-test-"))
        self.cache = ObjectCache.open(self.directory, budget_bytes=BUDGET_BYTES)
        self.sizes: dict[bytes, int] = {}
        self.lru: list[bytes] = []  # keys, least recently used first

    def teardown(self) -> None:
        self.cache.close()
        shutil.rmtree(self.directory)

    def _touch(self, key: bytes) -> None:
        self.lru.remove(key)
        self.lru.append(key)

    def _remove(self, key: bytes) -> None:
        self.lru.remove(key)
        del self.sizes[key]

    @rule(kind=KINDS, number=NUMBERS)
    def put(self, kind: ObjectKind, number: int) -> None:
        object_id = model_id(kind, number)
        key = kind.value + object_id
        size_bytes = SIZES[number]
        data = bytes([number]) * size_bytes
        if key in self.sizes:
            self.cache.put(kind, object_id, data)
            self._touch(key)
            return
        if size_bytes > BUDGET_BYTES:
            with pytest.raises(ObjectTooLargeError):
                self.cache.put(kind, object_id, data)
            return
        self.cache.put(kind, object_id, data)
        while sum(self.sizes.values()) + size_bytes > BUDGET_BYTES:
            self._remove(self.lru[0])
        self.sizes[key] = size_bytes
        self.lru.append(key)

    @rule(kind=KINDS, number=NUMBERS)
    def get(self, kind: ObjectKind, number: int) -> None:
        key = kind.value + model_id(kind, number)
        data = self.cache.get(kind, model_id(kind, number))
        if key in self.sizes:
            assert data == bytes([number]) * self.sizes[key]
            self._touch(key)
        else:
            assert data is None

    @rule(kind=KINDS, number=NUMBERS)
    def delete(self, kind: ObjectKind, number: int) -> None:
        key = kind.value + model_id(kind, number)
        assert self.cache.delete(kind, model_id(kind, number)) == (key in self.sizes)
        if key in self.sizes:
            self._remove(key)

    @rule()
    def reopen(self) -> None:
        self.cache.close()
        self.cache = ObjectCache.open(self.directory, budget_bytes=BUDGET_BYTES)

    @invariant()
    def totals_match_the_model_and_the_budget(self) -> None:
        stats = self.cache.stats()
        assert stats.object_count == len(self.sizes)
        assert stats.stored_bytes == sum(self.sizes.values()) <= BUDGET_BYTES
        self.cache.verify()

    @invariant()
    def exactly_the_model_objects_are_cached(self) -> None:
        for kind in (FRAME, TREE):
            for number in range(len(SIZES)):
                key = kind.value + model_id(kind, number)
                assert self.cache.contains(kind, model_id(kind, number)) == (key in self.sizes)


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
