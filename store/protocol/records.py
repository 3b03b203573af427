"""The record stream: the binary body that carries a batch of chunks (frames), trees or
commits, one record per object. Its byte layout is in ``docs/format.md`` ("Record
streams"), with the comment below as the short form.

``encode_record_stream`` yields a stream lazily, in pieces; ``RecordStreamParser`` parses
pieces of any size as they arrive and refuses each bound as soon as it is crossed. A stream
says nothing about integrity: the receiver checks each payload against its id
(``store.frames``, ``store.objects``). No I/O: the caller sends and receives the pieces
(``boxfs/remote.py``, ``server/content.py``). A parser is owned by one task at a time; the
rest is pure.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Generic

from store.errors import FormatError
from store.ids import DIGEST_BYTES, ChunkId, CommitId, TreeId
from store.protocol.bounds import (
    MAX_BATCH_BODY_BYTES,
    MAX_COMMIT_RECORD_BYTES,
    MAX_FRAME_BYTES,
    MAX_IDS_PER_REQUEST,
    MAX_TREE_RECORD_BYTES,
)
from store.protocol.errors import BatchTooLargeError, BodyTooLargeError
from store.protocol.wire import IdT

# --- record streams --------------------------------------------------------------------------
#
# A batch of chunks (frames), trees or commits travels as one streamed body:
#
#   header   magic b"BXRS" | version u8 (1) | kind u8 | reserved u16 (0)        8 bytes
#   record   tag u8 | id (32 bytes) | length u32 BE | payload (length bytes)    37 + n
#   end      tag u8 (0x00) | number of records before it u32 BE                  5 bytes
#
# Tags: 0x01 data; 0x02 missing (the sender has no such object for this reader; length
# 0); 0x00 end. Nothing may follow the end. A stream without its end is truncated.

RECORD_STREAM_MAGIC: Final = b"BXRS"
RECORD_STREAM_VERSION: Final = 1
_STREAM_HEADER: Final = struct.Struct(">4sBBH")
_RECORD_HEAD: Final = struct.Struct(f">B{DIGEST_BYTES}sI")
_END: Final = struct.Struct(">BI")
_TAG_END: Final = 0x00
_TAG_DATA: Final = 0x01
_TAG_MISSING: Final = 0x02


class StreamKind(IntEnum):
    CHUNKS = 1  # payloads are frames (store.frames), ids are ChunkId
    TREES = 2  # payloads are canonical tree encodings, ids are TreeId
    COMMITS = 3  # payloads are canonical commit encodings, ids are CommitId


_KIND_OF: Final[dict[type, StreamKind]] = {
    ChunkId: StreamKind.CHUNKS,
    TreeId: StreamKind.TREES,
    CommitId: StreamKind.COMMITS,
}
MAX_RECORD_BYTES: Final[dict[StreamKind, int]] = {
    StreamKind.CHUNKS: MAX_FRAME_BYTES,
    StreamKind.TREES: MAX_TREE_RECORD_BYTES,
    StreamKind.COMMITS: MAX_COMMIT_RECORD_BYTES,
}


@dataclass(frozen=True, slots=True)
class Record(Generic[IdT]):
    """One object in a record stream; ``payload`` is ``None`` for a missing object.
    The receiver verifies the payload against the id (frames, trees, commits decoders)."""

    object_id: IdT
    payload: bytes | None

    @property
    def missing(self) -> bool:
        return self.payload is None


def encode_record_stream(
    id_type: type[IdT], records: Iterable[Record[IdT]], *, allow_missing: bool = True
) -> Iterator[bytes]:
    """The stream as pieces to send (a header, then a head and a payload per record, then
    the end). Lazy: records are pulled as the pieces are consumed."""
    kind = _KIND_OF[id_type]
    limit = MAX_RECORD_BYTES[kind]
    yield _STREAM_HEADER.pack(RECORD_STREAM_MAGIC, RECORD_STREAM_VERSION, kind, 0)
    count = 0
    for record in records:
        if type(record.object_id) is not id_type:
            raise TypeError(f"a {kind.name.lower()} stream holds {id_type.__name__}s")
        if record.payload is None:
            if not allow_missing:
                raise FormatError("this stream may not hold missing records")
            yield _RECORD_HEAD.pack(_TAG_MISSING, record.object_id, 0)
        else:
            if len(record.payload) > limit:
                raise FormatError(f"record of {len(record.payload)} bytes, over {limit}")
            yield _RECORD_HEAD.pack(_TAG_DATA, record.object_id, len(record.payload))
            if record.payload:
                yield record.payload
        count += 1
    yield _END.pack(_TAG_END, count)


class RecordStreamParser(Generic[IdT]):
    """Incremental parser of a record stream: feed it pieces of any size as they arrive.

    Bounds, each refused as soon as it is crossed: the record size (by kind, or
    ``max_record_bytes``) and a missing record where none may be (``FormatError``), the
    number of records (``BatchTooLargeError``) and the total size (``BodyTooLargeError``).
    Owned by one task; holds at most one record plus one piece in memory.
    """

    def __init__(
        self,
        id_type: type[IdT],
        *,
        max_record_bytes: int | None = None,
        max_records: int | None = None,
        max_body_bytes: int | None = None,
        allow_missing: bool = True,
    ) -> None:
        self._id_type: type[IdT] = id_type
        self._kind = _KIND_OF[id_type]
        kind_limit = MAX_RECORD_BYTES[self._kind]
        self._max_record_bytes = min(max_record_bytes or kind_limit, kind_limit)
        self._max_records = max_records
        self._max_body_bytes = max_body_bytes
        self._allow_missing = allow_missing
        self._buffer = bytearray()
        self._body_bytes = 0
        self._count = 0
        self._started = False
        self._ended = False

    @property
    def finished(self) -> bool:
        """True once the end marker has been read."""
        return self._ended

    @property
    def record_count(self) -> int:
        return self._count

    def feed(self, data: bytes | bytearray | memoryview) -> list[Record[IdT]]:
        """The records completed by ``data`` (possibly none)."""
        if not data:
            return []
        self._body_bytes += len(data)
        if self._max_body_bytes is not None and self._body_bytes > self._max_body_bytes:
            raise BodyTooLargeError(
                f"record stream over {self._max_body_bytes} bytes",
                {"limit_bytes": self._max_body_bytes},
            )
        if self._ended:
            raise FormatError("bytes after the end of a record stream")
        self._buffer += data
        records: list[Record[IdT]] = []
        offset = 0
        if not self._started:
            if len(self._buffer) < _STREAM_HEADER.size:
                return records
            self._check_header()
            offset = _STREAM_HEADER.size
            self._started = True
        buffer = self._buffer
        with memoryview(buffer) as view:  # payloads are copied once, out of this view
            offset = self._parse(buffer, view, offset, records)
        del buffer[:offset]  # cheap: CPython moves a bytearray's start, it does not copy
        return records

    def _parse(
        self, buffer: bytearray, view: memoryview, offset: int, records: list[Record[IdT]]
    ) -> int:
        """Parse whole records from ``offset``; the offset after the last one."""
        while offset < len(buffer):
            tag = buffer[offset]
            if tag == _TAG_END:
                if len(buffer) - offset < _END.size:
                    break
                _, count = _END.unpack_from(buffer, offset)
                if count != self._count:
                    raise FormatError(f"end says {count} records, the stream held {self._count}")
                offset += _END.size
                self._ended = True
                if offset != len(buffer):
                    raise FormatError("bytes after the end of a record stream")
                break
            if len(buffer) - offset < _RECORD_HEAD.size:
                break
            tag, raw_id, length = _RECORD_HEAD.unpack_from(buffer, offset)
            self._check_record_head(tag, length)
            end = offset + _RECORD_HEAD.size + length
            if end > len(buffer):
                break
            payload = bytes(view[offset + _RECORD_HEAD.size : end]) if tag == _TAG_DATA else None
            records.append(Record(self._id_type(raw_id), payload))
            self._count += 1
            offset = end
        return offset

    def _check_header(self) -> None:
        magic, version, kind, reserved = _STREAM_HEADER.unpack_from(self._buffer)
        if magic != RECORD_STREAM_MAGIC:
            raise FormatError(f"not a record stream (magic {bytes(magic)!r})")
        if version != RECORD_STREAM_VERSION:
            raise FormatError(f"record stream version {version}, this build reads 1")
        if kind != self._kind:
            raise FormatError(f"record stream of kind {kind}, expected {self._kind.name}")
        if reserved != 0:
            raise FormatError("record stream header: reserved bits set")

    def _check_record_head(self, tag: int, length: int) -> None:
        if tag == _TAG_DATA:
            if length > self._max_record_bytes:
                raise FormatError(f"record of {length} bytes, over {self._max_record_bytes}")
        elif tag == _TAG_MISSING:
            if not self._allow_missing:
                raise FormatError("this stream may not hold missing records")
            if length != 0:
                raise FormatError("a missing record has a payload")
        else:
            raise FormatError(f"unknown record tag {tag:#04x}")
        if self._max_records is not None and self._count >= self._max_records:
            raise BatchTooLargeError(
                f"record stream over {self._max_records} records",
                {"limit": self._max_records},
            )

    def close(self) -> None:
        """At the end of the input: ``FormatError`` unless the stream ended properly."""
        if not self._ended:
            what = "header" if not self._started else f"stream after {self._count} records"
            raise FormatError(f"record stream truncated: no end marker ({what} incomplete)")


def chunk_upload_parser() -> RecordStreamParser[ChunkId]:
    """Server side: a parser with every bound of the chunk-upload body (no missing records,
    at most ``MAX_IDS_PER_REQUEST`` records and ``MAX_BATCH_BODY_BYTES`` bytes)."""
    return RecordStreamParser(
        ChunkId,
        max_records=MAX_IDS_PER_REQUEST,
        max_body_bytes=MAX_BATCH_BODY_BYTES,
        allow_missing=False,
    )


def parse_record_stream(
    id_type: type[IdT],
    pieces: Iterable[bytes | bytearray | memoryview],
    *,
    max_record_bytes: int | None = None,
    max_records: int | None = None,
    max_body_bytes: int | None = None,
    allow_missing: bool = True,
) -> Iterator[Record[IdT]]:
    """Records from an iterable of pieces, checked to the end: a synchronous convenience
    over ``RecordStreamParser`` (same bounds)."""
    parser = RecordStreamParser(
        id_type,
        max_record_bytes=max_record_bytes,
        max_records=max_records,
        max_body_bytes=max_body_bytes,
        allow_missing=allow_missing,
    )
    for piece in pieces:
        yield from parser.feed(piece)
    parser.close()
