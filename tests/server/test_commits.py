"""The commit engine (server/commits.py) through APPLY_OPS: one batch, one commit; per-op
results; idempotent retries; concurrent batches; per-file conflicts (merge or conflicted
copy); chunk authorization; hostile input.

In-process through ``TestClient``: users register and log in through the API, chunks are
uploaded through UPLOAD_CHUNKS, and trees and file contents are read back from the
database and the blob store (through the keyring), as the server itself would. The
``Drive`` helper lives in ``tests/server/drive.py``.
"""

from __future__ import annotations

import itertools
import re
import threading

import pytest
import sqlalchemy as sa

from server import commits
from server import db as tables
from store import protocol
from store.ids import ContentHash, TreeId
from store.objects import MAX_NAME_BYTES, EntryKind
from tests.server.drive import (
    Drive,
    User,
    delete,
    drive_path,
    lines,
    mkdir,
    move,
    new_key,
    setattr_op,
    statuses,
)

# --- one batch, one commit ----------------------------------------------------------------------


def test_a_batch_of_every_op_kind_makes_one_commit_with_the_expected_tree(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    ops: list[protocol.Op] = [
        mkdir("docs"),
        drive.put(alice, ns, "docs/a.txt", b"alpha\n"),
        drive.put(alice, ns, "b.txt", b"bravo\n"),
        move("b.txt", "docs/c.txt"),
        setattr_op("docs/a.txt", mode=0o600),
        drive.put(alice, ns, "tmp.txt", b"scratch\n"),
        delete("tmp.txt"),
    ]
    response = drive.apply(alice, ns, ops)
    assert statuses(response) == ["applied"] * len(ops)
    assert response.commit_id is not None
    assert (response.head, response.sequence) == (response.commit_id, 1)
    listing = drive.listing(ns)
    assert sorted(listing) == ["docs", "docs/a.txt", "docs/c.txt"]
    assert listing["docs"].kind is EntryKind.DIR and listing["docs"].mode == 0o755
    assert listing["docs/a.txt"].mode == 0o600
    assert drive.read(ns, "docs/a.txt") == b"alpha\n"
    assert drive.read(ns, "docs/c.txt") == b"bravo\n"
    assert drive.commit_count(ns) == 1
    head = drive.client.get(protocol.HEAD.fill(namespace_id=ns), headers=alice.headers)
    assert protocol.HeadInfo.model_validate_json(head.content).head == response.commit_id


def test_the_commit_names_its_parent_author_device_and_a_summary(drive: Drive, alice: User) -> None:
    ns = alice.home
    first = drive.apply(alice, ns, [mkdir("docs")])
    ops = [mkdir(f"d{number}") for number in range(5)]
    second = drive.apply(alice, ns, ops)
    reply = drive.client.get(protocol.LOG.fill(namespace_id=ns), headers=alice.headers)
    log = protocol.LogPage.model_validate_json(reply.content)
    newest = log.commits[0]
    assert newest.commit_id == second.commit_id
    assert newest.parents == (first.commit_id,)
    assert (newest.author, newest.device) == ("alice", "laptop")
    assert newest.summary == "mkdir d0, mkdir d1, mkdir d2 (+2 more)"
    assert log.commits[1].parents == ()


def test_the_tree_and_the_event_are_served_to_members(drive: Drive, alice: User) -> None:
    ns = alice.home
    response = drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"hello\n")])
    head = drive.head(ns)
    reply = drive.client.post(
        protocol.TREES.fill(namespace_id=ns),
        json={"ids": [head.root.hex()]},
        headers=alice.headers,
    )
    records = list(protocol.parse_record_stream(TreeId, [reply.content]))
    assert [record.object_id for record in records] == [head.root]
    assert records[0].payload is not None
    with drive.state.db.read() as connection:
        events = connection.execute(
            sa.select(tables.events.c.head).where(tables.events.c.namespace_id == bytes(ns))
        ).all()
    assert [bytes(row.head) for row in events] == [bytes(response.commit_id or b"")]


