"""The interface every blob store keeps: durable, atomic puts of immutable blobs by chunk id.

A blob is a sealed frame (``store.crypto``); the store neither knows nor checks what is
inside. ``put`` returns only once the blob is durable, and a reader never sees a partial
blob. Blocking: the server calls these from worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from store.ids import ChunkId


class BlobStore(Protocol):
    def put(self, chunk_id: ChunkId, blob: bytes) -> None:
        """Store ``blob`` durably under ``chunk_id``; replacing an existing one is allowed
        (the same chunk sealed again), and atomic."""

    def get(self, chunk_id: ChunkId) -> bytes:
        """The blob, or ``store.errors.NotFoundError``."""

    def exists(self, chunk_id: ChunkId) -> bool: ...

    def delete(self, chunk_id: ChunkId) -> None:
        """Remove the blob if it is there."""

    def ids(self) -> Iterator[ChunkId]:
        """Every stored id, in no particular order."""

    def ids_older_than(self, cutoff_ns: int) -> Iterator[ChunkId]:
        """The ids of blobs written before ``cutoff_ns`` (wall-clock nanoseconds)."""
