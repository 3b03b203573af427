"""The headless drive: one namespace at its head, read and changed without a kernel.

``Drive`` is what the CLI's commands use where the mount would use the view: trees and
file content come through the mount's own ``Fetcher`` (verified against their ids, served
from the object cache when the caller passes one, batched, with sequential prefetch),
and changes go to the server as ``store.ops`` operations in batches (``apply``) within
the protocol's bounds, each batch resent under the same idempotency key when its reply was
lost, so it applies once. ``open_drive`` reads the head, starts the fetcher's background
task and stops it again when the block ends.

A path of the home may lead into a shared folder: a mount entry (``EntryKind.MOUNT``)
names the folder's namespace, and what lies below it is a path of that namespace, relative
to its root. ``resolve`` maps a home path to its ``Location`` (namespace, path inside it,
role) by walking the home tree; ``open_drives`` holds the home's ``Drive`` and opens the
``Drive`` of each shared folder a path leads into (``Drives.at``). Shared folders never
nest, so one mount entry is followed at most.

It holds no lock of the device home: a mount of the same home may run meanwhile (the CLI
passes the mount's cache opened read-only, or none). Trees used last stay in the
fetcher's memory cache (bounded: ``boxfs.fetcher.RECENT_TREE_BYTES``); file content is
handed over piece by piece (``READ_PIECE_BYTES``), never held whole.

Must not: print, parse arguments, import pyfuse3 or ``boxfs.cli``, or block the loop
(verification and the caller's sink run in worker threads through the ``limiter``). Who
calls it: the CLI's commands, inside their one ``trio.run``.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Final

import blake3
import trio

from boxfs.backoff import Backoff
from boxfs.errors import single_failure
from boxfs.fetcher import Fetcher
from boxfs.remote import Remote
from boxfs.threads import run_in_thread
from store import ops, protocol
from store.cache import ObjectCache
from store.errors import ConflictError, IntegrityError, NotFoundError, TransientError
from store.ids import ContentHash, NamespaceId, TreeId
from store.merkle import EMPTY_TREE_ID
from store.objects import EntryKind, FileEntry, Tree, decode_commit
from store.paths import DrivePath

READ_PIECE_BYTES: Final = 8 * 1024 * 1024
"""A file is read and handed to the sink this much at a time."""

# Sequential reads of whole files: prefetch further ahead than a mount does for the
# kernel's reads, in bigger batches on fewer connections (each batch is a request the
# loop and the server both pay for), and keep what is prefetched in memory: there may be
# no cache to hold it. Prefetch stays under half of that memory (the fetcher's rule).
_PREFETCH_CHUNKS: Final = 32
_RECENT_PLAINTEXT_BYTES: Final = 64 * 1024 * 1024
_BATCH_CHUNKS: Final = 32
_CONCURRENT_BATCHES: Final = 2

_APPLY_ATTEMPTS: Final = 3
_MAX_RETRY_WAIT_S: Final = 10.0
# Bounds of one ops batch besides the op count: its chunk references (the JSON body).
_MAX_REFS_PER_BATCH: Final = 200_000


def new_key() -> str:
    """A fresh idempotency key for one batch of ops (or one restore)."""
    return secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]


class Drive:
    """The user's home namespace as its head commit shows it: see the module docstring."""

    def __init__(
        self,
        remote: Remote,
        namespace_id: NamespaceId,
        root: TreeId,
        fetcher: Fetcher,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self.remote = remote
        self.namespace_id = namespace_id
        self.root = root
        self._fetcher = fetcher
        self._limiter = limiter

    # --- reading --------------------------------------------------------------------------

    async def load(self, ids: Sequence[TreeId]) -> dict[TreeId, Tree]:
        """Trees by id, verified; those not cached come in one request."""
        return await self._fetcher.trees(ids)

    async def tree(self, tree_id: TreeId) -> Tree:
        return await self._fetcher.tree(tree_id)

    async def lookup(self, path: DrivePath) -> FileEntry | None:
        """The entry at ``path``, or ``None`` if it (or a folder on the way) is missing."""
        tree = await self.tree(self.root)
        for name in path.components[:-1]:
            entry = tree.get(name)
            if entry is None or entry.kind is not EntryKind.DIR:
                return None
            assert entry.tree_id is not None
            tree = await self.tree(entry.tree_id)
        return tree.get(path.name)

    async def missing_parents(self, path: DrivePath) -> list[DrivePath]:
        """The folders above ``path`` that do not exist yet, outermost first;
        ``ConflictError`` if one of them is something else than a folder."""
        missing: list[DrivePath] = []
        for depth in range(1, len(path.components)):
            parent = DrivePath(path.components[:depth])
            entry = None if missing else await self.lookup(parent)
            if entry is None:
                missing.append(parent)
            elif entry.kind is not EntryKind.DIR:
                shown = bytes(parent).decode("utf-8", "backslashreplace")
                raise ConflictError(shown, "is not a folder on the drive")
        return missing

    async def subtree(self, tree_id: TreeId) -> dict[bytes, FileEntry]:
        """Every entry below a folder, by path relative to it; one request per level."""
        found: dict[bytes, FileEntry] = {}
        level: list[tuple[bytes, TreeId]] = [(b"", tree_id)]
        while level:
            trees = await self.load([tree_id for _, tree_id in level])
            next_level: list[tuple[bytes, TreeId]] = []
            for prefix, level_id in level:
                for entry in trees[level_id]:
                    path = prefix + b"/" + entry.name if prefix else entry.name
                    found[path] = entry
                    if entry.kind is EntryKind.DIR:
                        assert entry.tree_id is not None
                        next_level.append((path, entry.tree_id))
            level = next_level
        return found

    async def read(
        self,
        entry: FileEntry,
        sink: Callable[[bytes], object],
        progress: Callable[[int], None] = lambda _: None,
    ) -> None:
        """Hand ``entry``'s content to ``sink`` in order, piece by piece (called in a worker
        thread, one call at a time), every chunk verified against its id by the fetcher
        and the whole content against ``content_hash``; ``progress`` gets each piece's
        size. ``IntegrityError`` on any mismatch, raised before the last piece is handed
        over, so a caller that renames only on success never shows damaged content."""
        expected = entry.content_hash
        assert expected is not None
        hasher = blake3.blake3()

        def check(last: bool) -> None:
            if last and (actual := ContentHash(hasher.digest())) != expected:
                raise IntegrityError(expected.hex(), actual.hex(), "file")

        def take(piece: bytes, last: bool) -> None:
            hasher.update(piece)
            check(last)
            sink(piece)

        offset = 0
        while offset < entry.size:
            piece = await self._fetcher.read(entry, offset, READ_PIECE_BYTES)
            if not piece:
                raise IntegrityError(expected.hex(), f"{offset} of {entry.size} bytes", "file")
            offset += len(piece)
            await run_in_thread(self._limiter, take, piece, offset >= entry.size)
            progress(len(piece))
        if entry.size == 0:
            check(last=True)

    async def versions(self, path: DrivePath) -> list[protocol.FileVersion]:
        """Every version of ``path``, newest first, page by page."""
        versions: list[protocol.FileVersion] = []
        cursor: str | None = None
        while True:
            page = await self.remote.versions(
                self.namespace_id,
                protocol.VersionsRequest(path=path, cursor=cursor, limit=protocol.MAX_PAGE_SIZE),
            )
            versions.extend(page.versions)
            if page.next_cursor is None:
                return versions
            cursor = page.next_cursor

    # --- changing -------------------------------------------------------------------------

    async def apply(self, changes: Sequence[ops.Op]) -> list[protocol.OpResult]:
        """Apply ``changes`` in batches within the protocol's bounds, in order (folders
        before what they hold). A batch whose reply was lost is resent with the same
        idempotency key, so it applies once."""
        results: list[protocol.OpResult] = []
        for batch in _batches(changes):
            request = protocol.OpsBatch(
                idempotency_key=new_key(), ops=tuple(protocol.op_to_wire(op) for op in batch)
            )
            backoff = Backoff(1.0, _MAX_RETRY_WAIT_S)
            for attempt in range(1, _APPLY_ATTEMPTS + 1):
                try:
                    reply = await self.remote.apply_ops(self.namespace_id, request)
                    break
                except TransientError as exc:
                    if attempt == _APPLY_ATTEMPTS:
                        raise
                    wait_s = backoff.next_delay_s()
                    if isinstance(exc, protocol.RateLimitedError) and exc.retry_after_s:
                        wait_s = min(exc.retry_after_s, _MAX_RETRY_WAIT_S)
                    await trio.sleep(wait_s)
            results.extend(reply.results)
        return results


def _batches(changes: Sequence[ops.Op]) -> Iterator[list[ops.Op]]:
    batch: list[ops.Op] = []
    refs = 0
    for op in changes:
        op_refs = len(op.entry.chunks) if isinstance(op, ops.Put) else 0
        if batch and (
            len(batch) >= protocol.MAX_OPS_PER_BATCH or refs + op_refs > _MAX_REFS_PER_BATCH
        ):
            yield batch
            batch, refs = [], 0
        batch.append(op)
        refs += op_refs
    if batch:
        yield batch


@asynccontextmanager
async def open_drive(
    remote: Remote, limiter: trio.CapacityLimiter, cache: ObjectCache | None = None
) -> AsyncIterator[Drive]:
    """The home namespace at its head, with a fetcher running until the block ends.
    ``cache``: an object cache to read from (a mount's, opened read-only) or write to."""
    async with open_namespace(remote, limiter, await remote.home(), cache) as drive:
        yield drive


@asynccontextmanager
async def open_namespace(
    remote: Remote,
    limiter: trio.CapacityLimiter,
    info: protocol.NamespaceInfo,
    cache: ObjectCache | None = None,
) -> AsyncIterator[Drive]:
    """The namespace ``info`` names (the home, or a shared folder) at its head, with a
    fetcher running until the block ends."""
    root = EMPTY_TREE_ID
    if info.head is not None:
        data = (await remote.commits(info.namespace_id, [info.head])).get(info.head)
        if data is None:
            raise IntegrityError(info.head.hex(), "nothing (the server sent no commit)", "commit")
        commit = await run_in_thread(limiter, decode_commit, data, info.head)
        root = commit.root
    fetcher = Fetcher(
        remote, info.namespace_id, cache, limiter,
        prefetch_chunks=_PREFETCH_CHUNKS, recent_plaintext_bytes=_RECENT_PLAINTEXT_BYTES,
        max_batch_chunks=_BATCH_CHUNKS, max_concurrent_batches=_CONCURRENT_BATCHES,
    )  # fmt: skip
    with single_failure():  # what the caller's block raises leaves as itself
        async with trio.open_nursery() as nursery:
            await nursery.start(fetcher.run)
            try:
                yield Drive(remote, info.namespace_id, root, fetcher, limiter)
            finally:
                nursery.cancel_scope.cancel()


# --- shared folders: where a home path leads -----------------------------------------------

HOME_ROLE: Final[protocol.Role] = "owner"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a path of the home leads: the namespace it is in, the path inside it (``None``:
    that namespace's root) and the caller's role there. For a path in a shared folder,
    ``mount_path`` is the home path of its mount entry and ``mount`` that entry; both are
    ``None`` for a path of the home itself."""

    namespace_id: NamespaceId
    path: DrivePath | None
    role: protocol.Role
    mount_path: DrivePath | None = None
    mount: FileEntry | None = None

    @property
    def shared(self) -> bool:
        return self.mount_path is not None

    @property
    def writable(self) -> bool:
        return self.role != "viewer"

    def outer(self, inner: DrivePath | None) -> DrivePath | None:
        """A path of this location's namespace as a path of the home (``None``: its root)."""
        if self.mount_path is None:
            return inner
        if inner is None:
            return self.mount_path
        return DrivePath((*self.mount_path.components, *inner.components))

    def root_entry(self, root: TreeId) -> FileEntry:
        """The shared folder's root as a folder entry: the mount entry's name and attributes,
        the namespace's ``root`` tree (for the commands that take a folder entry)."""
        assert self.mount is not None
        return dataclasses.replace(self.mount, kind=EntryKind.DIR, tree_id=root, namespace_id=None)


async def resolve(
    load: Callable[[TreeId], Awaitable[Tree]],
    home_id: NamespaceId,
    root: TreeId,
    path: DrivePath | None,
    roles: Mapping[NamespaceId, protocol.Role],
    *,
    follow_last: bool = True,
) -> Location:
    """Where ``path`` of the home (root ``root``, trees from ``load``) leads. A mount entry
    on the way is followed into its namespace: the rest of the path is relative to that
    namespace's root. With ``follow_last`` false, a path that names a mount entry itself
    stays in the home (moving or removing the entry, its history). A path that ends at
    something else than a folder, or at nothing, stays where it is: the caller's lookup
    finds that out. ``roles``: the caller's role in each namespace they belong to
    (``GET /v1/namespaces``); a mount entry of one they no longer belong to is
    ``NotFoundError``."""
    if path is None:
        return Location(home_id, None, HOME_ROLE)
    tree = await load(root)
    components = path.components
    for depth, name in enumerate(components):
        entry = tree.get(name)
        last = depth == len(components) - 1
        if entry is None:
            break
        if entry.kind is EntryKind.MOUNT:
            if last and not follow_last:
                break
            assert entry.namespace_id is not None
            mount_path = DrivePath(components[: depth + 1])
            role = roles.get(entry.namespace_id)
            if role is None:
                shown = bytes(mount_path).decode("utf-8", "backslashreplace")
                raise NotFoundError("shared folder", shown)
            rest = components[depth + 1 :]
            return Location(
                entry.namespace_id, DrivePath(rest) if rest else None, role, mount_path, entry
            )
        if entry.kind is not EntryKind.DIR or last:
            break
        assert entry.tree_id is not None
        tree = await load(entry.tree_id)
    return Location(home_id, path, HOME_ROLE)


class Drives:
    """The home's ``Drive`` and those of the shared folders paths lead into, each opened
    once, the first time a path leads there, and closed when ``open_drives``'s block ends."""

    def __init__(
        self,
        remote: Remote,
        limiter: trio.CapacityLimiter,
        cache: ObjectCache | None,
        home: Drive,
        *,
        namespaces: Sequence[protocol.NamespaceInfo],
        stack: AsyncExitStack,
    ) -> None:
        self.remote = remote
        self.home = home
        self.namespaces = {info.namespace_id: info for info in namespaces}
        self._limiter = limiter
        self._cache = cache
        self._stack = stack
        self._opened: dict[NamespaceId, Drive] = {home.namespace_id: home}

    async def locate(self, path: DrivePath | None, *, follow_last: bool = True) -> Location:
        roles = {ns: info.role for ns, info in self.namespaces.items()}
        return await resolve(
            self.home.tree, self.home.namespace_id, self.home.root, path, roles,
            follow_last=follow_last,
        )  # fmt: skip

    async def at(
        self, path: DrivePath | None, *, follow_last: bool = True
    ) -> tuple[Drive, Location]:
        """The drive ``path`` lies in, and where in it (``resolve``)."""
        location = await self.locate(path, follow_last=follow_last)
        return await self.drive(location.namespace_id), location

    async def drive(self, namespace_id: NamespaceId) -> Drive:
        drive = self._opened.get(namespace_id)
        if drive is None:
            info = self.namespaces[namespace_id]
            drive = await self._stack.enter_async_context(
                open_namespace(self.remote, self._limiter, info, self._cache)
            )
            self._opened[namespace_id] = drive
        return drive


@asynccontextmanager
async def open_drives(
    remote: Remote, limiter: trio.CapacityLimiter, cache: ObjectCache | None = None
) -> AsyncIterator[Drives]:
    """The home at its head, and the shared folders in it as paths lead there."""
    namespaces = await remote.namespaces()
    home = next(info for info in namespaces if info.home)
    async with AsyncExitStack() as stack:
        drive = await stack.enter_async_context(open_namespace(remote, limiter, home, cache))
        yield Drives(remote, limiter, cache, drive, namespaces=namespaces, stack=stack)
