"""The ``boxfs`` command line: accounts, and the drive without a mount.

Commands: ``register``, ``login``, ``logout``, ``whoami`` (accounts and this device's
session) and ``ls``, ``get``, ``put``, ``versions``, ``restore`` (the drive at its head,
through the server, no mount needed). ``docs/cli.md`` is the reference. The session comes
from the device home (``boxfs.home``: ``BOXFS_HOME`` or the XDG directories).

Every user mistake is one line on stderr, ``boxfs: ...``, and one of these exit codes
(``ExitCode``; the table ``_EXIT_CODES`` maps exceptions to them, once, in ``main``):

    0  success
    1  anything else: a local I/O error, a server failure, an unusable home; and bugs,
       which are the only errors printed with a traceback
    2  usage: a bad argument, whether argparse, the CLI or the server refused it (a bad
       path such as ``..``, a short password, two different passwords)
    3  not logged in, wrong credentials, an expired or revoked session, a forbidden action
    4  not found: a remote path, a version, a local file
    5  conflict: ``put`` or ``restore`` did not apply as asked (a conflicted copy was
       written, or an op was rejected), a username that is taken, a folder in the way
    6  the server cannot be reached or is busy (retry later)
    7  integrity: downloaded content does not match its hash (nothing is written in place)
    8  not in sync: ``sync`` found changes pending that nothing uploads (no mount of this
       home is running), or its ``--timeout`` passed while the server was reachable

``put`` never silently replaces an edit made elsewhere: its ``base`` is the content this
device last saw at the path (recorded by ``get`` and ``put`` in the home's ``bases.json``),
or, for a file this device never read, the drive's current content (an explicit replace; the
old version stays in history). The server merges or writes a conflicted copy otherwise.

Network calls go through ``boxfs.remote.Remote`` inside one ``trio.run`` per command.
Chunking, hashing, zstd and big file writes run in worker threads
(``trio.to_thread.run_sync``): the scan of local files in a thread of its own that feeds a
bounded channel, frame encoding and decoding through a ``CapacityLimiter`` sized to the
CPUs. It must not import ``server`` or pyfuse3. ``mount`` and ``unmount`` hand over to
``boxfs.mount`` (imported only by them): a background mount is ``python -m boxfs.mount``
started detached, its log in the home's data directory. ``status`` and ``sync`` read the
home's journal read-only (beside a running mount) and the mount's pid file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import enum
import getpass
import logging
import math
import os
import re
import secrets
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Self, TypeAlias, TypeVar, cast

import blake3
import httpx
import pydantic
import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from boxfs.errors import (
    BoxfsError,
    HomeError,
    HomeInUseError,
    NoSuchVersionError,
    NotLoggedInError,
    UsageError,
)
from boxfs.home import Home, HomeState, Session, default_device_name
from boxfs.journal import MAX_CONFLICTS_KEPT, ConflictRecord, Journal
from boxfs.remote import Remote
from store import protocol
from store.chunking import ChunkStream
from store.errors import (
    ConflictError,
    FormatError,
    IntegrityError,
    NotFoundError,
    StoreError,
    TransientError,
)
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId, ContentHash, NamespaceId, TreeId
from store.merkle import EMPTY_TREE_ID, MemoryTrees, build_tree, walk
from store.objects import (
    EMPTY_TREE,
    MAX_FILE_BYTES,
    ChunkRef,
    EntryKind,
    FileEntry,
    Tree,
    decode_commit,
    decode_tree,
    validate_name,
)

T = TypeVar("T")

# --- exit codes -------------------------------------------------------------------------------


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    CONFLICT = 5
    UNAVAILABLE = 6
    INTEGRITY = 7
    NOT_SYNCED = 8
    IN_USE = 9


# The first entry the exception is an instance of wins, so subclasses come first.
_EXIT_CODES: Final[tuple[tuple[type[BaseException], ExitCode], ...]] = (
    (UsageError, ExitCode.USAGE),
    (protocol.BadRequestError, ExitCode.USAGE),  # includes invalid_name
    (NotLoggedInError, ExitCode.AUTH),
    (protocol.UnauthorizedError, ExitCode.AUTH),  # includes token_expired
    (protocol.ForbiddenError, ExitCode.AUTH),
    (NotFoundError, ExitCode.NOT_FOUND),
    (NoSuchVersionError, ExitCode.NOT_FOUND),
    (FileNotFoundError, ExitCode.NOT_FOUND),
    (ConflictError, ExitCode.CONFLICT),  # includes stale_base
    (protocol.UsernameTakenError, ExitCode.CONFLICT),
    (TransientError, ExitCode.UNAVAILABLE),  # unavailable, rate_limited
    (IntegrityError, ExitCode.INTEGRITY),
    (HomeInUseError, ExitCode.IN_USE),
    (HomeError, ExitCode.FAILURE),
    (BoxfsError, ExitCode.FAILURE),
    (StoreError, ExitCode.FAILURE),  # internal, unsupported_protocol, local FormatError
    (OSError, ExitCode.FAILURE),
)
_COMMANDS_WITHOUT_SESSION: Final = frozenset({"register", "login"})


def exit_code_for(exc: BaseException) -> ExitCode | None:
    """The exit code of a user-facing error, or ``None`` for a bug (printed with its
    traceback)."""
    return next((code for kind, code in _EXIT_CODES if isinstance(exc, kind)), None)


def describe(exc: BaseException) -> str:
    """One line for the user."""
    if isinstance(exc, protocol.ProtocolError):
        text = exc.message
    elif isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        text = f"{os.fsdecode(where)}: {exc.strerror}" if where != "" else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _leaf(exc: BaseException) -> BaseException:
    """The error that matters inside trio's exception groups (the first that is not a
    cancellation caused by it)."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        exc = (leaves or list(exc.exceptions))[0]
    return exc


# --- output -------------------------------------------------------------------------------------

_KIB: Final = 1024


