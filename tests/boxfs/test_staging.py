"""Staged files: unique names, positional I/O, the size limit, pin/discard, preserve, and a
sweep that removes only what no journal entry names."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from boxfs.journal import Journal, StagedPut
from boxfs.staging import (
    MAX_BUFFERED_BYTES,
    FileTooLargeError,
    MemoryBudget,
    StagedFile,
    StagedFileMissingError,
    Staging,
)
from store.ids import NamespaceId
from store.objects import MAX_FILE_BYTES
from store.ops import Attrs
from store.protocol import DrivePath

HOME = NamespaceId(bytes(16))
ATTRS = Attrs(mode=0o644, uid=0, gid=0, mtime_ns=0)


def staged_with(staging: Staging, data: bytes) -> str:
    with staging.new() as staged:
        staged.write_at(0, data)
        return staged.name


def test_new_staged_files_have_unique_hex_names_and_read_back(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    names = {staged_with(staging, b"x" * i) for i in range(50)}
    assert len(names) == 50
    assert all(len(name) == 32 and int(name, 16) >= 0 for name in names)
    assert staging.names() == names
    with staging.new() as staged:
        staged.write_at(5, b"world")
        staged.write_at(0, b"hello")
        assert staged.read_at(0, 10) == b"helloworld"
        assert staged.size() == 10
        staged.truncate(3)
        staged.fsync()
        name = staged.name
    assert staging.path_of(name).read_bytes() == b"hel"
    assert staging.size_of(name) == 3
    assert os.stat(staging.path_of(name)).st_mode & 0o777 == 0o600
    staging.fsync(name)
    with staging.open(name) as again:
        assert again.read_at(0, 100) == b"hel"


def test_sizes_over_the_format_maximum_are_refused_and_change_nothing(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    with staging.new() as staged:
        staged.truncate(MAX_FILE_BYTES)  # the maximum itself is fine (and sparse)
        with pytest.raises(FileTooLargeError) as caught:
            staged.truncate(10**15)
        assert caught.value.size_bytes == 10**15
        assert caught.value.limit_bytes == MAX_FILE_BYTES
        with pytest.raises(FileTooLargeError):
            staged.write_at(MAX_FILE_BYTES, b"x")
        assert staged.size() == MAX_FILE_BYTES
        # Sparse: the maximum size costs no disk blocks.
        assert os.fstat(staged.fileno()).st_blocks == 0


def test_sweep_removes_only_staged_files_no_journal_entry_names(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    journaled = [staged_with(staging, b"kept %d" % i) for i in range(3)]
    leftovers = [staged_with(staging, b"crash leftover %d" % i) for i in range(4)]
    pinned = staged_with(staging, b"still being written")
    staging.pin(pinned)
    staging.preserve(journaled[0])  # a preserved copy is not a staged file
    (staging.directory / "notes.txt").write_text("not ours")  # neither is anything else
    with Journal(tmp_path / "journal.sqlite3") as journal:
        for i, name in enumerate(journaled):
            journal.append(HOME, StagedPut(DrivePath.from_bytes(b"f%d" % i), ATTRS, staged=name))
        removed = staging.sweep(journal.staged_names())
    assert removed == sorted(leftovers)
    assert staging.names() == {*journaled, pinned}
    assert (staging.rejected_directory / journaled[0]).read_bytes() == b"kept 0"
    assert (staging.directory / "notes.txt").exists()


def test_discard_waits_for_the_last_unpin(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    name = staged_with(staging, b"content")
    staging.pin(name)
    staging.pin(name)
    staging.discard(name)
    assert staging.exists(name)
    staging.unpin(name)
    assert staging.exists(name)
    staging.unpin(name)
    assert not staging.exists(name)
    other = staged_with(staging, b"other")
    staging.discard(other)
    assert not staging.exists(other)
    staging.discard(other)  # twice is fine
    with pytest.raises(ValueError, match="not pinned"):
        staging.unpin(other)


def test_preserve_keeps_the_content_after_the_staged_file_goes(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    name = staged_with(staging, b"refused by the server")
    kept = staging.preserve(name)
    assert staging.preserve(name) == kept  # idempotent
    staging.discard(name)
    assert kept.read_bytes() == b"refused by the server"
    with pytest.raises(StagedFileMissingError):
        staging.preserve(name)
    with pytest.raises(StagedFileMissingError):
        staging.open_read(name)
    with pytest.raises(StagedFileMissingError):
        staging.size_of(name)


def test_names_that_are_not_staged_names_are_refused(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    for bad in ("../x", "A" * 32, "a" * 31, ""):
        with pytest.raises(ValueError, match="staged file name"):
            staging.path_of(bad)


def test_a_new_files_first_writes_stay_in_memory_until_something_touches_the_file(
    tmp_path: Path,
) -> None:
    staging = Staging(tmp_path / "staging")
    budget = MemoryBudget(limit_bytes=10_000)
    with staging.new() as staged:
        assert not staged.buffer(0, b"no buffering asked for")
        staged.start_buffering(budget)
        assert staged.buffer(0, b"hello ")
        assert staged.buffer(6, b"world")
        assert not staged.buffer(20, b"a gap")  # only a continuation is buffered
        assert staged.buffered_bytes == 11
        assert budget.used_bytes == 11
        assert staging.size_of(staged.name) == 0  # nothing on disk yet
        assert staged.read_at(0, 100) == b"hello world"  # a read spills first
        assert staging.size_of(staged.name) == 11
        assert (staged.buffered_bytes, budget.used_bytes) == (0, 0)
        assert not staged.buffer(11, b"!")  # spilled: writes go to the file from now on
        staged.write_at(11, b"!")
        assert staged.read_at(0, 100) == b"hello world!"


def test_every_blocking_use_of_a_buffered_file_writes_it_out_first(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    budget = MemoryBudget(limit_bytes=10_000)

    def truncated(staged: StagedFile) -> bool:
        staged.truncate(2)
        return staged.read_at(0, 9) == b"da"

    def fsynced(staged: StagedFile) -> bool:
        staged.fsync()
        return True

    def spilled(staged: StagedFile) -> bool:
        staged.spill()
        return True

    uses: dict[str, Callable[[StagedFile], bool]] = {
        "size": lambda staged: staged.size() == 4,
        "truncate": truncated,
        "fsync": fsynced,
        "write_at": lambda staged: staged.write_at(4, b"!") == 1,
        "spill": spilled,
    }
    for use, check in uses.items():
        with staging.new() as staged:
            staged.start_buffering(budget)
            assert staged.buffer(0, b"data")
            assert check(staged), use
            assert staging.path_of(staged.name).read_bytes().startswith(b"da"), use
            assert budget.used_bytes == 0, use


def test_spill_now_writes_out_a_small_buffer_and_declines_what_would_wait(
    tmp_path: Path,
) -> None:
    staging = Staging(tmp_path / "staging")
    budget = MemoryBudget(limit_bytes=10_000)
    with staging.new() as staged:
        staged.start_buffering(budget)
        assert staged.buffer(0, b"x" * 100)
        assert not staged.spill_now(99)  # more than asked for: left to a worker thread
        with staged._lock:  # a spill running in another thread
            assert not staged.spill_now(1000)
        assert (staged.buffered_bytes, staging.size_of(staged.name)) == (100, 0)
        assert staged.spill_now(100)
        assert (staged.buffered_bytes, budget.used_bytes) == (0, 0)
        assert staging.size_of(staged.name) == 100
        assert staged.spill_now(0)  # nothing buffered: nothing to wait for


def test_read_cached_serves_only_what_cannot_wait(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    budget = MemoryBudget(limit_bytes=1 << 20)
    data = os.urandom(64 * 1024)
    with staging.new() as staged:
        staged.start_buffering(budget)
        assert staged.buffer(0, data)
        assert staged.read_cached(0, 4096) is None  # buffered: a spill would have to run
        assert staged.read_at(0, 4096) == data[:4096]  # spills
        assert staged.read_cached(4096, 8192) == data[4096 : 4096 + 8192]  # just written
        assert staged.read_cached(60 * 1024, 8192) is None  # reaches the end: left to read_at
        assert staged.read_cached(0, 0) is None
        os.fsync(staged.fileno())
        os.posix_fadvise(staged.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert staged.read_cached(0, 4096) is None  # on disk only: a read would wait
        assert staged.read_at(0, 4096) == data[:4096]
        assert staged.read_cached(0, 4096) == data[:4096]  # back in the page cache


def test_the_memory_budget_bounds_buffered_bytes_and_a_close_gives_them_back(
    tmp_path: Path,
) -> None:
    staging = Staging(tmp_path / "staging")
    budget = MemoryBudget(limit_bytes=100)
    first, second = staging.new(), staging.new()
    for staged in (first, second):
        staged.start_buffering(budget)
    assert first.buffer(0, b"x" * 60)
    assert not second.buffer(0, b"y" * 60)  # over the shared budget: to the file instead
    assert second.buffer(0, b"y" * 40)
    assert budget.used_bytes == 100
    first.close()  # never spilled: dropped, as nothing was promised
    assert budget.used_bytes == 40
    assert staging.size_of(first.name) == 0
    big = staging.new()
    big.start_buffering(MemoryBudget(limit_bytes=MAX_BUFFERED_BYTES * 2))
    assert not big.buffer(0, b"z" * (MAX_BUFFERED_BYTES + 1))  # over the per-file bound
    second.close()
    big.close()
    assert budget.used_bytes == 0


def test_a_failed_spill_keeps_the_buffer_whole_and_still_growing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = Staging(tmp_path / "staging")
    budget = MemoryBudget(limit_bytes=10_000)
    real_pwrite = os.pwrite
    failures = {"left": 1}

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr("boxfs.staging.os.pwrite", pwrite)
    with staging.new() as staged:
        staged.start_buffering(budget)
        assert staged.buffer(0, b"abc")
        with pytest.raises(OSError) as raised:
            staged.spill()
        assert raised.value.errno == errno.ENOSPC
        assert staged.buffer(3, b"def")  # still buffered, and it can still grow
        assert (staged.buffered_bytes, budget.used_bytes) == (6, 6)
        assert staged.read_at(0, 10) == b"abcdef"  # the next spill writes it all
        assert budget.used_bytes == 0