def test_ops_apply_in_order_each_seeing_the_ones_before_it(drive: Drive, alice: User) -> None:
    ns = alice.home
    first = drive.put(alice, ns, "a.txt", b"one\n")
    second = drive.put(alice, ns, "a.txt", b"two\n", base=first.entry.content_hash)
    ops: list[protocol.Op] = [
        mkdir("d"),
        mkdir("d/e"),
        first,
        second,
        move("a.txt", "d/e/a.txt"),
        delete("d/e/a.txt"),
    ]
    ops.append(drive.put(alice, ns, "d/e/a.txt", b"three\n"))
    response = drive.apply(alice, ns, ops)
    assert statuses(response) == ["applied"] * len(ops)
    assert sorted(drive.listing(ns)) == ["d", "d/e", "d/e/a.txt"]
    assert drive.read(ns, "d/e/a.txt") == b"three\n"


def test_a_failing_op_is_rejected_and_the_others_of_the_batch_still_apply(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    ops: list[protocol.Op] = [
        drive.put(alice, ns, "a.txt", b"kept\n"),
        drive.put(alice, ns, "missing/b.txt", b"orphan\n"),
        move("nowhere.txt", "x.txt"),
        setattr_op("ghost", mode=0o600),
        mkdir("docs"),
    ]
    response = drive.apply(alice, ns, ops)
    assert statuses(response) == ["applied", "rejected", "rejected", "rejected", "applied"]
    assert [result.code for result in response.results[1:4]] == ["not_found"] * 3
    assert "missing" in response.results[1].message
    assert sorted(drive.listing(ns)) == ["a.txt", "docs"]
    assert response.sequence == 1


def test_a_batch_that_changes_nothing_makes_no_commit(drive: Drive, alice: User) -> None:
    ns = alice.home
    made = drive.apply(alice, ns, [mkdir("docs")])
    response = drive.apply(
        alice, ns, [mkdir("docs"), delete("ghost"), setattr_op("docs", mode=0o755)]
    )
    assert statuses(response) == ["applied", "rejected", "applied"]
    assert response.commit_id is None
    assert (response.head, response.sequence) == (made.commit_id, 1)
    assert drive.commit_count(ns) == 1


def test_mkdir_onto_a_file_and_delete_of_a_non_empty_directory_are_conflicts(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    drive.apply(alice, ns, [mkdir("docs"), drive.put(alice, ns, "docs/a.txt", b"a\n")])
    response = drive.apply(alice, ns, [mkdir("docs/a.txt"), delete("docs")])
    assert [result.code for result in response.results] == ["conflict", "conflict"]
    response = drive.apply(alice, ns, [delete("docs/a.txt"), delete("docs")])
    assert statuses(response) == ["applied", "applied"]
    assert drive.listing(ns) == {}


def test_commits_and_deletes_are_audited(drive: Drive, alice: User) -> None:
    ns = alice.home
    drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"a\n")])
    drive.apply(alice, ns, [delete("a.txt")])
    reply = drive.client.get(protocol.AUDIT_LOG.fill(), headers=alice.headers)
    page = protocol.AuditPage.model_validate_json(reply.content)
    actions = [record.action for record in page.records]
    assert actions[:3] == ["delete", "commit", "commit"]
    assert page.records[0].detail["path"] == "a.txt"
    assert page.records[0].device_name == "laptop"


# --- idempotency ----------------------------------------------------------------------------------


