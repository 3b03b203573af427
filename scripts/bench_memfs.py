"""The ceilings for ``scripts/bench mount``: the smallest pyfuse3 filesystems that can serve
what a workload needs, from memory. Whatever boxfs does beyond them (the model, the
journal, staging, the fetcher, the LMDB cache, verifying) shows as the gap between the two.

Two modes:
- ``python scripts/bench_memfs.py MOUNTPOINT --size-bytes N`` (read-only, the read
  ceiling) mounts a root directory holding one file, ``data``, of N pseudo-random bytes
  (BLAKE3's extendable output). Reads answer with a slice of a memoryview (pyfuse3 takes
  any buffer, so nothing is copied before libfuse's reply). Handlers: lookup, getattr,
  opendir, readdir, open, read; release, releasedir and forget as no-ops (so the kernel
  gets an answer instead of ENOSYS).
- ``python scripts/bench_memfs.py MOUNTPOINT --writable`` (the untar ceiling) mounts an
  empty tree held in memory: ``Node`` objects (a directory's entries in a dict, a file's
  content in a bytearray) indexed by inode number, and what ``tar -xf`` needs on them:
  lookup, getattr, setattr (mode, size, times, uid/gid), mkdir, create, open (with
  ``O_TRUNC``, which libfuse's atomic-truncate default passes through), read, write,
  flush and release (no-ops: there is nothing to persist), opendir, readdir (the
  names as they were at opendir), releasedir, forget (lookup counts: an unlinked inode
  goes once the kernel forgets it), unlink, rmdir, rename (``RENAME_NOREPLACE``; not
  ``RENAME_EXCHANGE``, as boxfs), statfs (nominal figures), getxattr (EOPNOTSUPP, which
  boxfs answers outside ``user.*``: the kernel keeps asking, e.g. for
  ``security.capability`` before writes, as it does of boxfs) and listxattr (empty). No
  symlinks, hard links, device nodes, fsync or xattrs set: ENOSYS, pyfuse3's default.
  Handlers never await, so each runs to completion on the loop and needs no lock. It
  must do less than boxfs per request, never more; its memory grows with what is written
  and shrinks only as files are removed or truncated.

Both mount as boxfs does, so that the comparison is of the daemons and not of the mount
setup, taking the settings from ``boxfs.fuse_ops`` itself so they cannot drift apart: its
``mount_options`` (``default_permissions``, ``subtype``; ``fsname`` becomes ``memfs``) plus
``ro`` in the read-only mode, its writeback-cache flag, entry and attribute timeouts and
1 MiB ``st_blksize``; ``keep_cache=True`` at open (what boxfs answers for a file whose
content is the committed one, and for a file it creates), and ``pyfuse3.main()`` with its
default worker tasks. Each serves on a trio loop until SIGTERM/SIGINT or
``fusermount3 -u``. Started and stopped by ``scripts/bench_mount.py`` (``MemfsProcess``),
by its PID.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
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


# --- the writable tree (--writable) ---------------------------------------------------------

NAME_MAX_BYTES: Final = 255
STATFS_BLOCKS: Final = 1 << 20  # nominal: 1 TiB of 1 MiB blocks, half of it free


@dataclass(slots=True, eq=False)
class Node:
    """One inode of the writable tree: a directory (``children`` is not None) or a
    regular file (``data``). ``lookups`` is the kernel's lookup count; a node leaves the
    inode table when it has no name left (``nlink`` 0) and the kernel has forgotten it."""

    inode: pyfuse3.InodeT
    mode: int
    uid: int
    gid: int
    nlink: int
    children: dict[bytes, Node] | None = None
    data: bytearray = field(default_factory=bytearray)
    lookups: int = 0
    atime_ns: int = field(default_factory=time.time_ns)
    mtime_ns: int = field(default_factory=time.time_ns)
    ctime_ns: int = field(default_factory=time.time_ns)

    @property
    def is_dir(self) -> bool:
        return self.children is not None


class TreeOperations(pyfuse3.Operations):
    """An in-memory tree of directories and regular files (see the module docstring)."""

    supports_dot_lookup = False
    # As boxfs: the flag also decides whether the kernel sends every write (off) or
    # gathers them in its page cache (on).
    enable_writeback_cache = BoxfsOperations.enable_writeback_cache
    enable_acl = BoxfsOperations.enable_acl

    def __init__(self) -> None:
        super().__init__()
        root = Node(
            pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755, os.getuid(), os.getgid(), 2, children={}
        )
        self.nodes: dict[int, Node] = {root.inode: root}
        self.next_inode = root.inode + 1
        # Directory handles: the entries as they were at opendir, so that a change between
        # readdir calls neither skips nor repeats one.
        self.listings: dict[int, list[tuple[bytes, Node]]] = {}
        self.next_fh = 1

    def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = node.inode
        entry.entry_timeout = ENTRY_TIMEOUT_S
        entry.attr_timeout = ATTR_TIMEOUT_S
        entry.st_mode = pyfuse3.ModeT(node.mode)
        entry.st_nlink = node.nlink
        entry.st_uid = node.uid
        entry.st_gid = node.gid
        entry.st_size = len(node.data)
        entry.st_blksize = BLOCK_SIZE
        entry.st_blocks = (entry.st_size + 511) // 512
        entry.st_atime_ns = node.atime_ns
        entry.st_mtime_ns = node.mtime_ns
        entry.st_ctime_ns = node.ctime_ns
        return entry

    def _node(self, inode: int) -> Node:
        try:
            return self.nodes[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _directory(self, inode: int) -> tuple[Node, dict[bytes, Node]]:
        """The directory ``inode`` and its entries."""
        node = self._node(inode)
        if node.children is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return node, node.children

    def _child(self, parent_inode: int, name: bytes) -> tuple[Node, dict[bytes, Node], Node]:
        """A directory, its entries and its existing entry ``name`` (else ENOENT)."""
        parent, entries = self._directory(parent_inode)
        node = entries.get(name)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return parent, entries, node

    def _new_node(
        self,
        parent_inode: int,
        name: bytes,
        mode: int,
        ctx: pyfuse3.RequestContext,
        *,
        is_dir: bool,
    ) -> Node:
        """A node made in the directory ``parent_inode`` as ``name``, looked up once (the
        kernel's count)."""
        parent, entries = self._directory(parent_inode)
        if name in entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        if len(name) > NAME_MAX_BYTES:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        kind = stat.S_IFDIR if is_dir else stat.S_IFREG
        node = Node(
            pyfuse3.InodeT(self.next_inode), kind | (mode & 0o7777), ctx.uid, ctx.gid,
            nlink=2 if is_dir else 1, children={} if is_dir else None, lookups=1,
        )  # fmt: skip
        self.next_inode += 1
        self.nodes[node.inode] = node
        entries[name] = node
        if is_dir:
            parent.nlink += 1
        parent.mtime_ns = parent.ctime_ns = node.ctime_ns
        return node

    def _remove(self, parent: Node, entries: dict[bytes, Node], name: bytes, node: Node) -> None:
        """Take ``name`` (naming ``node``) out of the directory ``parent`` (``entries``)."""
        del entries[name]
        if node.is_dir:
            node.nlink = 0
            parent.nlink -= 1
        else:
            node.nlink -= 1
        parent.mtime_ns = parent.ctime_ns = node.ctime_ns = time.time_ns()
        self._drop_if_unused(node)

    def _drop_if_unused(self, node: Node) -> None:
        if node.nlink == 0 and node.lookups <= 0:
            del self.nodes[node.inode]

    # --- entries ------------------------------------------------------------------------

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        _, entries = self._directory(parent_inode)
        node = entries.get(name)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node.lookups += 1
        return self._attributes(node)

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        for inode, nlookup in inode_list:
            node = self.nodes.get(inode)
            if node is not None and inode != pyfuse3.ROOT_INODE:
                node.lookups -= nlookup
                self._drop_if_unused(node)

    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attributes(self._node(inode))

    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        now_ns = time.time_ns()
        if fields.update_size:
            if node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if attr.st_size < len(node.data):
                del node.data[attr.st_size :]
            else:
                node.data.extend(bytes(attr.st_size - len(node.data)))
            node.mtime_ns = now_ns
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | (attr.st_mode & 0o7777)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:  # pyfuse3 has already turned UTIME_NOW into a time
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = now_ns
        return self._attributes(node)

    # --- directories --------------------------------------------------------------------

    async def mkdir(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._new_node(parent_inode, name, mode, ctx, is_dir=True)
        return self._attributes(node)

    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        fh = self.next_fh
        self.next_fh += 1
        _, entries = self._directory(inode)
        self.listings[fh] = list(entries.items())
        return pyfuse3.FileHandleT(fh)

    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        listing = self.listings[fh]
        for index in range(start_id, len(listing)):
            name, node = listing[index]
            if node.nlink == 0:
                continue  # removed since opendir (and perhaps gone from the table)
            if not pyfuse3.readdir_reply(
                token, pyfuse3.FileNameT(name), self._attributes(node), index + 1
            ):
                return  # the kernel's buffer is full; it asks again from here
            node.lookups += 1  # readdirplus: the kernel now holds the entry

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        del self.listings[fh]

    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        parent, entries, node = self._child(parent_inode, name)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        self._remove(parent, entries, name, node)

    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        parent, entries, node = self._child(parent_inode, name)
        if node.children is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if node.children:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self._remove(parent, entries, name, node)

    async def rename(  # noqa: PLR0917  (pyfuse3's signature)
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: pyfuse3.FileNameT,
        parent_inode_new: pyfuse3.InodeT,
        name_new: pyfuse3.FileNameT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        # The kernel has checked the rest (a directory moved under itself, permissions).
        if flags & ~pyfuse3.RENAME_NOREPLACE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        source_node, source = self._directory(parent_inode_old)
        target_node, target = self._directory(parent_inode_new)
        node = source.get(name_old)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if len(name_new) > NAME_MAX_BYTES:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        replaced = target.get(name_new)
        if replaced is node:
            return
        if replaced is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if node.is_dir and not replaced.is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if replaced.is_dir and not node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if replaced.children:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            self._remove(target_node, target, name_new, replaced)
        del source[name_old]
        target[name_new] = node
        if node.is_dir and source_node is not target_node:
            source_node.nlink -= 1
            target_node.nlink += 1
        now_ns = time.time_ns()
        source_node.mtime_ns = source_node.ctime_ns = now_ns
        target_node.mtime_ns = target_node.ctime_ns = node.ctime_ns = now_ns

    # --- files --------------------------------------------------------------------------

    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self._new_node(parent_inode, name, mode, ctx, is_dir=False)
        info = pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(node.inode), keep_cache=True)
        return info, self._attributes(node)

    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            node.data.clear()
            node.mtime_ns = node.ctime_ns = time.time_ns()
        # A file handle is its inode number: the kernel keeps an open file's inode.
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(inode), keep_cache=True)

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        # One copy, out of a view (a bytearray exporting a view cannot be resized, so the
        # view is released here rather than handed to pyfuse3).
        with memoryview(self.nodes[fh].data) as view:
            return bytes(view[off : off + size])

    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        node = self.nodes[fh]
        data = node.data
        if off > len(data):
            data.extend(bytes(off - len(data)))
        data[off : off + len(buf)] = buf
        node.mtime_ns = node.ctime_ns = time.time_ns()
        return len(buf)

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        return None  # nothing to persist

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        return None  # the handle is the inode number: nothing to free

    # --- extended attributes and the filesystem -----------------------------------------

    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        raise pyfuse3.FUSEError(errno.EOPNOTSUPP)

    async def listxattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> Sequence[pyfuse3.XAttrNameT]:
        return []

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        data.f_blocks = STATFS_BLOCKS
        data.f_bfree = data.f_bavail = STATFS_BLOCKS // 2
        data.f_files = 1 << 32
        data.f_ffree = data.f_favail = 1 << 31
        data.f_namemax = NAME_MAX_BYTES
        return data


# --- serving ----------------------------------------------------------------------------------


async def serve(mountpoint: Path, operations: pyfuse3.Operations, *, read_only: bool) -> None:
    boxfs_options = mount_options(subtype="memfs", allow_other=False, extra=())
    options = {option for option in boxfs_options if not option.startswith("fsname=")}
    options.add("fsname=memfs")
    if read_only:
        options.add("ro")
    pyfuse3.init(operations, str(mountpoint), options)
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
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--size-bytes", type=int, help="read-only: serve one file of N bytes")
    mode.add_argument("--writable", action="store_true", help="an empty tree in memory")
    parser.add_argument("--seed", default="memfs", help="seeds the file's pseudo-random bytes")
    args = parser.parse_args()
    if args.writable:
        trio.run(partial(serve, args.mountpoint, TreeOperations(), read_only=False))
        return 0
    data = memoryview(blake3.blake3(args.seed.encode()).digest(length=args.size_bytes))
    trio.run(partial(serve, args.mountpoint, MemoryOperations(data), read_only=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
