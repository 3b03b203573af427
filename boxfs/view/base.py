"""The view's base layer: the inode table, listings, the model lock, the journal append.

Owns the namespaces shown (``namespaces.Namespace``, one per namespace: the home one at
``/``, and each shared folder at its mount entry in the home, opened through
``OpenNamespace`` when a listing first meets the entry and loaded when first listed
itself), the ``/.versions`` node (the home namespace's
history), the table of inodes the kernel knows (numbers handed out on first lookup, never
reused; ``lookup``/``forget`` counts; a forgotten, unchanged directory drops its listing
so memory follows what the kernel holds), directory listings fetched lazily through their
namespace's ``Fetcher``, the lock every metadata change holds, whatever its namespace
(``_change``: checks, journal append, overlay update; a listing that must be fetched is
fetched with the lock free, see ``docs/concurrency.md``), and the queue of kernel
invalidations the notifier drains. A node's path (``_path``) is the path inside its own
namespace, and ``_append`` journals for the namespace it is given and nudges that one's
uploader.

Must not: talk to the server except through the ``Fetcher`` and ``Remote.log``
(``.versions``), block the loop (SQLite and staged-file I/O go through ``_thread``), or
hold anything proportional to a file's size. Called by the layers above it and, through
``FileSystemModel``, by the FUSE adapter's handlers, on the mount's one trio loop.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Awaitable, Callable, Iterator
from typing import Final, ParamSpec, TypeVar

import trio

from boxfs.journal import BasedOnPut, JournalError, JournalOp
from boxfs.stage_pool import StagePool
from boxfs.staging import MemoryBudget, StagedFile, Staging
from boxfs.threads import run_in_thread
from boxfs.view.namespaces import Namespace, NamespacePorts, OpenNamespace
from boxfs.view.nodes import (
    DIR_SIZE,
    ROOT_INODE,
    STAGED_MEMORY_BYTES,
    TYPE_BITS,
    VERSIONS_NAME,
    Attr,
    DirHandle,
    FileHandle,
    FsError,
    Invalidation,
    Listing,
    ListingNeeded,
    Node,
    Owner,
    check_name,
    failed,
    now_ns,
)
from boxfs.view.ports import PendingWork
from boxfs.view.versions import version_names
from store import protocol
from store.errors import FormatError, StoreError
from store.ids import NamespaceId, TreeId
from store.objects import EMPTY_TREE, EntryKind, FileEntry, Tree
from store.ops import Attrs, Delete
from store.protocol import DrivePath

_T = TypeVar("_T")
_P = ParamSpec("_P")

SPILL_ON_LOOP_BYTES: Final = 64 * 1024
"""The most of a new file's buffered first writes a journal append writes out on the loop
(more goes through a worker thread)."""


def _link_count(node: Node) -> int:
    """st_nlink: a directory's is 2 and one per subdirectory, as on a local filesystem,
    when its listing is in memory; 1 when it is not (the count is not known without
    fetching the listing: 1 is what tools such as find(1) take to mean "unknown", where 2
    would tell them there are no subdirectories). A file's is 1; anything's is 0 once
    removed (still open)."""
    if node.detached:
        return 0
    if node.kind is not EntryKind.DIR:
        return 1
    if node.children is None:
        return 1
    return 2 + node.children.folders


class ViewBase:
    """Inodes, listings, mount points, the lock and the journal append of a view of one or
    more namespaces: ``home`` at ``/``, and each shared folder whose mount entry the home
    holds, with the ports ``open_namespace`` gives for it (none: mount entries are not
    shown)."""

    def __init__(
        self,
        *,
        home: NamespacePorts,
        journal: PendingWork,
        staging: Staging,
        limiter: trio.CapacityLimiter,
        uid: int,
        gid: int,
        preserve_ownership: bool = False,
        stage_pool: StagePool | None = None,
        open_namespace: OpenNamespace | None = None,
    ) -> None:
        self._stage_pool = stage_pool
        self._memory_budget = MemoryBudget(STAGED_MEMORY_BYTES)
        self._journal = journal
        self._staging = staging
        self._limiter = limiter
        self._uid = uid
        self._gid = gid
        self._preserve = preserve_ownership
        self._lock = trio.Lock()
        now = now_ns()
        self._root = Node(
            kind=EntryKind.DIR, name=b"", parent=None, namespace_id=home.namespace_id,
            mode=0o755, uid=uid, gid=gid, size=0, mtime_ns=now, ctime_ns=now,
            tree_id=EMPTY_TREE.id, remote=True,
        )  # fmt: skip
        self._versions = Node(
            kind=EntryKind.DIR, name=VERSIONS_NAME, parent=self._root,
            namespace_id=home.namespace_id, mode=0o555, uid=uid, gid=gid, size=0,
            mtime_ns=now, ctime_ns=now, readonly=True, versions_root=True,
        )  # fmt: skip
        self._home = Namespace(home, self._root, versions=self._versions)
        self._namespaces: dict[NamespaceId, Namespace] = {home.namespace_id: self._home}
        self._open_namespace = open_namespace
        self._opened: dict[NamespaceId, NamespacePorts] = {}  # shared folders' ports
        self._roles: dict[NamespaceId, str] = {}  # the caller's, as the server last said
        self._root.inode = ROOT_INODE
        self._next_inode = ROOT_INODE + 1
        self._inodes: dict[int, Node] = {ROOT_INODE: self._root}
        self._next_fh = 1
        self._files: dict[int, FileHandle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._invalidations: list[Invalidation] = []
        self._invalidations_ready = trio.Event()

    async def _open_mounts(self, directory: Node, tree: Tree) -> None:
        """Open the namespaces of the mount entries in ``tree`` (a listing of the home's
        ``directory``) that are not open yet, before the listing is materialized."""
        if self._open_namespace is None or directory.namespace_id != self._home.namespace_id:
            return
        if directory.readonly:  # a snapshot in .versions: its mount entries are not shown
            return
        for entry in tree:
            if entry.kind is EntryKind.MOUNT and entry.namespace_id not in self._opened:
                assert entry.namespace_id is not None
                ports = await self._open_namespace(entry.namespace_id)
                if ports is not None:
                    self._opened[entry.namespace_id] = ports

    def _mount_root(self, entry: FileEntry, parent: Node) -> Node | None:
        """The node standing for a mount entry of the home's ``parent``: its namespace's
        root, placed there (the same node when the entry moved), or ``None`` when the
        namespace is not open (see ``_open_mounts``) or ``parent`` is not the home's."""
        namespace_id = entry.namespace_id
        assert namespace_id is not None
        if parent.namespace_id != self._home.namespace_id or parent.readonly:
            return None
        namespace = self._namespaces.get(namespace_id)
        if namespace is None:
            ports = self._opened.get(namespace_id)
            if ports is None:
                return None
            root = Node(
                kind=EntryKind.DIR, name=entry.name, parent=parent, namespace_id=namespace_id,
                mode=entry.mode, uid=entry.uid, gid=entry.gid, size=0, mtime_ns=entry.mtime_ns,
                ctime_ns=entry.mtime_ns, xattrs=entry.xattrs, remote=True,
            )  # fmt: skip
            versions = Node(
                kind=EntryKind.DIR, name=VERSIONS_NAME, parent=root, namespace_id=namespace_id,
                mode=0o555, uid=self._uid, gid=self._gid, size=0, mtime_ns=entry.mtime_ns,
                ctime_ns=entry.mtime_ns, readonly=True, versions_root=True,
            )  # fmt: skip
            namespace = Namespace(ports, root, versions=versions)
            self._namespaces[namespace_id] = namespace
            return root
        root = namespace.root
        root.name, root.parent, root.detached = entry.name, parent, False
        root.mode, root.mtime_ns, root.xattrs = entry.mode, entry.mtime_ns, entry.xattrs
        return root

    def _home_path(self, node: Node) -> DrivePath:
        """A mount point's path in the home namespace (where its mount entry is)."""
        return self._path_below(node, self._root)

    async def _load_namespace(self, namespace: Namespace) -> None:
        """Load a shared folder's head into its root, and replay its journal entries
        (``replay.JournalReplay``)."""
        raise NotImplementedError

    def set_role(self, namespace_id: NamespaceId, role: str | None) -> None:
        """The caller's role in ``namespace_id`` (from the server's namespace list or an
        event): a viewer's writes fail with EACCES from now on."""
        if role is None or self._roles.get(namespace_id) == role:
            return
        self._roles[namespace_id] = role
        namespace = self._namespaces.get(namespace_id)
        if namespace is not None:
            self._queue_invalidation(namespace.root)  # its mode bits change
            self._flush_invalidations()

    def _writable_namespace(self, node: Node) -> bool:
        """Whether the caller may write in ``node``'s namespace (not as a viewer)."""
        return self._roles.get(node.namespace_id) != "viewer"

    def _namespace(self, namespace_id: NamespaceId | None) -> Namespace:
        """The namespace ``namespace_id`` names (``None``: the home namespace)."""
        if namespace_id is None:
            return self._home
        namespace = self._namespaces.get(namespace_id)
        if namespace is None:
            raise ValueError(f"namespace {namespace_id} is not shown in this view")
        return namespace

    def _namespace_of(self, node: Node) -> Namespace:
        return self._namespaces[node.namespace_id]

    def _is_mount_point(self, node: Node) -> bool:
        """Whether ``node`` is a shared folder's root (standing for a home mount entry)."""
        return node.parent is not None and node is self._namespace_of(node).root

    def _hidden(self, directory: Node, name: bytes) -> bool:
        """Whether ``name`` of ``directory``'s committed tree is not shown as its entry:
        ``.versions`` at a namespace's root (the view's own)."""
        return name == VERSIONS_NAME and self._versions_at(directory) is not None

    def _versions_at(self, directory: Node) -> Node | None:
        """The ``.versions`` folder of ``directory``, if it is a namespace's root."""
        namespace = self._namespaces.get(directory.namespace_id)
        if namespace is None or directory is not namespace.root:
            return None
        return namespace.versions

    async def _thread(self, function: Callable[_P, _T], *args: _P.args, **kw: _P.kwargs) -> _T:
        """``function`` in a worker thread under the mount's limiter (``run_in_thread``)."""
        return await run_in_thread(self._limiter, function, *args, **kw)

    async def _new_stage(self) -> StagedFile:
        """A new empty staged file, pinned: a ready one from the pool if it has one (no
        thread hop), else made now."""
        stage = self._stage_pool.take() if self._stage_pool is not None else None
        if stage is None:
            stage = await self._thread(self._staging.new)
        self._staging.pin(stage.name)
        return stage

    def _ino(self, node: Node) -> int:
        if not node.inode:
            node.inode = self._next_inode
            self._next_inode += 1
        self._inodes[node.inode] = node
        return node.inode

    def _node(self, inode: int) -> Node:
        node = self._inodes.get(inode)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    def _attr(self, node: Node) -> Attr:
        inode = self._ino(node)
        read_only = node.readonly or not self._writable_namespace(node)
        mode = node.mode & ~0o222 if read_only else node.mode
        if node.kind is EntryKind.DIR:
            size = DIR_SIZE
        elif node.kind is EntryKind.SYMLINK:
            size = len(node.target)
        else:
            size = node.size
        uid, gid = (node.uid, node.gid) if self._preserve else (self._uid, self._gid)
        return Attr(
            inode=inode, mode=TYPE_BITS[node.kind] | mode, nlink=_link_count(node),
            uid=uid, gid=gid, size=size, rdev=node.rdev,
            atime_ns=node.mtime_ns if node.atime_ns is None else node.atime_ns,
            mtime_ns=node.mtime_ns, ctime_ns=node.ctime_ns, blocks=(size + 511) // 512,
        )  # fmt: skip

    def _path(self, node: Node) -> DrivePath:
        """``node``'s path inside its own namespace (``/Team/a`` is ``a`` in Team)."""
        return self._path_below(node, self._namespace_of(node).root)

    @staticmethod
    def _path_below(node: Node, root: Node) -> DrivePath:
        names: list[bytes] = []
        current: Node | None = node
        while current is not None and current is not root:
            names.append(current.name)
            current = current.parent
        try:
            return DrivePath(reversed(names))
        except (FormatError, protocol.ProtocolError) as exc:
            raise FsError(errno.ENAMETOOLONG) from exc

    def _child_path(self, directory: Node, name: bytes) -> DrivePath:
        if directory is self._namespace_of(directory).root:
            return DrivePath([name])
        try:
            return self._path(directory).child(name)
        except (FormatError, protocol.ProtocolError) as exc:
            raise FsError(errno.ENAMETOOLONG) from exc

    def _node_from_entry(self, entry: FileEntry, parent: Node) -> Node | None:
        """The node of one entry of ``parent``'s tree (``None``: a mount entry not shown)."""
        if entry.kind is EntryKind.MOUNT:
            return self._mount_root(entry, parent)
        return Node(
            kind=entry.kind, name=entry.name, parent=parent, namespace_id=parent.namespace_id,
            mode=entry.mode, uid=entry.uid, gid=entry.gid, size=entry.size,
            mtime_ns=entry.mtime_ns, ctime_ns=entry.mtime_ns, seen_mtime_ns=entry.mtime_ns,
            xattrs=entry.xattrs, target=entry.target, rdev=entry.rdev, atime_ns=entry.atime_ns,
            entry=entry if entry.kind is EntryKind.FILE else None, tree_id=entry.tree_id,
            readonly=parent.readonly, remote=not parent.readonly, base=entry.content_hash,
        )  # fmt: skip

    async def _children(self, node: Node) -> Listing:
        """A directory's entries, fetching its tree the first time."""
        if node.kind is not EntryKind.DIR:
            raise FsError(errno.ENOTDIR)
        if node.versions_root and (
            node.children is None or self._namespace_of(node).versions_stale
        ):
            await self._refresh_versions(node)
        namespace = self._namespace_of(node)
        if node is namespace.root and not namespace.loaded:
            await self._load_namespace(namespace)
        while node.children is None:
            tree_id = node.tree_id
            assert tree_id is not None
            tree = await self._fetch_listing(node, tree_id)
            await self._open_mounts(node, tree)
            # Materialize only if nobody did meanwhile and a sync did not move the
            # directory to a newer tree while this one travelled (then fetch that one).
            if node.children is None and node.tree_id == tree_id:
                children = Listing()
                for entry in tree:
                    child = None
                    if not self._hidden(node, entry.name):
                        child = self._node_from_entry(entry, node)
                    if child is not None:
                        children[entry.name] = child
                node.children = children
        return node.children

    async def _fetch_listing(self, node: Node, tree_id: TreeId) -> Tree:
        try:
            return await self._namespace_of(node).ports.fetcher.tree(tree_id)
        except (StoreError, protocol.ProtocolError) as exc:
            raise failed(exc, "cannot list the directory", node.name) from exc

    async def _refresh_versions(self, versions: Node) -> None:
        """(Re)list the retained commits of ``versions``' namespace as its entries (names
        are stable)."""
        namespace = self._namespace_of(versions)
        commits: list[protocol.CommitInfo] = []
        cursor: str | None = None
        try:
            while True:
                page = await namespace.ports.remote.log(
                    namespace.namespace_id, cursor=cursor, limit=protocol.MAX_PAGE_SIZE
                )
                commits.extend(page.commits)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        except (StoreError, protocol.ProtocolError) as exc:
            if isinstance(exc, protocol.UnavailableError) and versions.children is not None:
                return  # offline: keep the list we have
            raise failed(exc, "cannot list the versions in", VERSIONS_NAME) from exc
        namespace.versions_stale = False
        commits.reverse()  # oldest first
        names = version_names([info.time_ns for info in commits])
        old: dict[bytes, Node] = versions.children or {}
        fresh = Listing()
        for info, text in reversed(list(zip(commits, names, strict=True))):
            name = text.encode()
            node = old.get(name)
            if node is None or node.tree_id != info.root:
                node = Node(
                    kind=EntryKind.DIR, name=name, parent=versions,
                    namespace_id=namespace.namespace_id, mode=0o555, uid=self._uid,
                    gid=self._gid, size=0, mtime_ns=info.time_ns, ctime_ns=info.time_ns,
                    tree_id=info.root, readonly=True,
                )  # fmt: skip
            fresh[name] = node
        versions.children = fresh

    def _listed(self, node: Node) -> Listing:
        """A directory's listing for a change under ``_lock``: never fetched there. One not
        in memory raises ``ListingNeeded``, and ``_change`` fetches it with the lock
        released, then runs the change again from its checks."""
        if node.kind is not EntryKind.DIR:
            raise FsError(errno.ENOTDIR)
        if node.children is None:
            raise ListingNeeded(node)
        return node.children

    def _listed_child(self, parent: Node, name: bytes) -> Node:
        """``_child`` under ``_lock``, for a writable directory (not inside ``.versions``)."""
        check_name(name)
        versions = self._versions_at(parent) if name == VERSIONS_NAME else None
        if versions is not None:
            return versions  # the caller's writability check refuses it
        node = self._listed(parent).get(name)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    async def _change(self, change: Callable[[], Awaitable[_T]]) -> _T:
        """Run a metadata change under ``_lock``, which orders overlay and journal alike.
        The change reads listings with ``_listed`` only, and does all of its checks before
        its first append or overlay update, so a listing that must be fetched (the network,
        perhaps a slow or offline server) is fetched with the lock free, and the change
        starts over: no other request waits on that fetch."""
        while True:
            try:
                async with self._lock:
                    return await change()
            except ListingNeeded as needed:
                await self._children(needed.node)

    async def _child(self, parent: Node, name: bytes) -> Node:
        check_name(name)
        versions = self._versions_at(parent) if name == VERSIONS_NAME else None
        if versions is not None:
            return versions
        node = (await self._children(parent)).get(name)
        if node is None and parent.versions_root:  # perhaps a commit made since the listing
            await self._refresh_versions(parent)
            node = (await self._children(parent)).get(name)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    def _check_writable(self, node: Node) -> None:
        if node.readonly or node.versions_root:
            raise FsError(errno.EROFS)
        if not self._writable_namespace(node):  # a viewer of a shared folder
            raise FsError(errno.EACCES)
        if self._namespace_of(node).root.detached:  # the shared folder left the drive
            raise FsError(errno.ENOENT)

    def _writable_dir(self, inode: int) -> Node:
        node = self._node(inode)
        self._check_writable(node)
        if node.kind is not EntryKind.DIR:
            raise FsError(errno.ENOTDIR)
        ancestor: Node | None = node
        while ancestor is not None:  # under a removed directory nothing can be made
            if ancestor.detached:
                raise FsError(errno.ENOENT)
            ancestor = ancestor.parent
        return node

    async def _append(
        self,
        namespace: Namespace,
        *ops: JournalOp | BasedOnPut,
        power_safe: bool = False,
        spill: StagedFile | None = None,
    ) -> list[int]:
        """Journal ``ops`` (their paths inside ``namespace``) for ``namespace``, and nudge
        its uploader: they survive the mount being killed once this returns, and a power
        cut only with ``power_safe`` (what fsync(2) promises; metadata changes, like a
        local filesystem's, are made durable by a later fsync). ``spill``: the staged file
        a put names, written out first, in the same worker-thread call.

        Without ``power_safe`` and with at most ``SPILL_ON_LOOP_BYTES`` to spill, both are
        done on the loop when neither would wait (``StagedFile.spill_now``,
        ``Journal.append_many_now``): a write or two into the page cache, cheaper than the
        hop to a worker thread that a burst of small changes (an untar) would pay per
        file."""

        def append() -> list[int]:
            if spill is not None:
                spill.spill()
            return self._journal.append_many(namespace.namespace_id, ops, power_safe=power_safe)

        try:
            seqs = None
            if not power_safe and (spill is None or spill.spill_now(SPILL_ON_LOOP_BYTES)):
                seqs = self._journal.append_many_now(namespace.namespace_id, ops)
            if seqs is None:
                seqs = await self._thread(append)
        except FormatError as exc:
            raise FsError(errno.EINVAL, str(exc)) from exc
        except (JournalError, OSError) as exc:
            raise failed(exc, "cannot journal", [type(op).__name__ for op in ops]) from exc
        namespace.ports.uploader.nudge()
        return seqs

    def _file_attrs(self, node: Node) -> Attrs:
        return Attrs(
            mode=node.mode, uid=node.uid, gid=node.gid, mtime_ns=node.mtime_ns, xattrs=node.xattrs,
            atime_ns=node.atime_ns,
        )  # fmt: skip

    def _new_node(
        self, parent: Node, name: bytes, kind: EntryKind, mode: int, owner: Owner | None = None
    ) -> Node:
        """A new entry of ``parent``. With ``--preserve-ownership`` it belongs to ``owner``
        (the creating process's uid and gid), and to the parent's group when the parent is
        set-gid (a new directory is then set-gid too), as on a local filesystem; otherwise
        to the mount's uid and gid, which it shows anyway."""
        now = now_ns()
        mode &= 0o7777
        uid, gid = (self._uid, self._gid) if owner is None or not self._preserve else owner
        if self._preserve and parent.mode & stat.S_ISGID:
            gid = parent.gid
            if kind is EntryKind.DIR:
                mode |= stat.S_ISGID
        return Node(
            kind=kind, name=name, parent=parent, namespace_id=parent.namespace_id,
            mode=mode, uid=uid, gid=gid, size=0, mtime_ns=now, ctime_ns=now, seen_mtime_ns=now,
            children=Listing() if kind is EntryKind.DIR else None, changed=True,
        )  # fmt: skip

    def _free_name(self, parent: Node, name: bytes) -> Listing:
        """The listing ``name`` is free in (under ``_lock``, see ``_listed``)."""
        check_name(name)
        if self._hidden(parent, name):  # ``.versions``
            raise FsError(errno.EEXIST)
        children = self._listed(parent)
        if parent.detached:  # removed while this request waited for the lock
            raise FsError(errno.ENOENT)
        if name in children:
            raise FsError(errno.EEXIST)
        return children

    def _journals_attrs(self, node: Node) -> bool:
        """Whether an attribute change needs its own setattr entry: not for the root (no
        entry stores it: the change stays in memory; a shared folder's root alike), a
        path the server does not know yet, or a file whose coming put carries the
        attributes."""
        if node is self._namespace_of(node).root or not node.remote or node.detached:
            return False
        return not (node.dirty and node.writers)

    def _touch(self, node: Node) -> None:
        node.mtime_ns = node.ctime_ns = now_ns()
        node.changed = True

    async def wait_invalidations(self) -> list[Invalidation]:
        """Wait for, and take, what the notifier must tell the kernel."""
        while not self._invalidations:
            await self._invalidations_ready.wait()
            self._invalidations_ready = trio.Event()
        return self.take_invalidations()

    def _queue_invalidation(
        self, node: Node, name: bytes | None = None, *, data: bool = False
    ) -> None:
        """Queue what the kernel may hold about ``node`` (or the name ``name`` in it), if
        the kernel knows its inode."""
        if not node.inode or self._inodes.get(node.inode) is not node:
            return
        self._invalidations.append(Invalidation(node.inode, name, data=data))

    def _flush_invalidations(self) -> None:
        if self._invalidations:
            self._invalidations_ready.set()

    async def lookup(self, parent: int, name: bytes) -> Attr:
        node = await self._child(self._node(parent), name)
        node.lookups += 1
        return self._attr(node)

    def forget(self, inode: int, nlookup: int) -> None:
        node = self._inodes.get(inode)
        if node is None or inode == ROOT_INODE:
            return
        node.lookups = max(0, node.lookups - nlookup)
        self._maybe_drop(node)
        if node.lookups or node.handles:
            return
        # The kernel no longer knows the number: out of the table until the next lookup
        # (a node keeps its number for life, and numbers are never reused).
        self._inodes.pop(inode, None)
        if node.children is not None and self._collapsible(node):
            self._collapse(node)

    def _collapsible(self, node: Node) -> bool:
        """Whether a materialized directory is exactly its committed tree, with nothing in
        it the kernel knows or has open: then its listing can go and be fetched again."""
        if node.changed or node.handles or node.tree_id is None or node.versions_root:
            return False
        for child in (node.children or {}).values():
            if child.lookups or child.handles or child.changed:
                return False
            if child.children is not None and not self._collapsible(child):
                return False
        return True

    def _collapse(self, node: Node) -> None:
        """Drop a collapsible directory's listing (memory stays bounded by what the kernel
        holds); its children's inode numbers are retired, never reused."""
        for child in (node.children or {}).values():
            if child.children is not None:
                self._collapse(child)
            if child.inode:
                self._inodes.pop(child.inode, None)
        node.children = None

    def _maybe_drop(self, node: Node) -> None:
        """A detached node: its content goes with its last handle, its inode with the
        kernel's last reference (the number is never reused)."""
        if node.handles or not node.detached:
            return
        self._drop_content(node)
        if not node.lookups and node.inode:
            self._inodes.pop(node.inode, None)

    def _drop_content(self, node: Node) -> None:
        if node.handles:
            return
        if node.reader is not None:
            node.reader.close()
            node.reader = None
        if node.stage is not None:
            name = node.stage.name
            node.stage.close()
            node.stage = None
            self._staging.remove(name)  # never journaled: nobody else needs it
        if node.staged is not None:
            self._staging.unpin(node.staged)
            node.staged = None

    async def getattr(self, inode: int) -> Attr:
        return self._attr(self._node(inode))

    def _delete_op(self, node: Node) -> Delete | BasedOnPut:
        """The delete of ``node``, based on what the mount last saw of it: the server's
        content, or a put still pending."""
        delete = Delete(self._path(node), base=node.base)
        return delete if node.base_seq is None else BasedOnPut(delete, node.base_seq)

    def _detach(self, node: Node) -> None:
        """Take ``node`` out of its directory; open handles keep working."""
        assert node.parent is not None and node.parent.children is not None
        del node.parent.children[node.name]
        node.parent.changed = True
        node.detached = True
        node.ctime_ns = now_ns()
        self._maybe_drop(node)

    def take_invalidations(self) -> list[Invalidation]:
        """What the notifier task should tell the kernel, oldest first."""
        taken, self._invalidations = self._invalidations, []
        return taken

    def inode_count(self) -> int:
        """How many inodes the table holds (the kernel may know them)."""
        return len(self._inodes)

    def iter_open_handles(self) -> Iterator[int]:
        return iter(list(self._files))
