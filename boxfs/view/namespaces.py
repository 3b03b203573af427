"""The namespaces a view shows: the home namespace at ``/``, and shared folders wherever
the home holds their mount entries.

``NamespacePorts`` is what the view is built with for one namespace: its id, its history
and content on the server, and the uploader that drains its journal entries;
``OpenNamespace`` is how the view gets the ports of a shared folder when it first meets
its mount entry (the mount starts that namespace's fetcher, uploader and syncer then).
``Namespace`` is the view's state of one namespace: its root node, the head it shows and
that head's sequence, the floor below which no head is shown, the names the last sync
left to local changes, and whether its head is loaded yet (a shared
folder's is loaded when it is first listed). Every ``Node`` names the namespace it
belongs to (``Node.namespace_id``); the view keeps one ``Namespace`` per id, and each
journal append, fetch, path, head and replay goes through the node's own.

Pure data: no I/O and no lock. The view's layers read and change it on the mount's trio
loop (``docs/concurrency.md``: the model lock orders the changes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from boxfs.view.nodes import Node
from boxfs.view.ports import Content, Editing, History, UploadSignal
from store.ids import CommitId, NamespaceId


@dataclass(frozen=True, slots=True)
class NamespacePorts:
    """The parts one namespace of a view is wired to: its ``remote`` history (head,
    commits, log), its ``fetcher`` (its trees and file content, verified), the
    ``uploader`` its journal entries nudge, and for a shared folder who is ``editing``.
    One journal serves all namespaces, keyed by ``namespace_id``."""

    namespace_id: NamespaceId
    remote: History
    fetcher: Content
    uploader: UploadSignal
    editing: Editing | None = None  # who is editing (shared folders)


# The ports of a shared folder's namespace, opened on first use; ``None``: not shown.
OpenNamespace = Callable[[NamespaceId], Awaitable[NamespacePorts | None]]


@dataclass(eq=False, slots=True)
class Namespace:
    """One namespace as the view shows it. ``root`` is the home root (``/``) for the home
    namespace, else its mount point: a directory node standing for the home's mount entry
    (named and placed as the entry is), where its paths start afresh (``/Team/a`` is ``a``
    in Team). While the home holds no mount entry of it where the view has looked (it was
    removed, or moved to a folder not listed yet), its root is detached: nothing below it
    can change, and it is placed again when a listing meets its entry."""

    ports: NamespacePorts
    root: Node
    head: CommitId | None = None  # the commit shown (None: no commit yet)
    head_sequence: int = -1  # the sequence of ``head``
    floor_sequence: int = -1  # no head older than this is shown (``raise_floor``)
    deferred: set[tuple[bytes, ...]] = field(default_factory=set)  # left to local changes
    started_offline: bool = False  # started from the head the last mount showed
    loaded: bool = False  # its head is in the view (the home's by ``start``)
    loading: trio.Lock = field(default_factory=trio.Lock)
    versions: Node | None = None  # its ``.versions`` folder, at its root
    versions_stale: bool = False  # a head moved since ``.versions`` was listed

    @property
    def namespace_id(self) -> NamespaceId:
        return self.ports.namespace_id
