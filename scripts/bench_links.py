"""The share-link benchmark: a folder's zip downloaded through a link, beside the raw chunk
download of the same bytes through the protocol in the same run. Prints ``name value unit``
lines. Run alone (``scripts/bench links [--quick]``) or from ``scripts/bench sync``, which
calls ``bench`` after its own figures.

What runs: a real ``boxfs-server`` (``ServerProcess``) with its own data directory and one
account. The folder holds ``FILES`` files of pseudo-random bytes (BLAKE3 output, so zstd
cannot shrink them and every frame is stored raw), 1 GiB in all (``--quick``: 128 MiB),
uploaded through ``boxfs.remote`` and committed in one batch; a link is made on it.

How each figure is taken (best of ``ROUNDS``; ``--quick``: one):
- ``raw_download``: every chunk of the folder's files through ``DOWNLOAD_CHUNKS``
  (``Remote.download_chunks``, one task, records parsed, frames not decoded): what the
  protocol moves with the least work on either side.
- ``link_zip``: ``curl -o /dev/null 'URL?format=zip'``, the whole zip (stored members,
  data descriptors, zip64 where needed), which the server builds from the same chunks,
  each opened, decoded and verified against its id, CRC-32 computed by ``zipfile``.
- ``link_zip_httpx``: the same zip read by httpx in this process (a Python client, as the
  raw download's is).
MB/s are of the folder's content bytes (1 MB = 10^6 bytes). ``link_zip_vs_raw`` is
``link_zip`` over ``raw_download`` (the bar: ≥ 0.7), ``link_zip_httpx_vs_raw`` the same
with the Python client.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import blake3
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boxfs.remote import Remote
from store import protocol
from store.chunking import ChunkStream
from store.frames import encode_frame
from store.ids import ChunkId, NamespaceId
from store.objects import ChunkRef, EntryKind, FileEntry
from tests.integration.server_process import ServerProcess

MIB = 1024 * 1024
FULL_MIB, QUICK_MIB = 1024, 128
FILES = 4
ROUNDS = 2
USERNAME = "benchlinks"
PASSWORD = "bench links password"  # noqa: S105  (a throwaway account)


def emit(name: str, value: float, unit: str) -> None:
    print(f"links.{name} {value:.3f} {unit}", flush=True)


async def prepare(url: str, total_mib: int) -> tuple[NamespaceId, list[ChunkId], str]:
    """Upload the folder, commit it, make a link on it: the home, the chunk ids, the URL."""
    async with Remote(url) as remote:
        await remote.register(USERNAME, f"{USERNAME}@example.com", PASSWORD)
        await remote.login(USERNAME, PASSWORD, "bench")
        home = (await remote.home()).namespace_id
        ids: list[ChunkId] = []
        ops: list[protocol.WireOp] = [
            protocol.MkdirOp(
                path=protocol.DrivePath((b"folder",)),
                attrs=protocol.AttrsModel(mode=0o755, uid=0, gid=0, mtime_ns=time.time_ns()),
            )
        ]
        size = total_mib * MIB // FILES
        for number in range(FILES):
            data = blake3.blake3(f"bench links {number}".encode()).digest(length=size)
            pieces = ChunkStream(io.BytesIO(data))
            # A piece's data is only valid until the next one: frame each as it comes.
            frames = [(piece.chunk_id, piece.length, encode_frame(piece.data)) for piece in pieces]
            await remote.upload_chunks(home, [(chunk_id, frame) for chunk_id, _, frame in frames])
            ids.extend(chunk_id for chunk_id, _, _ in frames)
            name = f"file-{number}.bin".encode()
            entry = FileEntry(
                name=name, kind=EntryKind.FILE, mode=0o644, uid=0, gid=0, size=size,
                mtime_ns=time.time_ns(), content_hash=pieces.content_hash,
                chunks=tuple(ChunkRef(chunk_id, length) for chunk_id, length, _ in frames),
            )  # fmt: skip
            del frames
            ops.append(
                protocol.PutOp(
                    path=protocol.DrivePath((b"folder", name)),
                    entry=protocol.entry_to_model(entry),
                    base=None,
                )
            )
        batch = protocol.OpsBatch(idempotency_key="bench-links-0000", ops=tuple(ops))
        reply = await remote.apply_ops(home, batch)
        assert all(result.status == "applied" for result in reply.results), reply
        made = await remote.create_link(
            home, protocol.LinkCreateRequest(path=protocol.DrivePath((b"folder",)))
        )
        return home, ids, f"{url}{made.url_path}"


async def raw_seconds(url: str, home: NamespaceId, ids: list[ChunkId]) -> tuple[float, int]:
    async with Remote(url) as remote:
        await remote.login(USERNAME, PASSWORD, "bench-raw")
        start = time.perf_counter()
        received = 0
        async for record in remote.download_chunks(home, ids):
            assert record.payload is not None, record.object_id
            received += len(record.payload)
        return time.perf_counter() - start, received


def curl_zip_seconds(link_url: str) -> tuple[float, int]:
    start = time.perf_counter()
    completed = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", f"{link_url}?format=zip"],
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - start, int(completed.stdout)


def httpx_zip_seconds(link_url: str) -> tuple[float, int]:
    start = time.perf_counter()
    received = 0
    with httpx.stream("GET", f"{link_url}?format=zip", timeout=120) as reply:
        reply.raise_for_status()
        for piece in reply.iter_raw(1 << 20):
            received += len(piece)
    return time.perf_counter() - start, received


def check_zip(link_url: str, scratch: Path, total_bytes: int) -> None:
    """Outside the clock: the zip is a valid archive of the folder's files."""
    target = scratch / "folder.zip"
    subprocess.run(["curl", "-sS", "-o", str(target), f"{link_url}?format=zip"], check=True)
    with zipfile.ZipFile(target) as archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
        assert sum(sizes.values()) == total_bytes, sizes
        first = archive.infolist()[0]
        with archive.open(first) as member:
            while member.read(1 << 20):  # reads check the CRC
                pass
    target.unlink()