def test_a_retried_batch_gets_the_same_reply_and_makes_one_commit(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    ops = [drive.put(alice, ns, "a.txt", b"once\n")]
    key = new_key()
    first = drive.post_ops(alice, ns, ops, key)
    again = drive.post_ops(alice, ns, ops, key)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    other_device = drive.login("alice", "desktop")  # a new session of the same user
    assert drive.post_ops(other_device, ns, ops, key).json() == first.json()
    assert drive.commit_count(ns) == 1


def test_an_idempotency_key_reused_for_another_batch_is_a_bad_request(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    key = new_key()
    drive.apply(alice, ns, [mkdir("a")], key)
    reply = drive.post_ops(alice, ns, [mkdir("b")], key)
    assert reply.status_code == 400
    assert reply.json()["code"] == "bad_request"
    assert drive.commit_count(ns) == 1


def test_another_users_key_is_not_theirs(drive: Drive, alice: User) -> None:
    bob = drive.register("bob")
    ns = alice.home
    drive.add_member(ns, bob, "editor")
    key = new_key()
    first = drive.apply(alice, ns, [mkdir("from-alice")], key)
    second = drive.apply(bob, ns, [mkdir("from-bob")], key)
    assert second.commit_id not in (None, first.commit_id)
    assert sorted(drive.listing(ns)) == ["from-alice", "from-bob"]


# --- concurrency ----------------------------------------------------------------------------------


def test_concurrent_batches_all_land_with_no_lost_update(drive: Drive, alice: User) -> None:
    ns = alice.home
    rounds = 6
    batches = {
        name: [
            protocol.OpsBatch(
                idempotency_key=new_key(),
                ops=(drive.put(alice, ns, f"{name}-{number}.txt", f"{name} {number}\n".encode()),),
            )
            for number in range(rounds)
        ]
        for name in ("left", "right")
    }
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for batch in batches[name]:
                barrier.wait(timeout=10)
                response = commits.apply_batch(drive.state, alice.caller(), ns, batch)
                assert statuses(response) == ["applied"]
        except Exception as exc:  # noqa: BLE001  (reported to the main thread)
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(name,)) for name in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    head = drive.head(ns)
    assert head.sequence == 2 * rounds
    assert len(drive.listing(ns)) == 2 * rounds
    with drive.state.db.read() as connection:  # one straight chain, sequences 1..n
        chain = list(commits.retained_commits(connection, ns))
    assert [stored.sequence for stored in chain] == list(range(2 * rounds, 0, -1))
    for newer, older in itertools.pairwise(chain):
        assert newer.commit.parents == (older.commit_id,)


# --- conflicts ------------------------------------------------------------------------------------


@pytest.fixture
def desktop(drive: Drive, alice: User) -> User:
    return drive.login("alice", "desktop")


def _shared_text(drive: Drive, alice: User) -> tuple[list[bytes], ContentHash]:
    text = lines(10)
    put = drive.put(alice, alice.home, "notes.txt", b"".join(text))
    drive.apply(alice, alice.home, [put])
    assert put.entry.content_hash is not None
    return text, put.entry.content_hash


def test_edits_of_a_text_file_in_different_places_are_merged(
    drive: Drive, alice: User, desktop: User
) -> None:
    ns = alice.home
    text, base = _shared_text(drive, alice)
    mine = [*text[:1], b"line 2 edited on the laptop\n", *text[2:]]
    theirs = [*text[:8], b"line 9 edited on the desktop\n", *text[9:]]
    drive.apply(alice, ns, [drive.put(alice, ns, "notes.txt", b"".join(mine), base)])
    response = drive.apply(
        desktop, ns, [drive.put(desktop, ns, "notes.txt", b"".join(theirs), base)]
    )
    assert statuses(response) == ["merged"]
    assert response.results[0].path == drive_path("notes.txt")
    merged = [*text[:1], b"line 2 edited on the laptop\n", *text[2:8]]
    merged += [b"line 9 edited on the desktop\n", *text[9:]]
    assert drive.read(ns, "notes.txt") == b"".join(merged)
    assert sorted(drive.listing(ns)) == ["notes.txt"]


def test_edits_of_the_same_lines_keep_both_versions_as_a_conflicted_copy(
    drive: Drive, alice: User, desktop: User
) -> None:
    ns = alice.home
    text, base = _shared_text(drive, alice)
    mine = b"".join([*text[:1], b"line 2 by the laptop\n", *text[2:]])
    theirs = b"".join([*text[:1], b"line 2 by the desktop\n", *text[2:]])
    drive.apply(alice, ns, [drive.put(alice, ns, "notes.txt", mine, base)])
    response = drive.apply(desktop, ns, [drive.put(desktop, ns, "notes.txt", theirs, base)])
    assert statuses(response) == ["conflicted_copy"]
    copy = response.results[0].conflict_path
    assert copy is not None
    pattern = r"notes \(conflicted copy from desktop \d{4}-\d\d-\d\d \d{6}\)\.txt"
    assert re.fullmatch(pattern, bytes(copy).decode())
    assert drive.read(ns, "notes.txt") == mine
    assert drive.read(ns, bytes(copy).decode()) == theirs


def _saved_by_rename(
    drive: Drive, user: User, text: bytes, replaces: ContentHash | None, temporary: str
) -> protocol.OpsBatchResponse:
    """An editor's save: the new text put under a temporary name, renamed over notes.txt."""
    move = protocol.MoveOp(
        src=drive_path(temporary), dst=drive_path("notes.txt"), replaces=replaces
    )
    ns = user.home
    return drive.apply(user, ns, [drive.put(user, ns, temporary, text), move])


def test_saves_by_rename_over_a_file_merge_or_conflict_as_saves_in_place_do(
    drive: Drive, alice: User, desktop: User
) -> None:
    ns = alice.home
    text, base = _shared_text(drive, alice)
    mine = b"".join([*text[:1], b"line 2 saved by rename on the laptop\n", *text[2:]])
    theirs = b"".join([*text[:8], b"line 9 saved by rename on the desktop\n", *text[9:]])
    assert statuses(_saved_by_rename(drive, alice, mine, base, ".notes.swp")) == [
        "applied", "applied",
    ]  # fmt: skip
    response = _saved_by_rename(drive, desktop, theirs, base, ".notes.swx")
    assert statuses(response) == ["applied", "merged"]
    merged = b"".join([*text[:1], b"line 2 saved by rename on the laptop\n", *text[2:8]])
    merged += b"".join([b"line 9 saved by rename on the desktop\n", *text[9:]])
    assert drive.read(ns, "notes.txt") == merged
    assert sorted(drive.listing(ns)) == ["notes.txt"]  # the temporary names are gone
    # The same line, both saved by rename from the merged version: a conflicted copy.
    now = drive.entry(ns, "notes.txt")
    assert now is not None and now.content_hash is not None
    laptop = merged.replace(b"line 5\n", b"line 5, the laptop's way\n")
    desktop_text = merged.replace(b"line 5\n", b"line 5, the desktop's way\n")
    _saved_by_rename(drive, alice, laptop, now.content_hash, ".a.tmp")
    response = _saved_by_rename(drive, desktop, desktop_text, now.content_hash, ".b.tmp")
    assert statuses(response) == ["applied", "conflicted_copy"]
    copy = response.results[1].conflict_path
    assert copy is not None
    assert drive.read(ns, "notes.txt") == laptop
    assert drive.read(ns, bytes(copy).decode()) == desktop_text
    assert sorted(drive.listing(ns)) == sorted(["notes.txt", bytes(copy).decode()])


def test_a_rename_over_the_version_the_mover_saw_replaces_it_and_over_an_unseen_one_keeps_both(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    _text, base = _shared_text(drive, alice)
    response = _saved_by_rename(drive, alice, b"replaced\n", base, "new.txt")
    assert statuses(response) == ["applied", "applied"]
    assert drive.read(ns, "notes.txt") == b"replaced\n"
    # A rename over a file the mover never saw there (``replaces`` none) keeps both.
    response = _saved_by_rename(drive, alice, b"blind\n", None, "other.txt")
    assert statuses(response) == ["applied", "conflicted_copy"]
    assert drive.read(ns, "notes.txt") == b"replaced\n"


def test_a_binary_file_changed_on_both_sides_gets_a_conflicted_copy(
    drive: Drive, alice: User, desktop: User
) -> None:
    ns = alice.home
    original = b"\x00\x01binary" * 100
    put = drive.put(alice, ns, "image.bin", original)
    drive.apply(alice, ns, [put])
    base = put.entry.content_hash
    mine, theirs = original + b"\x00mine", original + b"\x00theirs"
    drive.apply(alice, ns, [drive.put(alice, ns, "image.bin", mine, base)])
    response = drive.apply(desktop, ns, [drive.put(desktop, ns, "image.bin", theirs, base)])
    assert statuses(response) == ["conflicted_copy"]
    copy = response.results[0].conflict_path
    assert copy is not None and bytes(copy).endswith(b").bin")
    assert drive.read(ns, "image.bin") == mine
    assert drive.read(ns, bytes(copy).decode()) == theirs


def test_a_new_file_over_an_existing_one_is_a_conflicted_copy_unless_identical(
    drive: Drive, alice: User, desktop: User
) -> None:
    ns = alice.home
    drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"laptop\n")])
    same = drive.apply(desktop, ns, [drive.put(desktop, ns, "a.txt", b"laptop\n")])
    assert statuses(same) == ["applied"]
    response = drive.apply(desktop, ns, [drive.put(desktop, ns, "a.txt", b"desktop\n")])
    assert statuses(response) == ["conflicted_copy"]
    assert drive.read(ns, "a.txt") == b"laptop\n"
    copy = response.results[0].conflict_path
    assert copy is not None and drive.read(ns, bytes(copy).decode()) == b"desktop\n"


