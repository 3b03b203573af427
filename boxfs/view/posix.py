"""POSIX namespace rules: lookups of attributes, listings, and every metadata change.

mkdir, rmdir, unlink, rename (with ``RENAME_NOREPLACE``), symlink, mknod (FIFOs, sockets
and device nodes, stored as entries: the mount is ``nodev``), setattr, extended attributes
in the ``user.`` namespace, statfs. Each change runs through ``_change``: its checks, the
journal append (it survives a killed mount once the call returns), the overlay update,
then the uploader is nudged; nothing waits for the server. ``readdir`` lists ``.`` and
``..`` first and counts a lookup for every other entry it returns (readdirplus does in the
kernel). Hard links raise ``FsError(EPERM)``; with ``--preserve-ownership`` new entries
take the creating process's uid and gid (``Owner``), else the mount's.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from datetime import UTC

from boxfs.journal import BasedOnPut, JournalOp, StagedPut
from boxfs.view.nodes import (
    BLOCK_SIZE,
    EDITORS_XATTR,
    READDIR_PAGE,
    RENAME_NOREPLACE,
    STATFS_BLOCKS,
    XATTR_NAMESPACE,
    Attr,
    DirHandle,
    FsError,
    Node,
    Owner,
    StatFs,
    apply_changes,
    check_name,
    check_size,
    now_ns,
)
from boxfs.view.replay import JournalReplay
from store.errors import FormatError
from store.objects import (
    DEVICE_KINDS,
    MAX_NAME_BYTES,
    MAX_SYMLINK_TARGET_BYTES,
    MAX_XATTR_NAME_BYTES,
    MAX_XATTR_VALUE_BYTES,
    MAX_XATTRS_TOTAL_BYTES,
    EntryKind,
)
from store.ops import AttrChanges, Delete, Mkdir, Move, SetAttr
from store.protocol import DrivePath


def check_xattr_namespace(name: bytes) -> None:
    if not name.startswith(XATTR_NAMESPACE):
        raise FsError(errno.EOPNOTSUPP)


def _check_replace(node: Node, replaced: Node, flags: int, replaced_empty: bool) -> None:
    """rename(2)'s rules for ``node`` taking the place of ``replaced``."""
    if flags & RENAME_NOREPLACE:
        raise FsError(errno.EEXIST)
    if node.kind is EntryKind.DIR and replaced.kind is not EntryKind.DIR:
        raise FsError(errno.ENOTDIR)
    if node.kind is not EntryKind.DIR and replaced.kind is EntryKind.DIR:
        raise FsError(errno.EISDIR)
    if not replaced_empty:
        raise FsError(errno.ENOTEMPTY)


