"""One namespace kept in memory, shaped as the view's ports (``boxfs.view.ports``): the
server's history (head, commits, log) and verified content (trees, file bytes).

For the model's tests: they run the view without a kernel and without a server process.
Commits are made with ``store.merkle.apply_edits`` on the drive's own trees, as the server
makes them; file content is chunked with the format's chunker and kept by chunk id.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from store import protocol
from store.chunking import chunk_bytes
from store.errors import NotFoundError
from store.ids import ChunkId, CommitId, NamespaceId, TreeId
from store.merkle import EMPTY_TREE_ID, MemoryTrees, apply_edits
from store.objects import Commit, EntryKind, FileEntry, Tree, encode_tree
from store.ops import Op


class MemoryDrive:
    def __init__(self, namespace_id: NamespaceId) -> None:
        self.namespace_id = namespace_id
        self.trees = MemoryTrees({EMPTY_TREE_ID: encode_tree(Tree(()))})
        self.chunks: dict[ChunkId, bytes] = {}
        self._commits: dict[CommitId, Commit] = {}
        self._log: list[CommitId] = []  # oldest first
        self.tree_fetches = 0

    # --- making history -------------------------------------------------------------------

    def file_entry(self, name: bytes, data: bytes, mode: int = 0o644) -> FileEntry:
        """A file entry whose content this drive holds."""
        chunked = chunk_bytes(data)
        start = 0
        for ref in chunked.chunks:
            self.chunks[ref.chunk_id] = data[start : start + ref.length]
            start += ref.length
        return FileEntry(
            name=name, kind=EntryKind.FILE, mode=mode, uid=1, gid=1, size=len(data),
            mtime_ns=1, chunks=chunked.chunks, content_hash=chunked.content_hash,
        )  # fmt: skip

    def commit(self, edits: Sequence[Op], time_ns: int = 1_800_000_000_000_000_000) -> CommitId:
        """Apply ``edits`` to the head as one commit; the new head."""
        head = self._log[-1] if self._log else None
        root = self._commits[head].root if head is not None else EMPTY_TREE_ID
        result = apply_edits(self.trees, root, edits)
        self.trees.update(result.new_trees)
        commit = Commit(
            namespace_id=self.namespace_id, root=result.root,
            parents=(head,) if head is not None else (), author="test", device="test",
            time_ns=time_ns + len(self._log), summary=f"{len(edits)} edits",
        )  # fmt: skip
        self._commits[commit.id] = commit
        self._log.append(commit.id)
        return commit.id

    # --- ports.History --------------------------------------------------------------------

    async def head(self, namespace_id: NamespaceId) -> protocol.HeadInfo:
        assert namespace_id == self.namespace_id
        return protocol.HeadInfo(
            namespace_id=namespace_id,
            head=self._log[-1] if self._log else None,
            sequence=len(self._log),
        )

    async def commits(
        self, namespace_id: NamespaceId, ids: Sequence[CommitId]
    ) -> dict[CommitId, bytes | None]:
        found = {commit_id: self._commits.get(commit_id) for commit_id in ids}
        return {key: None if commit is None else commit.encode() for key, commit in found.items()}

    async def log(
        self, namespace_id: NamespaceId, cursor: str | None = None, limit: int = 100
    ) -> protocol.LogPage:
        newest_first = list(reversed(self._log))
        start = int(cursor) if cursor else 0
        page = newest_first[start : start + limit]
        more = start + limit < len(newest_first)
        return protocol.LogPage(
            commits=tuple(protocol.commit_info(key, self._commits[key]) for key in page),
            next_cursor=str(start + limit) if more else None,
        )

    # --- ports.Content --------------------------------------------------------------------

    async def tree(self, tree_id: TreeId) -> Tree:
        self.tree_fetches += 1
        await trio.lowlevel.checkpoint()
        return self.trees.load_tree(tree_id)

    async def read(self, entry: FileEntry, offset: int, size: int) -> bytes:
        await trio.lowlevel.checkpoint()
        pieces: list[bytes] = []
        position = 0
        for ref in entry.chunks:
            end = position + ref.length
            if end > offset and position < offset + size:
                data = self.chunks.get(ref.chunk_id)
                if data is None:
                    raise NotFoundError("chunk", ref.chunk_id.hex())
                pieces.append(data[max(0, offset - position) : offset + size - position])
            position = end
        return b"".join(pieces)


class NoUploads:
    """The upload signal of a view whose journal nobody drains (the test reads it)."""

    def __init__(self) -> None:
        self.nudges = 0

    def nudge(self) -> None:
        self.nudges += 1
