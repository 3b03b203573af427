"""The event stream over a real server process: a commit on one device reaches the
others at once, a stranger hears nothing, a reconnect resumes from Last-Event-ID, and
stopping the server ends open streams at once."""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path

import trio

from boxfs.remote import Remote
from store import protocol
from store.frames import encode_frame
from store.ids import NamespaceId, chunk_id_of, content_hash_of
from store.objects import ChunkRef, EntryKind, FileEntry
from tests.integration.server_process import ServerProcess

PASSWORD = "event test password"  # noqa: S105  (a test account)
GRACEFUL_SHUTDOWN_S = 5.0  # uvicorn's timeout_graceful_shutdown in server/cli.py


def put(name: str, data: bytes) -> protocol.OpsBatch:
    entry = FileEntry(
        name=name.encode(), kind=EntryKind.FILE, mode=0o644, uid=0, gid=0, size=len(data),
        mtime_ns=time.time_ns(), chunks=(ChunkRef(chunk_id_of(data), len(data)),),
        content_hash=content_hash_of(data),
    )  # fmt: skip
    op = protocol.PutOp(
        path=protocol.DrivePath.from_bytes(name.encode()), entry=protocol.entry_to_model(entry)
    )
    return protocol.OpsBatch(idempotency_key=secrets.token_hex(16), ops=(op,))


async def account(url: str, user: str, device: str, register: bool) -> Remote:
    remote = Remote(url)
    if register:
        await remote.register(user, f"{user}@example.com", PASSWORD)
    await remote.login(user, PASSWORD, device)
    return remote


def test_a_commit_reaches_the_other_device_and_no_stranger(server_process: ServerProcess) -> None:
    async def main() -> None:
        laptop = await account(server_process.url, "dana", "laptop", register=True)
        phone = await account(server_process.url, "dana", "phone", register=False)
        stranger = await account(server_process.url, "eve", "eve-laptop", register=True)
        async with laptop, phone, stranger:
            home: NamespaceId = (await laptop.home()).namespace_id
            data = b"hello from the laptop\n"
            await laptop.upload_chunks(home, [(chunk_id_of(data), encode_frame(data))])
            phone_events: list[protocol.Event] = []
            stranger_events: list[protocol.Event] = []

            async def collect(remote: Remote, into: list[protocol.Event]) -> None:
                async for event in remote.events():
                    into.append(event)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect, phone, phone_events)
                nursery.start_soon(collect, stranger, stranger_events)
                await trio.sleep(0.3)
                reply = await laptop.apply_ops(home, put("hello.txt", data))
                with trio.fail_after(2):
                    while not phone_events:
                        await trio.sleep(0.01)
                await trio.sleep(0.3)
                nursery.cancel_scope.cancel()
            assert reply.head is not None
            assert phone_events == [
                protocol.Event(
                    namespace_id=home, head=reply.head, sequence=reply.sequence, role="owner"
                )
            ]
            assert all(event.namespace_id != home for event in stranger_events)

    trio.run(main)


def test_reconnect_with_last_event_id_skips_what_was_seen(server_process: ServerProcess) -> None:
    async def main() -> None:
        writer = await account(server_process.url, "fay", "laptop", register=True)
        reader = await account(server_process.url, "fay", "phone", register=False)
        async with writer, reader:
            home = (await writer.home()).namespace_id
            data = b"x\n"
            await writer.upload_chunks(home, [(chunk_id_of(data), encode_frame(data))])
            first = await writer.apply_ops(home, put("one.txt", data))
            assert first.head is not None

            async def first_event(last_event_id: str | None) -> protocol.Event | None:
                with trio.move_on_after(1.0):
                    async for event in reader.events(last_event_id):
                        return event
                return None

            # A new stream starts with the current head...
            assert (await first_event(None)) == protocol.Event(
                namespace_id=home, head=first.head, sequence=first.sequence, role="owner"
            )
            # ...but not when the client says it has seen it,
            seen = f"{home.hex()}.{first.sequence}"
            assert await first_event(seen) is None
            # and a head that moved since is sent at once.
            second = await writer.apply_ops(home, put("two.txt", data))
            assert second.head is not None
            assert (await first_event(seen)) == protocol.Event(
                namespace_id=home, head=second.head, sequence=second.sequence, role="owner"
            )

    trio.run(main)


def test_stopping_the_server_ends_open_event_streams_at_once(tmp_path: Path) -> None:
    """Every mount holds an event stream open; a SIGTERM must end them, not wait out
    uvicorn's graceful-shutdown timeout (5 s) for each."""
    server = ServerProcess(tmp_path / "data").start()
    try:

        async def main() -> float:
            remote = await account(server.url, "stopper", "laptop", register=True)
            async with remote:
                connected = trio.Event()
                ended = trio.Event()

                async def listen() -> None:
                    with contextlib.suppress(protocol.UnavailableError):
                        async for _ in remote.events(on_connected=connected.set):
                            pass
                    ended.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(listen)
                    await connected.wait()
                    started = trio.current_time()
                    code = await trio.to_thread.run_sync(server.stop)
                    assert code == 0
                    with trio.fail_after(10):
                        await ended.wait()
                    return trio.current_time() - started

        took_s = trio.run(main)
        assert took_s < GRACEFUL_SHUTDOWN_S, f"the stop waited {took_s:.1f} s for the stream"
    finally:
        server.stop()
