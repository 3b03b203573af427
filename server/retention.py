"""Retention and garbage collection: which commits history keeps, and what storage it frees.

Owns two jobs, run together by ``run_retention`` (and periodically by
``retention_loop``, which the app's lifespan starts):

- ``thin`` marks the commits a ``RetentionPolicy`` drops as ``retained = False`` (default:
  every commit younger than 24 h, the newest of each hour for 30 days, the newest of each
  day for a year; the head always). A thinned commit keeps its row (the log's parent chain
  stays whole) but is no longer listed, restorable, or a reason to keep anything.
- ``collect_garbage`` rebuilds ``namespace_objects`` from what the retained commits of each
  namespace reach (walking each distinct tree once), keeping rows younger than the grace
  period; deletes trees that no row names (except the empty tree); deletes the blobs and
  ``chunks`` rows of chunks that no row names and that are older than the grace period;
  and forgets idempotent replies older than ``IDEMPOTENCY_TTL_S``.

Why it is safe beside uploads and commits in flight (each step re-checks its condition
inside its own write transaction, and SQLite serializes writers):

- An upload writes the blob, then, in one write transaction, the ``chunks`` row and the
  ``namespace_objects`` row with ``added_ns = now``; a commit, in its transaction, inserts
  or refreshes (``added_ns = now``) the rows of every tree it adds and every existing chunk
  or tree it places anew (a put's chunks, a restored folder). So anything the snapshot
  GC walked did not see as reachable, but that a commit or upload needs, has a young row,
  and a young row is never deleted (the delete re-checks ``added_ns`` in its WHERE clause).
- A chunk is deleted only when, inside the deleting transaction, no row of any namespace
  names it and its ``chunks.created_ns`` is older than the grace period; its blob is
  deleted inside that same transaction. An upload's recording transaction therefore runs
  wholly before it (then the young row keeps the chunk) or wholly after it (then it sees
  the ``chunks`` row gone and writes the blob again: ``server.content.record_chunks``).
  A commit that placed a chunk whose row GC removed first finds the row missing when it
  refreshes it and plans again (the op is then rejected ``not_found``).
- The one window left: a crash after a blob is deleted but before that transaction
  commits leaves a ``chunks`` row without a blob and without references; the next run
  deletes the row. An upload of that very content in between, which trusts the row and
  skips writing the blob, would reference a missing blob.

Not collected: blobs with no ``chunks`` row at all (a crash between an upload's blob write
and its rows), since without a timestamp they cannot be told from an upload in flight.

Blocking functions run in a worker thread (``ServerState.run``); ``retention_loop`` runs on
the event loop. Nothing else deletes commits' trees or chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import anyio
import sqlalchemy as sa

from server import db as tables
from server.commits import DbTrees, retained_commits
from server.db import Database
from server.settings import RetentionPolicy
from server.state import ServerState, now_ns
from store.errors import StoreError
from store.ids import ChunkId, NamespaceId, TreeId
from store.merkle import EMPTY_TREE_ID
from store.objects import EntryKind

_log = logging.getLogger(__name__)

_NS_PER_S: Final = 10**9
_HOUR_NS: Final = 3600 * _NS_PER_S
_DAY_NS: Final = 24 * _HOUR_NS
# Idempotent replies are kept this long: a client that resends a batch later than this
# (after a month offline with its reply lost) may see it applied twice.
IDEMPOTENCY_TTL_S: Final = 30 * 24 * 3600


# --- thinning ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitTime:
    commit_id: bytes
    sequence: int
    time_ns: int


def commits_to_keep(
    commits: Iterable[CommitTime], head: bytes | None, policy: RetentionPolicy, now_ns: int
) -> set[bytes]:
    """The ids ``policy`` keeps among ``commits``: every one younger than ``keep_all_s``
    (or from the future), the newest of each UTC hour up to ``keep_hourly_s``, the newest
    of each UTC day up to ``keep_daily_s``, and the head."""
    keep: set[bytes] = {head} if head is not None else set()
    hourly: dict[int, CommitTime] = {}
    daily: dict[int, CommitTime] = {}
    for commit in commits:
        age_ns = now_ns - commit.time_ns
        if age_ns < policy.keep_all_s * _NS_PER_S:
            keep.add(commit.commit_id)
            continue
        if age_ns < policy.keep_hourly_s * _NS_PER_S:
            buckets, bucket = hourly, commit.time_ns // _HOUR_NS
        elif age_ns < policy.keep_daily_s * _NS_PER_S:
            buckets, bucket = daily, commit.time_ns // _DAY_NS
        else:
            continue
        best = buckets.get(bucket)
        if best is None or (commit.time_ns, commit.sequence) > (best.time_ns, best.sequence):
            buckets[bucket] = commit
    keep.update(commit.commit_id for commit in hourly.values())
    keep.update(commit.commit_id for commit in daily.values())
    return keep


def thin(
    database: Database, namespace_id: NamespaceId, policy: RetentionPolicy, now_ns: int
) -> int:
    """Mark the commits ``policy`` drops as not retained; how many were marked."""
    table = tables.commits
    with database.write() as connection:
        head = connection.execute(
            sa.select(tables.namespaces.c.head).where(tables.namespaces.c.id == bytes(namespace_id))
        ).scalar_one_or_none()
        rows = connection.execute(
            sa.select(table.c.id, table.c.sequence, table.c.time_ns).where(
                table.c.namespace_id == bytes(namespace_id), table.c.retained.is_(True)
            )
        ).all()
        commits = [CommitTime(bytes(row.id), row.sequence, row.time_ns) for row in rows]
        keep = commits_to_keep(commits, bytes(head) if head is not None else None, policy, now_ns)
        dropped = [commit.commit_id for commit in commits if commit.commit_id not in keep]
        for batch in tables.in_batches(dropped):
            connection.execute(table.update().where(table.c.id.in_(batch)).values(retained=False))
    return len(dropped)


# --- garbage collection ----------------------------------------------------------------


@dataclass(slots=True)
class GcReport:
    namespaces: int = 0
    namespaces_skipped: int = 0  # a retained tree was unreadable: nothing removed there
    rows_removed: int = 0
    rows_added: int = 0
    trees_removed: int = 0
    chunks_removed: int = 0
    bytes_freed: int = 0
    replies_forgotten: int = 0
    orphan_blobs_removed: int = 0  # blobs a crash left without a row


def _reachable(
    connection: sa.Connection, namespace_id: NamespaceId
) -> tuple[set[bytes], set[bytes]]:
    """(tree ids, chunk ids) the namespace's retained commits reach; each tree walked once."""
    trees = DbTrees(connection, cache_trees=0)
    tree_ids: set[bytes] = set()
    chunk_ids: set[bytes] = set()
    for stored in retained_commits(connection, namespace_id):
        stack: list[TreeId] = [stored.commit.root]
        while stack:
            tree_id = stack.pop()
            if bytes(tree_id) in tree_ids:
                continue
            tree_ids.add(bytes(tree_id))
            for entry in trees.load_tree(tree_id):
                if entry.kind is EntryKind.DIR and entry.tree_id is not None:
                    stack.append(entry.tree_id)
                chunk_ids.update(bytes(ref.chunk_id) for ref in entry.chunks)
    return tree_ids, chunk_ids


