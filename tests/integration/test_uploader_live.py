"""The uploader against a real server process: a burst lands in order in a handful of
commits, a batch whose reply was lost is applied once, an offline server keeps everything
waiting in the journal until it is back, and content the server holds is never re-sent.

Each test names the crash state of ``docs/crash-states.md`` it covers."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import blake3
import trio

from boxfs import uploader as uploader_module
from boxfs.journal import BasedOnPut, Journal, JournalOp, StagedPut
from boxfs.remote import Remote
from boxfs.staging import Staging
from boxfs.uploader import Uploader
from store import protocol
from store.ids import ChunkId, CommitId, NamespaceId
from store.objects import EntryKind, FileEntry
from store.ops import Attrs, Delete, Mkdir, Move
from store.protocol import DrivePath
from tests.integration.drive_api import head_entries
from tests.integration.server_process import ServerProcess

PASSWORD = "uploader test password"  # noqa: S105  (a test account)
MIB = 1 << 20
ATTRS = Attrs(mode=0o644, uid=1000, gid=1000, mtime_ns=1_700_000_000_000_000_000)
DIR_ATTRS = Attrs(mode=0o755, uid=1000, gid=1000, mtime_ns=1_700_000_000_000_000_000)
TIMEOUT_S = 60

R = TypeVar("R", bound=Remote)


def path(text: str) -> DrivePath:
    return DrivePath.from_bytes(text.encode())


async def login(url: str, user: str, remote_type: type[R]) -> R:
    remote = remote_type(url)
    await remote.register(user, f"{user}@example.com", PASSWORD)
    await remote.login(user, PASSWORD, "laptop")
    return remote


def stage(staging: Staging, data: bytes) -> str:
    with staging.new() as staged:
        staged.write_at(0, data)
        return staged.name


async def append(journal: Journal, namespace: NamespaceId, op: JournalOp | BasedOnPut) -> int:
    return await trio.to_thread.run_sync(journal.append, namespace, op)


@asynccontextmanager
async def running(uploader: Uploader) -> AsyncIterator[Uploader]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(uploader.run)
        yield uploader
        nursery.cancel_scope.cancel()


async def commit_ids(remote: Remote, namespace: NamespaceId) -> list[CommitId]:
    found: list[CommitId] = []
    cursor: str | None = None
    while True:
        page = await remote.log(namespace, cursor=cursor, limit=protocol.MAX_PAGE_SIZE)
        found.extend(info.commit_id for info in page.commits)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def files_of(entries: dict[bytes, FileEntry]) -> dict[bytes, bytes]:
    """path → content hash of every file."""
    return {
        name: bytes(entry.content_hash)
        for name, entry in entries.items()
        if entry.content_hash is not None
    }


def digest(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


class CountingRemote(Remote):
    """Counts the frame bytes uploaded and remembers every idempotency key sent."""

    chunk_bytes = 0
    keys: list[str]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.keys = []

    async def upload_chunks(
        self, namespace_id: NamespaceId, frames: Iterable[tuple[ChunkId, bytes]]
    ) -> list[ChunkId]:
        frames = list(frames)
        self.chunk_bytes += sum(len(frame) for _, frame in frames)
        return await super().upload_chunks(namespace_id, frames)

    async def apply_ops(
        self, namespace_id: NamespaceId, batch: protocol.OpsBatch
    ) -> protocol.OpsBatchResponse:
        self.keys.append(batch.idempotency_key)
        return await super().apply_ops(namespace_id, batch)


class LostReplyRemote(CountingRemote):
    """The server applies the batch, then the reply is lost on the way back."""

    async def apply_ops(
        self, namespace_id: NamespaceId, batch: protocol.OpsBatch
    ) -> protocol.OpsBatchResponse:
        await super().apply_ops(namespace_id, batch)
        raise protocol.UnavailableError("the connection broke before the reply arrived")


def test_a_burst_lands_in_order_in_a_handful_of_commits(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    """Crash state covered: none (the normal path). A move of a directory whose files are
    still pending carries them along by order alone."""
    rng = random.Random(4)
    small = {f"f{i:03}": b"small file %d\n" % i for i in range(200)}
    big = rng.randbytes(10 * MIB)

    async def main() -> None:
        remote = await login(server_process.url, "ada", Remote)
        home = (await remote.home()).namespace_id
        staging = Staging(tmp_path / "staging")
        journal = Journal(tmp_path / "journal.sqlite3")
        uploader = Uploader(
            journal, staging, remote, home, trio.CapacityLimiter(2), batch_max_ops=100
        )
        async with remote, running(uploader):
            # What a burst of writes on the mount journals, each op nudging the uploader.
            await append(journal, home, Mkdir(path("a"), DIR_ATTRS))
            uploader.nudge()
            seqs: dict[str, int] = {}
            for name, data in small.items():
                op = StagedPut(path(f"a/{name}"), ATTRS, staged=stage(staging, data))
                seqs[name] = await append(journal, home, op)
                uploader.nudge()
            await append(journal, home, StagedPut(path("big.bin"), ATTRS, stage(staging, big)))
            await append(journal, home, Move(path("a"), path("b")))
            await append(journal, home, BasedOnPut(Delete(path("b/f007")), seqs["f007"]))
            uploader.nudge()
            with trio.fail_after(TIMEOUT_S):
                await uploader.wait_idle()
            progress = await uploader.progress()
            entries = await head_entries(remote, home)
            commits = await commit_ids(remote, home)
        journal.close()

        expected = {f"b/{name}".encode(): digest(data) for name, data in small.items()}
        del expected[b"b/f007"]
        expected[b"big.bin"] = digest(big)
        assert files_of(entries) == expected
        assert set(entries) == {*expected, b"b"}
        assert entries[b"b"].kind is EntryKind.DIR
        assert len(entries[b"big.bin"].chunks) > 2
        assert entries[b"big.bin"].mode == ATTRS.mode
        assert entries[b"big.bin"].mtime_ns == ATTRS.mtime_ns
        # 204 ops in batches of at most 100: three commits, four if a batch was cut early.
        assert 3 <= len(commits) <= 5, len(commits)
        assert progress.pending_ops == 0 and progress.bytes_to_upload == 0
        assert progress.online and progress.last_error is None
        assert progress.last_sync_time is not None
        assert progress.bytes_sent > 10 * MIB
        assert staging.names() == set()  # every staged file went once the server had it

    trio.run(main)


def test_a_batch_whose_reply_was_lost_is_applied_once_by_the_next_uploader(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    """Crash states covered: "batch key persisted and sent, no reply" (the first uploader
    is cancelled with its batch in flight: the process died) and "journaled, not sent" (an
    op appended afterwards). The next uploader, on a reopened journal, resends the batch
    with the same key and bytes, then sends the rest."""
    journal_path = tmp_path / "journal.sqlite3"

    async def main() -> None:
        lossy = await login(server_process.url, "bob", LostReplyRemote)
        home = (await lossy.home()).namespace_id
        staging = Staging(tmp_path / "staging")
        journal = Journal(journal_path)
        await append(journal, home, Mkdir(path("x"), DIR_ATTRS))
        await append(journal, home, StagedPut(path("x/a"), ATTRS, stage(staging, b"a" * 1000)))
        await append(journal, home, StagedPut(path("x/b"), ATTRS, stage(staging, b"b" * 1000)))
        first = Uploader(journal, staging, lossy, home, trio.CapacityLimiter(2))
        async with lossy, running(first):
            with trio.fail_after(TIMEOUT_S):
                while first.online:  # the lost reply looks like an unreachable server
                    await trio.sleep(0.01)
            assert lossy.keys
        # The process is gone: its batch is in flight, with the key it sent.
        [in_flight] = journal.batches_in_flight(home)
        assert {in_flight.key} == set(lossy.keys)
        journal.close()

        journal = Journal(journal_path)  # the next mount
        late = stage(staging, b"written after the crash")
        await append(journal, home, StagedPut(path("x/c"), ATTRS, late))
        remote = CountingRemote(server_process.url, lossy.token)
        second = Uploader(
            journal, Staging(tmp_path / "staging"), remote, home, trio.CapacityLimiter(2)
        )
        async with remote, running(second):
            with trio.fail_after(TIMEOUT_S):
                await second.wait_idle()
            assert remote.keys[0] == in_flight.key
            assert len(remote.keys) == 2
            entries = await head_entries(remote, home)
            commits = await commit_ids(remote, home)
        journal.close()
        assert files_of(entries) == {
            b"x/a": digest(b"a" * 1000),
            b"x/b": digest(b"b" * 1000),
            b"x/c": digest(b"written after the crash"),
        }
        assert len(commits) == 2  # the first batch once, then the late op
        assert staging.names() == set()

    trio.run(main)


class CrashingJournal(Journal):
    """``complete`` fails the first time: the reply arrived, the process died before the
    journal recorded it."""

    crashed = False

    def complete(
        self, key: str, results: Sequence[protocol.OpResult], **kwargs: object
    ) -> list[str]:
        if not self.crashed:
            self.crashed = True
            raise OSError("simulated crash before the completion was recorded")
        return super().complete(key, results, **kwargs)  # type: ignore[arg-type]


def test_a_reply_received_but_not_recorded_is_completed_by_the_resend(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    """Crash state covered: "reply received, not completed". The failure is reported, the
    run loop goes on, and the resend with the same key gets the stored reply."""

    async def main() -> None:
        remote = await login(server_process.url, "cyd", CountingRemote)
        home = (await remote.home()).namespace_id
        staging = Staging(tmp_path / "staging")
        journal = CrashingJournal(tmp_path / "journal.sqlite3")
        await append(journal, home, StagedPut(path("note"), ATTRS, stage(staging, b"note")))
        uploader = Uploader(journal, staging, remote, home, trio.CapacityLimiter(2))
        async with remote, running(uploader):
            with trio.fail_after(TIMEOUT_S):
                await uploader.wait_idle()
            commits = await commit_ids(remote, home)
            entries = await head_entries(remote, home)
        journal.close()
        assert journal.crashed
        assert len(remote.keys) == 2 and remote.keys[0] == remote.keys[1]
        assert len(commits) == 1
        assert files_of(entries) == {b"note": digest(b"note")}
        assert uploader.last_error is None  # cleared by the batch that went through

    trio.run(main)


def test_ops_wait_in_the_journal_while_the_server_is_down_and_land_after(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    """Crash state covered: "journaled, not sent" while the server is unreachable: the
    uploader reports offline, keeps every op in order, and sends them on reconnect."""

    async def main() -> None:
        remote = await login(server_process.url, "dee", Remote)
        home = (await remote.home()).namespace_id
        server_process.stop()
        staging = Staging(tmp_path / "staging")
        journal = Journal(tmp_path / "journal.sqlite3")
        uploader = Uploader(
            journal, staging, remote, home, trio.CapacityLimiter(2), backoff_max_s=0.5
        )
        restarted: ServerProcess | None = None
        try:
            async with remote, running(uploader):
                await append(journal, home, Mkdir(path("offline"), DIR_ATTRS))
                for i in range(5):
                    name = stage(staging, b"offline write %d" % i)
                    await append(journal, home, StagedPut(path(f"offline/{i}"), ATTRS, name))
                await append(journal, home, Move(path("offline"), path("online")))
                uploader.nudge()
                with trio.fail_after(TIMEOUT_S):
                    while uploader.online:
                        await trio.sleep(0.05)
                progress = await uploader.progress()
                assert progress.pending_ops == 7
                assert progress.bytes_to_upload == sum(
                    len(b"offline write %d" % i) for i in range(5)
                )
                assert progress.last_error is not None and progress.last_error.startswith("offline")
                assert progress.last_sync_time is None
                await trio.sleep(1.0)  # a few retries go by; nothing is lost
                assert journal.count(home) == 7

                restarted = ServerProcess(server_process.data_dir, port=server_process.port)
                await trio.to_thread.run_sync(restarted.start)
                with trio.fail_after(TIMEOUT_S):
                    await uploader.wait_idle()
                assert (await uploader.progress()).online
                entries = await head_entries(remote, home)
        finally:
            journal.close()
            if restarted is not None:
                restarted.stop()
        assert files_of(entries) == {
            f"online/{i}".encode(): digest(b"offline write %d" % i) for i in range(5)
        }

    trio.run(main)


def test_copying_a_file_the_server_holds_uploads_no_chunk_bytes(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    rng = random.Random(7)
    content = rng.randbytes(3 * MIB)

    async def main() -> None:
        remote = await login(server_process.url, "eli", CountingRemote)
        home = (await remote.home()).namespace_id
        staging = Staging(tmp_path / "staging")
        journal = Journal(tmp_path / "journal.sqlite3")
        uploader = Uploader(journal, staging, remote, home, trio.CapacityLimiter(2))
        async with remote, running(uploader):
            await append(journal, home, StagedPut(path("original"), ATTRS, stage(staging, content)))
            uploader.nudge()
            with trio.fail_after(TIMEOUT_S):
                await uploader.wait_idle()
            first_upload = remote.chunk_bytes
            await append(journal, home, StagedPut(path("copy"), ATTRS, stage(staging, content)))
            uploader.nudge()
            with trio.fail_after(TIMEOUT_S):
                await uploader.wait_idle()
            entries = await head_entries(remote, home)
        journal.close()
        assert first_upload >= len(content)  # random bytes do not compress
        assert remote.chunk_bytes == first_upload  # the copy sent no chunk bytes
        assert entries[b"copy"].chunks == entries[b"original"].chunks
        assert files_of(entries) == {b"original": digest(content), b"copy": digest(content)}

    trio.run(main)


def test_puts_that_cannot_land_are_recorded_and_the_rest_goes_on(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    """A put whose staged file vanished (a bug) is dropped with a recorded rejection; a put
    the server refuses (its folder does not exist) is recorded with its content kept under
    ``rejected/``; a second save of a file names the first one's content as its base."""

    async def main() -> None:
        remote = await login(server_process.url, "fay", Remote)
        home = (await remote.home()).namespace_id
        staging = Staging(tmp_path / "staging")
        journal = Journal(tmp_path / "journal.sqlite3")
        vanished = stage(staging, b"about to vanish")
        await append(journal, home, StagedPut(path("vanished"), ATTRS, vanished))
        staging.remove(vanished)
        orphan = stage(staging, b"no folder for me")
        await append(journal, home, StagedPut(path("no/such/folder"), ATTRS, orphan))
        first = await append(journal, home, StagedPut(path("doc"), ATTRS, stage(staging, b"v1")))
        await append(
            journal, home, BasedOnPut(StagedPut(path("doc"), ATTRS, stage(staging, b"v2")), first)
        )
        uploader = Uploader(journal, staging, remote, home, trio.CapacityLimiter(2))
        async with remote, running(uploader):
            with trio.fail_after(TIMEOUT_S):
                await uploader.wait_idle()
            entries = await head_entries(remote, home)
        conflicts = journal.conflicts()
        journal.close()
        assert files_of(entries) == {b"doc": digest(b"v2")}  # v2 replaced v1: no conflict
        by_path = {record.path: record for record in conflicts}
        assert set(by_path) == {b"vanished", b"no/such/folder"}
        assert by_path[b"vanished"].code == "staged_missing"
        assert by_path[b"vanished"].status == "lost"  # reported by status and sync
        refused = by_path[b"no/such/folder"]
        assert refused.status == "rejected" and refused.local_copy is not None
        assert Path(refused.local_copy).read_bytes() == b"no folder for me"
        assert staging.names() == set()

    trio.run(main)


