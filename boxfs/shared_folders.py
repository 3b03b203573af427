"""The shared folders of a mount: each one's fetcher, uploader, syncer and who-is-editing
heartbeat, opened on need.

A shared folder is a namespace of its own (DESIGN.md §2), shown where the home holds its
mount entry. ``SharedFolders.open`` is the view's ``OpenNamespace``: the first time a
listing meets a mount entry (or the mount starts with journal entries of that namespace
still to send), it builds that namespace's ``Fetcher``, ``Uploader``, ``Syncer`` and
``Presence`` on the mount's one ``Remote``, object cache, journal and staging directory,
starts them, and asks the server, in the background, for the caller's role in it (a
viewer's writes then fail at once; the role also comes with every event of the folder, and
the server refuses a viewer's writes whatever the mount knows). ``open`` itself never waits
for the network: the view may call it under its lock. Folders stay open until the
mount ends: one the user lost is refused by the server and simply shows nothing.

Two nurseries host the jobs, as the home's are hosted: ``run`` the fetchers and uploaders
(from the mount's start to its end), ``follow`` the syncers and presence heartbeats
(inside the mount's following scope, which ends before the FUSE session closes). At the
end ``drain`` waits, bounded, for every folder's uploads and ``show_latest`` gives each
syncer its last round.

Who calls it: ``boxfs.mount``, on the mount's trio loop; ``open`` from the view's
requests and syncs. Must not: hold filesystem logic (that is ``boxfs.view``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from boxfs.fetcher import Fetcher
from boxfs.journal import Journal
from boxfs.presence import Presence
from boxfs.remote import Remote
from boxfs.staging import Staging
from boxfs.uploader import Uploader
from boxfs.view import FileSystemModel, NamespacePorts
from boxfs.view.syncer import Syncer
from store import protocol
from store.cache import ObjectCache
from store.errors import StoreError
from store.ids import NamespaceId

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Folder:
    ports: NamespacePorts
    uploader: Uploader
    syncer: Syncer
    presence: Presence


class SharedFolders:
    def __init__(
        self,
        *,
        home_id: NamespaceId,
        remote: Remote,
        cache: ObjectCache,
        journal: Journal,
        staging: Staging,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self._home_id = home_id
        self._remote = remote
        self._cache = cache
        self._journal = journal
        self._staging = staging
        self._limiter = limiter
        self._model: FileSystemModel | None = None
        self._folders: dict[NamespaceId, _Folder] = {}
        self._lock = trio.Lock()
        self._jobs: trio.Nursery | None = None
        self._following: trio.Nursery | None = None
        self._stopped = False

    def bind(self, model: FileSystemModel) -> None:
        """The model the syncers follow (built with ``open_namespace=self.open``)."""
        self._model = model

    @property
    def namespaces(self) -> list[NamespaceId]:
        return list(self._folders)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the folders' fetchers and uploaders until cancelled."""
        async with trio.open_nursery() as nursery:
            self._jobs = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._jobs = None
                self._stopped = True

    async def follow(self) -> None:
        """Host the folders' syncers until cancelled (those opened before start now)."""
        async with trio.open_nursery() as nursery:
            self._following = nursery
            for folder in self._folders.values():
                nursery.start_soon(folder.syncer.run)
                nursery.start_soon(folder.presence.run)
            try:
                await trio.sleep_forever()
            finally:
                self._following = None

    async def open(self, namespace_id: NamespaceId) -> NamespacePorts | None:
        """The ports of a shared folder, its jobs started the first time (``None`` once
        the mount is stopping)."""
        async with self._lock:
            folder = self._folders.get(namespace_id)
            if folder is not None:
                return folder.ports
            jobs, model = self._jobs, self._model
            if jobs is None or model is None or self._stopped:
                return None
            fetcher = Fetcher(self._remote, namespace_id, self._cache, self._limiter)
            await jobs.start(fetcher.run)
            uploader = Uploader(
                self._journal, self._staging, self._remote, namespace_id, self._limiter
            )
            jobs.start_soon(uploader.run)
            syncer = Syncer(model, self._remote, namespace_id, uploads=uploader.answers)
            presence = Presence(self._remote, namespace_id, model.writing_paths)
            ports = NamespacePorts(
                namespace_id=namespace_id, remote=self._remote, fetcher=fetcher,
                uploader=uploader, editing=presence,
            )  # fmt: skip
            self._folders[namespace_id] = _Folder(ports, uploader, syncer, presence)
            if self._following is not None:
                self._following.start_soon(syncer.run)
                self._following.start_soon(presence.run)
            # In the background: the view may open a folder under its lock, which never
            # waits for the network (the role also comes with the folder's first event).
            jobs.start_soon(self._learn_role, model, namespace_id)
        _log.info("opened shared folder %s", namespace_id)
        return ports

    async def _learn_role(self, model: FileSystemModel, namespace_id: NamespaceId) -> None:
        try:
            listed = await self._remote.namespaces()
        except (protocol.ProtocolError, StoreError) as exc:
            _log.info(
                "the role in %s is not known yet (the event stream says): %s", namespace_id, exc
            )
            return
        for info in listed:
            if info.namespace_id == namespace_id:
                model.set_role(namespace_id, info.role)

    async def open_pending(self) -> None:
        """Open every shared folder the journal holds entries of (an earlier mount's
        changes), so they upload whether or not the folder is listed."""
        pending = await trio.to_thread.run_sync(self._journal.namespaces)
        for namespace_id in pending:
            if namespace_id != self._home_id:
                await self.open(namespace_id)

    async def drain(self, timeout_s: float) -> int:
        """Wait (bounded) for every folder's uploads; the operations left journaled."""
        with trio.move_on_after(timeout_s):
            for folder in list(self._folders.values()):
                await folder.uploader.wait_idle()
        left = 0
        for namespace_id in self._folders:
            left += await trio.to_thread.run_sync(self._journal.count, namespace_id)
        return left

    async def show_latest(self, timeout_s: float) -> None:
        for folder in list(self._folders.values()):
            await folder.syncer.show_latest(timeout_s)
