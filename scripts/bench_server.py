"""The server benchmark (``scripts/bench server``): transfers through ``boxfs.remote`` next
to a raw HTTP transfer of the same bytes on the same HTTP stack, commits per second for
small-file puts in batches, and commit-to-event latency. Prints ``name value unit`` lines.

Everything runs on loopback: a real ``boxfs-server`` process, and a baseline uvicorn
process (``bench_raw_http.py``) that reads and drops or streams bytes without looking at
them, both started and stopped here by their own PIDs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boxfs.remote import Remote
from server.blobstore import LocalBlobStore
from server.content import UPLOAD_WORKERS
from store import protocol
from store.frames import encode_frame
from store.ids import ChunkId, NamespaceId, chunk_id_of, content_hash_of
from store.objects import ChunkRef, EntryKind, FileEntry
from tests.integration.server_process import ServerProcess, free_port

MIB = 1 << 20
PASSWORD = "benchmark password"  # noqa: S105  (a test account on a throwaway server)


def emit(name: str, value: float, unit: str) -> None:
    print(f"{name} {value:.3f} {unit}", flush=True)


def make_frames(total_bytes: int) -> list[tuple[ChunkId, bytes]]:
    """Incompressible 1 MiB chunks, framed (as a client uploads them)."""
    frames = []
    for index in range(total_bytes // MIB):
        data = blake3.blake3(index.to_bytes(8, "big")).digest(length=MIB)
        frames.append((chunk_id_of(data), encode_frame(data)))
    return frames


class RawServer:
    """The baseline: same uvicorn, no work on the bytes."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent),
                "bench_raw_http:app", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warning",
            ],
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/source?bytes=1", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("baseline server did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def raw_upload(url: str, body: list[bytes]) -> float:
    async def pieces():  # type: ignore[no-untyped-def]
        for piece in body:
            yield piece

    async with httpx.AsyncClient(timeout=120) as client:
        start = time.perf_counter()
        reply = await client.post(f"{url}/sink", content=pieces())
        elapsed = time.perf_counter() - start
        assert int(reply.text) == sum(len(piece) for piece in body)
    return elapsed


async def raw_download(url: str, total: int) -> float:
    async with httpx.AsyncClient(timeout=120) as client:
        start = time.perf_counter()
        received = 0
        async with client.stream("GET", f"{url}/source", params={"bytes": total}) as reply:
            async for piece in reply.aiter_raw(MIB):
                received += len(piece)
        elapsed = time.perf_counter() - start
        assert received == total
    return elapsed


def durable_write_seconds(frames: list[tuple[ChunkId, bytes]], directory: Path) -> float:
    """The disk's share of an upload: the same blobs written durably (temp file, fsync,
    rename, directory fsync) by the server's own blob store, on as many threads."""
    store = LocalBlobStore(directory)
    start = time.perf_counter()
    with ThreadPoolExecutor(UPLOAD_WORKERS) as pool:
        list(pool.map(lambda item: store.put(*item), frames))
    elapsed = time.perf_counter() - start
    shutil.rmtree(directory)
    return elapsed


async def transfers(
    server_url: str, raw_url: str, total_bytes: int, rounds: int, scratch: Path
) -> None:
    frames = make_frames(total_bytes)
    ids = [chunk_id for chunk_id, _ in frames]
    stream = list(
        protocol.encode_record_stream(ChunkId, [protocol.Record(i, f) for i, f in frames])
    )
    stream_bytes = sum(len(piece) for piece in stream)
    best = {"up": float("inf"), "down": float("inf"), "raw_up": float("inf")}
    best["raw_down"] = float("inf")
    for round_index in range(rounds):
        async with Remote(server_url) as remote:
            name = f"bench{round_index}"
            await remote.register(name, f"{name}@example.com", PASSWORD)
            await remote.login(name, PASSWORD, "bench")
            home = (await remote.home()).namespace_id
            start = time.perf_counter()
            stored = await remote.upload_chunks(home, frames)
            best["up"] = min(best["up"], time.perf_counter() - start)
            assert len(stored) == len(frames)
            start = time.perf_counter()
            received = 0
            async for record in remote.download_chunks(home, ids):
                assert record.payload is not None
                received += len(record.payload)
            best["down"] = min(best["down"], time.perf_counter() - start)
        best["raw_up"] = min(best["raw_up"], await raw_upload(raw_url, stream))
        best["raw_down"] = min(best["raw_down"], await raw_download(raw_url, stream_bytes))
        disk_s = await trio.to_thread.run_sync(
            durable_write_seconds, frames, scratch / f"disk{round_index}"
        )
        best["disk"] = min(best.get("disk", float("inf")), disk_s)
    mb = stream_bytes / 1e6
    emit("server.upload", mb / best["up"], "MB/s")
    emit("server.raw_http_upload", mb / best["raw_up"], "MB/s")
    emit("server.upload_ratio", best["raw_up"] / best["up"], "ratio")
    emit("server.durable_disk_write", mb / best["disk"], "MB/s")
    emit(
        "server.upload_ratio_to_slower_of_http_and_disk",
        max(best["raw_up"], best["disk"]) / best["up"],
        "ratio",
    )
    emit("server.download", mb / best["down"], "MB/s")
    emit("server.raw_http_download", mb / best["raw_down"], "MB/s")
    emit("server.download_ratio", best["raw_down"] / best["down"], "ratio")


