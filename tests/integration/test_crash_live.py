"""The server killed with SIGKILL in the middle of an upload and of a stream of commits,
then restarted on the same data: the head is consistent, no partial commit is visible, and
a batch resent with its idempotency key is applied exactly once."""

from __future__ import annotations

import random
import secrets
import time
from pathlib import Path

import blake3
import pytest
import trio

from boxfs.remote import Remote
from store import protocol
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId, CommitId, NamespaceId, TreeId, chunk_id_of, content_hash_of
from store.objects import ChunkRef, EntryKind, FileEntry, decode_commit, decode_tree
from tests.integration.server_process import ServerProcess

PASSWORD = "crash test password"  # noqa: S105  (a test account)
MIB = 1 << 20


def file_put(name: str, chunks: list[tuple[ChunkId, int]], content: bytes) -> protocol.PutOp:
    entry = FileEntry(
        name=name.encode(), kind=EntryKind.FILE, mode=0o644, uid=0, gid=0,
        size=sum(length for _, length in chunks), mtime_ns=time.time_ns(),
        chunks=tuple(ChunkRef(chunk_id, length) for chunk_id, length in chunks),
        content_hash=content_hash_of(content),
    )  # fmt: skip
    return protocol.PutOp(
        path=protocol.DrivePath.from_bytes(name.encode()), entry=protocol.entry_to_model(entry)
    )


async def login(url: str, user: str, register: bool) -> tuple[Remote, NamespaceId]:
    remote = Remote(url)
    if register:
        await remote.register(user, f"{user}@example.com", PASSWORD)
    await remote.login(user, PASSWORD, "device")
    return remote, (await remote.home()).namespace_id


async def check_head_is_whole(remote: Remote, namespace: NamespaceId) -> dict[bytes, FileEntry]:
    """Walk the head's whole tree through the API and return the files it lists; every
    tree and every chunk it names must be there and verify."""
    head = await remote.head(namespace)
    if head.head is None:
        return {}
    commit_bytes = (await remote.commits(namespace, [head.head]))[head.head]
    assert commit_bytes is not None
    commit = decode_commit(commit_bytes, head.head)
    files: dict[bytes, FileEntry] = {}
    pending: list[tuple[bytes, TreeId]] = [(b"", commit.root)]
    while pending:
        prefix, tree_id = pending.pop()
        data = (await remote.trees(namespace, [tree_id]))[tree_id]
        assert data is not None, f"tree {tree_id} of the head is missing"
        for entry in decode_tree(data, tree_id):
            path = prefix + entry.name
            if entry.kind is EntryKind.DIR:
                assert entry.tree_id is not None
                pending.append((path + b"/", entry.tree_id))
            else:
                files[path] = entry
    chunk_ids = sorted({ref.chunk_id for entry in files.values() for ref in entry.chunks})
    async for record in remote.download_chunks(namespace, chunk_ids):
        assert record.payload is not None, f"chunk {record.object_id} of the head is missing"
        decode_frame(record.payload, record.object_id)
    return files


