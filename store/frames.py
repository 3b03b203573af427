"""Frames: the stored and transmitted form of a chunk, and its integrity check.

A frame is an 8-byte header and a payload (``docs/format.md``)::

    offset  size  field
    0       1     frame format version (1)
    1       1     codec: 0 raw, 1 zstd
    2       2     reserved, zero
    4       4     plaintext length, big-endian
    8       ...   payload: the plaintext (raw) or one zstd frame (level 3)

The payload is zstd unless compression gains under ``MIN_GAIN`` (about 3%), then raw.
Decoding checks the header, decompresses with the plaintext length as a hard bound (a
hostile frame cannot make it allocate more), and verifies BLAKE3(plaintext) against the
id the caller asked for: a mismatch raises ``IntegrityError`` and never returns data.
A part of a raw frame can be read without hashing the whole chunk (``raw_range``), against
digests of its 64 KiB blocks made from the verified plaintext (``block_digests``).

Pure functions. zstd contexts are cached per thread, so any thread may call them.
"""

from __future__ import annotations

import struct
import threading
from enum import IntEnum
from typing import Final

import blake3
import zstandard

from store.chunking import CHUNK_MAX_BYTES
from store.errors import FormatError, IntegrityError
from store.ids import ChunkId

FRAME_VERSION: Final = 1
ZSTD_LEVEL: Final = 3
# Keep the compressed payload only if it saves at least this fraction of the plaintext.
MIN_GAIN: Final = 0.03

_HEADER = struct.Struct(">BBHI")
HEADER_BYTES: Final = _HEADER.size
# The largest frame a decoder accepts: a raw maximum-size chunk behind its header
# (zstd output is only kept when smaller than the plaintext).
MAX_FRAME_BYTES: Final = HEADER_BYTES + CHUNK_MAX_BYTES
# Block digests (``block_digests``): a part of a raw frame is checked by the blocks it
# touches. 64 KiB: a 4 KiB read hashes 16 times what it returns where the whole chunk
# (1 MiB on average) would be 256 times; a 1 MiB chunk's digests are 256 bytes.
BLOCK_BYTES: Final = 64 * 1024
BLOCK_DIGEST_BYTES: Final = 16


class Codec(IntEnum):
    RAW = 0
    ZSTD = 1


class _Contexts(threading.local):
    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
        self.decompressor = zstandard.ZstdDecompressor()


_contexts = _Contexts()

Buffer = bytes | bytearray | memoryview


def encode_frame(plaintext: Buffer) -> bytes:
    """The frame of one chunk: zstd level 3, or raw if that gains under ``MIN_GAIN``."""
    size = len(plaintext)
    if size > CHUNK_MAX_BYTES:
        raise FormatError(f"chunk of {size} bytes is over the {CHUNK_MAX_BYTES}-byte maximum")
    compressed = _contexts.compressor.compress(plaintext)
    if len(compressed) <= size * (1 - MIN_GAIN):
        return _HEADER.pack(FRAME_VERSION, Codec.ZSTD, 0, size) + compressed
    return _HEADER.pack(FRAME_VERSION, Codec.RAW, 0, size) + bytes(plaintext)


def block_digests(plaintext: Buffer) -> bytes:
    """The digests of a verified plaintext's ``BLOCK_BYTES`` blocks (the last one may be
    short), ``BLOCK_DIGEST_BYTES`` each: what lets ``raw_range`` check a part of a raw
    frame without hashing the whole chunk."""
    view = memoryview(plaintext)
    return b"".join(
        blake3.blake3(view[offset : offset + BLOCK_BYTES]).digest(length=BLOCK_DIGEST_BYTES)
        for offset in range(0, len(view), BLOCK_BYTES)
    )


def raw_range(frame: Buffer, digests: Buffer, start: int, stop: int) -> bytes | None:
    """Bytes ``start:stop`` of a raw frame's plaintext, every block they touch checked
    against ``digests`` (``block_digests`` of the plaintext, made when it was verified
    against its id); None for a zstd frame (it decodes whole). ``FormatError`` when a
    block or the digests do not match: the caller falls back to ``decode_frame``."""
    codec, size = _parse_header(frame)
    if codec is not Codec.RAW:
        return None
    if not 0 <= start <= stop <= size:
        raise ValueError(f"range {start}:{stop} of a {size}-byte chunk")
    if len(frame) - HEADER_BYTES != size or len(digests) != block_count(size) * BLOCK_DIGEST_BYTES:
        raise FormatError(f"block digests of {len(digests)} bytes for a {size}-byte frame")
    payload = memoryview(frame)[HEADER_BYTES:]
    for block in range(start // BLOCK_BYTES, -(-stop // BLOCK_BYTES)):
        begin = block * BLOCK_BYTES
        actual = blake3.blake3(payload[begin : begin + BLOCK_BYTES]).digest(
            length=BLOCK_DIGEST_BYTES
        )
        if actual != digests[block * BLOCK_DIGEST_BYTES : (block + 1) * BLOCK_DIGEST_BYTES]:
            raise FormatError(f"block {block} of a raw frame does not match its digest")
    return bytes(payload[start:stop])


def block_count(size: int) -> int:
    return -(-size // BLOCK_BYTES)


def frame_codec(frame: Buffer) -> Codec:
    return _parse_header(frame)[0]


def _parse_header(frame: Buffer) -> tuple[Codec, int]:
    if len(frame) < HEADER_BYTES:
        raise FormatError(f"frame of {len(frame)} bytes is shorter than its header")
    if len(frame) > MAX_FRAME_BYTES:
        raise FormatError(f"frame of {len(frame)} bytes is over {MAX_FRAME_BYTES}")
    version, codec, reserved, size = _HEADER.unpack_from(frame)
    if version != FRAME_VERSION:
        raise FormatError(f"unknown frame version {version} (this build reads {FRAME_VERSION})")
    if reserved != 0:
        raise FormatError("frame header has non-zero reserved bits")
    if size > CHUNK_MAX_BYTES:
        raise FormatError(f"frame claims {size} bytes, over the {CHUNK_MAX_BYTES}-byte maximum")
    try:
        return Codec(codec), size
    except ValueError as exc:
        raise FormatError(f"unknown frame codec {codec}") from exc


def decode_frame_unverified(frame: Buffer) -> bytes:
    """The plaintext of a frame, without the id check: only for callers that verify
    separately (``decode_frame`` is the one to use)."""
    codec, size = _parse_header(frame)
    payload = memoryview(frame)[HEADER_BYTES:]
    if codec is Codec.RAW:
        if len(payload) != size:
            raise FormatError(f"raw frame holds {len(payload)} bytes, header says {size}")
        return bytes(payload)
    try:
        plaintext = _contexts.decompressor.decompress(payload, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise FormatError(f"corrupt zstd payload: {exc}") from exc
    if len(plaintext) != size:
        raise FormatError(f"zstd frame holds {len(plaintext)} bytes, header says {size}")
    return plaintext


def decode_frame(frame: Buffer, expected: ChunkId) -> bytes:
    """The verified plaintext of ``expected``'s frame.

    Raises ``FormatError`` for a malformed frame and ``IntegrityError`` when the content
    is not the chunk that was asked for: either way no data comes back.
    """
    try:
        plaintext = decode_frame_unverified(frame)
    except FormatError as exc:
        raise IntegrityError(expected.hex(), f"an unreadable frame ({exc})") from exc
    actual = blake3.blake3(plaintext).digest()
    if actual != expected:
        raise IntegrityError(expected.hex(), actual.hex())
    return plaintext
