"""File content: open files, copy-on-write staging, and each file's put at close or fsync.

A file's content is copied on its first write or truncate (not at open) into a staged file
(``boxfs.staging``): the whole current content at once, from the fetcher for a committed
file, hole-preserving from the staged file of an earlier write in this mount; ``O_TRUNC``
copies nothing. A file created here keeps its first writes (up to 1 MiB, 32 MiB for all
such files) in memory until its close writes them out together with the put's journal
append (``ViewBase._append``: on the loop for at most 64 KiB when nothing would wait, else
in one worker-thread call). After the last release, a close (``flush``) or an fsync, the stage is
frozen and journaled as one put; ``fsync`` also makes the frozen file and the journal
durable, after the model lock is released. ``open`` returns ``keep_cache=True`` unless a
sync replaced the file's content since the kernel last opened it (``Node.pages_stale``):
every other change of content is a write or truncate made through the kernel, which keeps
its cached pages right itself, so a file written here and closed is re-read from the page
cache too.

Must not: hold anything proportional to a file's size (a sparse truncate to 10^11 bytes
is one ``ftruncate`` of the staged file), or do staged-file I/O on the loop (but for the
small spill that ``ViewBase._append`` makes there).
"""

from __future__ import annotations

import contextlib
import errno
import os

from boxfs.journal import BasedOnPut, JournalError, StagedPut
from boxfs.staging import StagedFile, StagedFileMissingError, StagingError
from boxfs.view.base import ViewBase
from boxfs.view.nodes import (
    COPY_PIECE_BYTES,
    MAX_READ_BYTES,
    Attr,
    FileHandle,
    FsError,
    Node,
    Owner,
    check_size,
    failed,
    stage_of,
)
from store import protocol
from store.errors import IntegrityError, StoreError
from store.ids import NamespaceId
from store.objects import EntryKind
from store.protocol import DrivePath


def copy_sparse(source: str, target: int, size: int, staged: StagedFile | None = None) -> None:
    """Copy the data extents of ``source`` into the open ``target`` fd (holes stay holes),
    then set its size: time and space follow the data, never the logical size. ``staged``:
    the source's open staged file, whose buffered writes go to disk first."""
    if staged is not None:
        staged.spill()
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        position = 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            while start < end:
                data = os.pread(fd, min(COPY_PIECE_BYTES, end - start), start)
                if not data:
                    break
                os.pwrite(target, data, start)
                start += len(data)
            position = end
        os.ftruncate(target, size)
    finally:
        os.close(fd)