def test_kill_9_during_an_upload_leaves_no_partial_state(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    pieces = [blake3.blake3(bytes([i])).digest(length=MIB) for i in range(48)]
    frames = [(chunk_id_of(piece), encode_frame(piece)) for piece in pieces]
    content = b"".join(pieces)
    try:

        async def upload_and_crash() -> None:
            remote, home = await login(server.url, "uploader", register=True)
            async with remote, trio.open_nursery() as nursery:

                async def upload() -> None:
                    with pytest.raises(protocol.UnavailableError):
                        await remote.upload_chunks(home, frames)

                nursery.start_soon(upload)
                # Killed as soon as the first chunk is stored (a blob whole, not a
                # temporary file): mid-request however fast the machine is (a fixed sleep
                # let the upload finish first).
                blobs = server.data_dir / "blobs"
                with trio.fail_after(10):
                    while not any(
                        path.is_file() and not path.name.startswith(".tmp-")
                        for path in blobs.glob("*/*/*")
                    ):
                        await trio.sleep(0.001)
                server.kill()

        trio.run(upload_and_crash)
        server.start()
        leftovers = list((server.data_dir / "blobs").glob("*/*/.tmp-*"))
        assert leftovers == []

        async def resume() -> None:
            remote, home = await login(server.url, "uploader", register=False)
            async with remote:
                assert (await remote.head(home)).head is None
                ids = [chunk_id for chunk_id, _ in frames]
                missing = set(await remote.missing_chunks(home, ids))
                stored = [chunk_id for chunk_id in ids if chunk_id not in missing]
                async for record in remote.download_chunks(home, stored):
                    assert record.payload is not None
                    decode_frame(record.payload, record.object_id)
                await remote.upload_chunks(home, [f for f in frames if f[0] in missing])
                assert await remote.missing_chunks(home, ids) == []
                put = file_put("big.bin", [(i, MIB) for i in ids], content)
                batch = protocol.OpsBatch(idempotency_key=secrets.token_hex(16), ops=(put,))
                reply = await remote.apply_ops(home, batch)
                assert reply.results[0].status == "applied"
                files = await check_head_is_whole(remote, home)
                assert files[b"big.bin"].content_hash == content_hash_of(content)

        trio.run(resume)
    finally:
        server.stop()


def test_kill_9_during_commits_keeps_the_head_consistent_and_retries_apply_once(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "data").start()
    contents = [f"file {index}\n".encode() for index in range(300)]
    sent: list[protocol.OpsBatch] = []
    answered: set[str] = set()
    try:

        async def commit_and_crash() -> None:
            remote, home = await login(server.url, "committer", register=True)
            async with remote:
                await remote.upload_chunks(
                    home, [(chunk_id_of(c), encode_frame(c)) for c in contents]
                )

                async def commit_forever() -> None:
                    for index, data in enumerate(contents):
                        put = file_put(f"f{index:03d}.txt", [(chunk_id_of(data), len(data))], data)
                        batch = protocol.OpsBatch(idempotency_key=secrets.token_hex(16), ops=(put,))
                        sent.append(batch)
                        await remote.apply_ops(home, batch)
                        answered.add(batch.idempotency_key)

                async with trio.open_nursery() as nursery:

                    async def run() -> None:
                        with pytest.raises(protocol.UnavailableError):
                            await commit_forever()

                    nursery.start_soon(run)
                    await trio.sleep(random.uniform(0.5, 1.5))
                    server.kill()

        trio.run(commit_and_crash)
        assert 0 < len(answered) < len(contents), "the crash should land mid-stream"
        server.start()

        async def check_and_retry() -> None:
            remote, home = await login(server.url, "committer", register=False)
            async with remote:
                before = await check_head_is_whole(remote, home)
                head = await remote.head(home)
                log = await remote.log(home, limit=protocol.MAX_PAGE_SIZE)
                assert head.sequence == len(log.commits)
                assert all(c.commit_id != CommitId(bytes(32)) for c in log.commits)
                for batch in sent:
                    put = batch.ops[0]
                    assert isinstance(put, protocol.PutOp)
                    if batch.idempotency_key in answered:
                        assert bytes(put.path) in before
                # Resend every batch that got no reply, with its key: each lands once.
                in_flight = [b for b in sent if b.idempotency_key not in answered]
                assert len(in_flight) == 1
                for batch in in_flight:
                    await remote.apply_ops(home, batch)
                    await remote.apply_ops(home, batch)  # and once more: still once
                after = await check_head_is_whole(remote, home)
                assert len(after) == len(sent)
                log = await remote.log(home, limit=protocol.MAX_PAGE_SIZE)
                assert (await remote.head(home)).sequence == len(log.commits) == len(sent)

        trio.run(check_and_retry)
    finally:
        server.stop()