def _rebuild_objects(
    database: Database, namespace_id: NamespaceId, cutoff_ns: int, now_ns: int, report: GcReport
) -> None:
    table = tables.namespace_objects
    ns = bytes(namespace_id)
    with database.read() as connection:
        try:
            tree_ids, chunk_ids = _reachable(connection, namespace_id)
        except StoreError as exc:
            _log.error("GC skips namespace %s: a retained tree is unreadable: %s", ns.hex(), exc)
            report.namespaces_skipped += 1
            return
        rows = connection.execute(
            sa.select(table.c.object_id, table.c.kind, table.c.added_ns).where(
                table.c.namespace_id == ns
            )
        ).all()
    present = {(bytes(row.object_id), row.kind) for row in rows}
    stale = [
        bytes(row.object_id)
        for row in rows
        if row.added_ns < cutoff_ns
        and bytes(row.object_id) not in (tree_ids if row.kind == "t" else chunk_ids)
    ]
    absent = [
        {"namespace_id": ns, "object_id": object_id, "kind": kind, "added_ns": now_ns}
        for ids, kind in ((tree_ids, "t"), (chunk_ids, "c"))
        for object_id in ids
        if (object_id, kind) not in present
    ]
    with database.write() as connection:
        for batch in tables.in_batches(stale):
            result = connection.execute(
                table.delete().where(
                    table.c.namespace_id == ns,
                    table.c.object_id.in_(batch),
                    table.c.added_ns < cutoff_ns,  # refreshed since the read: keep it
                )
            )
            report.rows_removed += result.rowcount
        # Rows a retained commit needs but lacks (a repair; normally none).
        for part in tables.in_batches(absent):
            existing = {
                bytes(row.object_id)
                for row in connection.execute(
                    sa.select(table.c.object_id).where(
                        table.c.namespace_id == ns,
                        table.c.object_id.in_([row["object_id"] for row in part]),
                    )
                )
            }
            fresh = [row for row in part if row["object_id"] not in existing]
            if fresh:
                connection.execute(table.insert(), fresh)
                report.rows_added += len(fresh)


def _unreferenced(kind: str, id_column: sa.Column[bytes]) -> sa.ColumnElement[bool]:
    objects = tables.namespace_objects
    return ~sa.exists().where(objects.c.object_id == id_column, objects.c.kind == kind)