def test_two_conflicts_in_the_same_second_get_distinct_copy_names(
    drive: Drive, alice: User, desktop: User
) -> None:
    ns = alice.home
    drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"laptop\n")])
    ops = [drive.put(desktop, ns, "a.txt", b"one\n"), drive.put(desktop, ns, "a.txt", b"two\n")]
    response = drive.apply(desktop, ns, ops)
    assert statuses(response) == ["conflicted_copy", "conflicted_copy"]
    first, second = (result.conflict_path for result in response.results)
    assert first is not None and second is not None and first != second
    assert bytes(second).endswith(b" 2).txt")
    assert len(drive.listing(ns)) == 3


def test_a_delete_with_a_stale_base_is_rejected_and_the_newer_version_stays(
    drive: Drive, alice: User, desktop: User
) -> None:
    ns = alice.home
    put = drive.put(alice, ns, "a.txt", b"v1\n")
    drive.apply(alice, ns, [put])
    drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"v2\n", put.entry.content_hash)])
    response = drive.apply(desktop, ns, [delete("a.txt", base=put.entry.content_hash)])
    assert statuses(response) == ["rejected"]
    assert response.results[0].code == "stale_base"
    assert response.commit_id is None
    assert drive.read(ns, "a.txt") == b"v2\n"


