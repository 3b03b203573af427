"""The notifier: tells the kernel what changed behind its back, outside every handler.

Owns one task (``run``) that takes the model's queued ``Invalidation``s (what a sync from
another device changed: names, attributes, cached pages) and passes each to the kernel
through the functions ``boxfs.fuse_ops`` provides. Calling those inside a request handler
deadlocks the mount (the kernel waits for the handler, the handler for the kernel), and
an entry invalidation waits for any request in flight on that directory, which needs the
loop: so every call runs in a worker thread of its own limiter (one thread, so they keep
their order) while the loop goes on serving requests.

An inode or name the kernel has already forgotten (ENOENT) is fine: nothing to drop.

Who calls it: ``boxfs.mount`` starts ``run`` once the session is up and cancels it before
the session is closed.
Must not: import pyfuse3 (``boxfs.fuse_ops`` does), or touch the model's state.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import trio

from boxfs.threads import run_in_thread
from boxfs.view import FileSystemModel

_log = logging.getLogger(__name__)

InvalidateEntry = Callable[[int, bytes], None]
InvalidateInode = Callable[[int, bool], None]  # (inode, attributes only)


class Notifier:
    def __init__(
        self,
        model: FileSystemModel,
        invalidate_entry: InvalidateEntry,
        invalidate_inode: InvalidateInode,
    ) -> None:
        self.model = model
        self.invalidate_entry = invalidate_entry
        self.invalidate_inode = invalidate_inode
        self.sent = 0  # invalidations the kernel accepted (for tests and logs)
        self._limiter = trio.CapacityLimiter(1)

    async def run(self) -> None:
        while True:
            for item in dict.fromkeys(await self.model.wait_invalidations()):
                try:
                    if item.name is not None:
                        await run_in_thread(
                            self._limiter, self.invalidate_entry, item.inode, item.name
                        )
                    else:
                        await run_in_thread(
                            self._limiter, self.invalidate_inode, item.inode, not item.data
                        )
                except OSError as exc:
                    if exc.errno != errno.ENOENT:  # ENOENT: the kernel forgot it already
                        _log.warning("kernel invalidation %s failed: %s", item, exc)
                except Exception:  # noqa: BLE001  (a bug: logged; the mount stays up)
                    _log.exception("kernel invalidation %s failed", item)
                else:
                    self.sent += 1
