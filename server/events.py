"""In-process fan-out of "a head moved" to the event streams of this server process.

The events table (``server.db.events``) is the record: a commit writes its event row in
the same transaction that moves the head. The hub only wakes the streams waiting in this
process so they read the table; a stream that wakes for nothing simply waits again. (With
several server processes, PostgreSQL LISTEN/NOTIFY wakes the others the same way.)

Used from the event loop only: ``publish`` from the commit path after its transaction,
``wait`` from each event stream.
"""

from __future__ import annotations

import anyio


class EventHub:
    def __init__(self) -> None:
        # Made on first use: an anyio.Event belongs to the running event loop.
        self._changed: anyio.Event | None = None
        self.closed = False

    def _current(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def publish(self) -> None:
        """Wake every waiting stream (called after a head moved)."""
        changed, self._changed = self._current(), anyio.Event()
        changed.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait for the next publish; False if ``timeout_s`` passed first (or closing)."""
        if self.closed:
            return False
        changed = self._current()
        with anyio.move_on_after(timeout_s):
            await changed.wait()
            return not self.closed
        return False

    def close(self) -> None:
        """Shutdown: wake every stream so it notices ``closed`` and ends."""
        self.closed = True
        if self._changed is not None:
            self._changed.set()
