"""History: the versions of one path, and restoring a path as it was at a commit.

Owns what history means to a user. ``list_versions`` walks the retained commits of a
namespace newest first and reports the commits where the path's state changed: it
appeared, disappeared, changed kind, or changed content (a file's content hash, a
directory's tree, a symlink's target); attribute-only changes are not versions. Paged with
a cursor (the sequence of the last commit the page looked at), and each page looks at no
more than ``MAX_SCAN_COMMITS`` commits, so a page may hold fewer versions than asked while
``next_cursor`` is set. ``restore`` brings a file or a whole folder back as it was at a
retained commit, as a new commit on top of the head through the commit engine
(``server.commits.run_commit``): whatever is at the path now is replaced (it stays in
history), missing parent folders are recreated from that commit, and history is never
rewritten.

It must not write anything except through the commit engine. Called by the handlers of
``server.routes.history``; the blocking functions run in worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from server.commits import (
    DbTrees,
    Plan,
    PlanContext,
    StoredCommit,
    rejected,
    request_digest,
    retained_commit,
    retained_commits,
    run_commit,
)
from server.db import Database
from server.namespaces import referenced_objects, require_role
from server.paging import parse_cursor
from server.sessions import Caller
from server.state import ServerState
from store import protocol
from store.errors import ConflictError, NotFoundError
from store.ids import ChunkId, CommitId, ContentHash, NamespaceId, TreeId
from store.merkle import EMPTY_TREE_ID, apply_edits, lookup, walk
from store.objects import EntryKind, FileEntry
from store.ops import Attrs, Delete, Mkdir, Op, Put

# Commits one versions page looks at, at most (each costs a lookup of the path).
MAX_SCAN_COMMITS: Final = 2000

_State = tuple[EntryKind, ContentHash | None, TreeId | None, bytes] | None


def _state(entry: FileEntry | None) -> _State:
    """What makes a new version: existence, kind and content (not attributes)."""
    if entry is None:
        return None
    return (entry.kind, entry.content_hash, entry.tree_id, entry.target)


def _path_states(
    commits: Iterator[StoredCommit], trees: DbTrees, path: bytes
) -> Iterator[tuple[StoredCommit, FileEntry | None, bool]]:
    """``(commit, entry at path, is a new version)`` newest first: a commit is a version
    when the path's state differs from the next older retained commit's (or, for the
    oldest one, when the path exists there)."""
    newer: tuple[StoredCommit, FileEntry | None] | None = None
    for stored in commits:
        entry = lookup(trees, stored.commit.root, path)
        if newer is not None:
            yield newer[0], newer[1], _state(newer[1]) != _state(entry)
        newer = (stored, entry)
    if newer is not None:
        yield newer[0], newer[1], newer[1] is not None


def list_versions(
    database: Database,
    user_id: int,
    namespace_id: NamespaceId,
    request: protocol.VersionsRequest,
) -> protocol.VersionsPage:
    """One page of the versions of ``request.path``, newest first. Needs viewer."""
    before = (
        None if request.cursor is None else parse_cursor(request.cursor, "a versions page cursor")
    )
    versions: list[protocol.FileVersion] = []
    next_cursor: str | None = None
    with database.read() as connection:
        require_role(connection, namespace_id, user_id, "viewer")
        commits = retained_commits(connection, namespace_id, before_sequence=before)
        states = _path_states(commits, DbTrees(connection), bytes(request.path))
        for scanned, (stored, entry, changed) in enumerate(states, start=1):
            if changed:
                commit = stored.commit
                versions.append(
                    protocol.FileVersion(
                        commit_id=stored.commit_id,
                        time_ns=commit.time_ns,
                        author=commit.author,
                        device=commit.device,
                        entry=None if entry is None else protocol.entry_to_model(entry),
                    )
                )
            if len(versions) == request.limit or scanned >= MAX_SCAN_COMMITS:
                if next(states, None) is not None:
                    next_cursor = str(stored.sequence)
                break
    return protocol.VersionsPage(
        path=request.path, versions=tuple(versions), next_cursor=next_cursor
    )


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def _referenced(plan: Plan, trees: DbTrees, entry: FileEntry) -> None:
    """Record the existing trees and chunks a restored entry places anew."""
    if entry.kind is EntryKind.FILE:
        plan.referenced_chunks.update(ref.chunk_id for ref in entry.chunks)
        return
    if entry.kind is not EntryKind.DIR:
        return
    assert entry.tree_id is not None
    if entry.tree_id != EMPTY_TREE_ID:
        plan.referenced_trees.add(entry.tree_id)
    chunks: set[ChunkId] = set()
    for _path, below in walk(trees, entry.tree_id):
        if below.kind is EntryKind.DIR and below.tree_id not in (None, EMPTY_TREE_ID):
            assert below.tree_id is not None
            plan.referenced_trees.add(below.tree_id)
        chunks.update(ref.chunk_id for ref in below.chunks)
    plan.referenced_chunks.update(chunks)


def plan_restore(context: PlanContext, path: protocol.DrivePath, commit_id: CommitId) -> Plan:
    """The change that puts ``path`` back as it was at ``commit_id``: ``NotFoundError`` if
    that commit is not a retained commit of this namespace or the path did not exist
    there; a ``rejected`` result if a parent at the head is not a directory."""
    source = retained_commit(context.connection, context.namespace_id, commit_id)
    if source is None:
        raise NotFoundError("commit", commit_id.hex())
    trees, old_root, head_root = context.trees, source.commit.root, context.head.root
    old_entry = lookup(trees, old_root, bytes(path))
    if old_entry is None:
        raise NotFoundError("path", f"{_show(bytes(path))} at commit {commit_id.hex()}")
    unchanged = Plan(
        root=head_root,
        new_trees={},
        results=[protocol.OpResult(status="applied", path=path)],
        summary="",
    )
    edits: list[Op] = []
    parent_missing = False
    for depth in range(1, len(path.components)):
        prefix = b"/".join(path.components[:depth])
        here = None if parent_missing else lookup(trees, head_root, prefix)
        if here is None:  # gone at the head: recreate it, empty, with its old attributes
            parent_missing = True
            old_parent = lookup(trees, old_root, prefix)
            assert old_parent is not None and old_parent.kind is EntryKind.DIR
            edits.append(Mkdir(protocol.DrivePath(path.components[:depth]), Attrs.of(old_parent)))
        elif here.kind is not EntryKind.DIR:
            conflict = ConflictError(_show(prefix), "is not a directory at the head")
            unchanged.results = [rejected(path, conflict)]
            return unchanged
    current = None if parent_missing else lookup(trees, head_root, bytes(path))
    if current == old_entry:
        return unchanged
    if current is not None and current.kind is EntryKind.DIR:
        edits.append(Delete(path))  # a put never replaces a directory
    edits.append(Put(path, old_entry))
    result = apply_edits(trees, head_root, edits)
    plan = Plan(
        root=result.root,
        new_trees=result.new_trees,
        results=[protocol.OpResult(status="applied", path=path)],
        summary=f"restore {_show(bytes(path))[:200]} from {commit_id.hex()[:12]}",
    )
    _referenced(plan, trees, old_entry)
    connection, namespace_id = context.connection, context.namespace_id
    chunks = {bytes(chunk_id) for chunk_id in plan.referenced_chunks}
    tree_ids = {bytes(tree_id) for tree_id in plan.referenced_trees}
    if referenced_objects(connection, namespace_id, chunks, "c") != chunks or (
        referenced_objects(connection, namespace_id, tree_ids, "t") != tree_ids
    ):  # retention dropped that commit meanwhile and GC took its objects
        raise NotFoundError("commit", commit_id.hex())
    return plan


def restore(
    state: ServerState,
    caller: Caller,
    namespace_id: NamespaceId,
    request: protocol.RestoreRequest,
) -> protocol.OpsBatchResponse:
    """Restore ``request.path`` as a new commit (one result). Needs editor; blocking."""

    def audit_records(plan: Plan, new_commit: CommitId) -> list[tuple[str, dict[str, str]]]:
        detail = {
            "path": _show(bytes(request.path)),
            "from": request.commit_id.hex(),
            "commit": new_commit.hex(),
        }
        return [("restore", detail)]

    return run_commit(
        state,
        caller,
        namespace_id,
        idempotency_key=request.idempotency_key,
        digest=request_digest(protocol.RESTORE, request),
        planner=lambda context: plan_restore(context, request.path, request.commit_id),
        audit_records=audit_records,
    )
