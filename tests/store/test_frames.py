"""Frames: codec choice, strict headers, bounded decompression and the integrity check."""

from __future__ import annotations

import os
import random
import struct

import blake3
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from store.chunking import CHUNK_MAX_BYTES
from store.errors import FormatError, IntegrityError
from store.frames import (
    BLOCK_BYTES,
    HEADER_BYTES,
    Codec,
    block_digests,
    decode_frame,
    decode_frame_unverified,
    encode_frame,
    frame_codec,
    raw_range,
)
from store.ids import chunk_id_of


def test_compressible_chunk_is_stored_as_zstd() -> None:
    data = b"the same line again\n" * 10_000
    frame = encode_frame(data)
    assert frame_codec(frame) is Codec.ZSTD
    assert len(frame) < len(data) // 10
    assert decode_frame(frame, chunk_id_of(data)) == data


def test_incompressible_chunk_is_stored_raw() -> None:
    data = blake3.blake3(b"noise").digest(length=1 << 20)
    frame = encode_frame(data)
    assert frame_codec(frame) is Codec.RAW
    assert len(frame) == HEADER_BYTES + len(data)
    assert frame[HEADER_BYTES:] == data


def test_golden_frame_bytes() -> None:
    assert encode_frame(b"") == bytes.fromhex("0100000000000000")
    assert encode_frame(b"hi") == bytes.fromhex("01000000000000026869")
    frame = encode_frame(b"a" * 1000)
    assert frame[:HEADER_BYTES] == bytes.fromhex("01010000000003e8")


def test_corrupted_frame_raises_integrity_error_naming_both_ids() -> None:
    data = b"important words " * 4096
    frame = bytearray(encode_frame(data))
    frame[HEADER_BYTES + 10] ^= 0x40
    with pytest.raises(IntegrityError) as caught:
        decode_frame(bytes(frame), chunk_id_of(data))
    assert caught.value.expected == chunk_id_of(data).hex()
    assert chunk_id_of(data).hex() in str(caught.value)


def test_raw_frame_with_a_flipped_bit_names_the_actual_id() -> None:
    data = blake3.blake3(b"raw").digest(length=4096)
    frame = bytearray(encode_frame(data))
    frame[-1] ^= 1
    with pytest.raises(IntegrityError) as caught:
        decode_frame(bytes(frame), chunk_id_of(data))
    assert caught.value.actual == chunk_id_of(bytes(frame[HEADER_BYTES:])).hex()


def test_frame_served_for_another_id_is_refused() -> None:
    with pytest.raises(IntegrityError):
        decode_frame(encode_frame(b"one"), chunk_id_of(b"two"))


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (b"\x01\x00", "shorter than its header"),
        (bytes.fromhex("0200000000000000"), "unknown frame version"),
        (bytes.fromhex("0107000000000000"), "unknown frame codec"),
        (bytes.fromhex("0100000100000000"), "reserved"),
        (bytes.fromhex("0100000000000005") + b"abc", "header says 5"),
        (struct.pack(">BBHI", 1, 1, 0, CHUNK_MAX_BYTES + 1), "over the"),
    ],
)
def test_malformed_frames_raise_format_errors(frame: bytes, complaint: str) -> None:
    with pytest.raises(FormatError, match=complaint):
        decode_frame_unverified(frame)


def test_a_decompression_bomb_is_bounded_by_the_header() -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(CHUNK_MAX_BYTES))
    frame = struct.pack(">BBHI", 1, 1, 0, 10) + bomb
    with pytest.raises(FormatError):
        decode_frame_unverified(frame)


def test_chunk_over_the_maximum_is_not_framed() -> None:
    with pytest.raises(FormatError):
        encode_frame(bytes(CHUNK_MAX_BYTES + 1))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096) | st.text(max_size=2048).map(str.encode))
def test_decode_of_encode_is_identity(data: bytes) -> None:
    assert decode_frame(encode_frame(data), chunk_id_of(data)) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_decode_to_data_of_another_id(frame: bytes) -> None:
    expected = chunk_id_of(b"something else entirely")
    with pytest.raises((FormatError, IntegrityError)):
        decode_frame(frame, expected)


def test_a_part_of_a_raw_frame_is_read_and_checked_by_the_blocks_it_touches() -> None:
    data = os.urandom(3 * BLOCK_BYTES + 1000)  # four blocks, the last one short
    frame = encode_frame(data)
    assert frame_codec(frame) is Codec.RAW
    digests = block_digests(data)
    assert len(digests) == 4 * 16
    rng = random.Random(4)
    for _ in range(200):
        start = rng.randrange(len(data) + 1)
        stop = rng.randrange(start, len(data) + 1)
        assert raw_range(frame, digests, start, stop) == data[start:stop]
    damaged = bytearray(frame)
    damaged[HEADER_BYTES + 2 * BLOCK_BYTES + 5] ^= 1  # in block 2
    assert raw_range(damaged, digests, 0, 2 * BLOCK_BYTES) == data[: 2 * BLOCK_BYTES]
    for start, stop in [(2 * BLOCK_BYTES, 2 * BLOCK_BYTES + 1), (BLOCK_BYTES, 3 * BLOCK_BYTES)]:
        with pytest.raises(FormatError, match="block 2"):
            raw_range(damaged, digests, start, stop)
    with pytest.raises(FormatError, match="digests"):
        raw_range(frame, digests[:-1], 0, 10)
    with pytest.raises(ValueError, match="range"):
        raw_range(frame, digests, 10, len(data) + 1)
    assert raw_range(encode_frame(b"a" * 100_000), block_digests(b"a" * 100_000), 0, 10) is None
