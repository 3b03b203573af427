"""Staged files: the local truth of content being written, until the server confirms it.

Owns one directory of staged files. A file opened for writing on the mount gets a staged
file (``new``); its reads come from there; after the last close (or an fsync) the journal's
put entry names it (``boxfs.journal``), and the uploader chunks it from there. A staged file
is named by 32 random lowercase hex digits: the name means nothing in the drive, so a
rename or move of the drive file never touches it (a pending upload follows the journal's
order instead, see ``boxfs.journal``).

Invariants the callers keep:
- A staged file named by a journal entry is frozen: nobody writes to it again. A further
  write to the same drive file goes to a new staged file. (A batch resent after a crash
  must describe the same content, and the uploader reads the file twice: once to cut and
  hash it, once to frame the chunks the server lacks.)
- Sizes above ``store.objects.MAX_FILE_BYTES`` are refused here (``FileTooLargeError``);
  the mount answers EFBIG. A sparse truncate to a huge size builds nothing in memory.

Lifetime: ``new`` creates it; ``fsync`` makes its content and its directory entry durable
(the mount calls it before journaling a put for fsync(2); a put journaled without it
survives the death of the process, as the kernel still holds the pages, but not a power
cut); ``pin``/``unpin`` mark a staged file the mount still reads from; ``discard`` is the
uploader's "the server has it": the file goes at once, or at the last ``unpin``; ``remove``
deletes unconditionally (a stage its writer abandoned). ``preserve`` keeps the content of a
put the server rejected under ``rejected/`` (the conflict record names that copy), and
``sweep`` at mount time deletes what a crash left: a staged file no journal entry names was
never promised to anyone (its writer's close or fsync had not returned).

Must not: know drive paths, talk to the server, or hold a file's content in memory, beyond
the first writes of a new file (``StagedFile.buffer``: up to ``MAX_BUFFERED_BYTES`` each,
within a ``MemoryBudget`` shared by all), written out before anything reads, sizes, copies
or fsyncs the file, and before a journal entry names it (the mount spills it right before
it journals the put, in the same call), so whatever reads a staged file by name sees it
whole. A buffered write not yet spilled is lost with the process, as was promised: a file
not closed is not journaled.
Blocking (file I/O, fsync): the mount and the uploader call it through
``trio.to_thread.run_sync``, but for ``StagedFile.spill_now`` (a small spill that never
waits) and ``StagedFile.read_cached`` (a read the page cache answers whole), made on the
loop. A lock guards the pin counts, so any thread may call it.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import threading
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Self

from boxfs.errors import BoxfsError
from store.objects import MAX_FILE_BYTES

STAGED_NAME_HEX: Final = 32
REJECTED_DIR: Final = "rejected"
_NAME_PATTERN: Final = re.compile(rf"[0-9a-f]{{{STAGED_NAME_HEX}}}")
MAX_BUFFERED_BYTES: Final = 1024 * 1024
"""A staged file keeps its first writes in memory only up to this size."""
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700


class StagingError(BoxfsError):
    """A staged file cannot be used as asked."""


class FileTooLargeError(StagingError):
    """A write or truncate would make a file larger than the format allows (EFBIG)."""

    def __init__(self, size_bytes: int, limit_bytes: int = MAX_FILE_BYTES) -> None:
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes
        super().__init__(f"a file of {size_bytes} bytes is over the {limit_bytes}-byte maximum")


class StagedFileMissingError(StagingError):
    """A staged file that should exist does not (a bug, or someone emptied the directory)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"staged file {name} is missing")


def check_size(size_bytes: int) -> None:
    """Refuse a file size the format cannot describe (``FileTooLargeError``)."""
    if size_bytes > MAX_FILE_BYTES:
        raise FileTooLargeError(size_bytes)


def check_name(name: str) -> str:
    """A staged file's name is 32 lowercase hex digits; anything else is a bug in the caller
    (and would let a name reach outside the directory)."""
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(f"not a staged file name: {name[:80]!r}")
    return name


