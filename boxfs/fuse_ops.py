"""The pyfuse3 adapter: kernel requests in, filesystem-model calls out, nothing else.

Owns the translation between pyfuse3 and ``boxfs.view.FileSystemModel``: each handler
calls the one model method that does the work, turns the model's ``Attr`` / ``StatFs`` into
pyfuse3's ``EntryAttributes`` / ``StatvfsData``, and turns ``FsError(errno)`` into
``pyfuse3.FUSEError(errno)``. Any other exception is a bug: it is logged with its traceback
and answered with EIO, and the mount stays up (DESIGN.md §5, STYLE.md "Errors").

It also wraps the few pyfuse3 module functions the mount's wiring needs (``init``,
``main``, ``terminate``, ``close``), because this is the only module that may import
pyfuse3 (ruff's banned-api rule); ``boxfs.mount`` calls those wrappers.

Must not: hold filesystem state, talk to the server, or send kernel notifications from a
handler (``invalidate_entry`` / ``invalidate_inode`` here are for ``boxfs.notifier``,
which calls them from a worker thread, never inside a request).

Who calls it: pyfuse3's request tasks, on the mount's one trio loop (``pyfuse3.main`` runs
in the root nursery of ``boxfs.mount``).

Lookup counts are the model's: ``lookup``, the creating calls, and ``readdir`` (for every
entry of a page: readdirplus hands the kernel each one it accepts; the model over-counts
the few a full buffer turned away, which only keeps an unlinked inode's number a little
longer) count, and ``forget`` passes the kernel's counts through.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, ParamSpec, TypeVar

import pyfuse3  # noqa: TID251  (this is the adapter: the one module allowed)

from boxfs.view import Attr, FileSystemModel, FsError, StatFs

log = logging.getLogger(__name__)

# How long the kernel may keep entries and attributes without asking again. Changes made
# through this mount are seen by the kernel anyway; changes from other devices are pushed
# by the notifier, and this bounds how stale a view can get without it.
ENTRY_TIMEOUT_S: Final = 1.0
ATTR_TIMEOUT_S: Final = 1.0
BLOCK_SIZE: Final = 1 << 20  # st_blksize: tools then read and write 1 MiB at a time

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _translated(
    handler: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """``FsError`` → ``FUSEError``; anything else → logged, EIO. Cancellation passes."""

    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:  # the kernel boundary: a bug must not end the mount
            log.exception("unexpected error in FUSE handler %s", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    wrapper.__name__ = handler.__name__
    wrapper.__qualname__ = handler.__qualname__
    wrapper.__doc__ = handler.__doc__
    return wrapper


def entry_attributes(attr: Attr) -> pyfuse3.EntryAttributes:
    """The model's attributes as pyfuse3 wants them."""
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = pyfuse3.InodeT(attr.inode)
    entry.generation = attr.generation
    entry.entry_timeout = ENTRY_TIMEOUT_S
    entry.attr_timeout = ATTR_TIMEOUT_S
    entry.st_mode = pyfuse3.ModeT(attr.mode)
    entry.st_nlink = attr.nlink
    entry.st_uid = attr.uid
    entry.st_gid = attr.gid
    entry.st_rdev = attr.rdev
    entry.st_size = attr.size
    entry.st_blksize = BLOCK_SIZE
    entry.st_blocks = attr.blocks
    entry.st_atime_ns = attr.atime_ns
    entry.st_mtime_ns = attr.mtime_ns
    entry.st_ctime_ns = attr.ctime_ns
    return entry


def owner(ctx: pyfuse3.RequestContext) -> tuple[int, int]:
    """Who makes a new entry: the requesting process's uid and gid."""
    return ctx.uid, ctx.gid


def statvfs_data(stats: StatFs) -> pyfuse3.StatvfsData:
    data = pyfuse3.StatvfsData()
    data.f_bsize = stats.block_size
    data.f_frsize = stats.block_size
    data.f_blocks = stats.blocks
    data.f_bfree = stats.blocks_free
    data.f_bavail = stats.blocks_free
    data.f_files = stats.files
    data.f_ffree = stats.files_free
    data.f_favail = stats.files_free
    data.f_namemax = stats.name_max
    return data


