"""The event stream: encoding and the incremental parser (``store/protocol/sse.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store import protocol as p
from store.errors import FormatError
from store.ids import CommitId, NamespaceId
from tests.store.protocol.samples import COMMIT, NS, split

events = st.lists(
    st.one_of(
        st.just(p.HEARTBEAT),
        st.builds(
            p.Event,
            namespace_id=st.binary(min_size=16, max_size=16).map(NamespaceId),
            head=st.binary(min_size=32, max_size=32).map(CommitId),
            sequence=st.integers(min_value=0, max_value=2**63 - 1),
        ),
    ),
    max_size=10,
)


def encode(item: p.Event | p.Heartbeat) -> bytes:
    return p.encode_heartbeat() if isinstance(item, p.Heartbeat) else p.encode_event(item)


@settings(max_examples=200)
@given(
    events, st.lists(st.integers(min_value=0), max_size=30), st.sampled_from(["\n", "\r\n", "\r"])
)
def test_event_stream_round_trips_split_anywhere(
    items: list[p.Event | p.Heartbeat], cuts: list[int], line_end: str
) -> None:
    data = b"".join(encode(item) for item in items).replace(b"\n", line_end.encode())
    parser = p.EventStreamParser()
    parsed: list[p.Event | p.Heartbeat] = []
    for piece in split(data, cuts):
        parsed.extend(parser.feed(piece))
    assert parsed == items
    last_event = [item for item in items if isinstance(item, p.Event)][-1:]
    if last_event:
        assert (
            parser.last_event_id == f"{last_event[0].namespace_id.hex()}.{last_event[0].sequence}"
        )


def test_event_wire_form_is_as_documented() -> None:
    event = p.Event(namespace_id=NS, head=COMMIT, sequence=7, role="editor")
    data = f'"namespace_id":"{NS.hex()}","head":"{COMMIT.hex()}","sequence":7,"role":"editor"'
    assert (
        p.encode_event(event) == (f"id: {NS.hex()}.7\nevent: head\ndata: {{{data}}}\n\n").encode()
    )
    assert p.encode_heartbeat() == b": heartbeat\n\n"


def test_event_parser_follows_the_sse_rules() -> None:
    event = p.Event(namespace_id=NS, head=COMMIT, sequence=1)
    body = event.model_dump_json()
    cut = body.index(",") + 1
    stream = (
        "\ufeffretry: 1000\n"  # a byte-order mark, then a field we ignore
        'event: shared\ndata: {"new": "kind"}\n\n'  # an unknown type is skipped
        "data: no type means 'message'\n\n"  # ... and so is a plain message
        "event: head\n\n"  # no data: nothing is dispatched
        f"event:head\ndata: {body[:cut]}\ndata:{body[cut:]}\n\n"  # data over two lines
        ": ping\n"
    ).encode()
    parser = p.EventStreamParser()
    out = parser.feed(stream[:2]) + parser.feed(stream[2:])  # split inside the BOM
    assert out == [event, p.HEARTBEAT]


def test_event_parser_waits_for_the_blank_line() -> None:
    parser = p.EventStreamParser()
    data = p.encode_event(p.Event(namespace_id=NS, head=COMMIT, sequence=2))
    assert parser.feed(data[:-1]) == []
    assert len(parser.feed(data[-1:])) == 1


@pytest.mark.parametrize(
    "data, message",
    [
        (b"data: \xff\xfe\n\n", "UTF-8"),
        (b"event: head\ndata: {}\n\n", "bad head event"),
        (b"data: " + b"x" * (p.MAX_SSE_LINE_CHARS + 1), "over"),
    ],
)
def test_malformed_event_streams_are_format_errors(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        p.EventStreamParser().feed(data)
