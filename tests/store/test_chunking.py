"""Chunking: frozen boundaries (golden vectors), streaming, and locality of edits."""

from __future__ import annotations

import io

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.chunking import (
    CHUNK_MAX_BYTES,
    CHUNK_MIN_BYTES,
    ChunkStream,
    chunk_bytes,
    chunk_file,
    iter_chunks,
)
from store.ids import chunk_id_of, content_hash_of


def golden_input() -> bytes:
    return (
        blake3.blake3(b"boxfs golden chunking v1").digest(length=6 * 1024 * 1024)
        + bytes(range(256)) * 8192
        + blake3.blake3(b"tail").digest(length=3 * 1024 * 1024 + 12345)
    )


# (offset, length, chunk id) for golden_input(): pins the chunking parameters of format v1.
GOLDEN_CHUNKS = [
    (0, 1101092, "697c42838b1454764e90cfd987fadf41f7993f59f0751e18c80651630e7382cd"),
    (1101092, 1028458, "7009a16244e06276a56760ba3d6a83f7221bff8db3c0ac1742ff1b6623a0ce4d"),
    (2129550, 701451, "105eede0e083291258c53bfcd6b1ec46a22481152956303b979c893ed10d0827"),
    (2831001, 1064899, "3161e1058ecd4e67f02f2deade4a84f56b70beccffc4f7c2479dffc874fb7619"),
    (3895900, 1346778, "f2a60ebd229f2d344f14c41fa850f8ab191d6ad12209458a57c7a6e7f570c818"),
    (5242678, 3417203, "8113d90d36af0b1397998cb1097cd3d034b075f28b0b043d6c78b45316fba050"),
    (8659881, 473926, "cff2fb4e264c79c1ad1f7e779571ca80403afddf409acf7662cb05f13a5a9f67"),
    (9133807, 1289537, "f0a812b16aa69bb21ef63d66f8a968616053bfd3480fa5ccb446ce1b37f1ad3a"),
    (10423344, 1123337, "601e1b2300b5913f48cad77f01b1f24eee64a54b84ba9b430f26c74003e09b73"),
]
GOLDEN_CONTENT_HASH = "cbeae7788aa851abd0f1a3b3e20b1d86808ddc78cc2836418da9d7dcd8ecd79a"


def test_golden_input_cuts_at_the_frozen_boundaries() -> None:
    data = golden_input()
    stream = ChunkStream(io.BytesIO(data))
    got = [(piece.offset, piece.length, piece.chunk_id.hex()) for piece in stream]
    assert got == GOLDEN_CHUNKS
    assert stream.content_hash.hex() == GOLDEN_CONTENT_HASH
    assert stream.size == len(data)


def test_chunk_sizes_stay_within_minimum_and_maximum() -> None:
    data = blake3.blake3(b"sizes").digest(length=24 * 1024 * 1024)
    lengths = [ref.length for ref in chunk_bytes(data).chunks]
    assert all(CHUNK_MIN_BYTES <= length <= CHUNK_MAX_BYTES for length in lengths[:-1])
    assert 0 < lengths[-1] <= CHUNK_MAX_BYTES


def test_zeros_are_cut_at_the_maximum() -> None:
    lengths = [ref.length for ref in chunk_bytes(bytes(10 * 1024 * 1024)).chunks]
    assert lengths == [CHUNK_MAX_BYTES, CHUNK_MAX_BYTES, 2 * 1024 * 1024]


def test_small_file_is_one_chunk_and_empty_file_none() -> None:
    small = chunk_bytes(b"hello")
    assert [(ref.chunk_id, ref.length) for ref in small.chunks] == [(chunk_id_of(b"hello"), 5)]
    assert small.content_hash == content_hash_of(b"hello")
    empty = chunk_bytes(b"")
    assert empty.chunks == ()
    assert empty.size == 0
    assert empty.content_hash == content_hash_of(b"")


class TrickleReader(io.RawIOBase):
    """A stream that returns at most a few bytes per read, like a pipe or a socket."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        piece = self._data[: min(self._step, len(buffer))]
        buffer[: len(piece)] = piece
        self._data = self._data[len(piece) :]
        return len(piece)


def test_short_reads_do_not_change_the_boundaries() -> None:
    data = golden_input()
    trickled = chunk_file(TrickleReader(data, step=65_521))  # type: ignore[arg-type]
    assert trickled == chunk_bytes(data)


def test_a_large_stream_is_cut_without_holding_it() -> None:
    class Counting(io.RawIOBase):
        """Produces 200 MiB on the fly and records the largest single read."""

        def __init__(self) -> None:
            self.left = 200 * 1024 * 1024
            self.largest = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            size = min(len(buffer), self.left, 1 << 20)
            self.largest = max(self.largest, len(buffer))
            buffer[:size] = blake3.blake3(self.left.to_bytes(8, "big")).digest(length=size)
            self.left -= size
            return size

    source = Counting()
    result = chunk_file(source)  # type: ignore[arg-type]
    assert result.size == 200 * 1024 * 1024
    assert source.largest <= 16 * 1024 * 1024


def test_pieces_carry_the_bytes_they_name() -> None:
    data = golden_input()
    for piece in iter_chunks(io.BytesIO(data)):
        assert bytes(piece.data) == data[piece.offset : piece.offset + piece.length]
        assert chunk_id_of(piece.data) == piece.chunk_id


def test_content_hash_is_unknown_until_the_stream_is_exhausted() -> None:
    stream = ChunkStream(io.BytesIO(b"abc"))
    with pytest.raises(RuntimeError):
        _ = stream.content_hash


@settings(max_examples=25, deadline=None)
@given(
    seed=st.binary(min_size=1, max_size=8),
    size=st.integers(min_value=0, max_value=3 * 1024 * 1024),
)
def test_chunks_concatenate_back_to_the_input(seed: bytes, size: int) -> None:
    data = blake3.blake3(seed).digest(length=size) if size else b""
    pieces = [bytes(piece.data) for piece in iter_chunks(io.BytesIO(data))]
    assert b"".join(pieces) == data


BASE = blake3.blake3(b"edit base").digest(length=12 * 1024 * 1024)


@settings(max_examples=20, deadline=None)
@given(
    offset=st.integers(min_value=0, max_value=len(BASE) - 1),
    edit=st.sampled_from(["insert", "delete", "replace"]),
    byte=st.integers(min_value=0, max_value=255),
)
def test_a_one_byte_edit_changes_at_most_two_chunks(offset: int, edit: str, byte: int) -> None:
    if edit == "insert":
        edited = BASE[:offset] + bytes([byte]) + BASE[offset:]
    elif edit == "delete":
        edited = BASE[:offset] + BASE[offset + 1 :]
    else:
        edited = BASE[:offset] + bytes([BASE[offset] ^ (byte or 1)]) + BASE[offset + 1 :]
    before = {ref.chunk_id for ref in BASE_CHUNKS}
    changed = [ref for ref in chunk_bytes(edited).chunks if ref.chunk_id not in before]
    assert len(changed) <= 2


BASE_CHUNKS = chunk_bytes(BASE).chunks
