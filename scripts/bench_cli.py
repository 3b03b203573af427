"""The CLI benchmark (``scripts/bench cli``): ``boxfs put`` and ``boxfs get`` of one big
file without a mount, each beside what the server and HTTP deliver for the same chunks in
this process. Prints ``name value unit`` lines; ratios compare figures of this same run.

What runs: a real ``boxfs-server`` (``ServerProcess``) with its own data directory, one
account, and one device home logged in with ``boxfs login --password-stdin``. The file is N
MiB of pseudo-random bytes (BLAKE3 output, so zstd cannot shrink them).

How each figure is taken (every CLI figure includes starting the CLI, ``cli_start_s``: a
``boxfs whoami``):
- ``put``: ``boxfs put FILE /big.bin``, a new file, every chunk uploaded.
- ``get``: ``boxfs get /big.bin OUT`` into an empty folder, with no object cache in the home
  (as on a machine that never mounted): every chunk downloaded, verified, written, fsynced.
- ``remote_upload``: the same frames, made beforehand, sent through ``boxfs.remote`` by one
  task into a second account (so none is deduplicated away).
- ``remote_download_and_verify``: the file's chunks fetched through ``boxfs.remote`` by one
  task and each frame decoded and verified: the floor of ``get`` without the disk.
``get`` and the download are the best of ``ROUNDS`` (a second ``put`` would upload nothing,
so it runs once); the ratios are remote figure over CLI figure (1.0: the CLI costs nothing
on top of the protocol).

``--quick`` uses 64 MiB and one round, for a smoke test.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boxfs.remote import Remote
from store.chunking import ChunkStream
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId
from tests.fuse.conftest import PASSWORD, cli_command, cli_ok
from tests.integration.server_process import ServerProcess

MIB = 1024 * 1024
FULL_MIB, QUICK_MIB = 512, 64
ROUNDS = 3
USERNAME, OTHER_USERNAME = "benchcli", "benchcli2"


def emit(name: str, value: float, unit: str) -> None:
    print(f"cli.{name} {value:.3f} {unit}", flush=True)


def pseudo_random(size_bytes: int) -> bytes:
    return blake3.blake3(b"bench cli").digest(length=size_bytes)


def timed_cli(home: Path, *argv: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [*cli_command(), *argv],
        env={**os.environ, "BOXFS_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def register(server: ServerProcess, home: Path, username: str) -> None:
    cli_ok(
        home, "register", "--server", server.url, username, "--email",
        f"{username}@example.com", "--password-stdin", stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    cli_ok(
        home, "login", "--server", server.url, username, "--device", "bench",
        "--password-stdin", stdin=f"{PASSWORD}\n",
    )  # fmt: skip


async def remote_seconds(
    url: str, username: str, frames: list[tuple[ChunkId, bytes]], upload: bool
) -> float:
    async with Remote(url) as remote:
        await remote.login(username, PASSWORD, "bench-observer")
        home = (await remote.home()).namespace_id
        start = time.perf_counter()
        if upload:
            await remote.upload_chunks(home, frames)
        else:
            async for record in remote.download_chunks(home, [cid for cid, _ in frames]):
                assert record.payload is not None, record.object_id
                decode_frame(record.payload, record.object_id)
        return time.perf_counter() - start


def bench(scratch: Path, size_mib: int, rounds: int) -> None:
    data = pseudo_random(size_mib * MIB)
    source = scratch / "big.bin"
    source.write_bytes(data)
    frames = [(piece.chunk_id, encode_frame(piece.data)) for piece in ChunkStream(io.BytesIO(data))]
    server = ServerProcess(scratch / "server").start()
    try:
        home, other = scratch / "home", scratch / "other"
        register(server, home, USERNAME)
        register(server, other, OTHER_USERNAME)
        mb = len(data) / 1e6
        emit("file_size", size_mib, "MiB")
        start_s = min(timed_cli(home, "whoami") for _ in range(3))
        emit("cli_start_s", start_s, "s")
        put_s = timed_cli(home, "put", str(source), "/big.bin")
        upload_s = trio.run(remote_seconds, server.url, OTHER_USERNAME, frames, True)
        get_times = []
        for round_number in range(rounds):
            out = scratch / f"get-{round_number}"
            out.mkdir()
            get_times.append(timed_cli(home, "get", "/big.bin", str(out / "big.bin")))
            if (out / "big.bin").read_bytes() != data:
                raise SystemExit("bench cli: boxfs get wrote other bytes than were put")
            shutil.rmtree(out)
        get_s = min(get_times)
        download_s = min(
            trio.run(remote_seconds, server.url, USERNAME, frames, False) for _ in range(rounds)
        )
        emit("put", mb / put_s, "MB/s")
        emit("remote_upload", mb / upload_s, "MB/s")
        emit("put_ratio_to_remote_upload", upload_s / put_s, "ratio")
        emit("get", mb / get_s, "MB/s")
        emit("remote_download_and_verify", mb / download_s, "MB/s")
        emit("get_ratio_to_remote_download_and_verify", download_s / get_s, "ratio")
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB, one round")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="boxfs-bench-cli-"))
    try:
        bench(scratch, QUICK_MIB if args.quick else FULL_MIB, 1 if args.quick else ROUNDS)
    finally:
        shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