def test_an_edit_of_a_file_deleted_meanwhile_brings_it_back(
    drive: Drive, alice: User, desktop: User
) -> None:
    ns = alice.home
    put = drive.put(alice, ns, "a.txt", b"v1\n")
    drive.apply(alice, ns, [put])
    drive.apply(alice, ns, [delete("a.txt")])
    edit = drive.put(desktop, ns, "a.txt", b"v2\n", put.entry.content_hash)
    assert statuses(drive.apply(desktop, ns, [edit])) == ["applied"]
    assert drive.read(ns, "a.txt") == b"v2\n"


# --- chunk authorization --------------------------------------------------------------------------


def test_a_put_naming_a_chunk_not_uploaded_to_this_namespace_is_rejected(
    drive: Drive, alice: User
) -> None:
    bob = drive.register("bob")
    secret = b"bob's secret content\n"
    drive.upload(bob, bob.home, secret)  # the server holds it, but for bob's drive only
    entry = drive.file_entry(alice, alice.home, secret, upload=False)
    put = protocol.PutOp(path=drive_path("guess.txt"), entry=entry)
    response = drive.apply(alice, alice.home, [put, mkdir("docs")])
    assert statuses(response) == ["rejected", "applied"]
    assert response.results[0].code == "not_found"
    chunk_id = entry.chunks[0].chunk_id
    assert chunk_id.hex() in response.results[0].message
    assert sorted(drive.listing(alice.home)) == ["docs"]