class BoxfsOperations(pyfuse3.Operations):
    """pyfuse3 ``Operations`` over a ``FileSystemModel``."""

    # "." and ".." lookups come only with NFS export support; the model answers EINVAL.
    supports_dot_lookup = False
    # No writeback cache: with it the kernel trusts its own cached size and times of a
    # regular file over what the mount answers, so a file another device changed would keep
    # its old size here (an open descriptor would read the new bytes cut at the old
    # length). Writes then reach the model as the application issued them (up to 1 MiB).
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, model: FileSystemModel) -> None:
        super().__init__()
        self.model = model

    # --- entries ------------------------------------------------------------------------

    @_translated
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.model.lookup(parent_inode, name))

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        # Must not raise at all (it answers no request).
        for inode, nlookup in inode_list:
            try:
                self.model.forget(inode, nlookup)
            except Exception:  # forget has no caller to tell
                log.exception("forget(%d, %d) failed", inode, nlookup)

    @_translated
    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.model.getattr(inode))

    @_translated
    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        changed = await self.model.setattr(
            inode,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            fh=fh,
        )
        return entry_attributes(changed)

    @_translated
    async def readlink(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileNameT:
        return pyfuse3.FileNameT(await self.model.readlink(inode))

    # --- directories --------------------------------------------------------------------

    @_translated
    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        return pyfuse3.FileHandleT(await self.model.opendir(inode))

    @_translated
    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        offset = start_id
        while True:
            page = await self.model.readdir(fh, offset)
            if not page:
                return
            for name, attr, next_offset in page:
                if not pyfuse3.readdir_reply(token, name, entry_attributes(attr), next_offset):
                    return  # the kernel's buffer is full; it asks again from here
                offset = next_offset

    @_translated
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        await self.model.releasedir(fh)

    @_translated
    async def mkdir(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.model.mkdir(parent_inode, name, mode, owner(ctx)))

    @_translated
    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        await self.model.rmdir(parent_inode, name)

    @_translated
    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        await self.model.unlink(parent_inode, name)

    @_translated
    async def rename(  # noqa: PLR0917  (pyfuse3's signature)
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: pyfuse3.FileNameT,
        parent_inode_new: pyfuse3.InodeT,
        name_new: pyfuse3.FileNameT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        await self.model.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @_translated
    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        target: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.model.symlink(parent_inode, name, target, owner(ctx)))

    @_translated
    async def mknod(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        rdev: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        created = await self.model.mknod(parent_inode, name, mode, rdev, owner(ctx))
        return entry_attributes(created)

    @_translated
    async def link(
        self,
        inode: pyfuse3.InodeT,
        new_parent_inode: pyfuse3.InodeT,
        new_name: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.model.link(inode, new_parent_inode, new_name))

    # --- files --------------------------------------------------------------------------

    @_translated
    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        fh, keep_cache = await self.model.open(inode, flags)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=keep_cache)

    @_translated
    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attr = await self.model.create(parent_inode, name, mode, flags, owner(ctx))
        # A new file has nothing in the page cache worth keeping or dropping.
        info = pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=True)
        return info, entry_attributes(attr)

    @_translated
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return await self.model.read(fh, off, size)

    @_translated
    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        return await self.model.write(fh, off, buf)

    @_translated
    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        await self.model.flush(fh)

    @_translated
    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        await self.model.fsync(fh, datasync)

    @_translated
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        await self.model.release(fh)

    # --- extended attributes and the filesystem -----------------------------------------

    @_translated
    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        return await self.model.getxattr(inode, name)

    @_translated
    async def setxattr(
        self,
        inode: pyfuse3.InodeT,
        name: pyfuse3.XAttrNameT,
        value: bytes,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        await self.model.setxattr(inode, name, value)

    @_translated
    async def listxattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> Sequence[pyfuse3.XAttrNameT]:
        return [pyfuse3.XAttrNameT(name) for name in await self.model.listxattr(inode)]

    @_translated
    async def removexattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        await self.model.removexattr(inode, name)

    @_translated
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return statvfs_data(await self.model.statfs())


# --- the session: what boxfs.mount needs from pyfuse3 -----------------------------------


def mount_options(*, subtype: str, allow_other: bool, extra: Sequence[str]) -> set[str]:
    """The options for ``pyfuse3.init``: pyfuse3's defaults (``default_permissions``), the
    name the mount shows in /proc/mounts, and the user's ``-o`` options.

    No ``max_read``: libfuse refuses it unless the init handler sets the same value in
    ``conn->max_read``, which pyfuse3 does not expose ("init() and fuse_session_new()
    requested different maximum read size"). libfuse already negotiates ``max_pages`` of
    256 (1 MiB requests) with kernels that support it; ``st_blksize`` of 1 MiB makes tools
    issue 1 MiB reads."""
    options = set(pyfuse3.default_options)
    options.add("fsname=boxfs")
    options.add(f"subtype={subtype}")
    if allow_other:
        options.add("allow_other")
    options.update(extra)
    return options


def init_session(ops: BoxfsOperations, mountpoint: os.PathLike[str], options: set[str]) -> None:
    """Mount (``pyfuse3.init``): from here the kernel sends requests to ``run_session``."""
    pyfuse3.init(ops, os.fspath(mountpoint), options)


async def run_session() -> None:
    """Serve requests until the filesystem is unmounted (``fusermount3 -u``) or
    ``terminate_session`` is called. Runs on the mount's trio loop."""
    await pyfuse3.main()


def terminate_session() -> None:
    """Make ``run_session`` return (call on the loop, e.g. from a signal task)."""
    pyfuse3.terminate()


def invalidate_entry(parent_inode: int, name: bytes) -> None:
    """Make the kernel forget ``name`` in ``parent_inode`` (blocking: call it from a worker
    thread, never from a handler: ``boxfs.notifier`` does)."""
    pyfuse3.invalidate_entry(pyfuse3.InodeT(parent_inode), name)


def invalidate_inode(inode: int, attr_only: bool) -> None:
    """Make the kernel forget an inode's attributes, and its cached pages unless
    ``attr_only`` (blocking, as ``invalidate_entry``)."""
    pyfuse3.invalidate_inode(pyfuse3.InodeT(inode), attr_only)


def close_session(*, unmount: bool) -> None:
    """End the session; ``unmount`` also detaches the mount (not needed after an external
    ``fusermount3 -u``)."""
    pyfuse3.close(unmount=unmount)
