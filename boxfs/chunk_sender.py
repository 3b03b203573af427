"""Sending chunk frames to the server: one path for the mount's uploader and the CLI.

``groups_of`` cuts what is to be sent into request groups bounded by plaintext bytes
(``UPLOAD_GROUP_BYTES``, so frames in memory stay bounded: one group travelling, one being
framed) and by the protocol's id count. ``send_framed`` frames each group in a worker
thread while the group before it travels, uploads it, and raises ``ProtocolError`` when the
server does not say it stored every frame of a group (a put naming the missing chunk
would be refused later; failing here lets the caller retry the round instead). A failure
leaves as itself, not inside the exception group of the nursery that sends. Which
chunks the server lacks is the caller's question (``Remote.missing_chunks``), asked once
for a whole batch of files.

Must not: hold more than two groups of frames, or frame on the loop. Called from the trio
thread by ``boxfs.uploader`` and the CLI's ``ChunkUploader``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import trio

from boxfs.errors import single_failure
from boxfs.remote import Remote
from boxfs.threads import run_in_thread
from store import protocol
from store.ids import ChunkId, NamespaceId

_T = TypeVar("_T")
_G = TypeVar("_G")

UPLOAD_GROUP_BYTES: Final = 16 * 1024 * 1024
"""Plaintext bytes framed and uploaded per request, well under the protocol's body limit."""

Frames = list[tuple[ChunkId, bytes]]


def groups_of(items: Sequence[_T], length: Callable[[_T], int]) -> list[list[_T]]:
    """``items`` in order, cut into groups of at most ``UPLOAD_GROUP_BYTES`` (a bigger item
    alone) and ``protocol.MAX_IDS_PER_REQUEST`` items."""
    groups: list[list[_T]] = []
    current: list[_T] = []
    current_bytes = 0
    for item in items:
        size = length(item)
        if current and (
            current_bytes + size > UPLOAD_GROUP_BYTES
            or len(current) >= protocol.MAX_IDS_PER_REQUEST
        ):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    if current:
        groups.append(current)
    return groups


async def send_framed(
    remote: Remote,
    namespace_id: NamespaceId,
    limiter: trio.CapacityLimiter,
    groups: Sequence[_G],
    *,
    frame: Callable[[_G], Frames],
    on_sent: Callable[[int], None] = lambda _: None,
) -> int:
    """Upload ``frame(group)`` for each group, framing the next one (in a worker thread of
    ``limiter``) while the previous one travels. ``on_sent`` gets the frame bytes of each
    group the server stored. The frame bytes sent in all."""
    if not groups:
        return 0
    send_channel, receive_channel = trio.open_memory_channel[Frames](1)

    async def frame_all() -> None:
        async with send_channel:
            for group in groups:
                await send_channel.send(await run_in_thread(limiter, frame, group))

    total = 0
    with single_failure():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(frame_all)
            async with receive_channel:
                async for frames in receive_channel:
                    stored = set(await remote.upload_chunks(namespace_id, frames))
                    lost = next((cid for cid, _ in frames if cid not in stored), None)
                    if lost is not None:
                        raise protocol.ProtocolError(f"the server did not store chunk {lost.hex()}")
                    sent = sum(len(data) for _, data in frames)
                    total += sent
                    on_sent(sent)
    return total
