"""Over a real server process: two devices editing one text file (merged when the edits
do not overlap, a conflicted copy when they do, nothing lost), and a second user who can
neither read nor write the first user's namespace."""

from __future__ import annotations

import secrets
import time

import pytest
import trio

from boxfs.remote import Remote
from store import protocol
from store.errors import NotFoundError
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId, CommitId, NamespaceId, TreeId, chunk_id_of, content_hash_of
from store.objects import ChunkRef, EntryKind, FileEntry, decode_commit, decode_tree
from tests.integration.server_process import ServerProcess

PASSWORD = "sharing test password"  # noqa: S105  (a test account)
BASE = b"".join(f"line {number}\n".encode() for number in range(1, 21))


def batch_of(*ops: protocol.PutOp) -> protocol.OpsBatch:
    return protocol.OpsBatch(idempotency_key=secrets.token_hex(16), ops=ops)


def put(name: str, data: bytes, base: bytes | None) -> protocol.PutOp:
    entry = FileEntry(
        name=name.encode(), kind=EntryKind.FILE, mode=0o644, uid=0, gid=0, size=len(data),
        mtime_ns=time.time_ns(), chunks=(ChunkRef(chunk_id_of(data), len(data)),),
        content_hash=content_hash_of(data),
    )  # fmt: skip
    return protocol.PutOp(
        path=protocol.DrivePath.from_bytes(name.encode()),
        entry=protocol.entry_to_model(entry),
        base=content_hash_of(base) if base is not None else None,
    )


async def upload(remote: Remote, home: NamespaceId, *contents: bytes) -> None:
    await remote.upload_chunks(home, [(chunk_id_of(c), encode_frame(c)) for c in contents])


async def read_file(remote: Remote, home: NamespaceId, name: bytes) -> bytes:
    head = (await remote.head(home)).head
    assert head is not None
    commit = decode_commit((await remote.commits(home, [head]))[head] or b"", head)
    tree = decode_tree((await remote.trees(home, [commit.root]))[commit.root] or b"", commit.root)
    entry = tree.get(name)
    assert entry is not None, name
    ids = [ref.chunk_id for ref in entry.chunks]
    data = b""
    async for record in remote.download_chunks(home, ids):
        assert record.payload is not None
        data += decode_frame(record.payload, record.object_id)
    return data


async def names(remote: Remote, home: NamespaceId) -> list[bytes]:
    head = (await remote.head(home)).head
    assert head is not None
    commit = decode_commit((await remote.commits(home, [head]))[head] or b"", head)
    tree = decode_tree((await remote.trees(home, [commit.root]))[commit.root] or b"", commit.root)
    return [entry.name for entry in tree]


def edit(data: bytes, line: int, text: str) -> bytes:
    lines = data.splitlines(keepends=True)
    lines[line - 1] = f"{text}\n".encode()
    return b"".join(lines)


def test_two_devices_editing_one_text_file(server_process: ServerProcess) -> None:
    async def main() -> None:
        async with Remote(server_process.url) as laptop, Remote(server_process.url) as phone:
            await laptop.register("gil", "gil@example.com", PASSWORD)
            await laptop.login("gil", PASSWORD, "laptop")
            await phone.login("gil", PASSWORD, "phone")
            home = (await laptop.home()).namespace_id
            await upload(laptop, home, BASE)
            await laptop.apply_ops(home, batch_of(put("notes.txt", BASE, None)))

            # Different places: merged on the server, both edits kept.
            on_laptop, on_phone = edit(BASE, 2, "laptop was here"), edit(BASE, 18, "phone too")
            await upload(laptop, home, on_laptop)
            await upload(phone, home, on_phone)
            await laptop.apply_ops(home, batch_of(put("notes.txt", on_laptop, BASE)))
            reply = await phone.apply_ops(home, batch_of(put("notes.txt", on_phone, BASE)))
            assert reply.results[0].status == "merged"
            merged = await read_file(laptop, home, b"notes.txt")
            assert b"laptop was here" in merged
            assert b"phone too" in merged

            # The same line: a conflicted copy, both versions intact.
            laptop_line, phone_line = (
                edit(merged, 5, "five, laptop"),
                edit(merged, 5, "five, phone"),
            )
            await upload(laptop, home, laptop_line)
            await upload(phone, home, phone_line)
            await laptop.apply_ops(home, batch_of(put("notes.txt", laptop_line, merged)))
            reply = await phone.apply_ops(home, batch_of(put("notes.txt", phone_line, merged)))
            result = reply.results[0]
            assert result.status == "conflicted_copy"
            assert result.conflict_path is not None
            copy_name = bytes(result.conflict_path)
            assert copy_name.startswith(b"notes (conflicted copy from phone ")
            assert copy_name.endswith(b").txt")
            assert await read_file(laptop, home, b"notes.txt") == laptop_line
            assert await read_file(laptop, home, copy_name) == phone_line
            assert sorted(await names(laptop, home)) == sorted([b"notes.txt", copy_name])

    trio.run(main)


def test_a_second_user_can_neither_read_nor_write_the_first_users_namespace(
    server_process: ServerProcess,
) -> None:
    async def main() -> None:
        async with Remote(server_process.url) as owner, Remote(server_process.url) as other:
            await owner.register("hal", "hal@example.com", PASSWORD)
            await owner.login("hal", PASSWORD, "laptop")
            await other.register("ivy", "ivy@example.com", PASSWORD)
            await other.login("ivy", PASSWORD, "laptop")
            home = (await owner.home()).namespace_id
            secret = b"hal's secret\n"
            await upload(owner, home, secret)
            reply = await owner.apply_ops(home, batch_of(put("secret.txt", secret, None)))
            assert reply.head is not None
            head: CommitId = reply.head
            root: TreeId = decode_commit(
                (await owner.commits(home, [head]))[head] or b"", head
            ).root
            chunk: ChunkId = chunk_id_of(secret)

            attempts = [
                other.head(home),
                other.log(home),
                other.missing_chunks(home, [chunk]),
                other.upload_chunks(home, [(chunk, encode_frame(secret))]),
                other.chunk(home, chunk),
                other.commits(home, [head]),
                other.trees(home, [root]),
                other.apply_ops(home, batch_of(put("intruder.txt", secret, None))),
                other.versions(
                    home, protocol.VersionsRequest(path=protocol.DrivePath.from_bytes(b"a"))
                ),
            ]
            for attempt in attempts:
                with pytest.raises(NotFoundError):
                    await attempt
            with pytest.raises(NotFoundError):
                async for _record in other.download_chunks(home, [chunk]):
                    pass
            # Knowing the chunk id is not enough: through their own namespace the other
            # user is told it is missing, and a download gives a missing record.
            own = (await other.home()).namespace_id
            assert await other.missing_chunks(own, [chunk]) == [chunk]
            records = [record async for record in other.download_chunks(own, [chunk])]
            assert [record.payload for record in records] == [None]

    trio.run(main)
