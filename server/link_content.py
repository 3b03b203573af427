"""What a share link serves: the file or folder at its path in the namespace's current head,
a byte range of a file, a folder's entries, a folder as a zip streamed from the chunks, and
files dropped on a file-request page, stored and committed like any other upload.

Reading: a link's path (and a sub-path below it) is looked up in the head at each request
(``resolve``), so a link follows its folder as it changes, 404s once the path is gone, and
serves a file where a folder used to be. Nothing outside the link's path is ever reached: a
sub-path is a ``DrivePath`` (no ``..``), appended below the link's own. Chunks are read
from the blob store one at a time, opened and verified against their ids
(``store.frames.decode_frame``) before a byte is sent. The zip is written by the stdlib
``zipfile`` into an unseekable sink, ZIP_STORED with data descriptors (zip64 for members
whose size needs it); the sink is emptied after every chunk, so memory stays at about one
chunk whatever the folder's size, and nothing touches the disk. Folders appear as
directory members; symlinks, fifos and sockets are left out (of listings too).

Uploading: each file's bytes (Starlette spools a form's files to temporary files) are cut
with the format's chunker, framed, verified, sealed and written as an upload's are
(``server.content``: blob first, then its ``chunks`` and ``namespace_objects`` rows), then
one ``OpsBatch`` of puts with no base goes through ``server.commits.apply_batch`` as the
link's creator, authored ``link:<id>``: a name already taken gets the usual conflicted
copy, never an overwrite.

Blocking (SQL, blobs, hashing): the page routes call these through ``state.run``; the
iterators they return do their work as they are advanced, each step in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import secrets
import stat
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final

from server import commits
from server.commits import DbTrees, read_head
from server.content import known_chunks, read_frame, record_chunks, store_frames
from server.links import Link
from server.state import ServerState, now_ns
from store import protocol
from store.chunking import ChunkStream
from store.errors import IntegrityError, InvalidPathError, NotFoundError
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId, TreeId
from store.merkle import EMPTY_TREE_ID, lookup
from store.objects import ChunkRef, EntryKind, FileEntry, Tree
from store.ops import Put
from store.paths import DrivePath

# Frames of an upload are stored and referenced in batches of about this many bytes.
UPLOAD_BATCH_BYTES: Final = 16 * 1024 * 1024
UPLOADED_FILE_MODE: Final = 0o644
_ZIP_MIN_TIME: Final = dt.datetime(1980, 1, 1, tzinfo=dt.UTC)
_ZIP_MAX_TIME: Final = dt.datetime(2107, 12, 31, 23, 59, 58, tzinfo=dt.UTC)


class _FreshTrees:
    """Trees read in a short read transaction each (``TreeSource``): a zip that streams
    for minutes holds no transaction open. Trees are immutable, so no snapshot is needed."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    def load_tree(self, tree_id: TreeId) -> Tree:
        with self._state.db.read() as connection:
            return DbTrees(connection, cache_trees=0).load_tree(tree_id)


