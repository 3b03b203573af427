"""What the view needs from the parts around it, as small interfaces.

The view (``boxfs.view``) is wired by construction to objects that have these methods:
the mount passes the real ones (``Fetcher``, ``Remote``, ``Journal``, ``Uploader``); a
test may pass anything shaped alike (a fetcher that holds a tree back, a history kept in
memory). Nothing here is implemented: ``typing.Protocol`` only, checked by mypy.

Must not: import the implementations (that would tie the view to them again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from boxfs.journal import BasedOnPut, InFlightBatch, JournalEntry, JournalOp, ViewHead
from store import protocol
from store.ids import CommitId, ContentHash, NamespaceId, TreeId
from store.objects import FileEntry, Tree
from store.protocol import DrivePath


class Content(Protocol):
    """Trees and file content by id, verified (the fetcher: cache, then the server)."""

    async def tree(self, tree_id: TreeId) -> Tree: ...

    async def read(self, entry: FileEntry, offset: int, size: int) -> bytes: ...


class History(Protocol):
    """The server's record of a namespace: its head, its commits, its log."""

    async def head(self, namespace_id: NamespaceId) -> protocol.HeadInfo: ...

    async def commits(
        self, namespace_id: NamespaceId, ids: Sequence[CommitId]
    ) -> dict[CommitId, bytes | None]: ...

    async def log(
        self, namespace_id: NamespaceId, cursor: str | None = None, limit: int = 100
    ) -> protocol.LogPage: ...


class PendingWork(Protocol):
    """The durable journal of changes not yet confirmed (blocking: call it in a thread, but
    for ``append_many_now``, which never waits: ``None`` where it would)."""

    def append_many(
        self,
        namespace_id: NamespaceId,
        ops: Iterable[JournalOp | BasedOnPut],
        *,
        power_safe: bool = True,
    ) -> list[int]: ...

    def append_many_now(
        self, namespace_id: NamespaceId, ops: Iterable[JournalOp | BasedOnPut]
    ) -> list[int] | None: ...

    def sync(self) -> None: ...

    def pending(self, namespace_id: NamespaceId, limit: int) -> list[JournalEntry]: ...

    def batches_in_flight(self, namespace_id: NamespaceId) -> list[InFlightBatch]: ...

    def unconfirmed_paths(self, namespace_id: NamespaceId) -> set[DrivePath]: ...

    def put_hashes(self, seqs: Iterable[int]) -> dict[int, ContentHash]: ...

    def save_view_head(self, namespace_id: NamespaceId, head: ViewHead) -> None: ...

    def view_head(self, namespace_id: NamespaceId) -> ViewHead | None: ...


class UploadSignal(Protocol):
    """Where the view says there is new work in the journal (the uploader)."""

    def nudge(self) -> None: ...


class Editing(Protocol):
    """Who is editing in a shared folder (``boxfs.presence.Presence``): told when the
    files this device has open for writing change, and answering who else has a file
    open for writing, as the server said at the last report."""

    def nudge(self) -> None: ...

    def editors_of(self, path: DrivePath) -> Sequence[protocol.EditorInfo]: ...