class NamespaceRules(JournalReplay):
    """The POSIX namespace operations, the top layer under ``FileSystemModel``."""

    async def setattr(
        self,
        inode: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
        fh: int | None = None,
    ) -> Attr:
        node = self._node(inode)
        self._check_writable(node)
        if size is not None:
            if node.kind is EntryKind.DIR:
                raise FsError(errno.EISDIR)
            if node.kind is not EntryKind.FILE:
                raise FsError(errno.EINVAL)
            check_size(size)
            await self._truncate(node, size)
        if not self._preserve:
            uid = gid = None  # ownership is the mount's: chown is accepted and ignored
        if mtime_ns is not None and atime_ns is None and node.atime_ns is None:
            atime_ns = node.mtime_ns  # the access time stays where it was
        if all(value is None for value in (mode, uid, gid, mtime_ns, atime_ns)):
            return self._attr(node)
        try:
            changes = AttrChanges(
                mode=None if mode is None else mode & 0o7777, uid=uid, gid=gid, mtime_ns=mtime_ns,
                atime_ns=atime_ns,
            )  # fmt: skip
        except FormatError as exc:
            raise FsError(errno.EINVAL, str(exc)) from exc
        async with self._lock:
            if self._journals_attrs(node):
                await self._append(self._namespace_of(node), SetAttr(self._path(node), changes))
            apply_changes(node, changes)
        return self._attr(node)

    async def readlink(self, inode: int) -> bytes:
        node = self._node(inode)
        if node.kind is not EntryKind.SYMLINK:
            raise FsError(errno.EINVAL)
        return node.target

    async def opendir(self, inode: int) -> int:
        node = self._node(inode)
        if node.versions_root:
            await self._refresh_versions(node)
        children = await self._children(node)
        names = [name for name in children if not self._hidden(node, name)]
        dh = self._next_fh
        self._next_fh += 1
        self._dirs[dh] = DirHandle(node, names)
        node.handles += 1
        return dh

    async def readdir(self, dh: int, start: int) -> list[tuple[bytes, Attr, int]]:
        """A page of the listing from offset ``start``: ``.`` (offset 0) and ``..`` (1)
        first, as ``ls -a`` expects (the kernel does not add them for FUSE), then the names
        opendir saw. ``.`` and ``..`` count no lookup: the kernel links no entry for them."""
        handle = self._dirs.get(dh)
        if handle is None:
            raise FsError(errno.EBADF)
        directory = handle.node
        page: list[tuple[bytes, Attr, int]] = []
        dots = ((b".", directory), (b"..", directory.parent or directory))
        for offset in range(start, len(dots)):
            name, dot = dots[offset]
            page.append((name, self._attr(dot), offset + 1))
        children: dict[bytes, Node] = directory.children or {}
        index = max(0, start - len(dots))
        while index < len(handle.names) and len(page) < READDIR_PAGE:
            name = handle.names[index]
            index += 1
            node = children.get(name)
            if node is not None:  # removed since opendir: skipped
                node.lookups += 1
                page.append((name, self._attr(node), index + len(dots)))
        return page

    async def releasedir(self, dh: int) -> None:
        handle = self._dirs.pop(dh, None)
        if handle is not None:
            handle.node.handles -= 1
            if handle.node.detached:
                self._maybe_drop(handle.node)

    async def mkdir(self, parent: int, name: bytes, mode: int, owner: Owner | None = None) -> Attr:
        directory = self._writable_dir(parent)
        return await self._add_entry(
            directory, name, EntryKind.DIR, mode,
            lambda node: Mkdir(self._path(node), self._file_attrs(node)), owner=owner,
        )  # fmt: skip

    async def rmdir(self, parent: int, name: bytes) -> None:
        directory = self._writable_dir(parent)

        async def change() -> None:
            node = self._listed_child(directory, name)
            if self._is_mount_point(node):
                raise FsError(errno.EBUSY)
            self._check_writable(node)
            if node.kind is not EntryKind.DIR:
                raise FsError(errno.ENOTDIR)
            if self._listed(node):
                raise FsError(errno.ENOTEMPTY)
            await self._append(self._namespace_of(node), Delete(self._path(node)))
            self._detach(node)
            self._touch(directory)

        await self._change(change)

    async def unlink(self, parent: int, name: bytes) -> None:
        directory = self._writable_dir(parent)

        async def change() -> None:
            node = self._listed_child(directory, name)
            if self._is_mount_point(node):
                raise FsError(errno.EBUSY)
            self._check_writable(node)
            if node.kind is EntryKind.DIR:
                raise FsError(errno.EISDIR)
            if node.remote:
                await self._append(self._namespace_of(node), self._delete_op(node))
            self._detach(node)
            self._touch(directory)

        await self._change(change)

    async def rename(
        self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int
    ) -> None:
        """rename(2) inside one namespace. From one namespace to another: EXDEV, and
        nothing changes (``mv`` then copies and removes). A shared folder's root moves
        within the home like a folder (its mount entry moves); onto one: EBUSY."""
        if flags & ~RENAME_NOREPLACE:
            raise FsError(errno.EINVAL)
        source_dir = self._writable_dir(old_parent)
        target_dir = self._writable_dir(new_parent)
        if source_dir.namespace_id != target_dir.namespace_id:
            raise FsError(errno.EXDEV)
        check_name(new)
        if self._hidden(target_dir, new):  # a namespace's ``.versions``
            raise FsError(errno.EROFS)
        await self._change(lambda: self._rename(source_dir, old, target_dir, new, flags))

    @staticmethod
    def _move_op(
        source: DrivePath, destination: DrivePath, replaced: Node | None
    ) -> Move | BasedOnPut:
        """The move, naming the content of the file it replaces as the mount saw it (the
        server's, or that of a put still pending): another version there is not silently
        replaced (``store.ops.Move``)."""
        if replaced is None or replaced.kind is EntryKind.DIR:
            return Move(source, destination)
        move = Move(source, destination, replaced.base)
        return move if replaced.base_seq is None else BasedOnPut(move, replaced.base_seq)

    async def _rename(
        self, source_dir: Node, old: bytes, target_dir: Node, new: bytes, flags: int
    ) -> None:
        """rename's checks and change, under ``_lock`` (through ``_change``)."""
        node = self._listed_child(source_dir, old)
        mount_point = self._is_mount_point(node)
        if not mount_point:  # a mount entry is the home's: writable where the home is
            self._check_writable(node)
        targets = self._listed(target_dir)
        if source_dir.detached or target_dir.detached:
            raise FsError(errno.ENOENT)
        replaced = targets.get(new)
        if replaced is not None and self._is_mount_point(replaced):
            raise FsError(errno.EBUSY)
        if replaced is node:
            return
        ancestor: Node | None = target_dir
        while ancestor is not None:
            if ancestor is node:
                raise FsError(errno.EINVAL)  # into its own subtree
            ancestor = ancestor.parent
        if replaced is not None:
            empty = replaced.kind is not EntryKind.DIR or not self._listed(replaced)
            _check_replace(node, replaced, flags, empty)
        source_path = self._home_path(node) if mount_point else self._path(node)
        destination = self._child_path(target_dir, new)
        ops: list[JournalOp | BasedOnPut] = []
        if node.remote:
            ops.append(self._move_op(source_path, destination, replaced))
        elif replaced is not None and replaced.remote:
            ops.append(self._delete_op(replaced))  # the new file's put comes at release
        if ops:
            await self._append(self._namespace_of(source_dir), *ops)
        if replaced is not None:
            self._detach(replaced)
        assert source_dir.children is not None
        del source_dir.children[node.name]
        node.name = new
        node.parent = target_dir
        targets[new] = node
        node.ctime_ns = now_ns()
        node.changed = True
        self._touch(source_dir)
        if target_dir is not source_dir:
            self._touch(target_dir)

    async def symlink(
        self, parent: int, name: bytes, target: bytes, owner: Owner | None = None
    ) -> Attr:
        directory = self._writable_dir(parent)
        if len(target) > MAX_SYMLINK_TARGET_BYTES:
            raise FsError(errno.ENAMETOOLONG)
        if not target or b"\0" in target:
            raise FsError(errno.EINVAL)
        return await self._put_special(
            directory, name, EntryKind.SYMLINK, 0o777, owner, target=target
        )

    async def mknod(
        self, parent: int, name: bytes, mode: int, rdev: int, owner: Owner | None = None
    ) -> Attr:
        directory = self._writable_dir(parent)
        if stat.S_ISFIFO(mode):
            kind = EntryKind.FIFO
        elif stat.S_ISSOCK(mode):
            kind = EntryKind.SOCKET
        elif stat.S_ISBLK(mode):
            kind = EntryKind.BLOCK_DEVICE
        elif stat.S_ISCHR(mode):
            kind = EntryKind.CHAR_DEVICE
        else:
            raise FsError(errno.EPERM)  # the kernel uses create for files
        if kind not in DEVICE_KINDS:
            rdev = 0
        return await self._put_special(directory, name, kind, mode, owner, rdev=rdev)

    async def _put_special(
        self,
        directory: Node,
        name: bytes,
        kind: EntryKind,
        mode: int,
        owner: Owner | None,
        *,
        target: bytes = b"",
        rdev: int = 0,
    ) -> Attr:
        def put(node: Node) -> JournalOp:
            return StagedPut(
                self._path(node), self._file_attrs(node), kind=kind, target=target, rdev=rdev
            )

        return await self._add_entry(
            directory, name, kind, mode, put, owner=owner, target=target, rdev=rdev
        )

    async def _add_entry(
        self,
        directory: Node,
        name: bytes,
        kind: EntryKind,
        mode: int,
        journal_op: Callable[[Node], JournalOp],
        *,
        owner: Owner | None = None,
        target: bytes = b"",
        rdev: int = 0,
    ) -> Attr:
        """A new folder, symlink, FIFO or socket, journaled as ``journal_op`` says."""

        async def change() -> Node:
            children = self._free_name(directory, name)
            node = self._new_node(directory, name, kind, mode, owner)
            node.target, node.size, node.rdev = target, len(target), rdev
            await self._append(self._namespace_of(node), journal_op(node))
            node.remote = True
            children[name] = node
            self._touch(directory)
            return node

        node = await self._change(change)
        node.lookups += 1
        return self._attr(node)

    async def link(self, inode: int, new_parent: int, new_name: bytes) -> Attr:
        """Hard links are not part of the format: EPERM (EXDEV from one namespace into
        another, as link(2) checks that first)."""
        if self._node(inode).namespace_id != self._node(new_parent).namespace_id:
            raise FsError(errno.EXDEV)
        raise FsError(errno.EPERM)

    async def getxattr(self, inode: int, name: bytes) -> bytes:
        node = self._node(inode)
        check_xattr_namespace(name)
        if name == EDITORS_XATTR:
            editors = self._editors_text(node)
            if editors is not None:
                return editors
        for key, value in node.xattrs:
            if key == name:
                return value
        raise FsError(errno.ENODATA)

    async def listxattr(self, inode: int) -> list[bytes]:
        node = self._node(inode)
        names = [key for key, _ in node.xattrs if key.startswith(XATTR_NAMESPACE)]
        if self._editors_text(node) is not None and EDITORS_XATTR not in names:
            names.append(EDITORS_XATTR)
        return names

    def _editors_text(self, node: Node) -> bytes | None:
        """Who else has this file of a shared folder open for writing, one line each
        (``bob (laptop) since 2026-12-04 10:15:02 UTC``), as the server last said;
        ``None``: nobody (or not a shared folder)."""
        editing = self._namespace_of(node).ports.editing
        if editing is None or node.kind is not EntryKind.FILE or node.detached:
            return None
        try:
            editors = editing.editors_of(self._path(node))
        except FsError:
            return None
        if not editors:
            return None
        lines = [
            f"{editor.username} ({editor.device_name}) since "
            f"{editor.since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC\n"
            for editor in editors
        ]
        return "".join(lines).encode()

    async def setxattr(self, inode: int, name: bytes, value: bytes) -> None:
        node = self._node(inode)
        self._check_writable(node)
        if not name or b"\0" in name:
            raise FsError(errno.EINVAL)
        if name == EDITORS_XATTR:
            raise FsError(errno.EPERM)  # the server's word, not a file's attribute
        check_xattr_namespace(name)
        if len(name) > MAX_XATTR_NAME_BYTES:
            raise FsError(errno.ERANGE)
        if len(value) > MAX_XATTR_VALUE_BYTES:
            raise FsError(errno.E2BIG)
        xattrs = dict(node.xattrs)
        xattrs[name] = value
        if sum(len(k) + len(v) for k, v in xattrs.items()) > MAX_XATTRS_TOTAL_BYTES:
            raise FsError(errno.ENOSPC)
        await self._set_xattrs(node, tuple(sorted(xattrs.items())))

    async def removexattr(self, inode: int, name: bytes) -> None:
        node = self._node(inode)
        self._check_writable(node)
        check_xattr_namespace(name)
        xattrs = dict(node.xattrs)
        if xattrs.pop(name, None) is None:
            raise FsError(errno.ENODATA)
        await self._set_xattrs(node, tuple(sorted(xattrs.items())))

    async def _set_xattrs(self, node: Node, xattrs: tuple[tuple[bytes, bytes], ...]) -> None:
        namespace = self._namespace_of(node)
        if node is namespace.root:
            raise FsError(errno.EPERM)  # a namespace's root is no entry: it has no xattrs
        async with self._lock:
            if self._journals_attrs(node):
                op = SetAttr(self._path(node), AttrChanges(xattrs=xattrs))
                await self._append(namespace, op)
            node.xattrs = xattrs
            node.ctime_ns = now_ns()
            node.changed = True

    async def statfs(self) -> StatFs:
        """Space as the staging directory's disk has it (what bounds local writes until
        they are uploaded); inode counts are nominal."""
        blocks, free = STATFS_BLOCKS, STATFS_BLOCKS // 2
        try:
            local = await self._thread(os.statvfs, self._staging.directory)
        except OSError:
            pass
        else:
            blocks = max(1, local.f_blocks * local.f_frsize // BLOCK_SIZE)
            free = min(blocks, local.f_bavail * local.f_frsize // BLOCK_SIZE)
        return StatFs(
            block_size=BLOCK_SIZE, blocks=blocks, blocks_free=free,
            files=1 << 32, files_free=1 << 31, name_max=MAX_NAME_BYTES,
        )  # fmt: skip