class FileContent(ViewBase):
    """Open files and their staged content, above the base layer."""

    def _new_fh(self, node: Node, writable: bool) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = FileHandle(node, writable)
        node.handles += 1
        if writable:
            node.writers += 1
            self._editing_changed(node)
        return fh

    def _editing_changed(self, node: Node) -> None:
        """Tell the node's namespace's ``Editing`` port (a shared folder's) that the files
        open for writing changed."""
        editing = self._namespace_of(node).ports.editing
        if editing is not None:
            editing.nudge()

    def writing_paths(self, namespace_id: NamespaceId) -> list[DrivePath]:
        """The files of ``namespace_id`` open for writing here now (paths inside it)."""
        paths: set[DrivePath] = set()
        for handle in self._files.values():
            node = handle.node
            if handle.writable and node.namespace_id == namespace_id and not node.detached:
                with contextlib.suppress(FsError):
                    paths.add(self._path(node))
        return sorted(paths, key=bytes)

    async def open(self, inode: int, flags: int) -> tuple[int, bool]:
        """A file handle and ``keep_cache``: False once after a sync replaced the file's
        content (the kernel's pages may be older), True otherwise."""
        node = self._node(inode)
        if node.kind is EntryKind.DIR:
            raise FsError(errno.EISDIR)
        if node.broken:
            raise FsError(errno.EIO)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        if writable or flags & os.O_TRUNC:
            self._check_writable(node)
        fh = self._new_fh(node, writable)
        if flags & os.O_TRUNC and writable:
            try:
                await self._truncate(node, 0)
            except BaseException:
                await self.release(fh)
                raise
        keep, node.pages_stale = not node.pages_stale, False
        return fh, keep

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, owner: Owner | None = None
    ) -> tuple[int, Attr]:
        directory = self._writable_dir(parent)
        stage = await self._new_stage()  # before the lock: without a ready one, a disk hop

        async def change() -> Node:
            children = self._free_name(directory, name)
            node = self._new_node(directory, name, EntryKind.FILE, mode, owner)
            node.stage = stage
            stage.start_buffering(self._memory_budget)  # a small file: no hop per write
            node.dirty = True
            children[name] = node
            self._touch(directory)
            return node

        try:
            node = await self._change(change)
        except BaseException:
            stage.close()
            self._staging.remove(stage.name)
            raise
        node.lookups += 1
        fh = self._new_fh(node, True)
        return fh, self._attr(node)

    def _handle(self, fh: int) -> FileHandle:
        handle = self._files.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        return handle

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        node = self._handle(fh).node
        if offset < 0 or size < 0:
            raise FsError(errno.EINVAL)
        size = min(size, MAX_READ_BYTES)
        if node.broken:
            raise FsError(errno.EIO)
        if node.stage is not None or node.staged is not None:
            local = await self._read_local(node, offset, size)
            if local is not None:
                return local  # else a sync replaced the local content: read the entry
        if node.entry is None:
            return b""
        try:
            return await self._namespace_of(node).ports.fetcher.read(node.entry, offset, size)
        except (StoreError, protocol.ProtocolError) as exc:
            if isinstance(exc, IntegrityError):
                node.broken = True  # the rest of the drive stays readable
            raise failed(exc, "cannot read", node.name) from exc

    async def _read_local(self, node: Node, offset: int, size: int) -> bytes | None:
        """Read the node's staged content; ``None`` once it has none (a sync from another
        device replaced it with a committed entry). A read the page cache holds whole is
        made on the loop (``StagedFile.read_cached``: a hop to a worker thread and back
        would cost about three times the read); others in a worker thread. A commit or a
        drop may close the file under a read (``ValueError``): then read again from the
        new state."""
        for _attempt in range(3):
            source = node.stage or node.reader
            if source is None:
                staged = node.staged
                if staged is None:
                    if node.entry is not None:
                        return None
                    break
                opened = await self._thread(self._staging.open, staged)
                if node.reader is None and node.staged == staged:
                    node.reader = opened
                else:  # another read opened it meanwhile, or the content moved on
                    opened.close()
                continue
            try:
                cached = source.read_cached(offset, size)
                return (
                    cached
                    if cached is not None
                    else await self._thread(source.read_at, offset, size)
                )
            except ValueError:
                continue
        raise FsError(errno.EIO, "the staged content went away")

    async def _ensure_stage(self, node: Node) -> StagedFile:
        """Copy on write: the node's current content into a new staged file."""
        if node.stage is not None:
            return node.stage
        stage = await self._new_stage()
        try:
            if node.staged is not None:
                path = str(self._staging.path_of(node.staged))
                # The frozen stage may still be spilling its buffer (a commit in flight).
                frozen = node.reader if node.reader and node.reader.name == node.staged else None
                await self._thread(copy_sparse, path, stage.fileno(), node.size, frozen)
            elif node.entry is not None and node.entry.size:
                entry = node.entry
                fetcher = self._namespace_of(node).ports.fetcher
                for offset in range(0, entry.size, COPY_PIECE_BYTES):
                    data = await fetcher.read(entry, offset, COPY_PIECE_BYTES)
                    await self._thread(stage.write_at, offset, data)
        except BaseException as exc:
            stage.close()
            self._staging.remove(stage.name)
            if isinstance(exc, IntegrityError):
                node.broken = True
            if isinstance(exc, StoreError | protocol.ProtocolError | OSError):
                raise failed(exc, "cannot copy the content of", node.name) from exc
            raise
        theirs = stage_of(node)
        if theirs is not None:  # another task copied it meanwhile: use theirs
            stage.close()
            self._staging.remove(stage.name)
            return theirs
        node.stage = stage
        return stage

    async def _truncate(self, node: Node, size: int) -> None:
        if node.broken:
            raise FsError(errno.EIO)
        node.writers += 1  # an internal writer: commits at the end if nobody else writes
        node.handles += 1
        try:
            if size == 0 and node.stage is None:
                stage = await self._new_stage()
                theirs = stage_of(node)
                if theirs is not None:  # a write made one meanwhile: truncate that one
                    stage.close()
                    self._staging.remove(stage.name)
                    stage = theirs
                node.stage = stage
            else:
                stage = await self._ensure_stage(node)
            try:
                await self._thread(stage.truncate, size)
            except StagingError as exc:
                raise FsError(errno.EFBIG) from exc
            node.size = size
            node.dirty = True
            self._touch(node)
        finally:
            node.handles -= 1
            node.writers -= 1
        if not node.writers:
            await self._commit(node, durable=False)
        elif node.detached:
            self._maybe_drop(node)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        node = handle.node
        if not handle.writable:
            raise FsError(errno.EBADF)
        self._check_writable(node)
        if offset < 0:
            raise FsError(errno.EINVAL)
        check_size(offset + len(data))
        if node.broken:
            raise FsError(errno.EIO)
        stage = await self._ensure_stage(node)
        if stage.buffer(offset, data):  # in memory, no await: the stage is still the node's
            node.size = max(node.size, offset + len(data))
            node.dirty = True
            self._touch(node)
            return len(data)
        written = await self._thread(stage.write_at, offset, data)
        while stage_of(node) is not stage:
            # A close froze (journaled) the stage while these bytes went in: write them
            # again into the stage that follows it, so the next put carries them for sure.
            stage = await self._ensure_stage(node)
            written = await self._thread(stage.write_at, offset, data)
        node.size = max(node.size, offset + written)
        node.dirty = True
        self._touch(node)
        return written

    async def flush(self, fh: int) -> None:
        """A close(2) of a descriptor of this handle: journal what it wrote now. The kernel
        sends the release only after close(2) has returned, and a mount killed in between
        would otherwise lose a file whose close succeeded. (A later write through another
        descriptor of the same file copies the frozen content into a new stage.)"""
        handle = self._handle(fh)
        if handle.writable:
            await self._commit(handle.node, durable=False)

    async def fsync(self, fh: int, datasync: bool) -> None:
        """Journal the file's content now, durably: once this returns, the content survives
        a crash or power cut (it is in the journal and the fsynced staged file), and will be
        uploaded; it does not wait for the server."""
        node = self._handle(fh).node
        if await self._commit(node, durable=True):
            return
        # Nothing left to journal: the content went in at a close (perhaps one on another
        # descriptor, whose commit ``_commit`` waited for), without an fsync. Make that
        # staged file, and the journal up to its entry, durable now.
        if node.stage is None and node.staged is not None:
            try:
                await self._thread(self._sync_journaled, node.staged)
            except (JournalError, StagingError, OSError) as exc:
                raise failed(exc, "cannot make durable", node.name) from exc

    def _sync_journaled(self, staged: str) -> None:
        """The staged file's content and the journal up to its put, made durable. A staged
        file gone meanwhile was uploaded and discarded, or its file removed: nothing of it
        is left to make durable."""
        with contextlib.suppress(StagedFileMissingError):
            self._staging.fsync(staged)
        self._journal.sync()

    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is None:
            return
        node = handle.node
        node.handles -= 1
        if handle.writable:
            node.writers -= 1
            self._editing_changed(node)
        try:
            if handle.writable and not node.writers:
                await self._commit(node, durable=False)
        finally:
            if node.detached:
                self._maybe_drop(node)

    async def _commit(self, node: Node, *, durable: bool) -> bool:
        """Freeze the open stage and journal it as one put (nothing if unchanged). Whether
        it journaled one. ``durable`` (fsync(2)): the frozen stage and the journal are
        fsynced once ``_lock`` is free again (the frozen stage no longer changes), so other
        requests never wait on the disk flush of a large file."""
        journaled = await self._freeze(node)
        if journaled is not None and durable:
            try:
                await self._thread(self._sync_journaled, journaled)
            except (JournalError, StagingError, OSError) as exc:
                raise failed(exc, "cannot fsync the staged content of", node.name) from exc
        return journaled is not None

    async def _freeze(self, node: Node) -> str | None:
        """``_commit``'s change under ``_lock``: the staged file journaled, if any."""
        async with self._lock:
            stage = node.stage
            if stage is None or not node.dirty or node.detached:
                return None
            # Frozen from here on: a write arriving meanwhile copies it into a new stage.
            previous, old_reader = node.staged, node.reader
            node.stage, node.staged, node.reader, node.dirty = None, stage.name, stage, False
            try:
                put = StagedPut(
                    self._path(node), self._file_attrs(node), staged=stage.name, base=node.base
                )
                based = put if node.base_seq is None else BasedOnPut(put, node.base_seq)
                (seq,) = await self._append(self._namespace_of(node), based, spill=stage)
            except BaseException:
                node.staged, node.reader = previous, old_reader
                if stage_of(node) is None:  # give the content back, still to be journaled
                    node.stage, node.dirty = stage, True
                else:  # a newer stage holds these bytes and more
                    stage.close()
                    self._staging.remove(stage.name)
                raise
            if old_reader is not None:
                old_reader.close()  # a read using it retries with the new state
            if previous is not None:
                self._staging.unpin(previous)
            node.base_seq = seq
            node.remote = True
            node.entry = None
            return stage.name
