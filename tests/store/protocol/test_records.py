"""Record streams: layout, incremental parsing, bounds (``store/protocol/records.py``)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store import protocol as p
from store.errors import FormatError
from store.ids import ChunkId, CommitId, TreeId
from tests.store.protocol.samples import CHUNK, COMMIT, TREE, split

records = st.lists(
    st.builds(
        p.Record,
        st.binary(min_size=32, max_size=32).map(ChunkId),
        st.one_of(st.none(), st.binary(max_size=3000)),
    ),
    max_size=12,
)


def stream_bytes(id_type: Any, items: list[Any]) -> bytes:
    return b"".join(p.encode_record_stream(id_type, items))


@settings(max_examples=200)
@given(records, st.lists(st.integers(min_value=0), max_size=40))
def test_record_stream_reassembles_records_fed_in_random_pieces(
    items: list[p.Record[ChunkId]], cuts: list[int]
) -> None:
    data = stream_bytes(ChunkId, items)
    parser = p.RecordStreamParser(ChunkId)
    parsed: list[p.Record[ChunkId]] = []
    for piece in split(data, cuts):
        assert not parser.finished
        parsed.extend(parser.feed(piece))
    parser.close()
    assert parser.finished
    assert parsed == items
    assert all(type(record.object_id) is ChunkId for record in parsed)
    assert parser.record_count == len(items)


@given(records, st.data())
def test_a_truncated_record_stream_is_a_format_error(
    items: list[p.Record[ChunkId]], data: st.DataObject
) -> None:
    whole = stream_bytes(ChunkId, items)
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
    parser = p.RecordStreamParser(ChunkId)
    parser.feed(whole[:cut])
    with pytest.raises(FormatError, match="truncated"):
        parser.close()


def test_record_stream_layout_is_as_documented() -> None:
    data = stream_bytes(TreeId, [p.Record(TREE, b"abc"), p.Record(TREE, None)])
    assert data[:8] == b"BXRS\x01\x02\x00\x00"
    assert data[8:45] == b"\x01" + bytes(TREE) + b"\x00\x00\x00\x03"
    assert data[45:48] == b"abc"
    assert data[48:85] == b"\x02" + bytes(TREE) + bytes(4)
    assert data[85:] == b"\x00\x00\x00\x00\x02"
    assert list(p.parse_record_stream(TreeId, [data])) == [
        p.Record(TREE, b"abc"),
        p.Record(TREE, None),
    ]


def head(tag: int, object_id: bytes, length: int) -> bytes:
    return struct.pack(">B32sI", tag, object_id, length)


HEADER = b"BXRS\x01\x01\x00\x00"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"BXRT\x01\x01\x00\x00", "not a record stream"),
        (b"BXRS\x02\x01\x00\x00", "version"),
        (b"BXRS\x01\x02\x00\x00", "kind"),
        (b"BXRS\x01\x01\x00\x01", "reserved"),
        (HEADER + head(1, CHUNK, p.MAX_FRAME_BYTES + 1), "over"),
        (HEADER + head(9, CHUNK, 0), "unknown record tag"),
        (HEADER + head(2, CHUNK, 3), "missing record has a payload"),
        (HEADER + b"\x00\x00\x00\x00\x01", "end says 1 records"),
        (HEADER + b"\x00\x00\x00\x00\x00" + b"x", "after the end"),
    ],
)
def test_malformed_record_streams_are_format_errors(data: bytes, message: str) -> None:
    parser = p.RecordStreamParser(ChunkId)
    with pytest.raises(FormatError, match=message):
        for byte in range(len(data)):  # byte by byte: refused as soon as it can be known
            parser.feed(data[byte : byte + 1])


def test_an_oversized_record_is_refused_before_its_payload_arrives() -> None:
    parser = p.RecordStreamParser(ChunkId, max_record_bytes=100)
    with pytest.raises(FormatError, match="over 100"):
        parser.feed(HEADER + head(1, CHUNK, 101))
    with pytest.raises(FormatError):
        list(p.encode_record_stream(ChunkId, [p.Record(CHUNK, bytes(p.MAX_FRAME_BYTES + 1))]))


def test_a_maximal_frame_is_accepted() -> None:
    frame = bytes(p.MAX_FRAME_BYTES)
    data = stream_bytes(ChunkId, [p.Record(CHUNK, frame)])
    assert list(p.parse_record_stream(ChunkId, split(data, [5, 1000, 4_000_000]))) == [
        p.Record(CHUNK, frame)
    ]


def test_bytes_after_the_end_are_refused() -> None:
    parser = p.RecordStreamParser(ChunkId)
    parser.feed(stream_bytes(ChunkId, []))
    with pytest.raises(FormatError, match="after the end"):
        parser.feed(b"\x00")


def test_upload_streams_bound_records_body_and_missing() -> None:
    items = [p.Record(CHUNK, b"x" * 10)] * 3
    data = stream_bytes(ChunkId, items)
    with pytest.raises(p.BatchTooLargeError):
        list(p.parse_record_stream(ChunkId, [data], max_records=2))
    with pytest.raises(p.BodyTooLargeError):
        list(p.parse_record_stream(ChunkId, [data], max_body_bytes=len(data) - 1))
    missing = stream_bytes(ChunkId, [p.Record(CHUNK, None)])
    with pytest.raises(FormatError, match="missing"):
        list(p.parse_record_stream(ChunkId, [missing], allow_missing=False))
    with pytest.raises(FormatError, match="missing"):
        list(p.encode_record_stream(ChunkId, [p.Record(CHUNK, None)], allow_missing=False))


def test_the_upload_parser_carries_the_upload_bounds() -> None:
    parser = p.chunk_upload_parser()
    with pytest.raises(FormatError, match="missing"):
        parser.feed(stream_bytes(ChunkId, [p.Record(CHUNK, None)]))
    too_many = [p.Record(CHUNK, b"f")] * (p.MAX_IDS_PER_REQUEST + 1)
    with pytest.raises(p.BatchTooLargeError):
        p.chunk_upload_parser().feed(stream_bytes(ChunkId, too_many))
    with pytest.raises(p.BodyTooLargeError):
        p.chunk_upload_parser().feed(bytes(p.MAX_BATCH_BODY_BYTES + 1))


def test_a_stream_holds_ids_of_its_own_kind_only() -> None:
    chunk_record: Any = p.Record(CHUNK, b"x")
    with pytest.raises(TypeError):
        list(p.encode_record_stream(TreeId, [chunk_record]))
    commits = stream_bytes(CommitId, [p.Record(COMMIT, b"c")])
    with pytest.raises(FormatError, match="kind"):
        list(p.parse_record_stream(TreeId, [commits]))
