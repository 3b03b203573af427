"""Blocking work off the trio loop: one call in a worker thread, under a capacity limiter.

Owns the one way the client hands a blocking call (SQLite, LMDB, file I/O, chunking,
hashing, zstd) to a worker thread: ``run_in_thread(limiter, function, *args, **kwargs)``,
``trio.to_thread.run_sync`` with the ``CapacityLimiter`` the mount passes in, and
keyword arguments too (``trio.to_thread.run_sync`` takes positional ones only).

Must not: run anything on the loop, or hold a transaction or a lock across the await
(each call is one whole method of the journal or the cache, begun and ended in its thread).

Who calls it: trio tasks of the client (the uploader, the fetcher, the filesystem model,
the CLI), on the loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import trio

_T = TypeVar("_T")
_P = ParamSpec("_P")


async def run_in_thread(
    limiter: trio.CapacityLimiter,
    function: Callable[_P, _T],
    /,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """``function(*args, **kwargs)`` in a worker thread taken from ``limiter``; its result,
    or what it raised. Cancelling the caller abandons nothing: trio waits for the call."""
    if kwargs:
        return await trio.to_thread.run_sync(
            functools.partial(function, *args, **kwargs), limiter=limiter
        )
    return await trio.to_thread.run_sync(function, *args, limiter=limiter)