def human_size(size_bytes: int) -> str:
    if size_bytes < _KIB:
        return f"{size_bytes} B"
    value = float(size_bytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def format_time_ns(time_ns: int) -> str:
    """UTC, to the second, in a form ``restore --at`` accepts: ``2026-11-28T03:15:02Z``."""
    moment = dt.datetime.fromtimestamp(time_ns // 1_000_000_000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# What a name may hold that would act on the terminal instead of showing: C0 and C1 control
# characters and DEL (a newline, an escape sequence), and the bidirectional overrides that
# make text show in another order than it reads. A backslash is doubled so that every shown
# name maps back to one byte string.
_UNSHOWABLE: Final = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def show_bytes(raw: bytes) -> str:
    """A name or path for the terminal: control characters and bytes that are not UTF-8
    show as backslash escapes (``\\n`` as ``\\x0a``, a stray byte as ``\\xff``)."""
    text = raw.decode("utf-8", "surrogateescape")
    shown = _UNSHOWABLE.sub(_escape_char, text)
    return shown.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def show_path(path: protocol.DrivePath | None) -> str:
    return "/" if path is None else show_bytes(bytes(path))


@dataclass(slots=True)
class Context:
    """What every command gets: the device home and how chatty to be."""

    home: Home
    quiet: bool
    limiter: trio.CapacityLimiter = dataclasses.field(
        default_factory=lambda: trio.CapacityLimiter(os.cpu_count() or 2)
    )

    def say(self, line: str) -> None:
        """Information on stdout (left out with ``--quiet``)."""
        if not self.quiet:
            print(line, flush=True)

    def result(self, line: str) -> None:
        """An outcome the user must see, even with ``--quiet``."""
        print(line, flush=True)

    @property
    def shows_progress(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    def transfer(self, description: str, total_bytes: int | None) -> Transfer:
        return Transfer(description, total_bytes, enabled=self.shows_progress)


class _OptionalProgress:
    """A rich progress display that exists only when stderr is a terminal: entering and
    leaving start and stop it, and do nothing otherwise."""

    _progress: Progress | None = None

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


class Transfer(_OptionalProgress):
    """A rich progress bar on stderr when it is a terminal, nothing otherwise. Advanced from
    the trio thread only."""

    def __init__(self, description: str, total_bytes: int | None, *, enabled: bool) -> None:
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task(description, total=total_bytes)

    def advance(self, size_bytes: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, size_bytes)


# --- remote paths ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """A drive path as the user wrote it. ``path`` is ``None`` for the drive's root;
    ``inside`` is true when it ended with ``/`` (a folder: put things inside it)."""

    path: protocol.DrivePath | None
    inside: bool
    text: str


def parse_remote_path(text: str) -> RemoteTarget:
    """A POSIX-style path relative to the drive root (a leading ``/`` allowed, repeated
    slashes collapsed). ``..``, ``.`` inside a path, NUL and names the format refuses are a
    ``UsageError``, raised before anything is sent."""
    if "\0" in text:
        raise UsageError(f"remote path {text!r} contains a NUL character")
    raw = os.fsencode(text)
    parts = [part for part in raw.split(b"/") if part]
    if parts == [b"."]:
        parts = []
    for part in parts:
        if part in (b".", b".."):
            raise UsageError(
                f"remote path {text!r}: {part.decode()!r} is not allowed "
                "(drive paths start at the drive's root)"
            )
    try:
        path = protocol.DrivePath(parts) if parts else None
    except protocol.InvalidNameError as exc:
        raise UsageError(f"remote path {text!r}: {exc.message}") from exc
    return RemoteTarget(path, raw.endswith(b"/") or path is None, text)


def _child(parent: protocol.DrivePath | None, name: bytes) -> protocol.DrivePath:
    return parent.child(name) if parent is not None else protocol.DrivePath((name,))


def _local_name(local: Path) -> bytes:
    name = os.fsencode(local.absolute().name if local.name in ("", ".", "..") else local.name)
    try:
        validate_name(name)
    except FormatError as exc:
        raise UsageError(f"{local}: its name cannot be stored on the drive: {exc}") from exc
    return name


# --- the drive at its head ------------------------------------------------------------------


class DriveView:
    """The user's home drive as its head commit shows it, read through the server. Trees
    are fetched in batches, verified against their ids in a worker thread, and kept for the
    life of the command."""

    def __init__(
        self,
        remote: Remote,
        namespace_id: NamespaceId,
        root: TreeId,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self.remote = remote
        self.namespace_id = namespace_id
        self.root = root
        self._limiter = limiter
        self._trees: dict[TreeId, Tree] = {EMPTY_TREE_ID: EMPTY_TREE}

    @classmethod
    async def open(cls, remote: Remote, limiter: trio.CapacityLimiter) -> DriveView:
        info = await remote.home()
        root = EMPTY_TREE_ID
        if info.head is not None:
            data = (await remote.commits(info.namespace_id, [info.head])).get(info.head)
            if data is None:
                raise IntegrityError(
                    info.head.hex(), "nothing (the server sent no commit)", "commit"
                )
            commit = await trio.to_thread.run_sync(decode_commit, data, info.head, limiter=limiter)
            root = commit.root
        return cls(remote, info.namespace_id, root, limiter)

    async def load(self, ids: Sequence[TreeId]) -> dict[TreeId, Tree]:
        wanted = list(dict.fromkeys(tree_id for tree_id in ids if tree_id not in self._trees))
        if wanted:
            found = await self.remote.trees(self.namespace_id, wanted)
            for tree_id in wanted:
                data = found.get(tree_id)
                if data is None:
                    raise IntegrityError(tree_id.hex(), "nothing (the server sent no tree)", "tree")
                self._trees[tree_id] = await trio.to_thread.run_sync(
                    decode_tree, data, tree_id, limiter=self._limiter
                )
        return {tree_id: self._trees[tree_id] for tree_id in ids}

    async def tree(self, tree_id: TreeId) -> Tree:
        return (await self.load([tree_id]))[tree_id]

    async def lookup(self, path: protocol.DrivePath) -> FileEntry | None:
        """The entry at ``path``, or ``None`` if it (or a folder on the way) is missing."""
        tree = await self.tree(self.root)
        for name in path.components[:-1]:
            entry = tree.get(name)
            if entry is None or entry.kind is not EntryKind.DIR:
                return None
            assert entry.tree_id is not None
            tree = await self.tree(entry.tree_id)
        return tree.get(path.name)

    async def missing_parents(self, path: protocol.DrivePath) -> list[protocol.DrivePath]:
        """The folders above ``path`` that do not exist yet, outermost first;
        ``ConflictError`` if one of them is something else than a folder."""
        missing: list[protocol.DrivePath] = []
        for depth in range(1, len(path.components)):
            parent = protocol.DrivePath(path.components[:depth])
            entry = None if missing else await self.lookup(parent)
            if entry is None:
                missing.append(parent)
            elif entry.kind is not EntryKind.DIR:
                raise ConflictError(show_path(parent), "is not a folder on the drive")
        return missing

    async def subtree(self, tree_id: TreeId) -> dict[bytes, FileEntry]:
        """Every entry below a folder, by path relative to it; one request per level."""
        found: dict[bytes, FileEntry] = {}
        level: list[tuple[bytes, TreeId]] = [(b"", tree_id)]
        while level:
            trees = await self.load([tree_id for _, tree_id in level])
            next_level: list[tuple[bytes, TreeId]] = []
            for prefix, level_id in level:
                for entry in trees[level_id]:
                    path = prefix + b"/" + entry.name if prefix else entry.name
                    found[path] = entry
                    if entry.kind is EntryKind.DIR:
                        assert entry.tree_id is not None
                        next_level.append((path, entry.tree_id))
            level = next_level
        return found


def _not_found(path: protocol.DrivePath | None) -> NotFoundError:
    return NotFoundError("drive path", show_path(path))


# --- downloads ------------------------------------------------------------------------------

_DOWNLOAD_QUEUE_RECORDS: Final = 4


async def download_file(
    view: DriveView,
    entry: FileEntry,
    sink: Callable[[bytes], object],
    transfer: Transfer,
    limiter: trio.CapacityLimiter,
) -> None:
    """Fetch ``entry``'s chunks in order, verify each frame against its id and the whole
    content against ``content_hash``, handing verified plaintext to ``sink`` (called in a
    worker thread, one call at a time). ``IntegrityError`` on any mismatch."""
    assert entry.content_hash is not None
    hasher = blake3.blake3()
    ids = [ref.chunk_id for ref in entry.chunks]
    send, receive = trio.open_memory_channel[protocol.Record[ChunkId]](_DOWNLOAD_QUEUE_RECORDS)

    async def fetch() -> None:
        async with send:
            stream = cast(
                "AsyncGenerator[protocol.Record[ChunkId], None]",
                view.remote.download_chunks(view.namespace_id, ids),
            )
            async with contextlib.aclosing(stream) as records:
                async for record in records:
                    await send.send(record)

    def take(record: protocol.Record[ChunkId], ref: ChunkRef) -> None:
        if record.object_id != ref.chunk_id or record.payload is None:
            got = "nothing" if record.payload is None else record.object_id.hex()
            raise IntegrityError(ref.chunk_id.hex(), f"{got} (the server did not send it)")
        data = decode_frame(record.payload, ref.chunk_id)
        if len(data) != ref.length:
            raise IntegrityError(ref.chunk_id.hex(), f"{len(data)} bytes, not {ref.length}")
        hasher.update(data)
        sink(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        async with receive:
            for ref in entry.chunks:
                try:
                    record = await receive.receive()
                except trio.EndOfChannel:
                    raise IntegrityError(
                        ref.chunk_id.hex(), "nothing (the download ended early)"
                    ) from None
                await trio.to_thread.run_sync(take, record, ref, limiter=limiter)
                transfer.advance(ref.length)
    actual = ContentHash(hasher.digest())
    if actual != entry.content_hash:
        raise IntegrityError(entry.content_hash.hex(), actual.hex(), "file")


# --- uploads --------------------------------------------------------------------------------

# The scan thread hands chunks over through a channel this long (each up to 4 MiB).
_SCAN_QUEUE_CHUNKS: Final = 8
# Chunks are asked about and sent in batches of about this many plaintext bytes.
_UPLOAD_BATCH_BYTES: Final = 32 * 1024 * 1024
_UPLOAD_BATCH_CHUNKS: Final = 256

OnChunk = Callable[[ChunkId, memoryview], None]


@dataclass(slots=True)
class UploadStats:
    chunks: int = 0  # distinct chunks seen
    new_chunks: int = 0  # those the server lacked, sent
    sent_bytes: int = 0  # frame bytes sent
    scanned_bytes: int = 0  # plaintext bytes chunked


class ChunkUploader:
    """Uploads the chunks the server lacks, as the scan of local files produces them.

    ``scan`` runs a synchronous function (chunking in a thread of its own) that reports
    every chunk through its ``on_chunk`` callback; the chunks cross a bounded channel to
    this task, which asks the server which are missing, batch by batch, encodes only those
    (zstd, in worker threads) and sends them. Memory stays bounded by the channel and one
    batch, whatever the size of the files.
    """

    def __init__(
        self,
        remote: Remote,
        namespace_id: NamespaceId,
        limiter: trio.CapacityLimiter,
        transfer: Transfer,
    ) -> None:
        self._remote = remote
        self._namespace_id = namespace_id
        self._limiter = limiter
        self._transfer = transfer
        self._seen: set[ChunkId] = set()
        self._pending: list[tuple[ChunkId, bytes]] = []
        self._pending_bytes = 0
        self.stats = UploadStats()

    async def scan(self, function: Callable[[OnChunk], T]) -> T:
        send, receive = trio.open_memory_channel[tuple[ChunkId, bytes]](_SCAN_QUEUE_CHUNKS)
        outcome: list[T] = []

        def on_chunk(chunk_id: ChunkId, data: memoryview) -> None:
            trio.from_thread.run(send.send, (chunk_id, bytes(data)))

        async def produce() -> None:
            async with send:
                # Its own thread: it blocks on the channel, so it must not hold a slot of
                # the limiter the encoder needs.
                outcome.append(
                    await trio.to_thread.run_sync(
                        function, on_chunk, limiter=trio.CapacityLimiter(1)
                    )
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with receive:
                async for chunk_id, data in receive:
                    self.stats.scanned_bytes += len(data)
                    self._transfer.advance(len(data))
                    await self._add(chunk_id, data)
        await self.flush()
        return outcome[0]

    async def _add(self, chunk_id: ChunkId, data: bytes) -> None:
        if chunk_id in self._seen:
            return
        self._seen.add(chunk_id)
        self.stats.chunks += 1
        self._pending.append((chunk_id, data))
        self._pending_bytes += len(data)
        if self._pending_bytes >= _UPLOAD_BATCH_BYTES or len(self._pending) >= _UPLOAD_BATCH_CHUNKS:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending:
            return
        missing = set(
            await self._remote.missing_chunks(self._namespace_id, [cid for cid, _ in pending])
        )
        to_send = [(chunk_id, data) for chunk_id, data in pending if chunk_id in missing]
        if not to_send:
            return
        frames: list[bytes] = [b""] * len(to_send)

        async def encode(index: int, data: bytes) -> None:
            frames[index] = await trio.to_thread.run_sync(encode_frame, data, limiter=self._limiter)

        async with trio.open_nursery() as nursery:
            for index, (_, data) in enumerate(to_send):
                nursery.start_soon(encode, index, data)
        ids = [chunk_id for chunk_id, _ in to_send]
        stored = await self._remote.upload_chunks(
            self._namespace_id, list(zip(ids, frames, strict=True))
        )
        if set(stored) != set(ids):
            lost = next(chunk_id for chunk_id in ids if chunk_id not in set(stored))
            raise protocol.ProtocolError(f"the server did not store chunk {lost.hex()}")
        self.stats.new_chunks += len(ids)
        self.stats.sent_bytes += sum(len(frame) for frame in frames)


def scan_file(local: Path, name: bytes, on_chunk: OnChunk) -> FileEntry:
    """The entry of one local regular file, chunked (in the calling worker thread): the
    attributes of the very inode read (``fstat``), its extended attributes, every chunk
    reported to ``on_chunk``."""
    with open(local, "rb", buffering=0) as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{local}: not a regular file or a folder")
        if info.st_size > MAX_FILE_BYTES:
            raise UsageError(f"{local}: {info.st_size} bytes is over the {MAX_FILE_BYTES} maximum")
        pieces = ChunkStream(stream)
        refs: list[ChunkRef] = []
        for piece in pieces:
            on_chunk(piece.chunk_id, piece.data)
            refs.append(ChunkRef(piece.chunk_id, piece.length))
        try:
            return FileEntry(
                name=name,
                kind=EntryKind.FILE,
                mode=stat.S_IMODE(info.st_mode),
                uid=info.st_uid,
                gid=info.st_gid,
                size=pieces.size,
                mtime_ns=info.st_mtime_ns,
                xattrs=_xattrs_of(stream.fileno()),
                chunks=tuple(refs),
                content_hash=pieces.content_hash,
            )
        except FormatError as exc:
            raise UsageError(f"{local} cannot be stored: {exc}") from exc


def _xattrs_of(fd: int) -> tuple[tuple[bytes, bytes], ...]:
    """The extended attributes of an open file, sorted (as ``store.merkle.build_tree``
    records them); none where the filesystem has none."""
    if not hasattr(os, "listxattr"):
        return ()
    try:
        names = os.listxattr(fd)
    except OSError:
        return ()  # not supported here
    pairs: list[tuple[bytes, bytes]] = []
    for name in names:
        try:
            pairs.append((os.fsencode(name), os.getxattr(fd, name)))
        except OSError:
            continue  # removed between list and get
    return tuple(sorted(pairs))


def _new_key() -> str:
    return secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]


_APPLY_ATTEMPTS: Final = 3
_MAX_RETRY_WAIT_S: Final = 10.0
# Bounds of one ops batch besides the op count: its chunk references (the JSON body).
_MAX_REFS_PER_BATCH: Final = 200_000


DriveOp: TypeAlias = protocol.PutOp | protocol.MkdirOp | protocol.MoveOp | protocol.DeleteOp


async def apply_ops(view: DriveView, ops: Sequence[DriveOp]) -> list[protocol.OpResult]:
    """Apply ops in batches within the protocol's bounds (in order: folders before what
    they hold). A batch whose reply was lost is resent with the same idempotency key, so it
    applies once."""
    results: list[protocol.OpResult] = []
    for batch in _batches(ops):
        key = _new_key()
        for attempt in range(1, _APPLY_ATTEMPTS + 1):
            try:
                reply = await view.remote.apply_ops(
                    view.namespace_id, protocol.OpsBatch(idempotency_key=key, ops=tuple(batch))
                )
                break
            except TransientError as exc:
                if attempt == _APPLY_ATTEMPTS:
                    raise
                wait_s = float(2 ** (attempt - 1))
                if isinstance(exc, protocol.RateLimitedError) and exc.retry_after_s:
                    wait_s = exc.retry_after_s
                await trio.sleep(min(wait_s, _MAX_RETRY_WAIT_S))
        results.extend(reply.results)
    return results


def _batches(ops: Sequence[DriveOp]) -> Iterator[list[DriveOp]]:
    batch: list[DriveOp] = []
    refs = 0
    for op in ops:
        op_refs = len(op.entry.chunks) if isinstance(op, protocol.PutOp) else 0
        if batch and (
            len(batch) >= protocol.MAX_OPS_PER_BATCH or refs + op_refs > _MAX_REFS_PER_BATCH
        ):
            yield batch
            batch, refs = [], 0
        batch.append(op)
        refs += op_refs
    if batch:
        yield batch


def _mkdir(path: protocol.DrivePath, info: os.stat_result | None = None) -> protocol.MkdirOp:
    if info is None:
        attrs = protocol.AttrsModel(
            mode=0o755, uid=os.getuid(), gid=os.getgid(), mtime_ns=time.time_ns()
        )
    else:
        attrs = protocol.AttrsModel(
            mode=stat.S_IMODE(info.st_mode),
            uid=info.st_uid,
            gid=info.st_gid,
            mtime_ns=info.st_mtime_ns,
        )
    return protocol.MkdirOp(path=path, attrs=attrs)


def describe_result(result: protocol.OpResult) -> str:
    path = show_path(result.path)
    if result.status == "applied":
        return f"applied: {path}"
    if result.status == "merged":
        return f"merged: {path} (combined with changes made elsewhere)"
    if result.status == "conflicted_copy":
        return (
            f"conflicted copy: {path} was changed elsewhere; "
            f"this version is at {show_path(result.conflict_path)}"
        )
    return f"rejected: {path}: {result.message or result.code}"


def _exit_for_results(results: Sequence[protocol.OpResult]) -> ExitCode:
    done = ("applied", "merged")
    return ExitCode.OK if all(r.status in done for r in results) else ExitCode.CONFLICT


# --- commands: accounts ---------------------------------------------------------------------

_PASSWORD_PROMPT: Final = "Password: "  # noqa: S105  (a prompt, not a secret)
_REPEAT_PROMPT: Final = "Repeat password: "


def read_password(args: argparse.Namespace, *, confirm: bool) -> str:
    """From stdin (``--password-stdin``: its first line), or asked on the terminal (twice
    when ``confirm``). Never from an argument, where other users could see it."""
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise UsageError("--password-stdin: standard input holds no password")
        return password
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: use --password-stdin")
    password = getpass.getpass(_PASSWORD_PROMPT)
    if confirm and getpass.getpass(_REPEAT_PROMPT) != password:
        raise UsageError("the two passwords differ")
    return password


def checked(model: type[protocol.WireModel], **fields: object) -> None:
    """Refuse user input the protocol refuses, with the very error the server would give
    (``BadRequestError``, exit 2), before ``Remote`` builds its request from it."""
    try:
        model(**fields)
    except pydantic.ValidationError as exc:
        _status, body = protocol.validation_error_body(exc.errors())
        raise protocol.error_for(body) from None


def server_url(given: str | None, home: Home) -> str:
    """``--server`` (checked), else the server this home used last."""
    if given is None:
        remembered = home.read_state().server_url
        if remembered is None:
            raise UsageError("no server known on this device: pass --server URL")
        return remembered
    try:
        url = httpx.URL(given)
    except httpx.InvalidURL as exc:
        raise UsageError(f"--server {given!r}: not a URL ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"--server {given!r}: expected http://HOST[:PORT] or https://...")
    return given.rstrip("/")


async def cmd_register(args: argparse.Namespace, ctx: Context) -> ExitCode:
    url = server_url(args.server, ctx.home)
    password = read_password(args, confirm=True)
    checked(protocol.RegisterRequest, username=args.username, email=args.email, password=password)
    async with Remote(url) as remote:
        account = await remote.register(args.username, args.email, password)
    state = ctx.home.read_state()
    if state.server_url != url:  # remembered: `boxfs login USERNAME` needs no --server
        ctx.home.write_state(HomeState(url, state.session))
    ctx.say(f"registered {account.username} <{account.email}> on {url}")
    ctx.say(f"next: boxfs login {account.username}")
    return ExitCode.OK


async def cmd_login(args: argparse.Namespace, ctx: Context) -> ExitCode:
    url = server_url(args.server, ctx.home)
    previous = ctx.home.read_state().session
    device = args.device or default_device_name()
    password = read_password(args, confirm=False)
    checked(protocol.LoginRequest, username=args.username, password=password, device_name=device)
    async with Remote(url) as remote:
        reply = await remote.login(args.username, password, device)
    session = Session(url, reply.token, reply.session_id, reply.username, reply.device_name)
    ctx.home.save_session(session)
    if previous is not None and previous.token != session.token:
        await _end_session(previous)  # best effort: don't leave the old session valid
    ctx.say(f"logged in to {url} as {reply.username} (device {reply.device_name})")
    return ExitCode.OK


async def _end_session(session: Session) -> None:
    with trio.move_on_after(5):
        async with Remote(session.server_url, session.token, timeout_s=5) as remote:
            try:
                await remote.logout()
            except (protocol.UnauthorizedError, TransientError, protocol.ProtocolError):
                return  # already ended, or the old server is gone: nothing more to do


async def cmd_logout(args: argparse.Namespace, ctx: Context) -> ExitCode:
    session = ctx.home.load_session()
    async with Remote(session.server_url, session.token) as remote:
        try:
            await remote.logout()
        except protocol.UnauthorizedError:
            pass  # the server had ended it already: forgetting it here is all that is left
        except TransientError as exc:
            ctx.home.clear_session()
            raise protocol.UnavailableError(
                f"logged out on this device, but the server could not be told ({describe(exc)}):"
                " the session stays valid there until it is revoked from another device"
            ) from exc
    ctx.home.clear_session()
    ctx.say(f"logged out {session.username} from {session.server_url}")
    return ExitCode.OK


async def cmd_whoami(args: argparse.Namespace, ctx: Context) -> ExitCode:
    session = ctx.home.load_session()
    async with Remote(session.server_url, session.token) as remote:
        me = await remote.whoami()
    ctx.result(f"{me.username} <{me.email}> on {session.server_url} (device {me.device_name})")
    return ExitCode.OK


# --- commands: the drive --------------------------------------------------------------------

_KIND_FLAG: Final = {
    EntryKind.FILE: stat.S_IFREG,
    EntryKind.DIR: stat.S_IFDIR,
    EntryKind.SYMLINK: stat.S_IFLNK,
    EntryKind.FIFO: stat.S_IFIFO,
    EntryKind.SOCKET: stat.S_IFSOCK,
}


def _long_line(entry: FileEntry, shown_name: str) -> str:
    mode = stat.filemode(_KIND_FLAG[entry.kind] | entry.mode)
    kind = entry.kind.name.lower()
    size = "-" if entry.kind is EntryKind.DIR else str(entry.size)
    name = shown_name
    if entry.kind is EntryKind.SYMLINK:
        name += f" -> {show_bytes(entry.target)}"
    return f"{mode}  {kind:<7} {size:>12}  {format_time_ns(entry.mtime_ns)}  {name}"


def _session_remote(session: Session) -> Remote:
    return Remote(session.server_url, session.token)


async def cmd_ls(args: argparse.Namespace, ctx: Context) -> ExitCode:
    target = parse_remote_path(args.path)
    session = ctx.home.load_session()
    async with _session_remote(session) as remote:
        view = await DriveView.open(remote, ctx.limiter)
        listed: list[tuple[FileEntry, str]]
        if target.path is None:
            listed = [(e, show_bytes(e.name)) for e in await view.tree(view.root)]
        else:
            entry = await view.lookup(target.path)
            if entry is None:
                raise _not_found(target.path)
            if entry.kind is EntryKind.DIR:
                assert entry.tree_id is not None
                listed = [(e, show_bytes(e.name)) for e in await view.tree(entry.tree_id)]
            else:
                listed = [(entry, show_path(target.path))]
    for entry, shown in listed:
        ctx.result(_long_line(entry, shown) if args.long else shown)
    return ExitCode.OK


async def cmd_get(args: argparse.Namespace, ctx: Context) -> ExitCode:
    source = parse_remote_path(args.remote_path)
    if source.path is None:
        raise UsageError("get needs the path of a file on the drive, not its root")
    to_stdout = args.local_path == "-"
    if not to_stdout and not Path(args.local_path).absolute().parent.is_dir():
        raise NotFoundError("local folder", str(Path(args.local_path).parent))
    session = ctx.home.load_session()
    async with _session_remote(session) as remote:
        view = await DriveView.open(remote, ctx.limiter)
        entry = await view.lookup(source.path)
        if entry is None:
            raise _not_found(source.path)
        if entry.kind is EntryKind.DIR and args.recursive and not to_stdout:
            return await _get_folder(ctx, view, source.path, entry, Path(args.local_path))
        if entry.kind is not EntryKind.FILE:
            kind = "a folder" if entry.kind is EntryKind.DIR else f"a {entry.kind.name.lower()}"
            hint = " (get -r downloads a folder)" if entry.kind is EntryKind.DIR else ""
            raise UsageError(f"{show_path(source.path)} is {kind}: get downloads one file{hint}")
        with ctx.transfer(f"get {show_bytes(entry.name)}", entry.size) as transfer:
            if to_stdout:
                out = sys.stdout.buffer
                await download_file(view, entry, out.write, transfer, ctx.limiter)
                await trio.to_thread.run_sync(out.flush)
                _remember(ctx, view, {bytes(source.path): entry.content_hash})
                return ExitCode.OK
            destination = Path(args.local_path)
            if destination.is_dir():
                destination = destination / os.fsdecode(entry.name)
            await _download_to(view, entry, destination, transfer, ctx.limiter)
        _remember(ctx, view, {bytes(source.path): entry.content_hash})
    ctx.say(f"got {show_path(source.path)} -> {destination} ({human_size(entry.size)})")
    return ExitCode.OK


async def _get_folder(
    ctx: Context,
    view: DriveView,
    source: protocol.DrivePath,
    folder: FileEntry,
    destination: Path,
) -> ExitCode:
    """``get -r``: the folder and everything below it, into ``destination`` (or into
    ``destination/NAME`` if that is an existing folder, as ``cp -r`` does). Each file is
    verified and renamed into place as ``get`` does; symlinks and FIFOs are made as such,
    sockets skipped (they mean nothing without their process)."""
    if destination.is_dir():
        destination = destination / os.fsdecode(folder.name)
    assert folder.tree_id is not None
    below = sorted((await view.subtree(folder.tree_id)).items())  # a folder before its content
    total = sum(entry.size for _, entry in below if entry.kind is EntryKind.FILE)
    seen: dict[bytes, ContentHash | None] = {}
    destination.mkdir(exist_ok=True)
    folders = [(destination, folder)]
    with ctx.transfer(f"get {show_bytes(folder.name)}", total) as transfer:
        for relative, entry in below:
            local = destination / os.fsdecode(relative)
            if entry.kind is EntryKind.DIR:
                local.mkdir(exist_ok=True)
                folders.append((local, entry))
            elif entry.kind is EntryKind.FILE:
                await _download_to(view, entry, local, transfer, ctx.limiter)
                seen[bytes(source) + b"/" + relative] = entry.content_hash
            elif entry.kind is EntryKind.SOCKET:
                ctx.say(f"skipped the socket {show_path(source)}/{show_bytes(relative)}")
            else:
                if local.is_symlink() or local.exists():
                    local.unlink()
                if entry.kind is EntryKind.SYMLINK:
                    os.symlink(entry.target, local)
                else:
                    os.mkfifo(local, entry.mode & 0o777)
    for local, entry in reversed(folders):  # after their content: a read-only folder too
        os.chmod(local, entry.mode & 0o777)
        os.utime(local, ns=(time.time_ns(), entry.mtime_ns))
    _remember(ctx, view, seen)
    files = sum(entry.kind is EntryKind.FILE for _, entry in below)
    ctx.say(f"got {show_path(source)} -> {destination} ({_count(files, 'file')}, "
            f"{human_size(total)})")  # fmt: skip
    return ExitCode.OK


async def _download_to(
    view: DriveView,
    entry: FileEntry,
    destination: Path,
    transfer: Transfer,
    limiter: trio.CapacityLimiter,
) -> None:
    """Into a temp file beside ``destination``, renamed over it only once every byte is
    verified and fsynced: a failed download leaves nothing behind."""
    fd, temp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".boxfs-part", dir=destination.parent
    )
    temp = Path(temp_name)
    try:
        with open(fd, "wb") as stream:
            await download_file(view, entry, stream.write, transfer, limiter)

            def finish(stream: BinaryIO) -> None:
                stream.flush()
                # Permission bits only: setuid, setgid and sticky from the drive are dropped.
                os.fchmod(stream.fileno(), entry.mode & 0o777)
                os.utime(stream.fileno(), ns=(time.time_ns(), entry.mtime_ns))
                os.fsync(stream.fileno())

            await trio.to_thread.run_sync(finish, stream, limiter=limiter)
        os.replace(temp, destination)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


async def cmd_put(args: argparse.Namespace, ctx: Context) -> ExitCode:
    target = parse_remote_path(args.remote_path)
    local = Path(args.local_path)
    try:
        info = local.stat()
    except FileNotFoundError:
        raise NotFoundError("local file", str(local)) from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise UsageError(f"{local}: put takes a regular file or a folder")
    name = _local_name(local)
    session = ctx.home.load_session()
    async with _session_remote(session) as remote:
        view = await DriveView.open(remote, ctx.limiter)
        if stat.S_ISDIR(info.st_mode):
            return await _put_tree(ctx, view=view, local=local, info=info, name=name, target=target)
        return await _put_file(ctx, view=view, local=local, info=info, name=name, target=target)


async def _put_file(
    ctx: Context,
    *,
    view: DriveView,
    local: Path,
    info: os.stat_result,
    name: bytes,
    target: RemoteTarget,
) -> ExitCode:
    destination = target.path
    existing = await view.lookup(destination) if destination is not None else None
    if destination is None or target.inside or (existing and existing.kind is EntryKind.DIR):
        destination = _child(destination, name)
        existing = await view.lookup(destination)
    if existing is not None and existing.kind is EntryKind.DIR:
        raise ConflictError(show_path(destination), "is a folder on the drive")
    parents = await view.missing_parents(destination)
    remote_name = destination.name
    with ctx.transfer(f"put {local.name}", info.st_size) as transfer:
        uploader = ChunkUploader(view.remote, view.namespace_id, ctx.limiter, transfer)
        entry = await uploader.scan(lambda on_chunk: scan_file(local, remote_name, on_chunk))
    if existing is not None and _same_leaf(existing, entry):
        _remember(ctx, view, {bytes(destination): existing.content_hash})
        ctx.result(f"unchanged: {show_path(destination)}")
        return ExitCode.OK
    seen = ctx.home.bases.get(view.namespace_id, bytes(destination))
    base = base_for_put(seen, existing)
    ops: list[protocol.PutOp | protocol.MkdirOp] = [_mkdir(parent) for parent in parents]
    ops.append(protocol.PutOp(path=destination, entry=protocol.entry_to_model(entry), base=base))
    results = await apply_ops(view, ops)
    _remember_puts(ctx, view, ops, results)
    ctx.result(describe_result(results[-1]))
    for result in results[:-1]:  # a parent folder that could not be made
        if result.status == "rejected":
            ctx.result(describe_result(result))
    ctx.say(_upload_summary(uploader.stats))
    return _exit_for_results(results)


def base_for_put(seen: ContentHash | None, existing: FileEntry | None) -> ContentHash | None:
    """The ``base`` of a put over ``existing`` (the drive's entry at the path, if any).

    The content this device last saw there (``seen``, recorded by ``get`` and ``put``), so
    an edit made elsewhere since is merged or kept as a conflicted copy, never replaced.
    A file this device never read is replaced on purpose (the user named it; the old
    version stays in history): its base is the drive's current content. ``None`` where no
    file is.
    """
    if existing is None or existing.kind is not EntryKind.FILE:
        return None
    return seen if seen is not None else existing.content_hash


def _remember(ctx: Context, view: DriveView, seen: dict[bytes, ContentHash | None]) -> None:
    ctx.home.bases.record(
        view.namespace_id, {path: hash_ for path, hash_ in seen.items() if hash_ is not None}
    )


def _remember_puts(
    ctx: Context,
    view: DriveView,
    ops: Sequence[protocol.PutOp | protocol.MkdirOp],
    results: Sequence[protocol.OpResult],
    also: dict[bytes, ContentHash | None] | None = None,
) -> None:
    """Record, as the base of the next put, the content each applied or merged put sent
    (after a merge, it is the ancestor of the next 3-way merge, so edits made elsewhere
    survive). A conflicted copy records nothing: the path still holds the other version."""
    seen: dict[bytes, ContentHash | None] = dict(also or {})
    for op, result in zip(ops, results, strict=True):
        if isinstance(op, protocol.PutOp) and result.status in ("applied", "merged"):
            seen[bytes(op.path)] = op.entry.content_hash
    _remember(ctx, view, seen)


def _same_leaf(existing: FileEntry, local: FileEntry) -> bool:
    """Whether a put would change nothing that matters: same kind, content and mode."""
    return (
        existing.kind == local.kind
        and existing.content_hash == local.content_hash
        and existing.target == local.target
        and existing.mode == local.mode
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _upload_summary(stats: UploadStats) -> str:
    return (
        f"sent {human_size(stats.sent_bytes)} in {_count(stats.new_chunks, 'new chunk')} "
        f"({_count(stats.chunks, 'chunk')}, {human_size(stats.scanned_bytes)} in all)"
    )


def _tree_size(local: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(local):
        for file_name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, file_name)).st_size
    return total


async def _put_tree(
    ctx: Context,
    *,
    view: DriveView,
    local: Path,
    info: os.stat_result,
    name: bytes,
    target: RemoteTarget,
) -> ExitCode:
    """A local folder mirrored into ``target``: created if missing, merged into if it
    exists (new and changed files put, unchanged ones left, nothing deleted). A target
    written with a trailing ``/`` or the root receives the folder under its own name."""
    destination = target.path
    if destination is None or target.inside:
        destination = _child(destination, name)
    existing = await view.lookup(destination)
    if existing is not None and existing.kind is not EntryKind.DIR:
        raise ConflictError(show_path(destination), "exists on the drive and is not a folder")
    remote_entries: dict[bytes, FileEntry] = {}
    ops: list[protocol.PutOp | protocol.MkdirOp] = []
    if existing is None:
        ops.extend(_mkdir(parent) for parent in await view.missing_parents(destination))
        ops.append(_mkdir(destination, info))
    else:
        assert existing.tree_id is not None
        remote_entries = await view.subtree(existing.tree_id)
    total = _tree_size(local) if ctx.shows_progress else None
    with ctx.transfer(f"put {local.name}", total) as transfer:
        uploader = ChunkUploader(view.remote, view.namespace_id, ctx.limiter, transfer)
        built = await uploader.scan(lambda on_chunk: build_tree(local, on_chunk))
    files = folders = unchanged = 0
    local_entries = list(walk(MemoryTrees(built.new_trees), built.root))
    prefix = bytes(destination) + b"/"
    seen = ctx.home.bases.get_many(
        view.namespace_id, [prefix + relative for relative, _ in local_entries]
    )
    kept: dict[bytes, ContentHash | None] = {}
    for relative, entry in local_entries:
        path = protocol.DrivePath((*destination.components, *relative.split(b"/")))
        there = remote_entries.get(relative)
        if entry.kind is EntryKind.DIR:
            folders += 1
            if there is None or there.kind is not EntryKind.DIR:
                attrs = protocol.AttrsModel(
                    mode=entry.mode, uid=entry.uid, gid=entry.gid, mtime_ns=entry.mtime_ns
                )
                ops.append(protocol.MkdirOp(path=path, attrs=attrs))
            continue
        files += 1
        if there is not None and _same_leaf(there, entry):
            unchanged += 1
            kept[bytes(path)] = there.content_hash
            continue
        base = base_for_put(seen.get(bytes(path)), there)
        ops.append(protocol.PutOp(path=path, entry=protocol.entry_to_model(entry), base=base))
    results = await apply_ops(view, ops) if ops else []
    _remember_puts(ctx, view, ops, results, also=kept)
    for result in results:
        if result.status != "applied":
            ctx.result(describe_result(result))
    ctx.say(
        f"put {_count(files, 'file')} and {_count(folders, 'folder')} "
        f"into {show_path(destination)}" + (f" ({unchanged} unchanged)" if unchanged else "")
    )
    ctx.say(_upload_summary(uploader.stats))
    return _exit_for_results(results)


async def _all_versions(view: DriveView, path: protocol.DrivePath) -> list[protocol.FileVersion]:
    versions: list[protocol.FileVersion] = []
    cursor: str | None = None
    while True:
        page = await view.remote.versions(
            view.namespace_id,
            protocol.VersionsRequest(path=path, cursor=cursor, limit=protocol.MAX_PAGE_SIZE),
        )
        versions.extend(page.versions)
        if page.next_cursor is None:
            return versions
        cursor = page.next_cursor


_COMMIT_PREFIX_SHOWN: Final = 12


def _version_size(version: protocol.FileVersion) -> str:
    entry = version.entry
    if entry is None:
        return "deleted"
    return str(entry.size) if entry.kind == "file" else entry.kind


async def cmd_versions(args: argparse.Namespace, ctx: Context) -> ExitCode:
    target = parse_remote_path(args.path)
    if target.path is None:
        raise UsageError("versions needs a path on the drive; the root has no versions")
    session = ctx.home.load_session()
    async with _session_remote(session) as remote:
        view = await DriveView.open(remote, ctx.limiter)
        versions = await _all_versions(view, target.path)
    if not versions:
        raise _not_found(target.path)
    rows = [
        (
            format_time_ns(v.time_ns),
            v.device,
            _version_size(v),
            v.commit_id.hex()[:_COMMIT_PREFIX_SHOWN],
        )
        for v in versions
    ]
    if sys.stdout.isatty():
        rows.insert(0, ("TIME (UTC)", "DEVICE", "SIZE", "COMMIT"))
    device_width = max(len(row[1]) for row in rows)
    size_width = max(len(row[2]) for row in rows)
    for when, device, size, commit in rows:
        ctx.result(f"{when}  {device:<{device_width}}  {size:>{size_width}}  {commit}")
    return ExitCode.OK


_HEX_PREFIX: Final = re.compile(r"[0-9a-fA-F]+")
_MIN_PREFIX_CHARS: Final = 4
_ZONE_SUFFIX: Final = re.compile(r"(Z|[+-]\d{2}(:?\d{2})?)$", re.IGNORECASE)
_VERSIONS_DIR_TIME: Final = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2})-(\d{2})-(\d{2})Z$")
_NS_PER_S: Final = 1_000_000_000
# What a time written to a precision covers, by the number of colons in its time of day.
_SPAN_OF_COLONS: Final = {0: 3600 * _NS_PER_S, 1: 60 * _NS_PER_S, 2: _NS_PER_S}
_DAY_NS: Final = 86_400 * _NS_PER_S


def _span_ns(text: str) -> int:
    """How much time an ISO 8601 text covers: a day for a date alone, an hour, minute or
    second for a time to that precision, a microsecond with fractions."""
    _date, separator, time_of_day = text.replace(" ", "T").partition("T")
    if not separator:
        return _DAY_NS
    time_of_day = _ZONE_SUFFIX.sub("", time_of_day)
    if "." in time_of_day or "," in time_of_day:
        return 1000
    return _SPAN_OF_COLONS.get(time_of_day.count(":"), 1000)


@dataclass(frozen=True, slots=True)
class When:
    """``--at``: a moment (the last nanosecond it covers) or a commit id prefix."""

    until_ns: int | None = None
    commit_prefix: str | None = None


def parse_when(text: str) -> When:
    """An ISO 8601 time (UTC if no zone is given; ``Z`` or an offset accepted; the
    ``.versions`` folder form ``2026-11-28T03-15-02Z`` too), or a commit id prefix of at
    least 4 hex digits. A time without fractions covers its whole second (minute, day), as
    ``versions`` prints times to the second."""
    text = text.strip()
    if _HEX_PREFIX.fullmatch(text):
        if len(text) < _MIN_PREFIX_CHARS:
            raise UsageError(f"--at {text!r}: a commit id prefix needs {_MIN_PREFIX_CHARS}+ digits")
        return When(commit_prefix=text.lower())
    folder = _VERSIONS_DIR_TIME.match(text)
    if folder:
        text = f"{folder[1]}T{folder[2]}:{folder[3]}:{folder[4]}Z"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--at {text!r}: expected an ISO 8601 UTC time (2026-11-28T03:15:02Z) "
            "or a commit id prefix from `boxfs versions`"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    since_epoch = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    start_ns = since_epoch // dt.timedelta(microseconds=1) * 1000
    return When(until_ns=start_ns + _span_ns(text) - 1)


def pick_version(
    versions: Sequence[protocol.FileVersion], when: When, text: str, shown: str
) -> protocol.FileVersion:
    """The version ``--at`` names, from ``versions`` (newest first)."""
    if when.commit_prefix is not None:
        matches = [v for v in versions if v.commit_id.hex().startswith(when.commit_prefix)]
        if not matches:
            raise NoSuchVersionError(f"no version of {shown} has a commit id starting {text}")
        if len({v.commit_id for v in matches}) > 1:
            raise UsageError(f"--at {text}: the prefix names several commits; give more digits")
        return matches[0]
    assert when.until_ns is not None
    chosen = next((v for v in versions if v.time_ns <= when.until_ns), None)
    if chosen is None:
        oldest = format_time_ns(versions[-1].time_ns) if versions else "none"
        raise NoSuchVersionError(
            f"no version of {shown} at or before {text} (the oldest is from {oldest})"
        )
    return chosen


async def cmd_restore(args: argparse.Namespace, ctx: Context) -> ExitCode:
    target = parse_remote_path(args.path)
    if target.path is None:
        raise UsageError("restore needs a path on the drive (a file or a folder)")
    when = parse_when(args.at)
    session = ctx.home.load_session()
    async with _session_remote(session) as remote:
        view = await DriveView.open(remote, ctx.limiter)
        versions = await _all_versions(view, target.path)
        if not versions:
            raise _not_found(target.path)
        chosen = pick_version(versions, when, args.at, show_path(target.path))
        moment = format_time_ns(chosen.time_ns)
        if chosen.entry is None:
            raise NoSuchVersionError(
                f"{show_path(target.path)} did not exist at {args.at} (deleted at {moment})"
            )
        request = protocol.RestoreRequest(
            path=target.path, commit_id=chosen.commit_id, idempotency_key=_new_key()
        )
        reply = await remote.restore(view.namespace_id, request)
    result = reply.results[0]
    commit = chosen.commit_id.hex()[:_COMMIT_PREFIX_SHOWN]
    if result.status == "rejected":
        ctx.result(describe_result(result))
    elif reply.commit_id is None:
        ctx.result(f"unchanged: {show_path(target.path)} is already as it was at {moment}")
    else:
        ctx.result(f"restored: {show_path(target.path)} as of {moment} (commit {commit})")
    return _exit_for_results(reply.results)


# --- the parser and main -------------------------------------------------------------------

Command = Callable[[argparse.Namespace, Context], Awaitable[ExitCode]]


# --- commands: folders, moves, deletes, devices -------------------------------------------------


def _named_path(text: str, what: str) -> protocol.DrivePath:
    """A drive path that is not the root (which cannot be made, moved or removed)."""
    target = parse_remote_path(text)
    if target.path is None:
        raise UsageError(f"{what} needs a path on the drive, not its root")
    return target.path


def _report(ctx: Context, results: Sequence[protocol.OpResult]) -> ExitCode:
    for result in results:
        if result.status != "applied":
            ctx.result(describe_result(result))
    return _exit_for_results(results)


async def cmd_mkdir(args: argparse.Namespace, ctx: Context) -> ExitCode:
    paths = [_named_path(text, "mkdir") for text in args.paths]
    session = ctx.home.load_session()
    async with _session_remote(session) as remote:
        view = await DriveView.open(remote, ctx.limiter)
        wanted: dict[protocol.DrivePath, None] = {}
        for path in paths:
            entry = await view.lookup(path)
            if entry is not None:
                if entry.kind is EntryKind.DIR and args.parents:
                    continue
                raise ConflictError(show_path(path), "exists already")
            missing = await view.missing_parents(path)
            if missing and not args.parents:
                raise NotFoundError("drive folder", show_path(missing[-1]))
            wanted.update((folder, None) for folder in [*missing, path])
        results = await apply_ops(view, [_mkdir(path) for path in wanted])
    for path in wanted:
        ctx.say(f"made {show_path(path)}")
    return _report(ctx, results)


async def cmd_mv(args: argparse.Namespace, ctx: Context) -> ExitCode:
    source = _named_path(args.source, "mv")
    target = parse_remote_path(args.destination)
    session = ctx.home.load_session()
    async with _session_remote(session) as remote:
        view = await DriveView.open(remote, ctx.limiter)
        if await view.lookup(source) is None:
            raise _not_found(source)
        destination = target.path
        existing = None if destination is None else await view.lookup(destination)
        if (
            destination is None
            or target.inside
            or (existing is not None and existing.kind is EntryKind.DIR)
        ):  # into a folder, under its own name, as mv(1) does
            destination = _child(destination, source.name)
        elif (missing := await view.missing_parents(destination)) != []:
            raise NotFoundError("drive folder", show_path(missing[-1]))
        if destination.is_within(source):
            raise UsageError(f"cannot move {show_path(source)} into itself")
        results = await apply_ops(view, [protocol.MoveOp(src=source, dst=destination)])
    code = _report(ctx, results)
    if code is ExitCode.OK:
        ctx.say(f"moved {show_path(source)} -> {show_path(destination)}")
    return code


async def cmd_rm(args: argparse.Namespace, ctx: Context) -> ExitCode:
    paths = [_named_path(text, "rm") for text in args.paths]
    session = ctx.home.load_session()
    async with _session_remote(session) as remote:
        view = await DriveView.open(remote, ctx.limiter)
        ops: list[DriveOp] = []
        for path in paths:
            entry = await view.lookup(path)
            if entry is None:
                raise _not_found(path)
            if entry.kind is EntryKind.DIR:
                if not args.recursive:
                    raise UsageError(f"{show_path(path)} is a folder: rm -r removes it")
                assert entry.tree_id is not None
                ops.extend(_deletes_below(path, await view.subtree(entry.tree_id)))
            ops.append(protocol.DeleteOp(path=path, base=entry.content_hash))
        results = await apply_ops(view, ops)
    code = _report(ctx, results)
    removed = sum(result.status == "applied" for result in results)
    ctx.say(f"removed {_count(removed, 'entry')}")
    return code


def _deletes_below(
    folder: protocol.DrivePath, below: Mapping[bytes, FileEntry]
) -> list[protocol.DeleteOp]:
    """Deletes of everything below ``folder``, deepest first (a folder only once empty).
    A file's delete names the content seen here: one changed elsewhere meanwhile stays."""
    ordered = sorted(below.items(), key=lambda item: item[0].count(b"/"), reverse=True)
    return [
        protocol.DeleteOp(
            path=protocol.DrivePath((*folder.components, *relative.split(b"/"))),
            base=entry.content_hash,
        )
        for relative, entry in ordered
    ]


async def cmd_devices(args: argparse.Namespace, ctx: Context) -> ExitCode:
    session = ctx.home.load_session()
    async with _session_remote(session) as remote:
        if args.revoke is not None:
            session_id = args.revoke
            try:
                session_id = protocol.parse_session_id(session_id)
            except protocol.BadRequestError as exc:
                raise UsageError(f"--revoke {args.revoke!r}: {exc.message}") from exc
            await remote.revoke_session(session_id)
            ctx.result(f"revoked {session_id}")
            if session_id == session.session_id:
                ctx.home.clear_session()
                ctx.say("that was this device's session: run `boxfs login` to use it again")
            return ExitCode.OK
        listed = await remote.sessions()
    for info in sorted(listed.sessions, key=lambda item: item.last_used_at, reverse=True):
        used = info.last_used_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        this = "  (this device)" if info.current else ""
        ctx.result(f"{info.session_id}  {used}  {show_bytes(info.device_name.encode())}{this}")
    return ExitCode.OK


# --- mount and unmount ------------------------------------------------------------------------

MOUNT_WAIT_S: Final = 60.0  # how long `boxfs mount` waits for a background mount to appear


def _mount_child_command(args: argparse.Namespace, mountpoint: Path) -> list[str]:
    """``python -m boxfs.mount`` with this command's options: the background mount."""
    command = [sys.executable, "-m", "boxfs.mount", str(mountpoint)]
    if args.cache_size:
        command += ["--cache-size", args.cache_size]
    if args.allow_other:
        command.append("--allow-other")
    if args.preserve_ownership:
        command.append("--preserve-ownership")
    if args.nonempty:
        command.append("--nonempty")
    for option in args.options:
        command += ["-o", option]
    return command


async def cmd_mount(args: argparse.Namespace, ctx: Context) -> ExitCode:
    # Imported here: the mount pulls in pyfuse3 and the filesystem, which no other
    # command needs.
    from boxfs import mount  # noqa: PLC0415

    ctx.home.load_session()  # not logged in: one line now, not a dead background child
    config = mount.config_from(
        Path(args.mountpoint),
        cache_size=args.cache_size,
        allow_other=args.allow_other,
        preserve_ownership=args.preserve_ownership,
        options=args.options,
        nonempty=args.nonempty,
    )
    mountpoint = mount.check_mountpoint(config.mountpoint, nonempty=config.nonempty)
    ctx.home.check_free()  # mounted already from this home: one line now, as above
    if args.foreground:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
        left = await mount.run_mount(
            config, home=ctx.home, on_mounted=lambda: ctx.say(f"mounted at {mountpoint}")
        )
        if left:
            ctx.say(f"{_count(left, 'operation')} left journaled: they upload on the next mount")
        return ExitCode.OK
    log_path = ctx.home.data_dir / mount.MOUNT_LOG_NAME
    with log_path.open("ab") as log_file:
        child = await trio.lowlevel.open_process(
            _mount_child_command(args, mountpoint),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,  # detached: a closed terminal does not end the mount
        )
    with trio.move_on_after(MOUNT_WAIT_S):
        while child.poll() is None:
            if mount.is_boxfs_mount(mountpoint):
                ctx.result(f"mounted at {mountpoint} (pid {child.pid}, log: {log_path})")
                return ExitCode.OK
            await trio.sleep(0.05)
        raise BoxfsError(f"the mount failed: {_last_line(log_path)} (log: {log_path})")
    raise BoxfsError(f"no mount at {mountpoint} after {MOUNT_WAIT_S:.0f} s; see {log_path}")


def _last_line(log_path: Path) -> str:
    """The background mount's last words (its one-line error), from the end of its log."""
    try:
        with log_path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            lines = log.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1].removeprefix("boxfs: ") if lines else "no output"


async def cmd_unmount(args: argparse.Namespace, ctx: Context) -> ExitCode:
    from boxfs import mount  # noqa: PLC0415  (as in cmd_mount)

    mountpoint = Path(args.mountpoint).expanduser().absolute()
    if not mount.is_boxfs_mount(mountpoint):
        raise UsageError(f"{mountpoint}: no boxfs drive is mounted there")
    if args.no_wait:
        return await _unmount_no_wait(ctx, mountpoint)
    result = await trio.run_process(
        [mount.UNMOUNT_COMMAND, "-u", str(mountpoint)], check=False, capture_stderr=True
    )
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()
        raise BoxfsError(f"cannot unmount {mountpoint}: {reason[-1] if reason else 'failed'}")
    ctx.say(f"unmounted {mountpoint}")
    journal_path = _journal_path(ctx.home)
    left = await _wait_for_uploads(ctx, journal_path, mount.DEFAULT_DRAIN_TIMEOUT_S + 5.0)
    if left:
        ctx.say(f"{_count(left, 'operation')} left journaled: they upload on the next mount")
    return ExitCode.OK


UNMOUNT_NO_WAIT_S: Final = 30.0  # how long `unmount --no-wait` waits for the process to end


async def _unmount_no_wait(ctx: Context, mountpoint: Path) -> ExitCode:
    """Ask this home's mount process to unmount and end without uploading what is pending
    (``mount.NO_WAIT_SIGNAL``); it stays in the journal for the next mount."""
    from boxfs import mount  # noqa: PLC0415  (as in cmd_mount)

    running = running_mount(ctx.home)
    if running is None or Path(running.mountpoint) != mountpoint:
        raise UsageError(
            f"{mountpoint} is not mounted from this device's home ({ctx.home.data_dir}); "
            "set BOXFS_HOME to the home that mounted it"
        )
    os.kill(running.pid, mount.NO_WAIT_SIGNAL)
    with trio.move_on_after(UNMOUNT_NO_WAIT_S):
        while running_mount(ctx.home) is not None:
            await trio.sleep(0.05)
        ctx.say(f"unmounted {mountpoint}")
        left = await trio.to_thread.run_sync(_journal_count, _journal_path(ctx.home))
        if left:
            ctx.say(f"{_count(left, 'operation')} left journaled: they upload on the next mount")
        else:
            ctx.say("nothing was pending: every change is on the server")
        return ExitCode.OK
    raise BoxfsError(f"the mount process {running.pid} has not ended after {UNMOUNT_NO_WAIT_S} s")


def _journal_count(journal_path: Path) -> int:
    """Operations pending in a home's journal (read-only; none without a journal)."""
    if not journal_path.exists():
        return 0
    with Journal(journal_path, readonly=True) as journal:
        return journal.count()


async def _wait_for_uploads(ctx: Context, journal_path: Path, timeout_s: float) -> int:
    """Watch this home's journal (read-only) while the unmounted drive's process uploads
    what is pending, bounded; the number of operations still pending at the end."""
    left = await trio.to_thread.run_sync(_journal_count, journal_path)
    shown = -1
    with trio.move_on_after(timeout_s):
        while left:
            if left != shown:
                ctx.say(f"waiting for {_count(left, 'pending operation')} to upload")
                shown = left
            await trio.sleep(0.2)
            left = await trio.to_thread.run_sync(_journal_count, journal_path)
    return left


# --- status and sync ------------------------------------------------------------------------

SYNC_POLL_S: Final = 0.2
SYNC_EMPTY_POLLS: Final = 2  # polls in a row that find the journal empty, with a mount
HEALTH_TIMEOUT_S: Final = 3.0  # how long `status` and `sync` wait for the server to answer


@dataclass(frozen=True, slots=True)
class RunningMount:
    """A mount of this home whose process is alive, from the pid file it writes."""

    pid: int
    mountpoint: str
    mounted: bool  # False: unmounted, its process still uploading what is pending


@dataclass(frozen=True, slots=True)
class LocalState:
    """What this device has not uploaded yet, read from its journal (read-only)."""

    pending_ops: int
    staged_bytes: int
    last_sync_ns: int | None  # when the journal last emptied (approximate), if it is empty
    conflicts: tuple[ConflictRecord, ...]


def _journal_path(home: Home) -> Path:
    from boxfs import mount  # noqa: PLC0415  (as in cmd_mount)

    return home.data_dir / "journal" / mount.JOURNAL_FILE_NAME


def _is_mount_command(cmdline: bytes) -> bool:
    """``python -m boxfs.mount ...`` or ``boxfs mount ...`` (``--foreground``)."""
    argv = cmdline.split(b"\0")
    return b"boxfs.mount" in argv or any(
        os.path.basename(arg) == b"boxfs" and argv[i + 1 : i + 2] == [b"mount"]
        for i, arg in enumerate(argv)
    )


def running_mount(home: Home) -> RunningMount | None:
    """The mount process of ``home`` if its pid file names a live mount process; ``None``
    otherwise (a stale pid file, whose pid is gone or reused, is ignored). The process may
    have been unmounted already and still be uploading (``RunningMount.mounted``)."""
    from boxfs import mount  # noqa: PLC0415  (as in cmd_mount)

    try:
        pid_text, mountpoint, *_ = (
            (home.data_dir / mount.MOUNT_PID_NAME).read_text(encoding="utf-8").split("\n")
        )
        pid = int(pid_text)
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if not _is_mount_command(command):
        return None
    return RunningMount(pid, mountpoint, mount.is_boxfs_mount(mountpoint))


def read_local_state(home: Home, conflicts_limit: int = 20) -> LocalState:
    """The journal's pending operations, the bytes of their staged content, and the newest
    conflicts. Blocking (SQLite, stat): call it in a worker thread."""
    journal_path = _journal_path(home)
    if not journal_path.exists():
        return LocalState(0, 0, None, ())
    with Journal(journal_path, readonly=True) as journal:
        pending = journal.count()
        names = journal.staged_names()
        conflicts = tuple(journal.conflicts(conflicts_limit))
    staging_dir = home.data_dir / "staging"
    staged_bytes = 0
    for name in names:
        with contextlib.suppress(OSError):
            staged_bytes += (staging_dir / name).stat().st_size
    last_sync_ns = None
    if pending == 0:  # the last write to the journal (WAL) confirmed the last entry
        times = [
            path.stat().st_mtime_ns
            for path in (journal_path, journal_path.with_name(journal_path.name + "-wal"))
            if path.exists()
        ]
        last_sync_ns = max(times) if times else None
    return LocalState(pending, staged_bytes, last_sync_ns, conflicts)


async def server_reachable(server_url: str) -> bool:
    """Whether the server answers ``/healthz`` within ``HEALTH_TIMEOUT_S``."""
    with trio.move_on_after(HEALTH_TIMEOUT_S + 1.0):
        try:
            async with Remote(server_url, timeout_s=HEALTH_TIMEOUT_S) as remote:
                await remote.health()
        except (TransientError, httpx.HTTPError, OSError, protocol.ProtocolError):
            return False
        return True
    return False


async def _session_valid(session: Session) -> bool:
    """Whether the server still accepts this session (a server that does not answer in
    time counts as accepting it: ``status`` then says offline)."""
    with trio.move_on_after(HEALTH_TIMEOUT_S + 1.0):
        async with Remote(session.server_url, session.token, timeout_s=HEALTH_TIMEOUT_S) as remote:
            try:
                await remote.whoami()
            except protocol.UnauthorizedError:
                return False
            except (TransientError, protocol.ProtocolError):
                return True
    return True


def _state_of(home: Home) -> tuple[Session | None, str | None]:
    """The session (if logged in) and the server last used, from the home."""
    state = home.read_state()
    return state.session, state.server_url


async def cmd_status(args: argparse.Namespace, ctx: Context) -> ExitCode:
    local = await trio.to_thread.run_sync(read_local_state, ctx.home)
    mount = running_mount(ctx.home)
    session, server_url = _state_of(ctx.home)
    url = session.server_url if session is not None else server_url
    online = url is not None and await server_reachable(url)
    if session is None:
        ctx.result("account: not logged in")
    elif online and not await _session_valid(session):
        ctx.result(
            f"account: logged out: run boxfs login (the session of {session.username} on "
            f"{session.server_url} was ended; changes wait in the journal)"
        )
    else:
        ctx.result(f"account: {session.username} on {session.server_url} ({session.device_name})")
    pending = f"{local.pending_ops} pending"
    if url is None:
        ctx.result("server: none")
    elif online:
        ctx.result("server: online")
    else:
        ctx.result(f"server: offline, {pending}")
    if mount is not None and mount.mounted:
        ctx.result(f"mount: running at {mount.mountpoint} (pid {mount.pid})")
    elif mount is not None:
        ctx.result(f"mount: unmounted from {mount.mountpoint}, uploading (pid {mount.pid})")
    else:
        ctx.result("mount: not running")
    ctx.result(
        f"pending: {_count(local.pending_ops, 'operation')}, "
        f"{human_size(local.staged_bytes)} staged"
    )
    last = "-" if local.last_sync_ns is None else format_time_ns(local.last_sync_ns)
    ctx.result(f"last sync: {last}")
    ctx.result(f"conflicts: {len(local.conflicts) or 'none'}")
    for record in local.conflicts:
        copy = "" if record.conflict_path is None else f" -> /{show_bytes(record.conflict_path)}"
        kept = "" if record.local_copy is None else f" (content kept in {record.local_copy})"
        ctx.result(
            f"  {record.status}: /{show_bytes(record.path)}{copy}: "
            f"{' '.join(record.message.split())}{kept}"
        )
    return ExitCode.OK


class _SyncProgress(_OptionalProgress):
    """A rich progress line on stderr when it is a terminal: operations uploaded out of
    those pending; plain lines (one per change of the count) otherwise, unless quiet."""

    def __init__(self, ctx: Context, total: int) -> None:
        self._ctx = ctx
        self._total = total
        self._shown = -1
        self._progress: Progress | None = None
        if ctx.shows_progress:
            self._progress = Progress(
                TextColumn("sync"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} operations uploaded"),
                TextColumn("{task.fields[left]} pending"),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task("sync", total=total, left=total)

    def update(self, left: int) -> None:
        self._total = max(self._total, left)
        if self._progress is not None:
            self._progress.update(
                self._task, total=self._total, completed=self._total - left, left=left
            )
        elif left != self._shown:
            self._ctx.say(f"waiting for {_count(left, 'pending operation')} to upload")
        self._shown = left


# The id of the newest lost put (a journal record of status `lost`) that `boxfs sync` has
# reported, in the home's data dir: each loss fails one sync, and `status` keeps listing it.
SYNC_REPORTED_NAME: Final = "sync-reported"


def _report_losses(home: Home) -> list[ConflictRecord]:
    """The lost puts no ``sync`` has reported yet, oldest first; they count as reported
    from now on. Blocking (SQLite): call it in a worker thread."""
    journal_path = _journal_path(home)
    if not journal_path.exists():
        return []
    marker = home.data_dir / SYNC_REPORTED_NAME
    try:
        reported = int(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        reported = 0
    with Journal(journal_path, readonly=True) as journal:
        records = journal.conflicts(MAX_CONFLICTS_KEPT)
    lost = [r for r in reversed(records) if r.status == "lost" and r.id > reported]
    if lost:
        marker.write_text(f"{lost[-1].id}\n", encoding="utf-8")
    return lost


async def _pending_ops(home: Home) -> int:
    return (await trio.to_thread.run_sync(read_local_state, home, 0)).pending_ops


async def cmd_sync(args: argparse.Namespace, ctx: Context) -> ExitCode:
    timeout_s: float | None = args.timeout
    if timeout_s is not None and timeout_s < 0:
        raise UsageError(f"--timeout {timeout_s}: must be 0 or more seconds")
    left = await _pending_ops(ctx.home)
    empty_polls = 0
    with (
        _SyncProgress(ctx, left) as progress,
        trio.move_on_after(math.inf if timeout_s is None else timeout_s),
    ):
        while True:
            mounted = running_mount(ctx.home) is not None
            if left == 0:
                # The kernel sends a file's last release (when the mount journals it) just
                # after close() returns: an empty journal counts once it stays empty.
                empty_polls += 1
                if not mounted or empty_polls >= SYNC_EMPTY_POLLS:
                    break
            else:
                empty_polls = 0
                if not mounted:
                    _error(
                        f"{_count(left, 'operation')} pending, and no mount of this home is "
                        "running to upload them (`boxfs mount MOUNTPOINT` resumes the upload)"
                    )
                    return ExitCode.NOT_SYNCED
                progress.update(left)
            await trio.sleep(SYNC_POLL_S)
            left = await _pending_ops(ctx.home)
    if left == 0:
        lost = await trio.to_thread.run_sync(_report_losses, ctx.home)
        if lost:
            shown = ", ".join(f"/{show_bytes(record.path)}" for record in lost[:5])
            more = f" and {len(lost) - 5} more" if len(lost) > 5 else ""
            _error(
                f"{_count(len(lost), 'change')} never reached the server, its content gone "
                f"before the upload: {shown}{more} (see boxfs status)"
            )
            return ExitCode.NOT_SYNCED
        ctx.result("in sync: every change is on the server")
        return ExitCode.OK
    session, server_url = _state_of(ctx.home)
    url = session.server_url if session is not None else server_url
    if url is not None and not await server_reachable(url):
        _error(f"timed out: the server cannot be reached (offline, {left} pending)")
        return ExitCode.UNAVAILABLE
    _error(f"timed out after {timeout_s:g} s: {_count(left, 'operation')} still pending")
    return ExitCode.NOT_SYNCED


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars and no informational lines (results and errors still show)",
    )
    parser = argparse.ArgumentParser(
        prog="boxfs",
        description="The boxfs drive client. Exit codes: see docs/cli.md.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"boxfs {version('boxfs')}")
    # Not quiet=False here: the -q action is shared with every subparser (argparse parents
    # copy actions by reference), so a default set here would undo `boxfs -q CMD`.
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def add(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(command=name, handler=handler)
        return sub

    def password_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input",
        )

    server_help = "the server, e.g. https://box.example.com (default: the one used last)"
    sub = add("register", cmd_register, "create an account on a server")
    sub.add_argument("--server", metavar="URL", help=server_help)
    sub.add_argument("username")
    sub.add_argument("--email", required=True)
    password_option(sub)

    sub = add("login", cmd_login, "log this device in (stores the session in the device home)")
    sub.add_argument("--server", metavar="URL", help=server_help)
    sub.add_argument("username")
    sub.add_argument("--device", metavar="NAME", help="this device's name (default: host name)")
    password_option(sub)

    add("logout", cmd_logout, "end this device's session on the server and forget it")
    add("whoami", cmd_whoami, "show the account and device of this session")

    sub = add("ls", cmd_ls, "list a folder of the drive (or show one file)")
    sub.add_argument("path", nargs="?", default="/", metavar="PATH")
    sub.add_argument("-l", dest="long", action="store_true", help="mode, kind, size and mtime")

    sub = add("get", cmd_get, "download a file, verified, to LOCAL_PATH (- for stdout)")
    sub.add_argument("remote_path", metavar="REMOTE_PATH")
    sub.add_argument("local_path", metavar="LOCAL_PATH")
    sub.add_argument("-r", dest="recursive", action="store_true", help="a folder, whole")

    _add_editing_commands(add)

    sub = add("versions", cmd_versions, "list the versions of a path, newest first")
    sub.add_argument("path", metavar="PATH")

    sub = add("restore", cmd_restore, "bring back a path as it was at a time, as a new version")
    sub.add_argument("path", metavar="PATH")
    sub.add_argument(
        "--at",
        required=True,
        metavar="TIME",
        help="ISO 8601 UTC time (2026-11-28T03:15:02Z) or a commit id prefix from `versions`",
    )

    _add_mount_arguments(
        add("mount", cmd_mount, "mount the drive at MOUNTPOINT (in the background by default)")
    )

    sub = add("unmount", cmd_unmount, "unmount the drive at MOUNTPOINT (fusermount3 -u)")
    sub.add_argument("mountpoint", metavar="MOUNTPOINT")
    sub.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait for pending uploads: they stay journaled for the next mount",
    )

    add("status", cmd_status, "pending uploads, the mount, the last sync and conflicts")
    sub = add("sync", cmd_sync, "wait until every local change is on the server")
    sub.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up after S seconds (exit 6 if the server is unreachable, else 8)",
    )
    return parser


def _add_editing_commands(add: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    """The commands that change the drive (folders, moves, deletes, puts) or end a session."""
    sub = add("mkdir", cmd_mkdir, "make folders on the drive")
    sub.add_argument("paths", nargs="+", metavar="PATH")
    sub.add_argument("-p", dest="parents", action="store_true", help="and missing parents")

    sub = add("mv", cmd_mv, "move or rename a file or folder on the drive")
    sub.add_argument("source", metavar="SOURCE")
    sub.add_argument("destination", metavar="DESTINATION")

    sub = add("rm", cmd_rm, "remove files (and with -r folders) from the drive")
    sub.add_argument("paths", nargs="+", metavar="PATH")
    sub.add_argument("-r", dest="recursive", action="store_true", help="folders and their content")

    sub = add("devices", cmd_devices, "list this account's devices (sessions), or revoke one")
    sub.add_argument("--revoke", metavar="SESSION_ID", help="end that session on the server")

    sub = add("put", cmd_put, "upload a file or a folder (only missing chunks are sent)")
    sub.add_argument("local_path", metavar="LOCAL_PATH")
    sub.add_argument("remote_path", metavar="REMOTE_PATH")


def _add_mount_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("mountpoint", metavar="MOUNTPOINT")
    sub.add_argument("--foreground", action="store_true", help="stay attached; log to stderr")
    sub.add_argument("--cache-size", metavar="SIZE", help="object cache budget, e.g. 2G")
    sub.add_argument("--allow-other", action="store_true", help="let other local users in")
    sub.add_argument(
        "--preserve-ownership", action="store_true", help="show and enforce stored uid/gid"
    )
    sub.add_argument(
        "-o", dest="options", action="append", default=[], metavar="OPT", help="a FUSE option"
    )
    sub.add_argument(
        "--nonempty",
        action="store_true",
        help="mount over a folder that has files (the drive hides them while mounted)",
    )


def _error(line: str) -> None:
    print(f"boxfs: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code (``ExitCode``, 130 on Ctrl-C)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's usage error (2)
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    handler: Command = args.handler
    try:
        ctx = Context(home=Home.from_env(), quiet=getattr(args, "quiet", False))
        return int(trio.run(handler, args, ctx))
    except BaseException as raised:  # noqa: BLE001  (the one boundary: errors become exit codes)
        return _exit_for_exception(raised, args.command)


def _exit_for_exception(raised: BaseException, command: str) -> int:
    error = _leaf(raised)
    if isinstance(error, KeyboardInterrupt):
        _error("interrupted")
        return 130
    if isinstance(error, BrokenPipeError):  # `boxfs get x - | head`: the reader left
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.FAILURE
    if isinstance(error, SystemExit):
        raise error
    code = exit_code_for(error)
    if code is None:
        traceback.print_exception(raised)
        _error(f"internal error (a bug, please report it): {type(error).__name__}: {error}")
        return ExitCode.FAILURE
    line = describe(error)
    if isinstance(error, protocol.UnauthorizedError) and command not in _COMMANDS_WITHOUT_SESSION:
        line += ": run `boxfs login` again"
    _error(line)
    return code
