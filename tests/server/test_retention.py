"""Retention and GC (server/retention.py): which commits thinning keeps, what GC removes,
and that GC never removes what a retained commit or an upload in flight still needs.

Commits are made through the real commit engine at chosen times (its clock is replaced
for the test), and GC runs are given a ``now`` in the future to let the grace period pass.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from server import commits, retention
from server import db as tables
from server.retention import CommitTime, collect_garbage, commits_to_keep, thin
from server.settings import DAY_S, HOUR_S, RetentionPolicy, Settings
from server.state import ServerState
from store import protocol
from store.frames import encode_frame
from store.ids import ChunkId, CommitId, NamespaceId, chunk_id_of
from tests.server.drive import Drive, User, delete, statuses

HOUR_NS = HOUR_S * 10**9
DAY_NS = DAY_S * 10**9


def at(monkeypatch: pytest.MonkeyPatch, time_ns: int) -> None:
    """Make the commit engine's clock say ``time_ns``."""
    monkeypatch.setattr(commits, "now_ns", lambda: time_ns)


def retained(drive: Drive, ns: NamespaceId) -> list[CommitId]:
    with drive.state.db.read() as connection:
        return [stored.commit_id for stored in commits.retained_commits(connection, ns)]


def object_rows(drive: Drive, ns: NamespaceId) -> set[bytes]:
    with drive.state.db.read() as connection:
        rows = connection.execute(
            sa.select(tables.namespace_objects.c.object_id).where(
                tables.namespace_objects.c.namespace_id == bytes(ns)
            )
        )
        return {bytes(row.object_id) for row in rows}


def has_tree(drive: Drive, tree_id: bytes) -> bool:
    with drive.state.db.read() as connection:
        found = connection.execute(
            sa.select(tables.trees.c.id).where(tables.trees.c.id == tree_id)
        ).first()
    return found is not None


def has_chunk(drive: Drive, chunk_id: ChunkId) -> bool:
    with drive.state.db.read() as connection:
        row = connection.execute(
            sa.select(tables.chunks.c.id).where(tables.chunks.c.id == bytes(chunk_id))
        ).first()
    blob = drive.state.blobs.exists(chunk_id)
    assert blob == (row is not None), "a chunks row and its blob go together"
    return blob


# --- thinning -------------------------------------------------------------------------------------


def test_the_default_policy_keeps_all_recent_then_hourly_then_daily_and_the_head() -> None:
    now = 1000 * DAY_NS + 12 * HOUR_NS  # noon, UTC
    timeline = {
        b"recent-1": now - 1 * HOUR_NS,
        b"recent-2": now - 23 * HOUR_NS,
        b"hour-old": now - 30 * HOUR_NS + 5 * 60 * 10**9,  # same hour as hour-new
        b"hour-new": now - 30 * HOUR_NS + 40 * 60 * 10**9,
        b"hour-other": now - 31 * HOUR_NS + 10 * 60 * 10**9,
        b"day-old": now - 40 * DAY_NS + 1 * HOUR_NS,  # same day as day-new
        b"day-new": now - 40 * DAY_NS + 3 * HOUR_NS,
        b"day-other": now - 41 * DAY_NS,
        b"too-old": now - 400 * DAY_NS,
        b"ancient-head": now - 500 * DAY_NS,
        b"future": now + HOUR_NS,
    }
    commits_ = [
        CommitTime(commit_id, sequence, time_ns)
        for sequence, (commit_id, time_ns) in enumerate(timeline.items(), start=1)
    ]
    kept = commits_to_keep(commits_, b"ancient-head", RetentionPolicy(), now)
    assert kept == {
        b"recent-1", b"recent-2", b"hour-new", b"hour-other", b"day-new", b"day-other",
        b"ancient-head", b"future",
    }  # fmt: skip


def test_a_policy_is_configurable_and_ties_keep_the_later_commit() -> None:
    now = 1000 * DAY_NS
    policy = RetentionPolicy(keep_all_s=HOUR_S, keep_hourly_s=2 * HOUR_S, keep_daily_s=DAY_S)
    same_time = now - 90 * 60 * 10**9
    commits_ = [CommitTime(b"first", 1, same_time), CommitTime(b"second", 2, same_time)]
    commits_.append(CommitTime(b"older-than-a-day", 3, now - 2 * DAY_NS))
    assert commits_to_keep(commits_, None, policy, now) == {b"second"}