def bench(scratch: Path, total_mib: int, rounds: int) -> None:
    server = ServerProcess(scratch / "links-server").start()
    try:
        home, ids, link_url = trio.run(prepare, server.url, total_mib)
        total_bytes = total_mib * MIB // FILES * FILES
        emit("folder_size", total_bytes / MIB, "MiB")
        raw = [trio.run(raw_seconds, server.url, home, ids) for _ in range(rounds)]
        curl_runs = [curl_zip_seconds(link_url) for _ in range(rounds)]
        httpx_runs = [httpx_zip_seconds(link_url) for _ in range(rounds)]
        raw_s, zip_s, httpx_s = (min(s for s, _ in runs) for runs in (raw, curl_runs, httpx_runs))
        emit("zip_overhead", curl_runs[0][1] - total_bytes, "bytes")
        mb = total_bytes / 1e6
        emit("raw_download", mb / raw_s, "MB/s")
        emit("link_zip", mb / zip_s, "MB/s")
        emit("link_zip_httpx", mb / httpx_s, "MB/s")
        emit("link_zip_vs_raw", raw_s / zip_s, "x")
        emit("link_zip_httpx_vs_raw", raw_s / httpx_s, "x")
        check_zip(link_url, scratch, total_bytes)
    finally:
        server.stop()


def run(*, quick: bool) -> None:
    """The whole benchmark in a scratch directory of its own, removed at the end."""
    scratch = Path(tempfile.mkdtemp(prefix="boxfs-bench-links-"))
    try:
        bench(scratch, QUICK_MIB if quick else FULL_MIB, 1 if quick else ROUNDS)
    finally:
        shutil.rmtree(scratch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MIB} MiB, one round")
    run(quick=parser.parse_args().quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