def _sweep_trees(database: Database, report: GcReport) -> None:
    table = tables.trees
    condition = sa.and_(_unreferenced("t", table.c.id), table.c.id != bytes(EMPTY_TREE_ID))
    with database.read() as connection:
        candidates = [
            bytes(row.id) for row in connection.execute(sa.select(table.c.id).where(condition))
        ]
    for batch in tables.in_batches(candidates):
        with database.write() as connection:
            result = connection.execute(table.delete().where(table.c.id.in_(batch), condition))
            report.trees_removed += result.rowcount


def _sweep_chunks(state: ServerState, cutoff_ns: int, report: GcReport) -> None:
    table = tables.chunks
    condition = sa.and_(_unreferenced("c", table.c.id), table.c.created_ns < cutoff_ns)
    with state.db.read() as connection:
        candidates = [
            bytes(row.id) for row in connection.execute(sa.select(table.c.id).where(condition))
        ]
    for batch in tables.in_batches(candidates):
        with state.db.write() as connection:
            doomed = connection.execute(
                sa.select(table.c.id, table.c.stored_bytes)
                .where(table.c.id.in_(batch), condition)
                .with_for_update()
            ).all()
            if not doomed:
                continue
            connection.execute(table.delete().where(table.c.id.in_([row.id for row in doomed])))
            # Inside the transaction: an upload recording the same chunk waits for it, then
            # finds the chunks row gone and writes the blob again.
            for row in doomed:
                state.blobs.delete(ChunkId(bytes(row.id)))
            report.chunks_removed += len(doomed)
            report.bytes_freed += sum(row.stored_bytes for row in doomed)


def _sweep_orphan_blobs(state: ServerState, cutoff_ns: int, report: GcReport) -> None:
    """Blobs with no ``chunks`` row, written before the grace period: a crash between an
    upload's blob write and its rows left them. An upload in flight wrote its blob after
    the cutoff, and one that wants an orphan's content writes the blob anew (its rows are
    what it checks), so neither is touched."""
    candidates = [bytes(chunk_id) for chunk_id in state.blobs.ids_older_than(cutoff_ns)]
    for batch in tables.in_batches(candidates):
        with state.db.write() as connection:
            known = {
                bytes(row.id)
                for row in connection.execute(
                    sa.select(tables.chunks.c.id).where(tables.chunks.c.id.in_(batch))
                )
            }
            # Inside the transaction, as in _sweep_chunks: an upload recording one of these
            # waits for it, then finds no row and writes the blob again.
            for raw in batch:
                if raw not in known:
                    state.blobs.delete(ChunkId(raw))
                    report.orphan_blobs_removed += 1


def collect_garbage(state: ServerState, now_ns: int) -> GcReport:
    """Rebuild the object rows from the retained commits and delete what nothing needs
    (see the module docstring for the order and why it is safe). Blocking."""
    report = GcReport()
    cutoff_ns = now_ns - state.settings.gc_grace_s * _NS_PER_S
    with state.db.read() as connection:
        namespace_ids = [
            NamespaceId(bytes(row.id))
            for row in connection.execute(sa.select(tables.namespaces.c.id))
        ]
    for namespace_id in namespace_ids:
        report.namespaces += 1
        _rebuild_objects(state.db, namespace_id, cutoff_ns, now_ns, report)
    _sweep_trees(state.db, report)
    _sweep_chunks(state, cutoff_ns, report)
    _sweep_orphan_blobs(state, cutoff_ns, report)
    with state.db.write() as connection:
        result = connection.execute(
            tables.idempotency.delete().where(
                tables.idempotency.c.created_ns < now_ns - IDEMPOTENCY_TTL_S * _NS_PER_S
            )
        )
        report.replies_forgotten = result.rowcount
    return report


@dataclass(frozen=True, slots=True)
class RetentionReport:
    commits_thinned: int
    gc: GcReport


def run_retention(state: ServerState, now_ns: int) -> RetentionReport:
    """Thin every namespace with the configured policy, then collect garbage. Blocking."""
    with state.db.read() as connection:
        namespace_ids = [
            NamespaceId(bytes(row.id))
            for row in connection.execute(sa.select(tables.namespaces.c.id))
        ]
    thinned = sum(
        thin(state.db, namespace_id, state.settings.retention, now_ns)
        for namespace_id in namespace_ids
    )
    return RetentionReport(thinned, collect_garbage(state, now_ns))


async def retention_loop(state: ServerState, interval_s: float) -> None:
    """Run ``run_retention`` every ``interval_s`` seconds until cancelled (the lifespan's
    task group). A failed run is logged and the loop goes on."""
    while True:
        await anyio.sleep(interval_s)
        try:
            report = await state.run(run_retention, state, now_ns())
        except Exception:  # noqa: BLE001  (one failed run must not stop retention or the server)
            _log.exception("retention run failed; retrying in %s s", interval_s)
            continue
        _log.info("retention: %s commits thinned; %s", report.commits_thinned, report.gc)
