"""Following the server: a new head of the namespace applied to the view in place.

``apply_head`` (called by ``boxfs.view.syncer``) diffs the new head's trees against the listed
part of the view, first fetching the changed trees without the model lock, then, under
it, changes what differs in place (a file keeps its inode, so an open descriptor reads the
new content) and queues ``Invalidation``s for the notifier. Names with unconfirmed journal
entries, and files open for writing, are left to the local change and looked at again by
``recheck``. The head the view shows is remembered in the journal, so a start works offline
from it.

A shared folder is followed once it is loaded (listed for the first time); before that its
heads are not applied (the load asks for the newest). In the home, a mount entry is
synced as one name: a new one shows its folder (opened through ``OpenNamespace``), a moved
one moves the same root node, a removed one takes the folder away (the user was removed,
left, or the folder was unshared), and a folder turned into one (shared by this user) is
replaced by the shared folder's root once no local change below it is unconfirmed. After
each home sync, a shared folder whose root the listed home no longer holds is detached
(placed again if a listing meets its entry later).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from boxfs.journal import JournalError, ViewHead
from boxfs.view.content import FileContent
from boxfs.view.namespaces import Namespace
from boxfs.view.nodes import Node, SyncError, listing_of, now_ns
from store import protocol
from store.errors import NotFoundError, StoreError
from store.ids import CommitId, ContentHash, NamespaceId, TreeId
from store.objects import EntryKind, FileEntry, Tree, decode_commit

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Unconfirmed:
    """The paths (as name tuples) journal entries name, and every directory above them."""

    exact: frozenset[tuple[bytes, ...]]
    ancestors: frozenset[tuple[bytes, ...]]

    @classmethod
    def of(cls, paths: Iterable[tuple[bytes, ...]]) -> _Unconfirmed:
        exact = frozenset(paths)
        ancestors = frozenset(path[:end] for path in exact for end in range(1, len(path)))
        return cls(exact, ancestors)


def _busy(node: Node) -> bool:
    """Open for writing, or holding written bytes not journaled yet: the syncer keeps off."""
    return bool(node.writers) or node.stage is not None


def _held_locally(
    child: Node | None,
    entry: FileEntry | None,
    path: tuple[bytes, ...],
    unconfirmed: _Unconfirmed,
) -> bool:
    """Whether a local change keeps the server's ``entry`` off this name for now: a journal
    entry names it, the file is being written, or (for a removal or a change of kind)
    unconfirmed changes lie below it (a directory can still be synced into)."""
    if path in unconfirmed.exact or (child is not None and _busy(child)):
        return True
    if child is None:
        return False
    if child.kind is EntryKind.DIR and entry is not None and entry.kind is EntryKind.DIR:
        return False  # a directory both sides have is synced into, never replaced
    # Removed or replaced remotely: not while a change below it is unconfirmed, or a file
    # below it is being written (not journaled yet, so only the view knows it).
    return path in unconfirmed.ancestors or _busy_below(child)


def _busy_below(node: Node) -> bool:
    """Whether a listed descendant of ``node`` is open for writing or holds unjournaled
    bytes (memory follows what the view lists, so the walk is bounded by it)."""
    pending = [node]
    while pending:
        current = pending.pop()
        for child in (current.children or {}).values():
            if _busy(child):
                return True
            if child.children is not None:
                pending.append(child)
    return False


def _adopt_attrs(node: Node, entry: FileEntry) -> bool:
    """Take the server entry's attributes; whether any differed. A directory keeps its own
    mtime while the server's is the one it saw last: the server's is what mkdir or a
    utime set, this one also moves with every change of the listing (``_touch``), as on a
    local filesystem, and a commit of those changes must not set it back."""
    mtime_ns = entry.mtime_ns
    if node.kind is EntryKind.DIR and mtime_ns == node.seen_mtime_ns:
        mtime_ns = node.mtime_ns
    node.seen_mtime_ns = entry.mtime_ns
    before = (node.mode, node.uid, node.gid, node.mtime_ns, node.xattrs, node.size, node.atime_ns)
    after = (entry.mode, entry.uid, entry.gid, mtime_ns, entry.xattrs, entry.size, entry.atime_ns)
    if before == after:
        return False
    (
        node.mode, node.uid, node.gid, node.mtime_ns, node.xattrs, node.size, node.atime_ns
    ) = after  # fmt: skip
    node.ctime_ns = now_ns()
    return True


class FollowingServer(FileContent):
    """Applying the server's new heads to the view, above file content. Each call acts on
    one namespace (``namespace_id``; ``None``: the home namespace)."""

    @property
    def head(self) -> CommitId | None:
        """The commit the view shows of the home namespace (``None``: no commit yet)."""
        return self._home.head

    def head_of(self, namespace_id: NamespaceId) -> CommitId | None:
        """The commit the view shows of ``namespace_id`` (``None``: no commit yet, or a
        shared folder not shown)."""
        namespace = self._followed(namespace_id)
        return None if namespace is None else namespace.head

    def _followed(self, namespace_id: NamespaceId | None) -> Namespace | None:
        """The namespace, if the view follows it (a shared folder once loaded)."""
        if namespace_id is None:
            return self._home
        namespace = self._namespaces.get(namespace_id)
        if namespace is None or not namespace.loaded:
            return None
        return namespace

    @property
    def deferred_count(self) -> int:
        """Names the last sync of the home namespace left alone (local changes the server
        has not confirmed)."""
        return len(self._home.deferred)

    def deferred_in(self, namespace_id: NamespaceId) -> int:
        """Names the last sync of ``namespace_id`` left alone."""
        namespace = self._followed(namespace_id)
        return 0 if namespace is None else len(namespace.deferred)

    @property
    def started_offline(self) -> bool:
        """Whether ``start`` found the server unreachable and showed, for some namespace,
        the head the last mount showed."""
        return any(namespace.started_offline for namespace in self._namespaces.values())

    def raise_floor(self, sequence: int, *, namespace_id: NamespaceId | None = None) -> None:
        """A batch of this device was answered with the head at ``sequence``: from now on
        no older head of that namespace is shown, and nothing is rechecked against one
        (both would take away what the batch confirmed, as its entries leave the journal).
        Call it on the loop before the batch is completed in the journal."""
        namespace = self._namespaces.get(namespace_id or self._home.namespace_id)
        if namespace is not None:
            namespace.floor_sequence = max(namespace.floor_sequence, sequence)

    async def apply_head(
        self, commit_id: CommitId, sequence: int, *, namespace_id: NamespaceId | None = None
    ) -> None:
        """Show the namespace as of ``commit_id`` (a newer head): diff its trees against the
        view, directory by directory where the view has listed them (an unchanged subtree
        is skipped by id), change what differs, and queue the kernel invalidations. Only
        that namespace's part of the view changes (a mounted one: below its mount point).

        What this device changed and the server has not confirmed wins: a name with a
        journal entry, or a file open for writing, is left as it is and remembered
        (``recheck`` looks again once the server has answered, and shows what it made of
        the change: the same content, a merge, or the other version with a conflicted copy
        beside it). Trees are fetched before taking the lock, so requests wait only for the
        changes themselves."""
        namespace = self._followed(namespace_id)
        if namespace is None or commit_id == namespace.head:
            return
        if sequence < namespace.floor_sequence:
            return
        remote = namespace.ports.remote
        raw = (await remote.commits(namespace.namespace_id, [commit_id])).get(commit_id)
        if raw is None:
            raise NotFoundError("head commit", str(commit_id))
        commit = await self._thread(decode_commit, raw, commit_id)
        root = namespace.root
        await self._prefetch_trees(namespace, root, commit.root)
        async with self._lock:
            unconfirmed = await self._unconfirmed(namespace)
            if sequence < namespace.floor_sequence:
                # A batch was answered with a newer head while this one travelled; its
                # entries may be gone from ``unconfirmed`` already: show that head instead.
                return
            await self._sync_dir(namespace, root, commit.root, (), unconfirmed)
            if namespace is self._home:
                root.mtime_ns = root.ctime_ns = commit.time_ns
            namespace.head, namespace.head_sequence = commit_id, sequence
            namespace.versions_stale = True
            if namespace is self._home:
                self._settle_mounts()
            self._queue_invalidation(root)
            _log.debug(
                "showing head %s: %d invalidations queued, %d names left to local changes",
                commit_id, len(self._invalidations), len(namespace.deferred),
            )  # fmt: skip
        await self._remember_head(namespace, ViewHead(commit_id, commit.root, commit.time_ns))
        self._flush_invalidations()

    async def recheck(self, *, namespace_id: NamespaceId | None = None) -> None:
        """Look again at the names an earlier sync of the namespace left alone whose local
        change is now settled (answered by the server, or the file closed). Names still
        named by the journal stay aside without any work; the rest are looked up directory
        by directory (one tree and one journal read each), so a burst of thousands of
        pending creates costs little per answered batch."""
        namespace = self._followed(namespace_id)
        if namespace is None:
            return
        deferred = namespace.deferred
        if not deferred or namespace.head_sequence < namespace.floor_sequence:
            return  # the newer head is on its way: recheck against it
        async with self._lock:
            unconfirmed = await self._unconfirmed(namespace)
            if namespace.head_sequence < namespace.floor_sequence:
                return
            settled = [path for path in deferred if path not in unconfirmed.exact]
            deferred.difference_update(settled)
            by_directory: dict[tuple[bytes, ...], list[bytes]] = {}
            for path in settled:
                by_directory.setdefault(path[:-1], []).append(path[-1])
            try:
                for directory_path in sorted(by_directory, key=len):  # parents first
                    names = by_directory[directory_path]
                    await self._recheck_names(namespace, directory_path, names, unconfirmed)
            except BaseException:
                deferred.update(settled)  # a failed round: all of them again next time
                raise
            if namespace is self._home:
                self._settle_mounts()
        self._flush_invalidations()

    async def _recheck_names(
        self,
        namespace: Namespace,
        path: tuple[bytes, ...],
        names: list[bytes],
        unconfirmed: _Unconfirmed,
    ) -> None:
        """Sync ``names`` of the directory at ``path`` to the head the view shows. Their
        entries come from that head's tree for ``path`` (walked down from the root), not
        from the directory's own ``tree_id``: a directory held back by a later sync still
        names the older tree, which lacks what was confirmed since."""
        if any(path[:end] in namespace.deferred for end in range(1, len(path) + 1)):
            # The directory (or one above it) is still held back: so are its names.
            namespace.deferred.update((*path, name) for name in names)
            return
        directory = self._listed_dir(namespace, path)
        if directory is None:
            return  # gone, or not listed: nothing shown to correct
        server_tree = await self._server_tree(namespace, path)
        children = listing_of(directory)
        if children is None:
            return  # dropped by a forget meanwhile: fetched anew when looked up
        entries = {} if server_tree is None else {entry.name: entry for entry in server_tree}
        own = await self._own_put_hashes(children[name] for name in names if name in children)
        for name in sorted(names):
            entry = entries.get(name)
            await self._sync_name(directory, name, entry, (*path, name), unconfirmed, own=own)

    async def _server_tree(self, namespace: Namespace, path: tuple[bytes, ...]) -> Tree | None:
        """The tree at ``path`` in the head the view shows (``None``: no directory there)."""
        tree_id = namespace.root.tree_id
        assert tree_id is not None
        tree = await self._tree(namespace, tree_id)
        for name in path:
            entry = tree.get(name)
            if entry is None or entry.kind is not EntryKind.DIR or entry.tree_id is None:
                return None
            tree = await self._tree(namespace, entry.tree_id)
        return tree

    async def _unconfirmed(self, namespace: Namespace) -> _Unconfirmed:
        paths = await self._thread(self._journal.unconfirmed_paths, namespace.namespace_id)
        return _Unconfirmed.of(path.components for path in paths)

    async def _remember_head(self, namespace: Namespace, head: ViewHead) -> None:
        try:
            await self._thread(self._journal.save_view_head, namespace.namespace_id, head)
        except (JournalError, OSError) as exc:  # only an offline start needs it
            _log.warning("cannot remember the head the view shows: %s", exc)

    async def _tree(self, namespace: Namespace, tree_id: TreeId) -> Tree:
        try:
            tree = await namespace.ports.fetcher.tree(tree_id)
        except protocol.UnavailableError:
            raise
        except (StoreError, protocol.ProtocolError) as exc:
            raise SyncError(f"cannot fetch tree {tree_id}: {exc}") from exc
        await self._open_mounts(namespace.root, tree)
        return tree

    async def _prefetch_trees(self, namespace: Namespace, node: Node, tree_id: TreeId) -> None:
        """Fetch (into the cache) the trees a sync to ``tree_id`` will read: those of the
        listed directories whose content changed."""
        if node.children is None or node.tree_id == tree_id:
            return
        tree = await self._tree(namespace, tree_id)
        children = listing_of(node)
        if children is None:
            return
        for entry in tree:
            child = children.get(entry.name)
            if (
                entry.kind is EntryKind.DIR
                and entry.tree_id is not None
                and child is not None
                and child.kind is EntryKind.DIR
                and not self._hidden(node, entry.name)
            ):
                await self._prefetch_trees(namespace, child, entry.tree_id)

    def _listed_dir(self, namespace: Namespace, path: tuple[bytes, ...]) -> Node | None:
        """The listed directory at ``path`` in the view, without fetching anything."""
        node = namespace.root
        for name in path:
            if node.children is None or self._hidden(node, name):
                return None
            child = node.children.get(name)
            if child is None or child.kind is not EntryKind.DIR:
                return None
            if child.namespace_id != namespace.namespace_id:  # a shared folder's root
                return None
            node = child
        return node if node.children is not None else None

    async def _sync_dir(
        self,
        namespace: Namespace,
        node: Node,
        tree_id: TreeId,
        path: tuple[bytes, ...],
        unconfirmed: _Unconfirmed,
    ) -> None:
        """Bring a directory of the view to the server's tree ``tree_id`` (``_sync_name``
        leaves the names the view keeps for itself, ``_hidden``, as they are)."""
        if node.tree_id == tree_id:
            return
        if node.children is None:  # not listed: the next lookup fetches the new tree
            node.tree_id = tree_id
            return
        tree = await self._tree(namespace, tree_id)
        children = listing_of(node)
        if children is None:  # forgotten meanwhile
            node.tree_id = tree_id
            return
        entries = {entry.name: entry for entry in tree}
        own = await self._own_put_hashes(children.values())
        for name in sorted(entries.keys() | children.keys()):
            await self._sync_name(
                node, name, entries.get(name), (*path, name), unconfirmed, own=own
            )
        node.tree_id = tree_id

    async def _own_put_hashes(self, nodes: Iterable[Node]) -> dict[int, ContentHash]:
        """The content hashes the uploader recorded for these files' latest puts (this
        device's content, still served from its staged file), in one journal call."""
        seqs = [
            node.base_seq
            for node in nodes
            if node.staged is not None and node.base_seq is not None and node.entry is None
        ]
        if not seqs:
            return {}
        return await self._thread(self._journal.put_hashes, seqs)

    async def _sync_name(
        self,
        directory: Node,
        name: bytes,
        entry: FileEntry | None,
        path: tuple[bytes, ...],
        unconfirmed: _Unconfirmed,
        *,
        own: Mapping[int, ContentHash],
    ) -> None:
        """Bring one name of a listed directory to the server's ``entry`` (``None``: the
        server has no such name), unless a local change holds it. ``own``: the content
        hashes of this device's puts (``_own_put_hashes``). A name the view keeps for
        itself (``_hidden``: ``.versions``) stays as it is."""
        if directory.children is None:
            return  # dropped by a forget meanwhile: it is fetched anew, from the new tree
        if self._hidden(directory, name):
            return
        child = directory.children.get(name)
        mounted = child is not None and self._is_mount_point(child)
        if mounted or (entry is not None and entry.kind is EntryKind.MOUNT):
            self._sync_mount(directory, child, entry, path=path, unconfirmed=unconfirmed)
            return
        if _held_locally(child, entry, path, unconfirmed):
            self._namespace_of(directory).deferred.add(path)
        elif child is None:
            node = None if entry is None else self._node_from_entry(entry, directory)
            if node is not None:
                directory.children[name] = node
                self._queue_invalidation(directory, name)  # a negative entry the kernel holds
                self._listing_changed_remotely(directory)
        elif entry is None:
            self._remove_remotely(directory, child)
        elif child.kind is EntryKind.DIR and entry.kind is EntryKind.DIR:
            assert entry.tree_id is not None
            if _adopt_attrs(child, entry):
                self._queue_invalidation(child)
            namespace = self._namespace_of(directory)
            await self._sync_dir(namespace, child, entry.tree_id, path, unconfirmed)
        elif child.kind is entry.kind:
            self._sync_leaf(child, entry, own)
        else:  # another kind now
            self._remove_remotely(directory, child)
            node = self._node_from_entry(entry, directory)
            if node is not None:
                directory.children[name] = node

    def _sync_leaf(self, node: Node, entry: FileEntry, own: Mapping[int, ContentHash]) -> None:
        """A file, symlink, FIFO or socket whose server entry is ``entry`` (same kind). The
        node keeps its inode, so an open descriptor reads the new content."""
        same_content = True
        if node.kind is EntryKind.FILE:
            if node.entry is not None:
                same_content = node.entry.content_hash == entry.content_hash
            elif node.staged is not None and node.base_seq is not None:
                # Content this device wrote: is the server's entry that put, as sent?
                same_content = own.get(node.base_seq) == entry.content_hash
            else:
                same_content = False
            if not same_content:
                if node.reader is not None:
                    node.reader.close()  # a read using it retries with the new state
                    node.reader = None
                if node.staged is not None:
                    self._staging.unpin(node.staged)
                    node.staged = None
                node.base_seq = None
                node.broken = False
                node.pages_stale = True
            node.entry = entry
        elif node.target != entry.target or node.rdev != entry.rdev:
            same_content = False
        node.target, node.rdev = entry.target, entry.rdev
        node.base = entry.content_hash
        attrs_changed = _adopt_attrs(node, entry)
        if not same_content or attrs_changed:
            self._queue_invalidation(node, data=not same_content)

    def _sync_mount(
        self,
        directory: Node,
        child: Node | None,
        entry: FileEntry | None,
        *,
        path: tuple[bytes, ...],
        unconfirmed: _Unconfirmed,
    ) -> None:
        """One home name where a mount entry is, or was: see the module docstring. A
        local change of the name itself (a rename of the mount point on its way) holds
        it; what is below a shared folder's root is that folder's, not the home's."""
        assert directory.children is not None
        name = path[-1]
        if path in unconfirmed.exact:
            self._namespace_of(directory).deferred.add(path)
            return
        mounted = child is not None and self._is_mount_point(child)
        if child is not None and not mounted and _held_locally(child, entry, path, unconfirmed):
            self._namespace_of(directory).deferred.add(path)  # a folder being shared
            return
        new = None if entry is None else self._node_from_entry(entry, directory)
        if child is new:
            if child is not None:
                self._queue_invalidation(child)  # its attributes may have changed
            return
        if child is not None:
            if mounted:
                del directory.children[name]  # gone or moved: ``_settle_mounts`` decides
                self._queue_invalidation(directory, name)
            else:
                self._remove_remotely(directory, child)
        if new is not None:
            directory.children[name] = new
            self._queue_invalidation(directory, name)

    def _settle_mounts(self) -> None:
        """Detach every shared folder's root the listed home no longer holds (its mount
        entry was removed, or moved where the view has not looked): open handles keep
        working, nothing below it can change; a listing that meets its entry again places
        the same root there."""
        for namespace in list(self._namespaces.values()):
            root = namespace.root
            if namespace is self._home or root.detached or self._placed(root):
                continue
            root.detached = True
            root.ctime_ns = now_ns()
            _log.info("shared folder %s is not in the listed drive", namespace.namespace_id)

    def _placed(self, node: Node) -> bool:
        """Whether ``node`` hangs from the home root (a directory on the way whose listing
        was dropped counts as holding it: its tree still names the entry)."""
        current = node
        while current is not self._root:
            parent = current.parent
            if parent is None or current.detached:
                return False
            if parent.children is None:
                return not parent.detached
            if parent.children.get(current.name) is not current:
                return False
            current = parent
        return True

    def _remove_remotely(self, directory: Node, node: Node) -> None:
        """Another device removed (or replaced) ``node``: out of its directory, open
        handles keep working, the kernel forgets the name."""
        assert directory.children is not None
        del directory.children[node.name]
        node.detached = True
        node.ctime_ns = now_ns()
        self._queue_invalidation(directory, node.name)
        self._listing_changed_remotely(directory)
        self._maybe_drop(node)

    def _listing_changed_remotely(self, directory: Node) -> None:
        """A name of ``directory`` came or went from another device: its mtime and ctime
        move, as a local change moves them (its listing is still the committed one)."""
        directory.mtime_ns = directory.ctime_ns = now_ns()
        self._queue_invalidation(directory)