def test_a_resent_batch_first_uploads_the_chunks_the_server_lacks(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    """Crash state covered: "batch key persisted, not sent" with chunks the server does not
    hold (never uploaded, or collected while the device was away): the resend asks which
    are missing, frames them from the staged files, then sends the batch as persisted."""
    content = random.Random(9).randbytes(2 * MIB)

    async def main() -> None:
        remote = await login(server_process.url, "gil", CountingRemote)
        home = (await remote.home()).namespace_id
        staging = Staging(tmp_path / "staging")
        journal = Journal(tmp_path / "journal.sqlite3")
        op = StagedPut(path("persisted"), ATTRS, stage(staging, content))
        seq = await append(journal, home, op)
        # What a process that died right after assign_batch left: key and body, no chunks.
        scanned = uploader_module._scan(staging, op.staged or "")
        batch = protocol.OpsBatch(
            idempotency_key="persisted-before-any-upload",
            ops=(uploader_module.build_op(op, scanned, None),),
        )
        journal.assign_batch(home, [seq], batch.idempotency_key, batch.model_dump_json().encode())
        uploader = Uploader(journal, staging, remote, home, trio.CapacityLimiter(2))
        async with remote, running(uploader):
            with trio.fail_after(TIMEOUT_S):
                await uploader.wait_idle()
            entries = await head_entries(remote, home)
        journal.close()
        assert remote.keys == ["persisted-before-any-upload"]
        assert remote.chunk_bytes >= len(content)
        assert files_of(entries) == {b"persisted": digest(content)}

    trio.run(main)


def test_changes_to_a_shared_folder_one_was_removed_from_leave_with_their_content_kept(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    """Removed from a shared folder (or made a viewer) while changes to it wait in the
    journal: the server will never take them, so they leave the journal as rejected, each
    put's content kept under ``rejected/``, and the uploader stays idle instead of retrying
    forever."""

    async def main() -> None:
        owner = await login(server_process.url, "olive", Remote)
        member = await login(server_process.url, "milo", Remote)
        async with owner, member:
            home = (await owner.home()).namespace_id
            await owner.apply_ops(
                home,
                protocol.OpsBatch(
                    idempotency_key="k" * 24,
                    ops=(protocol.op_to_wire(Mkdir(path("Team"), DIR_ATTRS)),),
                ),
            )
            team = (await owner.share(home, path("Team"))).namespace_id
            await owner.set_member(team, "milo", "editor")
            (invitation,) = await member.invitations()
            await member.accept_invitation(invitation.invitation_id)
            await owner.remove_member(team, "milo")
            staging = Staging(tmp_path / "staging")
            journal = Journal(tmp_path / "journal.sqlite3")
            staged = stage(staging, b"written before the removal arrived")
            await append(journal, team, StagedPut(path("draft.txt"), ATTRS, staged))
            await append(journal, team, Mkdir(path("folder"), DIR_ATTRS))
            uploader = Uploader(journal, staging, member, team, trio.CapacityLimiter(2))
            async with running(uploader):
                with trio.fail_after(TIMEOUT_S):
                    await uploader.wait_idle()
            assert journal.count(team) == 0
            records = {record.path: record for record in journal.conflicts()}
            journal.close()
        assert set(records) == {b"draft.txt", b"folder"}
        assert {record.status for record in records.values()} == {"rejected"}
        kept = records[b"draft.txt"].local_copy
        assert kept is not None
        assert Path(kept).read_bytes() == b"written before the removal arrived"

    trio.run(main)