# --- bad input and permissions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "a/../b",
        "a/./b",
        "/a",
        "a//b",
        "",
        "a\0b",
        "x" * (MAX_NAME_BYTES + 1),
        "/".join(["d"] * (protocol.MAX_PATH_DEPTH + 1)),
    ],
)
def test_hostile_paths_are_invalid_name(drive: Drive, alice: User, path: str) -> None:
    ops = [{"op": "mkdir", "path": path, "attrs": {"mode": 493, "uid": 0, "gid": 0, "mtime_ns": 0}}]
    reply = drive.client.post(
        protocol.APPLY_OPS.fill(namespace_id=alice.home),
        json={"idempotency_key": new_key(), "ops": ops},
        headers=alice.headers,
    )
    assert reply.status_code == 400
    assert reply.json()["code"] == "invalid_name"
    assert drive.commit_count(alice.home) == 0


def test_a_viewer_cannot_apply_ops_and_a_stranger_sees_no_namespace(
    drive: Drive, alice: User
) -> None:
    viewer = drive.register("victor")
    stranger = drive.register("mallory")
    drive.add_member(alice.home, viewer, "viewer")
    reply = drive.post_ops(viewer, alice.home, [mkdir("docs")])
    assert (reply.status_code, reply.json()["code"]) == (403, "forbidden")
    reply = drive.post_ops(stranger, alice.home, [mkdir("docs")])
    assert (reply.status_code, reply.json()["code"]) == (404, "not_found")
    assert drive.commit_count(alice.home) == 0


def test_too_many_ops_are_batch_too_large(drive: Drive, alice: User) -> None:
    op = {"op": "mkdir", "path": "d", "attrs": {"mode": 493, "uid": 0, "gid": 0, "mtime_ns": 0}}
    reply = drive.client.post(
        protocol.APPLY_OPS.fill(namespace_id=alice.home),
        json={"idempotency_key": new_key(), "ops": [op] * (protocol.MAX_OPS_PER_BATCH + 1)},
        headers=alice.headers,
    )
    assert (reply.status_code, reply.json()["code"]) == (413, "batch_too_large")


# --- the pure parts -------------------------------------------------------------------------------


def test_merge_text_joins_separate_edits_and_refuses_overlapping_ones() -> None:
    base = b"".join(lines(6))
    ours = base.replace(b"line 1\n", b"first\n")
    theirs = base.replace(b"line 6\n", b"last\n")
    assert commits.merge_text(base, ours, theirs) == ours.replace(b"line 6\n", b"last\n")
    clash = base.replace(b"line 1\n", b"other\n")
    assert commits.merge_text(base, ours, clash) is None
    assert commits.merge_text(base, ours, ours) == ours  # the same edit on both sides


def test_text_means_utf8_without_nul() -> None:
    assert commits.is_text("naïve\n".encode())
    assert not commits.is_text(b"a\0b")
    assert not commits.is_text(b"\xff\xfe")


def test_conflicted_copy_names_keep_the_extension_and_fit_in_255_bytes() -> None:
    when = 1_767_323_045 * 10**9  # 2026-01-02 03:04:05 UTC
    name = commits.conflicted_copy_name(b"report.final.txt", "laptop", when)
    assert name == b"report.final (conflicted copy from laptop 2026-01-02 030405).txt"
    assert commits.conflicted_copy_name(b".bashrc", "pc", when, 3) == (
        b".bashrc (conflicted copy from pc 2026-01-02 030405 3)"
    )
    long_name = ("é" * 120 + ".txt").encode()  # 244 bytes
    shortened = commits.conflicted_copy_name(long_name, "d" * 64, when)
    assert len(shortened) <= MAX_NAME_BYTES
    assert shortened.endswith(b").txt")
    shortened.decode("utf-8")  # not cut inside a character
    protocol.validate_name(shortened)
    huge_extension = b"a." + b"x" * 250
    assert len(commits.conflicted_copy_name(huge_extension, "d" * 64, when)) <= MAX_NAME_BYTES