def small_file_entry(name: bytes, data: bytes) -> FileEntry:
    return FileEntry(
        name=name, kind=EntryKind.FILE, mode=0o644, uid=1000, gid=1000, size=len(data),
        mtime_ns=time.time_ns(), chunks=(ChunkRef(chunk_id_of(data), len(data)),),
        content_hash=content_hash_of(data),
    )  # fmt: skip


def put_op(name: str, data: bytes) -> protocol.PutOp:
    entry = small_file_entry(name.encode(), data)
    return protocol.PutOp(
        path=protocol.DrivePath.from_bytes(name.encode()),
        entry=protocol.entry_to_model(entry),
    )


async def small_files(server_url: str, files: int, batch_size: int) -> None:
    async with Remote(server_url) as remote:
        await remote.register("smallfiles", "small@example.com", PASSWORD)
        await remote.login("smallfiles", PASSWORD, "bench")
        home = (await remote.home()).namespace_id
        contents = [f"file number {index}\n".encode() for index in range(files)]
        await remote.upload_chunks(home, [(chunk_id_of(c), encode_frame(c)) for c in contents])
        start = time.perf_counter()
        commits = 0
        for first in range(0, files, batch_size):
            ops = tuple(
                put_op(f"f{index:05d}.txt", contents[index])
                for index in range(first, min(files, first + batch_size))
            )
            reply = await remote.apply_ops(
                home, protocol.OpsBatch(idempotency_key=secrets.token_hex(16), ops=ops)
            )
            assert all(result.status == "applied" for result in reply.results)
            commits += 1
        elapsed = time.perf_counter() - start
    emit("server.small_file_puts", files / elapsed, "files/s")
    emit("server.small_file_commits", commits / elapsed, "commits/s")
    emit("server.small_file_batch", batch_size, "files/commit")


async def event_latency(server_url: str, commits: int) -> None:
    async with Remote(server_url) as writer, Remote(server_url) as reader:
        await writer.register("events", "events@example.com", PASSWORD)
        await writer.login("events", PASSWORD, "writer")
        await reader.login("events", PASSWORD, "reader")
        home: NamespaceId = (await writer.home()).namespace_id
        data = b"event payload\n"
        await writer.upload_chunks(home, [(chunk_id_of(data), encode_frame(data))])
        arrivals: dict[int, float] = {}
        ready = trio.Event()

        async def listen() -> None:
            ready.set()
            async for event in reader.events():
                arrivals[event.sequence] = time.perf_counter()

        latencies = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await ready.wait()
            await trio.sleep(0.5)
            for index in range(commits):
                batch = protocol.OpsBatch(
                    idempotency_key=secrets.token_hex(16), ops=(put_op(f"e{index}.txt", data),)
                )
                sent = time.perf_counter()
                reply = await writer.apply_ops(home, batch)
                with trio.fail_after(10):
                    while reply.sequence not in arrivals:
                        await trio.sleep(0.0005)
                latencies.append(arrivals[reply.sequence] - sent)
            nursery.cancel_scope.cancel()
    latencies.sort()
    emit("server.commit_to_event_p50", 1000 * statistics.median(latencies), "ms")
    emit("server.commit_to_event_p99", 1000 * latencies[int(0.99 * (len(latencies) - 1))], "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller transfers, fewer commits")
    args = parser.parse_args()
    total_mib, rounds, commits = (64, 1, 50) if args.quick else (256, 3, 200)
    with tempfile.TemporaryDirectory(prefix="boxfs-bench-") as scratch:
        server = ServerProcess(Path(scratch) / "data").start()
        raw = RawServer()
        try:
            emit("server.transfer_size", total_mib, "MiB")
            trio.run(transfers, server.url, raw.url, total_mib * MIB, rounds, Path(scratch))
            trio.run(small_files, server.url, 1000, 100)
            trio.run(event_latency, server.url, commits)
        finally:
            raw.stop()
            server.stop()
    os.sync()


if __name__ == "__main__":
    main()
