"""The stage pool: staged files made ahead in the background, taken without waiting,
refilled at half, removed when the pool's task ends, and a full disk never ending it."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from boxfs.stage_pool import StagePool
from boxfs.staging import StagedFile, Staging

SIZE = 8


async def wait_for(check: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not check():
            await trio.sleep(0.005)


def test_taken_files_are_new_empty_and_the_pool_refills_at_half(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    pool = StagePool(staging, trio.CapacityLimiter(2), size=SIZE)

    async def main() -> None:
        assert pool.take() is None  # nothing made yet: the caller makes its own
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run)
            await wait_for(lambda: len(pool) == SIZE)
            assert len(staging.names()) == SIZE
            taken: list[StagedFile] = []
            for _ in range(SIZE // 2 - 1):
                stage = pool.take()
                assert stage is not None
                taken.append(stage)
            await trio.sleep(0.05)
            assert len(pool) == SIZE // 2 + 1  # above half: no refill yet
            for _ in range(2):
                stage = pool.take()
                assert stage is not None
                taken.append(stage)
            await wait_for(lambda: len(pool) == SIZE)
            assert len({stage.name for stage in taken}) == len(taken)
            for stage in taken:
                assert stage.size() == 0
                stage.write_at(0, b"mine")
                assert not staging.is_pinned(stage.name)  # the taker pins what it keeps
            nursery.cancel_scope.cancel()
        # The ready ones are gone with the task; the taken ones are the takers' business.
        assert staging.names() == {stage.name for stage in taken}
        assert pool.take() is None
        for stage in taken:
            stage.close()

    trio.run(main)


def test_a_full_disk_is_retried_without_ending_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = Staging(tmp_path / "staging")
    monkeypatch.setattr("boxfs.stage_pool.RETRY_S", 0.05)
    pool = StagePool(staging, trio.CapacityLimiter(2), size=SIZE)
    real_new = staging.new
    failures = {"left": 3}

    def new() -> StagedFile:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_new()

    monkeypatch.setattr(staging, "new", new)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run)
            await wait_for(lambda: len(pool) == SIZE)
            assert failures["left"] == 0
            nursery.cancel_scope.cancel()
        assert staging.names() == set()

    trio.run(main)