# --- what a link's path is now -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What a link's path (and a sub-path below it) holds at the head: a file ``entry``,
    or a folder (``entry`` ``None`` for a namespace's root) with ``tree_id``."""

    name: bytes  # the last name of the path; b"" for a namespace's root
    entry: FileEntry | None
    tree_id: TreeId | None

    @property
    def is_folder(self) -> bool:
        return self.tree_id is not None


def _joined(link_path: DrivePath | None, below: DrivePath | None) -> DrivePath | None:
    names = (
        *(link_path.components if link_path else ()),
        *(below.components if below else ()),
    )
    return DrivePath(names) if names else None


def resolve(state: ServerState, link: Link, below: DrivePath | None) -> Target:
    """The file or folder at the link's path, then ``below`` it, in the head now;
    ``NotFoundError`` if there is none (or it is a symlink, fifo or socket)."""
    try:
        path = _joined(link.path, below)
    except InvalidPathError as exc:  # the two together are deeper than any path can be
        raise NotFoundError("path", "") from exc
    with state.db.read() as connection:
        head = read_head(connection, link.namespace_id)
        if path is None:
            return Target(b"", None, head.root)
        entry = lookup(DbTrees(connection), head.root, bytes(path))
    if entry is None:
        raise NotFoundError("path", "")
    if entry.kind is EntryKind.DIR:
        return Target(entry.name, entry, entry.tree_id or EMPTY_TREE_ID)
    if entry.kind is EntryKind.FILE:
        return Target(entry.name, entry, None)
    raise NotFoundError("path", "")


def folder_entries(state: ServerState, tree_id: TreeId) -> list[FileEntry]:
    """The files and folders directly in a folder, by name."""
    tree = _FreshTrees(state).load_tree(tree_id)
    return [entry for entry in tree if entry.kind in (EntryKind.FILE, EntryKind.DIR)]


# --- file content ----------------------------------------------------------------------------


def _chunk_data(state: ServerState, chunk_id: ChunkId, length: int) -> bytes:
    data = decode_frame(read_frame(state.blobs, state.keyring, chunk_id), chunk_id)
    if len(data) != length:
        raise IntegrityError(chunk_id.hex(), f"{len(data)} bytes, not {length}")
    return data


def file_pieces(
    state: ServerState, entry: FileEntry, byte_range: protocol.ByteRange | None
) -> Iterator[bytes]:
    """The bytes of a file (or of ``byte_range`` of it), a chunk (or part of one) at a
    time, each chunk verified against its id before any of it is yielded."""
    refs = entry.chunks
    if byte_range is None:
        for ref in refs:
            yield _chunk_data(state, ref.chunk_id, ref.length)
        return
    span = protocol.chunk_span(tuple(ref.length for ref in refs), byte_range.start, byte_range.end)
    for index, offset, length in span:
        ref = refs[index]
        data = _chunk_data(state, ref.chunk_id, ref.length)
        yield data[offset : offset + length]


# --- zip -------------------------------------------------------------------------------------


class _Sink:
    """Where ``zipfile`` writes: kept in memory until taken. It has no ``tell`` or ``seek``,
    so ``zipfile`` writes data descriptors and never goes back."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._pieces.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: the pieces wait for ``take``."""

    def close(self) -> None:
        """Nothing to close: what is left is taken after the archive is closed."""

    def take(self) -> bytes:
        taken = b"".join(self._pieces)
        self._pieces.clear()
        return taken


def _zip_time(mtime_ns: int) -> tuple[int, int, int, int, int, int]:
    moment = dt.datetime.fromtimestamp(mtime_ns / 1e9, dt.UTC)
    moment = min(max(moment, _ZIP_MIN_TIME), _ZIP_MAX_TIME)
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


def _walk(trees: _FreshTrees, tree_id: TreeId, prefix: str) -> Iterator[tuple[str, FileEntry]]:
    """``(member name, entry)`` of every file and folder below ``tree_id``, depth first."""
    for entry in trees.load_tree(tree_id):
        name = prefix + protocol.show_name(entry.name)
        if entry.kind is EntryKind.DIR:
            yield name + "/", entry
            yield from _walk(trees, entry.tree_id or EMPTY_TREE_ID, name + "/")
        elif entry.kind is EntryKind.FILE:
            yield name, entry


def zip_pieces(state: ServerState, tree_id: TreeId) -> Iterator[bytes]:
    """A zip of everything below ``tree_id`` (names relative to it), in pieces of about a
    chunk (some empty: a caller may skip those)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for name, entry in _walk(_FreshTrees(state), tree_id, ""):
            info = zipfile.ZipInfo(name, date_time=_zip_time(entry.mtime_ns))
            if entry.kind is EntryKind.DIR:
                info.external_attr = ((stat.S_IFDIR | (entry.mode & 0o7777 or 0o755)) << 16) | 0x10
                info.file_size = info.compress_size = info.CRC = 0  # what mkdir expects set
                archive.mkdir(info)
            else:
                info.external_attr = (stat.S_IFREG | (entry.mode & 0o7777)) << 16
                info.file_size = entry.size  # zipfile picks zip64 from it
                info.compress_type = zipfile.ZIP_STORED
                with archive.open(info, mode="w") as member:
                    for ref in entry.chunks:
                        member.write(_chunk_data(state, ref.chunk_id, ref.length))
                        yield sink.take()
            yield sink.take()
    yield sink.take()  # the central directory


# --- uploads ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upload:
    name: bytes
    stream: BinaryIO


def _store_batch(
    state: ServerState, link: Link, batch: Sequence[tuple[ChunkId, bytes]], now: int
) -> None:
    """Verify, seal and write a batch of frames (blobs the server lacks), then reference
    them from the link's namespace (rows after blobs, as every upload)."""
    known = known_chunks(state.db, state.blobs, [chunk_id for chunk_id, _ in batch])
    work = [(chunk_id, frame, chunk_id not in known) for chunk_id, frame in batch]
    while work:
        outcomes = store_frames(state.keyring, state.blobs, work)
        stored = []
        for outcome in outcomes:
            if isinstance(outcome, IntegrityError):  # our own framing: a bug
                raise protocol.InternalError("an uploaded chunk did not verify") from outcome
            stored.append(outcome)
        vanished = set(record_chunks(state.db, link.namespace_id, link.creator_id, stored, now))
        # GC took some rows after we looked: write those blobs after all, and again.
        work = [(chunk_id, frame, True) for chunk_id, frame, _ in work if chunk_id in vanished]


def _stored_entry(state: ServerState, link: Link, upload: Upload, now: int) -> FileEntry:
    pieces = ChunkStream(upload.stream)
    refs = []
    batch: list[tuple[ChunkId, bytes]] = []
    batch_bytes = 0
    for piece in pieces:
        frame = encode_frame(piece.data)
        batch.append((piece.chunk_id, frame))
        batch_bytes += len(frame)
        refs.append((piece.chunk_id, piece.length))
        if batch_bytes >= UPLOAD_BATCH_BYTES:
            _store_batch(state, link, batch, now)
            batch, batch_bytes = [], 0
    if batch:
        _store_batch(state, link, batch, now)
    return FileEntry(
        name=upload.name,
        kind=EntryKind.FILE,
        mode=UPLOADED_FILE_MODE,
        uid=0,
        gid=0,
        size=pieces.size,
        mtime_ns=now,
        chunks=tuple(ChunkRef(chunk_id, length) for chunk_id, length in refs),
        content_hash=pieces.content_hash,
    )


def store_uploads(
    state: ServerState, link: Link, uploads: Sequence[Upload], address: str | None
) -> protocol.OpsBatchResponse:
    """Store the files and commit them into the link's folder in one batch (a put with no
    base each: a taken name gets a conflicted copy). Blocking: a worker thread."""
    now = now_ns()
    ops = []
    for upload in uploads:
        entry = _stored_entry(state, link, upload, now)
        path = _joined(link.path, DrivePath((upload.name,)))
        assert path is not None
        ops.append(protocol.op_to_wire(Put(path, entry, None)))
    batch = protocol.OpsBatch(idempotency_key=secrets.token_urlsafe(24), ops=tuple(ops))
    return commits.apply_batch(state, link.caller(address), link.namespace_id, batch)


def uploaded_bytes(uploads: Sequence[Upload]) -> int:
    total = 0
    for upload in uploads:
        upload.stream.seek(0, 2)
        total += upload.stream.tell()
        upload.stream.seek(0)
    return total
