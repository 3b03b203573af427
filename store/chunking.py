"""Content-defined chunking: where a file is cut, and the ids of the pieces.

FastCDC-2020 (``pyfastcdc``) with frozen parameters: they are part of the format, since
the same bytes must always cut the same way for deduplication to work across devices and
versions (``docs/format.md``; pinned by a golden-vector test). A stream of any size is cut
without being held in memory: only one chunk-sized window is alive at a time.

Pure and synchronous; CPU-bound, so the client and server call it from a worker thread.
One call owns its chunker, so concurrent calls from several threads are safe.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

import blake3
import pyfastcdc

from store.ids import ChunkId, ContentHash
from store.objects import ChunkRef

# The chunking parameters are frozen: changing any of them is a new format version.
CHUNK_MIN_BYTES: Final = 256 * 1024
CHUNK_AVG_BYTES: Final = 1024 * 1024
CHUNK_MAX_BYTES: Final = 4 * 1024 * 1024
NORMALIZED_CHUNKING: Final = 2
GEAR_SEED: Final = 0

# How much the chunker reads from the stream at a time (pyfastcdc keeps a window of about
# twice the maximum chunk size).
_READ_BLOCK_BYTES: Final = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Piece:
    """One chunk of a stream as it is cut. ``data`` is only valid until the next piece is
    produced: copy it (``bytes(piece.data)``) to keep it."""

    offset: int
    length: int
    chunk_id: ChunkId
    data: memoryview


@dataclass(frozen=True, slots=True)
class FileChunks:
    """The chunk list of a whole stream, with its size and the BLAKE3 of all its bytes."""

    chunks: tuple[ChunkRef, ...]
    content_hash: ContentHash
    size: int


def _new_chunker() -> pyfastcdc.FastCDC:
    return pyfastcdc.FastCDC(
        avg_size=CHUNK_AVG_BYTES,
        min_size=CHUNK_MIN_BYTES,
        max_size=CHUNK_MAX_BYTES,
        normalized_chunking=NORMALIZED_CHUNKING,
        seed=GEAR_SEED,
    )


class _BlockReader:
    """Feeds pyfastcdc large reads, whatever the stream's own buffering."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def readinto(self, buffer: memoryview) -> int:
        filled = 0
        view = buffer.cast("B")
        while filled < len(view):
            got = self._stream.readinto(view[filled : filled + _READ_BLOCK_BYTES])  # type: ignore[attr-defined]
            if not got:
                break
            filled += got
        return filled


class ChunkStream:
    """Iterates the pieces of a stream; after the last one, ``content_hash`` and ``size``
    describe the whole stream.

    >>> stream = ChunkStream(io.BytesIO(b"hello"))
    >>> [piece.length for piece in stream], stream.size
    ([5], 5)
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._hasher = blake3.blake3()
        self._size = 0
        self._done = False

    def __iter__(self) -> Iterator[Piece]:
        if self._done:
            raise RuntimeError("a ChunkStream is iterated once")
        for chunk in _new_chunker().cut_stream(_BlockReader(self._stream)):
            data = chunk.data
            self._hasher.update(data)
            self._size += chunk.length
            yield Piece(chunk.offset, chunk.length, ChunkId(blake3.blake3(data).digest()), data)
        self._done = True

    @property
    def content_hash(self) -> ContentHash:
        if not self._done:
            raise RuntimeError("content_hash is known once the stream is exhausted")
        return ContentHash(self._hasher.digest())

    @property
    def size(self) -> int:
        if not self._done:
            raise RuntimeError("size is known once the stream is exhausted")
        return self._size


def iter_chunks(stream: BinaryIO) -> Iterator[Piece]:
    """The pieces of a stream, in order. Use ``ChunkStream`` to also get the whole hash."""
    return iter(ChunkStream(stream))


def chunk_file(stream: BinaryIO) -> FileChunks:
    """Cut a whole stream and describe it (for callers that don't need the bytes)."""
    pieces = ChunkStream(stream)
    refs = tuple(ChunkRef(piece.chunk_id, piece.length) for piece in pieces)
    return FileChunks(refs, pieces.content_hash, pieces.size)


def chunk_bytes(data: bytes | bytearray | memoryview) -> FileChunks:
    return chunk_file(io.BytesIO(data))
