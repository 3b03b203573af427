"""The filesystem model: namespaces as one POSIX tree of inodes, kernel-free.

``FileSystemModel`` is the view the mount shows: the home namespace's head tree at ``/``
and each shared folder (a namespace of its own) where the home holds its mount entry
(``/Team``, or deeper), each fetched lazily directory by directory through its own
``Fetcher``, plus an in-memory overlay of local changes the server has not confirmed (new,
changed, moved and removed entries, open files and their staged content), the inode
table, directory and file handles, and each namespace's read-only ``.versions`` tree of
retained commits.
It is built in layers, each a module of this package and a class on top of the one below:

- ``namespaces``: the state of each namespace shown (root, head, held-back names) and
  the ports it is wired to;
- ``base.ViewBase``: the inode table, listings, mount points, the model lock, the journal
  append;
- ``content.FileContent``: open files, copy-on-write staging, a file's put at close/fsync;
- ``following.FollowingServer``: a new head from the server applied in place;
- ``replay.JournalReplay``: the start (the head, and the journal replayed onto it);
- ``posix.NamespaceRules``: the POSIX namespace operations;

and above the model, ``syncer.Syncer``, the task that follows the server's event stream
and hands each new head to ``following``.

It is built from what ``ports`` names (content by id, the server's history, the journal,
the uploader's nudge), one ``NamespacePorts`` per namespace and one journal for all, so
the mount wires in the real parts and a test anything alike.

Several namespaces: every node belongs to one (``Node.namespace_id``), and a change is
journaled for the node's namespace with the path inside it (``/Team/a`` is ``a`` in Team),
its content fetched through that namespace's fetcher; ``apply_head``, ``recheck`` and
``raise_floor`` act on the namespace they are given. A shared folder's ports come from
``open_namespace`` when a home listing first meets its mount entry, and its head is loaded
(and its journal entries replayed) when it is first listed. The mount point is the home's:
it moves within the home like a folder (a home move of the mount entry), but rmdir, unlink
and replacing it answer EBUSY; across namespaces rename(2) and link(2) answer EXDEV
(``mv`` copies and removes). A viewer's writes below it answer EACCES and journal nothing.
A new home head that adds, moves or removes a mount entry shows, moves or takes away the
folder. Each namespace has its own read-only ``.versions`` at its root (``/.versions`` the
home's, ``/Team/.versions`` the shared folder's), found by name and not listed.

Every change is applied to the overlay at once and journaled (``boxfs.journal``) before
the call returns, then the uploader is nudged: a burst of metadata changes never waits
for the server. ``fsync`` journals the file's content and makes it durable (it survives a
crash or power cut and will be uploaded); ``flush`` (every close(2)) journals it without
the fsync: once close(2) has returned, the content survives the mount being killed.

Must not: import pyfuse3 (``boxfs.fuse_ops`` translates ``FsError`` to ``FUSEError``),
talk to the server other than through the ``Fetcher`` (trees, chunks) and ``Remote.head``,
``commits`` and ``log`` (the start and ``.versions``), call SQLite, staged-file I/O or
anything blocking on the loop, or hold anything proportional to a file's size.

Who calls it: the FUSE adapter's request handlers, as trio tasks on the mount's one loop;
the syncer of each namespace (``apply_head``, ``recheck``) and the notifier
(``wait_invalidations``). All state lives on that loop and is touched only between awaits
(``docs/concurrency.md``).

Known limits: a file written here keeps its staged file pinned while its node lives (until
a sync from another device replaces the content); a truncate of a closed file is journaled
at once as a put (the journal never merges entries); new entries take the mount's uid/gid
unless it preserves ownership; reads never move a stored access time; ``docs/posix.md``;
hard links raise ``FsError(EPERM)`` (EXDEV across namespaces); a chmod or utime of a shared
folder's root stays in memory only (its mount entry is the server's to write).
"""

from __future__ import annotations

from boxfs.view.posix import NamespaceRules


class FileSystemModel(NamespaceRules):
    """The view of the home namespace and those mounted in it: see the module docstring."""