class MemoryBudget:
    """The bytes all staged files may hold in memory at once (``StagedFile.buffer``)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._used_bytes = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return self._used_bytes

    def take(self, size_bytes: int) -> bool:
        with self._lock:
            if self._used_bytes + size_bytes > self.limit_bytes:
                return False
            self._used_bytes += size_bytes
            return True

    def give_back(self, size_bytes: int) -> None:
        with self._lock:
            self._used_bytes -= size_bytes


class StagedFile:
    """An open staged file (read/write). Positional I/O only, so several readers and the
    writer never share an offset. Close it (or use ``with``) when done.

    A new file's first writes may stay in memory (``start_buffering``, then ``buffer``): a
    small file written from its start is then written out in one go (``spill``) by whoever
    next touches the file on disk. Every blocking method spills first, so what they read,
    size, copy or fsync is the whole content. A lock orders ``buffer`` (on the loop: it
    never waits, it declines while a spill runs) against spills in worker threads."""

    def __init__(self, name: str, path: Path, file: io.FileIO) -> None:
        self.name = name
        self.path = path
        self.file = file
        self._pending: bytearray | None = None  # the whole content, not yet in the file
        self._budget: MemoryBudget | None = None
        self._lock = threading.Lock()

    def start_buffering(self, budget: MemoryBudget) -> None:
        """Let writes from offset 0 on stay in memory, within ``budget`` and
        ``MAX_BUFFERED_BYTES``. Only for a new, empty file nobody else has touched."""
        self._pending, self._budget = bytearray(), budget

    def buffer(self, offset: int, data: bytes) -> bool:
        """Take a write into memory: only one that continues the buffered content, within
        the bounds. False if it must go to the file (``write_at``). Never blocks."""
        if self._pending is None or not self._lock.acquire(blocking=False):
            return False
        try:
            pending, budget = self._pending, self._budget
            if (
                pending is None
                or budget is None
                or offset != len(pending)
                or offset + len(data) > MAX_BUFFERED_BYTES
                or not budget.take(len(data))
            ):
                return False
            pending += data
            return True
        finally:
            self._lock.release()

    @property
    def buffered_bytes(self) -> int:
        pending = self._pending
        return 0 if pending is None else len(pending)

    def spill(self) -> None:
        """Write the buffered content to the file; from here on writes go to the file."""
        with self._lock:
            self._spill_locked()

    def spill_now(self, most_bytes: int) -> bool:
        """``spill`` if it cannot wait: no other spill running and at most ``most_bytes``
        buffered (one write into the page cache, quick enough for the trio loop). Whether
        it spilled; if not, ``spill`` in a worker thread."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            pending = self._pending
            if pending is not None and len(pending) > most_bytes:
                return False
            self._spill_locked()
            return True
        finally:
            self._lock.release()

    def _spill_locked(self) -> None:
        pending, budget = self._pending, self._budget
        if pending is None:
            return
        # Views released even on a failure (which leaves the content buffered, to spill
        # again): a live view would stop the bytearray from growing.
        with memoryview(pending) as view:
            position = 0
            while position < len(view):
                with view[position:] as rest:
                    position += os.pwrite(self.fileno(), rest, position)
        self._pending = None
        if budget is not None:
            budget.give_back(len(pending))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def fileno(self) -> int:
        return self.file.fileno()

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        check_size(offset + len(data))
        self.spill()
        return os.pwrite(self.fileno(), data, offset)

    def read_at(self, offset: int, size: int) -> bytes:
        self.spill()
        return os.pread(self.fileno(), size, offset)

    def read_cached(self, offset: int, size: int) -> bytes | None:
        """``read_at`` if it cannot wait: nothing buffered and every byte asked for in the
        page cache (``preadv2`` with ``RWF_NOWAIT``, which never waits for the disk), so
        the trio loop may call it; ``None`` otherwise (and for a read reaching the end of
        the file): then ``read_at`` in a worker thread."""
        if self._pending is not None or size <= 0:
            return None
        buffer = bytearray(size)
        try:
            count = os.preadv(self.fileno(), [buffer], offset, os.RWF_NOWAIT)
        except (BlockingIOError, OSError):
            return None
        return bytes(buffer) if count == size else None

    def truncate(self, size_bytes: int) -> None:
        check_size(size_bytes)
        self.spill()
        os.ftruncate(self.fileno(), size_bytes)

    def size(self) -> int:
        self.spill()
        return os.fstat(self.fileno()).st_size

    def fsync(self) -> None:
        self.spill()
        os.fsync(self.fileno())

    def close(self) -> None:
        """Close the file; content still buffered is dropped (nobody was promised it)."""
        with self._lock:
            pending, budget, self._pending = self._pending, self._budget, None
        if pending is not None and budget is not None:
            budget.give_back(len(pending))
        self.file.close()