def test_thin_marks_commits_not_retained_and_keeps_the_head(
    drive: Drive, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = alice.home
    noon = (time.time_ns() // DAY_NS) * DAY_NS + 12 * HOUR_NS
    made = []
    for offset_ns in (-500 * DAY_NS, -40 * DAY_NS, -40 * DAY_NS + HOUR_NS, -HOUR_NS):
        at(monkeypatch, noon + offset_ns)
        made.append(drive.apply(alice, ns, [drive.put(alice, ns, f"{offset_ns}", b"x")]).commit_id)
    assert thin(drive.state.db, ns, RetentionPolicy(), noon) == 2
    assert retained(drive, ns) == [made[3], made[2]]
    reply = drive.client.get(protocol.LOG.fill(namespace_id=ns), headers=alice.headers)
    log = protocol.LogPage.model_validate_json(reply.content)
    assert [info.commit_id for info in log.commits] == [made[3], made[2]]
    # Years later, the head stays although every commit is older than the policy.
    assert thin(drive.state.db, ns, RetentionPolicy(), noon + 3 * 365 * DAY_NS) == 1
    assert retained(drive, ns) == [made[3]]


# --- garbage collection ---------------------------------------------------------------------


def test_gc_frees_what_only_thinned_commits_needed_and_keeps_uploads_for_the_grace_period(
    drive: Drive, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns, state = alice.home, drive.state
    real = time.time_ns()
    long_ago = (real // DAY_NS) * DAY_NS - 40 * DAY_NS + 12 * HOUR_NS
    old = drive.put(alice, ns, "old.bin", b"only in a thinned commit")
    at(monkeypatch, long_ago)
    first = drive.apply(alice, ns, [old])
    first_root = drive.head(ns).root
    at(monkeypatch, long_ago + 60 * 10**9)
    drive.apply(alice, ns, [delete("old.bin")])
    monkeypatch.undo()
    kept = drive.put(alice, ns, "keep.bin", b"in the head")
    drive.apply(alice, ns, [kept])
    (fresh,) = drive.upload(alice, ns, b"uploaded, its commit still on the way")
    (old_chunk,) = (ref.chunk_id for ref in old.entry.chunks)
    (kept_chunk,) = (ref.chunk_id for ref in kept.entry.chunks)

    # An hour later: the first commit is thinned, and what only it named loses its rows;
    # blobs younger than the grace period stay, and so does the fresh upload's row.
    soon = real + HOUR_NS
    assert thin(state.db, ns, state.settings.retention, soon) == 1
    assert first.commit_id not in retained(drive, ns)
    report = collect_garbage(state, soon)
    assert not has_tree(drive, bytes(first_root))
    assert bytes(old_chunk) not in object_rows(drive, ns)
    assert {bytes(fresh), bytes(kept_chunk)} <= object_rows(drive, ns)
    assert has_chunk(drive, old_chunk) and has_chunk(drive, fresh)
    assert report.trees_removed == 1 and report.chunks_removed == 0

    # After the grace period: the unreferenced chunks go, the retained ones stay.
    later = real + DAY_NS + HOUR_NS
    thin(state.db, ns, state.settings.retention, later)
    report = collect_garbage(state, later)
    assert not has_chunk(drive, old_chunk)
    assert not has_chunk(drive, fresh)
    assert report.chunks_removed == 2 and report.bytes_freed > 0
    assert drive.read(ns, "keep.bin") == b"in the head"
    assert has_chunk(drive, kept_chunk)


def test_a_collected_chunk_must_be_uploaded_again_before_a_put_may_name_it(
    drive: Drive, alice: User
) -> None:
    ns, state = alice.home, drive.state
    data = b"uploaded, then abandoned"
    entry = drive.file_entry(alice, ns, data)
    collect_garbage(state, time.time_ns() + 2 * DAY_NS)
    put = protocol.PutOp(path=protocol.DrivePath.from_bytes(b"late.bin"), entry=entry)
    response = drive.apply(alice, ns, [put])
    assert statuses(response) == ["rejected"] and response.results[0].code == "not_found"
    drive.upload(alice, ns, data)
    assert statuses(drive.apply(alice, ns, [put])) == ["applied"]
    assert drive.read(ns, "late.bin") == data


def test_a_chunk_collected_between_planning_and_writing_a_commit_is_never_committed(
    drive: Drive, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns, state = alice.home, drive.state
    put = drive.put(alice, ns, "raced.bin", b"collected while the commit was planned")
    original = commits._OpsPlanner.plan
    runs: list[retention.GcReport] = []

    def plan_then_collect(self: Any) -> commits.Plan:
        plan = original(self)
        if not runs:  # GC runs once, as if its grace period had long passed
            runs.append(collect_garbage(state, time.time_ns() + 2 * DAY_NS))
        return plan

    monkeypatch.setattr(commits._OpsPlanner, "plan", plan_then_collect)
    response = drive.apply(alice, ns, [put])
    assert runs and runs[0].chunks_removed == 1
    assert statuses(response) == ["rejected"] and response.results[0].code == "not_found"
    assert response.commit_id is None


def test_gc_keeps_every_object_of_every_retained_commit(drive: Drive, alice: User) -> None:
    ns, state = alice.home, drive.state
    bob = drive.register("bob")
    drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"shared content")])
    drive.apply(bob, bob.home, [drive.put(bob, bob.home, "b.txt", b"shared content")])
    before_alice, before_bob = object_rows(drive, ns), object_rows(drive, bob.home)
    report = collect_garbage(state, time.time_ns() + 400 * DAY_NS)
    assert report.rows_removed == report.chunks_removed == report.trees_removed == 0
    assert object_rows(drive, ns) == before_alice
    assert object_rows(drive, bob.home) == before_bob
    assert drive.read(ns, "a.txt") == drive.read(bob.home, "b.txt") == b"shared content"


def test_old_idempotent_replies_are_forgotten(drive: Drive, alice: User) -> None:
    drive.apply(alice, alice.home, [drive.put(alice, alice.home, "a.txt", b"a")])
    soon = collect_garbage(drive.state, time.time_ns() + DAY_NS)
    assert soon.replies_forgotten == 0
    later = time.time_ns() + (retention.IDEMPOTENCY_TTL_S + 1) * 10**9
    assert collect_garbage(drive.state, later).replies_forgotten == 1


# --- the periodic task ----------------------------------------------------------------------


def test_the_retention_loop_runs_periodically_and_survives_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def flaky(_state: ServerState, now: int) -> retention.RetentionReport:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("the first run fails")
        return retention.RetentionReport(0, retention.GcReport())

    monkeypatch.setattr(retention, "run_retention", flaky)
    state = ServerState.open(Settings(data_dir=tmp_path / "data"))

    async def main() -> None:
        with anyio.move_on_after(1.0):
            await retention.retention_loop(state, 0.05)

    try:
        anyio.run(main)
    finally:
        state.close()
    assert len(calls) >= 3


def test_run_retention_thins_every_namespace_then_collects(
    drive: Drive, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = alice.home
    noon = (time.time_ns() // DAY_NS) * DAY_NS + 12 * HOUR_NS
    for minute in (1, 2, 3):
        at(monkeypatch, noon - 40 * DAY_NS + minute * 60 * 10**9)
        drive.apply(alice, ns, [drive.put(alice, ns, f"f{minute}", f"{minute}".encode())])
    report = retention.run_retention(drive.state, noon)
    assert report.commits_thinned == 2
    assert len(retained(drive, ns)) == 1
    assert report.gc.namespaces == 1


def test_gc_removes_blobs_a_crash_left_without_a_row_only_after_the_grace_period(
    drive: Drive, alice: User
) -> None:
    state = drive.state
    kept = drive.put(alice, alice.home, "kept.bin", b"committed and referenced")
    drive.apply(alice, alice.home, [kept])
    (kept_chunk,) = (ref.chunk_id for ref in kept.entry.chunks)
    # A crash between an upload's blob write and its rows: a blob and nothing else.
    orphan_data = b"written, then the server died"
    orphan = chunk_id_of(orphan_data)
    state.blobs.put(orphan, state.keyring.seal(orphan, encode_frame(orphan_data)))

    report = collect_garbage(state, time.time_ns())
    assert report.orphan_blobs_removed == 0
    assert state.blobs.exists(orphan)  # young: it may be an upload in flight

    report = collect_garbage(state, time.time_ns() + 2 * DAY_NS)
    assert report.orphan_blobs_removed == 1
    assert not state.blobs.exists(orphan)
    assert state.blobs.exists(kept_chunk)
    assert drive.read(alice.home, "kept.bin") == b"committed and referenced"
