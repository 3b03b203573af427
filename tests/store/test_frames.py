"""Frames: codec choice, strict headers, bounded decompression and the integrity check."""

from __future__ import annotations

import struct

import blake3
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from store.chunking import CHUNK_MAX_BYTES
from store.errors import FormatError, IntegrityError
from store.frames import (
    HEADER_BYTES,
    Codec,
    decode_frame,
    decode_frame_unverified,
    encode_frame,
    frame_codec,
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
