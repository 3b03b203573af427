"""The start of a view: the head (or, offline, the one last shown) and the journal replayed.

``start`` loads the namespace's head, then replays the journal's unconfirmed entries (an
earlier mount's changes, in flight or pending) onto it, so they show; call it before
``uploader.run`` starts (a confirmed entry would otherwise be missing from the view).
"""

from __future__ import annotations

import errno
import logging

from boxfs.journal import JournalOp, StagedPut, ViewHead
from boxfs.staging import StagingError
from boxfs.view.following import FollowingServer
from boxfs.view.nodes import FsError, Node, apply_changes, set_attrs
from store import protocol
from store.errors import FormatError, NotFoundError
from store.objects import EntryKind, decode_commit
from store.ops import Delete, Mkdir, Move, SetAttr
from store.protocol import DrivePath

_log = logging.getLogger(__name__)


class JournalReplay(FollowingServer):
    """The view's start: head and journal replay."""

    async def start(self) -> None:
        """Load the head (or the empty tree) as the view, then replay the journal's entries
        (an earlier mount's changes the server has not confirmed) onto it, so they show.

        With the server unreachable, the view starts from the head the last mount showed
        (remembered in the journal; its trees are in the object cache as far as that mount
        listed them): an offline start. Without one, ``protocol.UnavailableError`` passes.

        Call it once, before the uploader starts (so no staged file named by an entry is
        discarded while this replays)."""
        view = await self._initial_head()
        if view is not None:
            self._head = view.commit_id
            self._root.tree_id = view.root
            self._root.mtime_ns = self._root.ctime_ns = view.time_ns
        self._root.children = None
        batches = await self._thread(self._journal.batches_in_flight, self._namespace_id)
        pending = await self._thread(self._journal.pending, self._namespace_id, 1 << 62)
        async with self._lock:
            for entry in [*(e for batch in batches for e in batch.entries), *pending]:
                try:
                    await self._replay(entry.seq, entry.op)
                except (FsError, StagingError, FormatError, OSError) as exc:
                    # Already applied on the server (a lost reply), or it will be rejected
                    # there: the head shows what became of it.
                    _log.info("journal entry %d not shown in the view: %s", entry.seq, exc)

    async def _initial_head(self) -> ViewHead | None:
        """The server's head now, or offline the one the last mount showed."""
        try:
            head = await self._remote.head(self._namespace_id)
            self._head_sequence = head.sequence
            if head.head is None:
                return None
            raw = (await self._remote.commits(self._namespace_id, [head.head])).get(head.head)
        except protocol.UnavailableError:
            remembered = await self._thread(self._journal.view_head, self._namespace_id)
            if remembered is None:
                raise
            _log.warning("the server is unreachable: showing the drive as this device last saw it")
            self.started_offline = True
            return remembered
        if raw is None:
            raise NotFoundError("head commit", str(head.head))
        commit = await self._thread(decode_commit, raw, head.head)
        view = ViewHead(head.head, commit.root, commit.time_ns)
        await self._remember_head(view)
        return view

    async def _resolve(self, path: DrivePath) -> tuple[Node, dict[bytes, Node]]:
        """The directory holding ``path`` and its entries (materialized)."""
        node = self._root
        for name in path.components[:-1]:
            node = await self._child(node, name)
        return node, await self._children(node)

    async def _replay(self, seq: int, op: JournalOp) -> None:
        """Apply one journal entry to the overlay (no journaling: it is there already)."""
        match op:
            case StagedPut():
                await self._replay_put(seq, op)
            case Mkdir():
                parent, children = await self._resolve(op.path)
                if op.path.name not in children:
                    node = self._new_node(parent, op.path.name, EntryKind.DIR, op.attrs.mode)
                    set_attrs(node, op.attrs)
                    node.remote = parent.changed = True
                    children[op.path.name] = node
            case Move():
                source_dir, sources = await self._resolve(op.src)
                moved = sources.get(op.src.name)
                if moved is None:
                    raise FsError(errno.ENOENT)
                target_dir, targets = await self._resolve(op.dst)
                replaced = targets.get(op.dst.name)
                if replaced is not None and replaced is not moved:
                    self._detach(replaced)
                del sources[op.src.name]
                moved.name, moved.parent = op.dst.name, target_dir
                targets[op.dst.name] = moved
                moved.changed = target_dir.changed = source_dir.changed = True
            case Delete():
                _, children = await self._resolve(op.path)
                if (gone := children.get(op.path.name)) is not None:
                    self._detach(gone)
            case SetAttr():
                _, children = await self._resolve(op.path)
                changed = children.get(op.path.name)
                if changed is None:
                    raise FsError(errno.ENOENT)
                apply_changes(changed, op.changes)

    async def _replay_put(self, seq: int, op: StagedPut) -> None:
        parent, children = await self._resolve(op.path)
        existing = children.get(op.path.name)
        if existing is not None and existing.kind is EntryKind.DIR:
            raise FsError(errno.EISDIR)
        node = self._new_node(parent, op.path.name, op.kind, op.attrs.mode)
        set_attrs(node, op.attrs)
        node.target, node.remote, node.base_seq = op.target, True, seq
        node.base = existing.base if existing is not None else op.base
        if op.staged is not None:
            node.size = await self._thread(self._staging.size_of, op.staged)
            self._staging.pin(op.staged)
            node.staged = op.staged
        if existing is not None:
            self._detach(existing)
        children[op.path.name] = node
        parent.changed = True
