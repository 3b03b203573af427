"""The ceiling for ``scripts/bench mount``: the smallest pyfuse3 filesystem that can serve a
file, one read-only file held in memory. Whatever boxfs does beyond this (the model, the
fetcher, the LMDB cache, verifying) shows as the gap between the two.

``python scripts/bench_memfs.py MOUNTPOINT --size-bytes N`` mounts a root directory holding
one file, ``data``, of N pseudo-random bytes (BLAKE3's extendable output), and serves it on
a trio loop until SIGTERM/SIGINT or ``fusermount3 -u``. Reads answer with a slice of a
memoryview (pyfuse3 takes any buffer, so nothing is copied before libfuse's reply).

It mounts as boxfs does, so that the comparison is of the daemons and not of the mount
setup, taking the settings from ``boxfs.fuse_ops`` itself so they cannot drift apart: its
``mount_options`` (``default_permissions``, ``subtype``; ``fsname`` becomes ``memfs``) plus
``ro``, its writeback-cache flag, entry and attribute timeouts and 1 MiB ``st_blksize``;
``keep_cache=True`` at open (what boxfs answers for a file whose content is the committed
one), and ``pyfuse3.main()`` with its default worker tasks.

Handlers: lookup, getattr, opendir, readdir, open, read; release, releasedir and forget as
no-ops (so the kernel gets an answer instead of ENOSYS). Started and stopped by
``scripts/bench_mount.py``, by its PID.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import blake3
import pyfuse3  # noqa: TID251  (a baseline filesystem for the benchmark, not part of boxfs)
import trio

from boxfs.fuse_ops import (
    ATTR_TIMEOUT_S,
    BLOCK_SIZE,
    ENTRY_TIMEOUT_S,
    BoxfsOperations,
    mount_options,
)
from boxfs.mount import find_mount

FILE_NAME: Final = b"data"
FILE_INODE: Final = pyfuse3.InodeT(pyfuse3.ROOT_INODE + 1)


class MemoryOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    # As boxfs: the flag also changes how the kernel treats cached attributes.
    enable_writeback_cache = BoxfsOperations.enable_writeback_cache
    enable_acl = BoxfsOperations.enable_acl

    def __init__(self, data: memoryview) -> None:
        super().__init__()
        self.data = data

    def _attributes(self, inode: pyfuse3.InodeT) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.entry_timeout = ENTRY_TIMEOUT_S
        entry.attr_timeout = ATTR_TIMEOUT_S
        if inode == pyfuse3.ROOT_INODE:
            entry.st_mode = pyfuse3.ModeT(stat.S_IFDIR | 0o755)
            entry.st_nlink = 2
        else:
            entry.st_mode = pyfuse3.ModeT(stat.S_IFREG | 0o444)
            entry.st_nlink = 1
            entry.st_size = len(self.data)
        entry.st_uid = os.getuid()
        entry.st_gid = os.getgid()
        entry.st_blksize = BLOCK_SIZE
        entry.st_blocks = (entry.st_size + 511) // 512
        return entry

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE or name != FILE_NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attributes(FILE_INODE)

    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if inode not in (pyfuse3.ROOT_INODE, FILE_INODE):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attributes(inode)

    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return pyfuse3.FileHandleT(inode)

    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        if start_id == 0:
            pyfuse3.readdir_reply(
                token, pyfuse3.FileNameT(FILE_NAME), self._attributes(FILE_INODE), 1
            )

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        return None

    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if inode != FILE_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(inode), keep_cache=True)

    # pyfuse3's stub says bytes, but it replies from any buffer (PyObject_GetBuffer): a
    # view spares the copy a slice of bytes would make, which the ceiling should not pay.
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> memoryview:  # type: ignore[override]
        return self.data[off : off + size]

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        return None

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        return None  # nothing to free: the two inodes live as long as the mount


async def serve(mountpoint: Path, data: memoryview) -> None:
    boxfs_options = mount_options(subtype="memfs", allow_other=False, extra=())
    options = {option for option in boxfs_options if not option.startswith("fsname=")}
    options |= {"fsname=memfs", "ro"}
    pyfuse3.init(MemoryOperations(data), str(mountpoint), options)
    unmounted = False
    try:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        pyfuse3.terminate()
                        return

            nursery.start_soon(stop_on_signal)
            await pyfuse3.main()  # returns after terminate() or an external fusermount3 -u
            unmounted = find_mount(mountpoint) is None
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=not unmounted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--size-bytes", type=int, required=True)
    parser.add_argument("--seed", default="memfs", help="seeds the file's pseudo-random bytes")
    args = parser.parse_args()
    data = memoryview(blake3.blake3(args.seed.encode()).digest(length=args.size_bytes))
    trio.run(serve, args.mountpoint, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
