"""The start of a view: the head (or, offline, the one last shown) and the journal replayed.

``start`` loads the home namespace's head, then replays the journal's unconfirmed entries
(an earlier mount's changes, in flight or pending) onto it, so they show; call it before
``uploader.run`` starts (a confirmed entry would otherwise be missing from the view). A
shared folder is loaded the same way when it is first listed (``_load_namespace``).
"""

from __future__ import annotations

import errno
import logging

from boxfs.journal import JournalOp, StagedPut, ViewHead
from boxfs.staging import StagingError
from boxfs.view.following import FollowingServer
from boxfs.view.namespaces import Namespace
from boxfs.view.nodes import FsError, Listing, Node, apply_changes, set_attrs
from store import protocol
from store.errors import FormatError, NotFoundError
from store.objects import EMPTY_TREE, EntryKind, decode_commit
from store.ops import Delete, Mkdir, Move, SetAttr
from store.protocol import DrivePath

_log = logging.getLogger(__name__)


class JournalReplay(FollowingServer):
    """The view's start: head and journal replay."""

    async def start(self) -> None:
        """Load each namespace's head (or the empty tree) as its part of the view, then
        replay the journal's entries of each (an earlier mount's changes the server has
        not confirmed) onto its own root, so they show.

        With the server unreachable, a namespace starts from the head the last mount showed
        (remembered in the journal; its trees are in the object cache as far as that mount
        listed them): an offline start. Without one, ``protocol.UnavailableError`` passes.

        Call it once, before the uploaders start (so no staged file named by an entry is
        discarded while this replays)."""
        namespace = self._home
        view = await self._initial_head(namespace)
        if view is not None:
            namespace.head = view.commit_id
            namespace.root.tree_id = view.root
            namespace.root.mtime_ns = namespace.root.ctime_ns = view.time_ns
        namespace.root.children = None
        namespace.loaded = True
        await self._replay_journal(namespace)

    async def _load_namespace(self, namespace: Namespace) -> None:
        """A shared folder's first listing: its head (or offline the one the last mount
        showed; else the listing fails), then its journal entries replayed onto it. Once,
        however many requests ask at the same time."""
        async with namespace.loading:
            if namespace.loaded:
                return
            view = await self._initial_head(namespace)
            root = namespace.root
            root.tree_id = view.root if view is not None else EMPTY_TREE.id
            namespace.head = view.commit_id if view is not None else None
            root.children = None
            namespace.loaded = True
            await self._replay_journal(namespace)

    async def _replay_journal(self, namespace: Namespace) -> None:
        """The journal's entries of ``namespace`` (in flight, then pending) shown in it."""
        namespace_id = namespace.namespace_id
        batches = await self._thread(self._journal.batches_in_flight, namespace_id)
        pending = await self._thread(self._journal.pending, namespace_id, 1 << 62)
        async with self._lock:
            for entry in [*(e for batch in batches for e in batch.entries), *pending]:
                try:
                    await self._replay(namespace, entry.seq, entry.op)
                except (FsError, StagingError, FormatError, OSError) as exc:
                    # Already applied on the server (a lost reply), or it will be rejected
                    # there: the head shows what became of it.
                    _log.info("journal entry %d not shown in the view: %s", entry.seq, exc)

    async def _initial_head(self, namespace: Namespace) -> ViewHead | None:
        """The server's head of ``namespace`` now, or offline the one the last mount
        showed."""
        remote, namespace_id = namespace.ports.remote, namespace.namespace_id
        try:
            head = await remote.head(namespace_id)
            namespace.head_sequence = head.sequence
            if head.head is None:
                return None
            raw = (await remote.commits(namespace_id, [head.head])).get(head.head)
        except protocol.UnavailableError:
            remembered = await self._thread(self._journal.view_head, namespace_id)
            if remembered is None:
                raise
            _log.warning("the server is unreachable: showing the drive as this device last saw it")
            namespace.started_offline = True
            return remembered
        if raw is None:
            raise NotFoundError("head commit", str(head.head))
        commit = await self._thread(decode_commit, raw, head.head)
        view = ViewHead(head.head, commit.root, commit.time_ns)
        await self._remember_head(namespace, view)
        return view

    async def _resolve(self, namespace: Namespace, path: DrivePath) -> tuple[Node, Listing]:
        """The directory holding ``path`` inside ``namespace`` and its entries
        (materialized). A path through a name the view keeps for itself (``.versions``) or
        into another namespace (a shared folder's root, seen from the home) is not shown
        there: EBUSY."""
        node = namespace.root
        for name in path.components[:-1]:
            if self._hidden(node, name):
                raise FsError(errno.EBUSY)
            node = await self._child(node, name)
            if node.namespace_id != namespace.namespace_id:
                raise FsError(errno.EBUSY)
        if self._hidden(node, path.name):
            raise FsError(errno.EBUSY)
        return node, await self._children(node)

    async def _replay(self, namespace: Namespace, seq: int, op: JournalOp) -> None:
        """Apply one journal entry of ``namespace`` to the overlay (no journaling: it is
        there already)."""
        match op:
            case StagedPut():
                await self._replay_put(namespace, seq, op)
            case Mkdir():
                parent, children = await self._resolve(namespace, op.path)
                if op.path.name not in children:
                    node = self._new_node(parent, op.path.name, EntryKind.DIR, op.attrs.mode)
                    set_attrs(node, op.attrs)
                    node.remote = parent.changed = True
                    children[op.path.name] = node
            case Move():
                source_dir, sources = await self._resolve(namespace, op.src)
                moved = sources.get(op.src.name)
                if moved is None:
                    raise FsError(errno.ENOENT)
                target_dir, targets = await self._resolve(namespace, op.dst)
                replaced = targets.get(op.dst.name)
                if replaced is not None and replaced is not moved:
                    self._detach(replaced)
                del sources[op.src.name]
                moved.name, moved.parent = op.dst.name, target_dir
                targets[op.dst.name] = moved
                moved.changed = target_dir.changed = source_dir.changed = True
            case Delete():
                _, children = await self._resolve(namespace, op.path)
                if (gone := children.get(op.path.name)) is not None:
                    if self._is_mount_point(gone):
                        raise FsError(errno.EBUSY)  # the server refuses it too
                    self._detach(gone)
            case SetAttr():
                _, children = await self._resolve(namespace, op.path)
                changed = children.get(op.path.name)
                if changed is None:
                    raise FsError(errno.ENOENT)
                apply_changes(changed, op.changes)

    async def _replay_put(self, namespace: Namespace, seq: int, op: StagedPut) -> None:
        parent, children = await self._resolve(namespace, op.path)
        existing = children.get(op.path.name)
        if existing is not None and existing.kind is EntryKind.DIR:
            raise FsError(errno.EISDIR)
        node = self._new_node(parent, op.path.name, op.kind, op.attrs.mode)
        set_attrs(node, op.attrs)
        node.target, node.rdev, node.remote, node.base_seq = op.target, op.rdev, True, seq
        node.size = len(op.target)  # a file's: its staged file's, below
        node.base = existing.base if existing is not None else op.base
        if op.staged is not None:
            node.size = await self._thread(self._staging.size_of, op.staged)
            self._staging.pin(op.staged)
            node.staged = op.staged
        if existing is not None:
            self._detach(existing)
        children[op.path.name] = node
        parent.changed = True