class Staging:
    """The directory of staged files (created, mode 0700, if missing)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.rejected_directory = self.directory / REJECTED_DIR
        self.rejected_directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # name → how many holders read from it; names discarded while pinned.
        self._pins: dict[str, int] = {}
        self._discard_when_unpinned: set[str] = set()

    # --- creating and opening ---------------------------------------------------------------

    def new(self) -> StagedFile:
        """A new empty staged file with a unique name, open for reading and writing."""
        while True:
            name = secrets.token_hex(STAGED_NAME_HEX // 2)
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
            except FileExistsError:  # 128 random bits: never, but cheap to be sure
                continue
            return StagedFile(name, path, io.FileIO(fd, "r+", closefd=True))

    def open(self, name: str) -> StagedFile:
        """An existing staged file, open for reading and writing."""
        path = self.path_of(name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise StagedFileMissingError(name) from exc
        return StagedFile(name, path, io.FileIO(fd, "r+", closefd=True))

    def open_read(self, name: str) -> BinaryIO:
        """A read-only, buffered stream of a staged file (for chunking)."""
        try:
            return self.path_of(name).open("rb")
        except FileNotFoundError as exc:
            raise StagedFileMissingError(name) from exc

    def path_of(self, name: str) -> Path:
        return self.directory / check_name(name)

    def exists(self, name: str) -> bool:
        return self.path_of(name).exists()

    def size_of(self, name: str) -> int:
        try:
            return self.path_of(name).stat().st_size
        except FileNotFoundError as exc:
            raise StagedFileMissingError(name) from exc

    def names(self) -> set[str]:
        """Every staged file in the directory (not the preserved ones)."""
        with os.scandir(self.directory) as entries:
            return {
                entry.name
                for entry in entries
                if _NAME_PATTERN.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
            }

    # --- durability ---------------------------------------------------------------------------

    def fsync(self, name: str) -> None:
        """Make the staged file's content and its directory entry durable."""
        try:
            fd = os.open(self.path_of(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise StagedFileMissingError(name) from exc
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_directory(self.directory)

    # --- lifetime -----------------------------------------------------------------------------

    def pin(self, name: str) -> None:
        """Someone reads from this staged file: ``discard`` must leave it until ``unpin``."""
        check_name(name)
        with self._lock:
            self._pins[name] = self._pins.get(name, 0) + 1

    def unpin(self, name: str) -> None:
        with self._lock:
            count = self._pins.get(name, 0)
            if count <= 0:
                raise ValueError(f"staged file {name} is not pinned")
            if count > 1:
                self._pins[name] = count - 1
                return
            del self._pins[name]
            if name not in self._discard_when_unpinned:
                return
            self._discard_when_unpinned.discard(name)
        self._unlink(name)

    def is_pinned(self, name: str) -> bool:
        with self._lock:
            return name in self._pins

    def discard(self, name: str) -> None:
        """The server holds this content and no journal entry names the file any more:
        delete it now, or at the last ``unpin`` if someone still reads from it."""
        check_name(name)
        with self._lock:
            if name in self._pins:
                self._discard_when_unpinned.add(name)
                return
        self._unlink(name)

    def remove(self, name: str) -> None:
        """Delete a staged file now, pinned or not (its writer abandoned it)."""
        check_name(name)
        with self._lock:
            self._pins.pop(name, None)
            self._discard_when_unpinned.discard(name)
        self._unlink(name)

    def preserve(self, name: str) -> Path:
        """Keep a copy of the content under ``rejected/`` (a hard link: no bytes copied)
        and return its path. Idempotent; the staged file itself is left as it is."""
        source = self.path_of(name)
        target = self.rejected_directory / name
        try:
            os.link(source, target)
        except FileExistsError:
            return target
        except FileNotFoundError as exc:
            raise StagedFileMissingError(name) from exc
        _fsync_directory(self.rejected_directory)
        return target

    def sweep(self, keep: set[str]) -> list[str]:
        """Delete every staged file not in ``keep`` (the journal's ``staged_names()``) and
        not pinned: what a crash left behind. Returns the names deleted, sorted. Call it at
        mount time, before the mount creates staged files of its own."""
        with self._lock:
            pinned = set(self._pins)
        removed = sorted(self.names() - keep - pinned)
        for name in removed:
            self._unlink(name)
        return removed

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(self.directory / name)
        except FileNotFoundError:
            return


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
