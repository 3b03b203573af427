"""Blocking calls in worker threads: arguments and keywords arrive, results and errors come
back, the limiter bounds how many run at once, and the loop's thread is never used."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from boxfs.threads import run_in_thread


def test_a_call_runs_off_the_loop_with_its_arguments_and_keywords() -> None:
    def describe(first: int, second: str, *, third: bool = False) -> tuple[int, str, bool, int]:
        return first, second, third, threading.get_ident()

    async def main() -> None:
        limiter = trio.CapacityLimiter(1)
        loop_thread = threading.get_ident()
        first, second, third, thread = await run_in_thread(limiter, describe, 1, "two", third=True)
        assert (first, second, third) == (1, "two", True)
        assert thread != loop_thread
        first, second, third, _ = await run_in_thread(limiter, describe, 3, "four")
        assert (first, second, third) == (3, "four", False)

    trio.run(main)


def test_what_the_call_raises_reaches_the_caller() -> None:
    def fail(message: str) -> None:
        raise OSError(message)

    async def main() -> None:
        with pytest.raises(OSError, match="disk full"):
            await run_in_thread(trio.CapacityLimiter(1), fail, "disk full")

    trio.run(main)


def test_the_limiter_bounds_the_calls_running_at_once() -> None:
    lock = threading.Lock()
    running = 0
    most = 0

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    async def main() -> None:
        limiter = trio.CapacityLimiter(2)
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(run_in_thread, limiter, work)

    trio.run(main)
    assert most == 2
