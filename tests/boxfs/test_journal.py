"""The journal: order per namespace across reopen, durability against kill -9, batches
persisted before sending and completed once, conflicts recorded, staged names listed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from boxfs.journal import (
    CHECKPOINT_EVERY,
    BasedOnPut,
    Journal,
    JournalError,
    JournalOp,
    StagedPut,
)
from store import protocol
from store.errors import FormatError
from store.ids import ContentHash, NamespaceId, content_hash_of
from store.objects import EntryKind
from store.ops import AttrChanges, Attrs, Delete, Mkdir, Move, SetAttr
from store.protocol import DrivePath

HOME = NamespaceId(bytes(range(16)))
SHARED = NamespaceId(bytes(range(16, 32)))
ATTRS = Attrs(mode=0o644, uid=1000, gid=1000, mtime_ns=1_700_000_000_123_456_789)
STAGED = ["a" * 32, "b" * 32, "c" * 32]


def path(text: str | bytes) -> DrivePath:
    return DrivePath.from_bytes(text.encode() if isinstance(text, str) else text)


def put(name: str | bytes, staged: str, **kwargs: object) -> StagedPut:
    return StagedPut(path=path(name), attrs=ATTRS, staged=staged, **kwargs)  # type: ignore[arg-type]


def applied(op_path: str) -> protocol.OpResult:
    return protocol.OpResult(status="applied", path=path(op_path))


def every_kind() -> list[JournalOp]:
    return [
        Mkdir(path("docs"), Attrs(0o755, 1, 2, 3, ((b"user.tag", b"\xff\x00"),))),
        put("docs/r\xe9sum\xe9.txt", STAGED[0], base=content_hash_of(b"old")),
        put(b"docs/\xffbinary", STAGED[1]),
        StagedPut(path("docs/link"), ATTRS, kind=EntryKind.SYMLINK, target=b"../elsewhere"),
        StagedPut(path("docs/pipe"), ATTRS, kind=EntryKind.FIFO),
        StagedPut(path("docs/disk"), ATTRS, kind=EntryKind.BLOCK_DEVICE, rdev=(8 << 8) | 1),
        StagedPut(path("docs/tty"), Attrs(0o620, 0, 5, 9, atime_ns=4), kind=EntryKind.CHAR_DEVICE),
        Move(path("docs"), path("papers")),
        Move(path("papers/pipe"), path("papers/link"), content_hash_of(b"what was seen")),
        SetAttr(path("papers"), AttrChanges(mode=0o700, xattrs=())),
        SetAttr(path("papers/disk"), AttrChanges(atime_ns=-5)),
        Delete(path("papers/pipe"), base=None),
    ]


def test_entries_come_back_in_order_per_namespace_after_reopen(tmp_path: Path) -> None:
    ops = every_kind()
    with Journal(tmp_path / "journal.sqlite3") as journal:
        seqs = []
        for op in ops:
            seqs.append(journal.append(HOME, op))
            journal.append(SHARED, Mkdir(path(f"other{len(seqs)}"), ATTRS))
    assert seqs == sorted(seqs)
    with Journal(tmp_path / "journal.sqlite3") as journal:
        home = journal.pending(HOME, 100)
        assert [entry.seq for entry in home] == seqs
        assert [entry.op for entry in home] == ops  # every field round-trips, bytes included
        assert all(entry.namespace_id == HOME and not entry.in_flight for entry in home)
        shared = journal.pending(SHARED, 100)
        assert [bytes(entry.op.path) for entry in shared if isinstance(entry.op, Mkdir)] == [
            f"other{i}".encode() for i in range(1, len(ops) + 1)
        ]
        assert [entry.seq for entry in journal.pending(HOME, 3)] == seqs[:3]
        assert journal.count(HOME) == len(ops)
        assert journal.count() == 2 * len(ops)
        assert set(journal.namespaces()) == {HOME, SHARED}


def test_append_many_is_one_ordered_transaction(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        ops = [Mkdir(path(f"d{i:04}"), ATTRS) for i in range(1000)]
        seqs = journal.append_many(HOME, ops)
        assert seqs == list(range(seqs[0], seqs[0] + 1000))
        assert [entry.op for entry in journal.pending(HOME, 2000)] == ops


_APPEND_THEN_WAIT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from boxfs.journal import Journal, StagedPut
    from store.ids import NamespaceId
    from store.ops import Attrs
    from store.paths import DrivePath

    journal = Journal(Path(sys.argv[1]))
    attrs = Attrs(mode=0o644, uid=0, gid=0, mtime_ns=1)
    for i in range(int(sys.argv[2])):
        op = StagedPut(DrivePath.from_bytes(b"f%d" % i), attrs, staged="%032x" % i)
        power_safe = sys.argv[3] == "power-safe"
        seqs = None
        if sys.argv[3] == "now":
            seqs = journal.append_many_now(NamespaceId(bytes(16)), [op])
        if seqs is None:
            seqs = journal.append_many(NamespaceId(bytes(16)), [op], power_safe=power_safe)
        print(seqs[0], flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("mode", ["power-safe", "not-power-safe", "now"])
def test_an_append_that_returned_survives_kill_9(tmp_path: Path, mode: str) -> None:
    """Also without the fsync (``power_safe=False``, and ``append_many_now``): the
    write-ahead log is written before the commit returns, so only a power cut could lose
    such an entry."""
    journal_path = tmp_path / "journal.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", _APPEND_THEN_WAIT, str(journal_path), "25", mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        seqs = [int(child.stdout.readline()) for _ in range(25)]
        # The last append has just returned: kill before the process can do anything else.
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    with Journal(journal_path) as journal:
        entries = journal.pending(NamespaceId(bytes(16)), 100)
        assert [entry.seq for entry in entries] == seqs
        assert journal.staged_names() == {f"{i:032x}" for i in range(25)}


def test_append_many_now_appends_at_once_or_declines_without_waiting(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        first = journal.append_many_now(HOME, [put("a", STAGED[0]), Mkdir(path("d"), ATTRS)])
        assert first is not None and len(first) == 2
        # Another thread in the journal: declined at once, nothing appended.
        with journal._lock:
            assert journal.append_many_now(HOME, [put("b", STAGED[1])]) is None
        # A checkpoint of the log due: declined, until an append in a worker thread (here,
        # this one) makes it.
        while journal.append_many_now(HOME, [Mkdir(path("more"), ATTRS)]) is not None:
            pass
        # Commits since opening: `_setup`'s, the first append's, then one per Mkdir.
        assert journal.count(HOME) == 2 + (CHECKPOINT_EVERY - 2)
        journal.append_many(HOME, [put("b", STAGED[1])], power_safe=False)
        assert journal.append_many_now(HOME, [put("c", STAGED[2])]) is not None
        ops = [entry.op for entry in journal.pending(HOME, 1000)]
        assert ops[:2] == [put("a", STAGED[0]), Mkdir(path("d"), ATTRS)]
        assert ops[-2:] == [put("b", STAGED[1]), put("c", STAGED[2])]
        # SQLite's automatic checkpoint, which could fsync on the loop, is off.
        assert journal._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0


def test_the_database_is_write_ahead_logged_with_full_sync(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        db = journal._db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        journal.append_many(HOME, [put("a", STAGED[0])], power_safe=False)
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL, that commit
        journal.assign_batch(HOME, [1], "k" * 20, b"{}")  # batch bookkeeping: FULL again
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_sync_fsyncs_the_log_that_appends_without_power_safe_left_unsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    with Journal(tmp_path / "j.sqlite3") as journal:
        journal.append_many(HOME, [put("a", STAGED[0])], power_safe=False)
        monkeypatch.setattr("boxfs.journal.os.fsync", fsync)
        journal.sync()
    assert synced == [str(tmp_path / "j.sqlite3-wal")]


def test_an_assigned_batch_leaves_pending_and_survives_reopen(tmp_path: Path) -> None:
    journal_path = tmp_path / "j.sqlite3"
    with Journal(journal_path) as journal:
        seqs = [journal.append(HOME, put(f"f{i}", STAGED[i])) for i in range(3)]
        hashes = {seqs[0]: content_hash_of(b"zero")}
        journal.assign_batch(HOME, seqs[:2], "k" * 20, b'{"the": "body"}', hashes)
        assert [entry.seq for entry in journal.pending(HOME, 10)] == seqs[2:]
        assert journal.count(HOME) == 3
    with Journal(journal_path) as journal:
        [batch] = journal.batches_in_flight(HOME)
        assert batch.key == "k" * 20
        assert batch.body == b'{"the": "body"}'
        assert [entry.seq for entry in batch.entries] == seqs[:2]
        assert all(entry.batch_key == "k" * 20 for entry in batch.entries)
        assert journal.batches_in_flight(SHARED) == []
        assert journal.put_hashes([seqs[0], seqs[1]]) == hashes


def test_assign_batch_refuses_anything_but_the_oldest_pending_entries(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        seqs = [journal.append(HOME, Mkdir(path(f"d{i}"), ATTRS)) for i in range(4)]
        other = journal.append(SHARED, Mkdir(path("x"), ATTRS))
        with pytest.raises(JournalError, match="oldest pending"):
            journal.assign_batch(HOME, [seqs[1]], "key-skipping-one", b"{}")
        with pytest.raises(JournalError, match="oldest pending"):
            journal.assign_batch(HOME, [seqs[1], seqs[0]], "key-out-of-order", b"{}")
        with pytest.raises(JournalError, match="oldest pending"):
            journal.assign_batch(HOME, [other], "key-other-namespace", b"{}")
        journal.assign_batch(HOME, seqs[:2], "first-batch-key-1", b"{}")
        with pytest.raises(JournalError, match="in flight"):
            journal.assign_batch(HOME, seqs[2:], "second-batch-key", b"{}")
        # A refused call changed nothing.
        assert [entry.seq for entry in journal.pending(HOME, 10)] == seqs[2:]
        assert len(journal.batches_in_flight(HOME)) == 1


def test_complete_removes_the_batch_and_records_what_was_not_applied(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        seqs = journal.append_many(
            HOME,
            [
                put("a.txt", STAGED[0]),
                put("b.txt", STAGED[1]),
                put("c.txt", STAGED[2]),
                Delete(path("gone")),
                Mkdir(path("d"), ATTRS),
            ],
        )
        journal.assign_batch(HOME, seqs, "batch-key-0000001", b"{}")
        results = [
            applied("a.txt"),
            protocol.OpResult(status="merged", path=path("b.txt")),
            protocol.OpResult(
                status="conflicted_copy",
                path=path("c.txt"),
                conflict_path=path("c (conflicted copy from laptop 2026-01-02 030405).txt"),
            ),
            protocol.OpResult(
                status="rejected", path=path("gone"), code="not_found", message="no such path"
            ),
            applied("d"),
        ]
        with pytest.raises(JournalError, match="results"):
            journal.complete("batch-key-0000001", results[:2])
        unreferenced = journal.complete(
            "batch-key-0000001", results, local_copies={seqs[0]: "/kept/a"}
        )
        assert unreferenced == sorted(STAGED)
        assert journal.count(HOME) == 0
        assert journal.batches_in_flight(HOME) == []
        conflicts = journal.conflicts()
        assert [(c.status, c.path, c.seq) for c in conflicts] == [
            ("rejected", b"gone", seqs[3]),
            ("conflicted_copy", b"c.txt", seqs[2]),
            ("merged", b"b.txt", seqs[1]),
        ]
        assert conflicts[0].code == "not_found" and conflicts[0].message == "no such path"
        assert conflicts[1].conflict_path == (
            b"c (conflicted copy from laptop 2026-01-02 030405).txt"
        )
        assert all(c.namespace_id == HOME and c.time_ns > 0 for c in conflicts)
        # Repeated after a crash between complete and the caller's next step: nothing more.
        assert journal.complete("batch-key-0000001", results) == []
        assert len(journal.conflicts()) == 3


def test_a_staged_file_named_twice_is_unreferenced_only_after_both(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        first = journal.append(HOME, put("x", STAGED[0]))
        second = journal.append(HOME, put("y", STAGED[0]))
        journal.assign_batch(HOME, [first], "batch-key-first-1", b"{}")
        assert journal.complete("batch-key-first-1", [applied("x")]) == []
        journal.assign_batch(HOME, [second], "batch-key-second-", b"{}")
        assert journal.complete("batch-key-second-", [applied("y")]) == [STAGED[0]]


def test_staged_names_lists_pending_and_in_flight_puts(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        assert journal.staged_names() == set()
        seqs = journal.append_many(HOME, [put("a", STAGED[0]), Mkdir(path("d"), ATTRS)])
        journal.append(SHARED, put("b", STAGED[1]))
        journal.assign_batch(HOME, seqs, "in-flight-key-0001", b"{}")
        journal.append(HOME, put("c", STAGED[2]))
        assert journal.staged_names() == set(STAGED)
        assert journal.staged_names(HOME) == {STAGED[0], STAGED[2]}
        assert journal.staged_names(SHARED) == {STAGED[1]}


def test_reject_drops_one_pending_entry_and_records_why(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        seqs = journal.append_many(HOME, [put("a", STAGED[0]), put("b", STAGED[1])])
        assert journal.reject(seqs[0], "staged_missing", "staged file is missing") == [STAGED[0]]
        assert [entry.seq for entry in journal.pending(HOME, 10)] == [seqs[1]]
        [record] = journal.conflicts()
        assert (record.status, record.code, record.path) == ("rejected", "staged_missing", b"a")
        journal.assign_batch(HOME, [seqs[1]], "in-flight-key-0002", b"{}")
        with pytest.raises(JournalError, match="in flight"):
            journal.reject(seqs[1], "x", "y")


def test_base_seq_must_name_an_earlier_entry(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        first = journal.append(HOME, put("a", STAGED[0]))
        with pytest.raises(JournalError, match="base_seq"):
            journal.append(HOME, BasedOnPut(put("a", STAGED[1]), first + 1))
        second = journal.append(HOME, BasedOnPut(put("a", STAGED[1]), first))
        digest = ContentHash(bytes(32))
        journal.assign_batch(HOME, [first], "in-flight-key-0003", b"{}", {first: digest})
        journal.complete("in-flight-key-0003", [applied("a")])
        # The put is gone from ops, its content hash stays for the entry that names it.
        assert journal.put_hashes([first]) == {first: digest}
        third = journal.append(HOME, BasedOnPut(Delete(path("a")), first))
        pending = journal.pending(HOME, 10)
        assert [(entry.seq, entry.base_seq) for entry in pending] == [
            (second, first),
            (third, first),
        ]


def test_ops_the_format_refuses_are_refused_at_append_time() -> None:
    with pytest.raises(FormatError):
        Attrs(mode=0o100644, uid=0, gid=0, mtime_ns=0)  # file type bits are not mode
    with pytest.raises(FormatError):
        StagedPut(path("a"), ATTRS)  # a file without staged content
    with pytest.raises(FormatError):
        StagedPut(path("a"), ATTRS, staged=STAGED[0], kind=EntryKind.DIR)
    with pytest.raises(FormatError):
        StagedPut(path("a"), ATTRS, kind=EntryKind.SYMLINK)  # no target
    with pytest.raises(FormatError):
        StagedPut(path("a"), ATTRS, kind=EntryKind.FIFO, rdev=3)  # only devices have one
    with pytest.raises(FormatError):
        Move(path("a"), path("a/b"))
    with pytest.raises(FormatError):
        AttrChanges()
    with pytest.raises(ValueError, match="staged file name"):
        put("a", "../../etc/passwd")


def test_a_newer_journal_format_is_refused(tmp_path: Path) -> None:
    journal_path = tmp_path / "j.sqlite3"
    Journal(journal_path).close()
    raw = sqlite3.connect(journal_path)
    raw.execute("PRAGMA user_version = 99")
    raw.commit()
    raw.close()
    with pytest.raises(JournalError, match="format 99"):
        Journal(journal_path)


def test_another_process_reads_a_live_journal_read_only(tmp_path: Path) -> None:
    journal_path = tmp_path / "j.sqlite3"
    with Journal(journal_path) as journal:
        journal.append(HOME, Mkdir(path("d"), ATTRS))
        with Journal(journal_path, readonly=True) as reader:
            assert reader.count(HOME) == 1
            with pytest.raises(JournalError):
                reader.append(HOME, Mkdir(path("e"), ATTRS))
