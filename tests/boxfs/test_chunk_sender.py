"""Sending chunk frames (``boxfs/chunk_sender.py``): groups within their bounds, frames
sent in order, and a server that does not store a frame is an error, not silence."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import trio

from boxfs.chunk_sender import UPLOAD_GROUP_BYTES, groups_of, send_framed
from boxfs.remote import Remote
from store import protocol
from store.ids import ChunkId, NamespaceId

NAMESPACE = NamespaceId(bytes(16))


class DroppingRemote(Remote):
    """Fault injection: keeps what it is sent, and leaves ``dropped`` out of its answer."""

    def __init__(self, dropped: frozenset[ChunkId] = frozenset()) -> None:
        super().__init__("http://127.0.0.1:9")
        self.dropped = dropped
        self.requests: list[list[ChunkId]] = []

    async def upload_chunks(
        self, namespace_id: NamespaceId, frames: Iterable[tuple[ChunkId, bytes]]
    ) -> list[ChunkId]:
        ids = [chunk_id for chunk_id, _ in frames]
        self.requests.append(ids)
        return [chunk_id for chunk_id in ids if chunk_id not in self.dropped]


def chunk(number: int) -> ChunkId:
    return ChunkId(number.to_bytes(32, "big"))


def framed(group: list[tuple[ChunkId, int]]) -> list[tuple[ChunkId, bytes]]:
    return [(chunk_id, b"f" * size) for chunk_id, size in group]


def test_groups_keep_order_and_stay_within_bytes_and_ids() -> None:
    items = [(chunk(n), 3 * 1024 * 1024) for n in range(20)]
    items += [(chunk(100 + n), 1) for n in range(protocol.MAX_IDS_PER_REQUEST + 5)]
    items.append((chunk(999), UPLOAD_GROUP_BYTES + 1))  # bigger than a group: alone
    groups = groups_of(items, lambda item: item[1])
    assert [item for group in groups for item in group] == items
    for group in groups:
        assert len(group) <= protocol.MAX_IDS_PER_REQUEST
        assert sum(size for _, size in group) <= UPLOAD_GROUP_BYTES or len(group) == 1
    assert groups[-1] == [(chunk(999), UPLOAD_GROUP_BYTES + 1)]


def test_every_group_is_sent_in_order_and_counted() -> None:
    remote = DroppingRemote()
    items = [(chunk(n), 5 * 1024 * 1024) for n in range(7)]
    groups = groups_of(items, lambda item: item[1])
    counted: list[int] = []

    async def main() -> int:
        return await send_framed(
            remote, NAMESPACE, trio.CapacityLimiter(2), groups, frame=framed,
            on_sent=counted.append,
        )  # fmt: skip

    total = trio.run(main)
    assert remote.requests == [[chunk_id for chunk_id, _ in group] for group in groups]
    assert total == sum(counted) == 7 * 5 * 1024 * 1024
    assert len(counted) == len(groups) > 1


def test_a_frame_the_server_did_not_store_fails_the_send() -> None:
    remote = DroppingRemote(dropped=frozenset({chunk(3)}))
    groups = groups_of([(chunk(n), 10) for n in range(6)], lambda item: item[1])

    async def main() -> int:
        return await send_framed(remote, NAMESPACE, trio.CapacityLimiter(1), groups, frame=framed)

    with pytest.raises(protocol.ProtocolError) as caught:  # itself, not in a group
        trio.run(main)
    assert str(caught.value) == f"the server did not store chunk {chunk(3).hex()}"
    assert remote.requests == [[chunk(n) for n in range(6)]]
