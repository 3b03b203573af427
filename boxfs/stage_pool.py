"""Empty staged files made ahead of need, so that a create(2) on the mount makes none itself.

Owns a bounded list of open, empty, unpinned staged files (``Staging.new``). ``run()``
refills it in one worker-thread call whenever it falls to half, so a burst of creates (an
untar) takes ready files on the loop instead of paying a thread hop and a file creation
each. ``take()`` never waits: a ready file, or None when there is none (the caller makes
one itself, as without a pool; the pool is only ever a shortcut).

The ready files are named by no journal entry and hold nothing: ``close()`` removes them
at unmount (``run()`` calls it as it is cancelled), and after a crash ``Staging.sweep`` at
the next mount does. A failure to make files (a full disk) is logged and retried after
``RETRY_S``; it never ends ``run()``, and creates meanwhile fail or succeed on their own.

Must not: pin, journal or write anything (the taker pins the file it takes); hold more
than ``size`` files.

Who calls it: ``take`` from the model's request handlers on the mount's loop; ``run`` is a
background task in the mount's nursery. All state lives on the loop and is touched only
between awaits.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from boxfs.staging import StagedFile, Staging
from boxfs.threads import run_in_thread

_log = logging.getLogger(__name__)

DEFAULT_SIZE: Final = 64
RETRY_S: Final = 5.0


class StagePool:
    def __init__(
        self, staging: Staging, limiter: trio.CapacityLimiter, *, size: int = DEFAULT_SIZE
    ) -> None:
        if size < 1:
            raise ValueError("a stage pool holds at least one file")
        self._staging = staging
        self._limiter = limiter
        self._size = size
        self._ready: list[StagedFile] = []
        self._low = trio.Event()
        self._low.set()  # start full
        self._closed = False

    def take(self) -> StagedFile | None:
        """A new empty staged file, unpinned, or None if none is ready."""
        if len(self._ready) <= self._size // 2:
            self._low.set()
        return self._ready.pop() if self._ready else None

    def __len__(self) -> int:
        return len(self._ready)

    async def run(self) -> None:
        """Refill whenever the pool is at half or less, until cancelled; then ``close``."""
        try:
            await self._refill()
        finally:
            with trio.CancelScope(shield=True):
                await self.close()

    async def _refill(self) -> None:
        while not self._closed:
            await self._low.wait()
            self._low = trio.Event()
            wanted = self._size - len(self._ready)
            if wanted <= 0:
                continue
            try:
                # Not abandoned on cancel: the files made are kept, so close() removes them.
                made = await run_in_thread(self._limiter, self._make, wanted)
            except OSError as exc:
                _log.warning("cannot make staged files ahead (%s); retrying", exc)
                await trio.sleep(RETRY_S)
                self._low.set()
                continue
            self._ready.extend(made)

    def _make(self, count: int) -> list[StagedFile]:
        made: list[StagedFile] = []
        try:
            for _ in range(count):
                made.append(self._staging.new())
        except OSError:
            if not made:
                raise
        return made

    async def close(self) -> None:
        """Close and remove the files still ready; the pool gives out none afterwards."""
        self._closed = True
        ready, self._ready = self._ready, []
        if ready:
            await run_in_thread(self._limiter, self._remove, ready)

    def _remove(self, ready: list[StagedFile]) -> None:
        for stage in ready:
            stage.close()
            self._staging.remove(stage.name)
