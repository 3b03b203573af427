"""Ids: typed, fixed-size, written as lowercase hex."""

from __future__ import annotations

import pytest

from store.errors import FormatError
from store.ids import ChunkId, NamespaceId, TreeId, chunk_id_of


def test_id_written_as_hex_parses_back() -> None:
    chunk_id = chunk_id_of(b"abc")
    assert ChunkId.from_hex(str(chunk_id)) == chunk_id
    assert str(chunk_id) == chunk_id.hex()
    assert len(str(chunk_id)) == 64


def test_chunk_id_is_plain_blake3_of_the_bytes() -> None:
    # b3sum of "abc"
    assert chunk_id_of(b"abc").hex() == (
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    )


@pytest.mark.parametrize(
    "text",
    ["", "00", "g" * 64, "A" * 64, "0" * 63, "0" * 65, " " + "0" * 63, "../" + "0" * 61],
)
def test_malformed_written_ids_are_refused(text: str) -> None:
    with pytest.raises(FormatError):
        TreeId.from_hex(text)


def test_wrong_length_raw_ids_are_refused() -> None:
    with pytest.raises(FormatError, match="32 bytes"):
        ChunkId(b"short")
    with pytest.raises(FormatError, match="16 bytes"):
        NamespaceId(b"x" * 32)
    assert len(NamespaceId.from_hex("ab" * 16)) == 16
