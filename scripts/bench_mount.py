"""The mount benchmark (``scripts/bench mount``): the workloads of DESIGN.md §6 on a real
boxfs mount, each beside the same workload on a plain local directory of the same disk (a
``tempfile.mkdtemp`` directory) and, for reads and the untar, beside a minimal pyfuse3
filesystem serving memory (``bench_memfs.py``, the ceiling: read-only for reads, writable
for the untar). Prints ``name value unit`` lines; ratios compare figures measured in this
same run.

What runs: a real ``boxfs-server`` (``ServerProcess``) with its own data directory, one
account, and device homes logged in with ``boxfs login --password-stdin`` (``BOXFS_HOME``
per device). Mounts are ``python -m boxfs.mount MOUNTPOINT --cache-size 2G`` subprocesses
(``MountProcess``): a *writer* device, a *reader* device mounted after the writes with an
empty cache, and a *lister* device for the cold listing; the ceilings are ``bench_memfs.py``
subprocesses (``MemfsProcess``), one mounted for each part. Every process started here is
stopped by its own PID in ``finally``; the scratch directory is removed at the end.
Everything shares this machine with whatever else runs on it: ``load_average_at_*`` says
how busy it was, and figures from a busy run are not comparable with a quiet one.

How each figure is taken:
- ``seq_write``: N MiB of pseudo-random bytes (BLAKE3 output, so zstd cannot shrink them)
  written with 1 MiB ``write`` calls, then closed; on the mount the clock stops when ``boxfs
  sync`` (the CLI, for the writer's home) returns, i.e. when every change is on the server;
  locally after ``fsync``. ``sync_empty_s`` is what ``boxfs sync`` costs with nothing
  pending (starting the CLI and its polls), included in every "synced" figure. The store's
  write pipeline (chunk, hash, frame: ``ChunkStream`` + ``encode_frame``) runs in this
  process on the same bytes, one thread.
- ``seq_read_*``: the same file read with 1 MiB ``read`` calls through the reader mount.
  ``cold``: the first read after mounting a fresh device (chunks come from the server).
  ``warm``: read again, the kernel's page cache may serve it (boxfs keeps it for unchanged
  files). ``warm_daemon``: ``posix_fadvise(POSIX_FADV_DONTNEED)`` on the file first, so every
  read goes to the daemon, which serves it from its LMDB cache (``page_cache_left`` checks
  with ``fincore`` that the drop worked). The ceiling is the same three reads on the memfs
  mount, with the same FUSE options; the local baseline reads the local copy after the same
  fadvise (from disk) and again from the page cache. The store's read pipeline is
  ``decode_frame`` (decompress + BLAKE3 verify) of the frames the write pipeline made.
  ``remote_download`` is the same chunks fetched from the server through ``boxfs.remote``
  by one task in this process (no FUSE, no cache), ``remote_download_and_verify`` the same
  with each frame decoded and verified: the cold read minus the mount's own work.
  ``random_read_cached``: after the warm reads and another drop, 4 KiB ``pread`` calls
  at random 4 KiB-aligned offsets (one seed), as IOPS: the chunks are in the LMDB cache,
  each read misses the page cache; the ceiling does the same on memfs.
  Warm figures are the best of three. boxfs raises its mount's read-ahead itself (1 MiB,
  so the kernel sends 1 MiB requests, where /sys is writable); the memfs mount is given
  the same ``read_ahead_kb`` through /sys/class/bdi, so both daemons see the same requests.
- ``untar``: a tarball of the first N regular source files (no ``.pyc``, ``.so``, ``.a``,
  ``.whl``) of the Python standard library, then this virtualenv's site-packages, built once
  in the scratch directory; ``tar --no-same-owner -xf`` timed alone, and then with ``boxfs
  sync`` (mount) or ``sync -f`` (local); one run on the mount, the best of three locally.
  ``untar_commits`` counts the head moves it took. The ceiling, ``untar_memfs_s``: the
  same ``tar`` onto a writable memfs mounted for it (``bench_memfs.py --writable``, after
  the local runs, stopped before the mount's run), the best of three, each into a new
  directory; ``untar_ratio_to_memfs`` is the mount's time over it, what boxfs adds to what
  pyfuse3 and trio alone cost per file.
- ``ls_l``: a directory of N empty files created with ``open``/``close`` (the creation and
  the sync are timed too), then ``ls -l DIR >/dev/null`` (``LC_ALL=C``): warm is one run to
  warm up then the best and median of three, on the writer mount and locally; cold is the
  first ``ls -l`` on a freshly mounted device.
- Correctness canaries, all expected 0: ``untar_missing_files`` (files tar wrote that the
  writer's view no longer shows after the sync), ``*_fresh_device`` (the same, as a device
  mounted afterwards sees the server's state), ``untar_memfs_missing_files`` (the most files
  a memfs run lacks, counted after each run), ``ls_l_missing_entries`` and ``ls_l_errors``
  (``ls`` lines such as a name readdir listed that a lookup then missed). Content read back
  (the big file, the edited file) is compared with what was written, outside the clock.
- ``insert_1_byte_front`` and ``duplicate_copy``: what reached the server, counted two
  ways: from the account's audit log (each upload request records the chunks and frame
  bytes the server received, and how many blobs it newly wrote) and by counting blob files
  in the server's data directory before and after (retention and GC cannot interfere:
  the first GC pass is an hour away and spares blobs younger than a day). Insert: a file
  of N MiB written and synced, then rewritten in place (``r+``) as one byte followed by
  the old content, closed and synced. Copy: ``cp`` of that file to a new name, synced.
  ``chunks_changed_in_store`` is what the chunker alone says must change (the floor).
- ``meta_during_fsync``: a file of N MiB (the write size) written on the writer mount and
  left open, then ``fsync`` on it in a thread while this thread makes empty folders beside
  it, one ``mkdir`` after the other, until the fsync returns: ``fsync_s`` is the fsync's
  time, ``meta_during_fsync_max_ms`` / ``_p50_ms`` the slowest and median mkdir meanwhile
  and ``_ops`` how many finished (a model lock held across the disk flush makes the first
  mkdir wait for all of it: max about ``fsync_s``, one op). ``meta_idle_p50_ms`` is the
  same mkdir with nothing else going on.
- ``*_peak_rss`` / ``*_rss_anon``: the mount processes' VmHWM (includes the LMDB map's
  file pages) and anonymous RSS, from /proc, when their part is done.

``--quick`` shrinks everything (64 MiB, 500 files, 1,000 entries, 16 MiB) for a smoke test.
Needs /dev/fuse, ``fusermount3``, ``tar``, ``ls``, ``cp`` and ``fincore`` (util-linux).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boxfs.mount import find_mount
from boxfs.remote import Remote
from store.chunking import ChunkStream, chunk_bytes
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId
from tests.fuse.conftest import PASSWORD, Account, MountProcess, cli_command, register
from tests.integration.server_process import ServerProcess

MIB = 1 << 20
RANDOM_READ_BYTES = 4096
USERNAME = "bench-mount"
CACHE_SIZE = "2G"  # holds the whole test file, so warm_daemon reads come from the cache
SYNC_TIMEOUT_S = 1800.0
MEMFS_SCRIPT = Path(__file__).resolve().with_name("bench_memfs.py")
MEMFS_FILE_NAME = "data"
# The read-ahead the kernel gives a FUSE mount. boxfs raises its own (where permitted, a
# moment after mounting); the ceiling is then given the same, so both get the same requests.
KERNEL_READ_AHEAD_KB = 128
READ_AHEAD_SETTLE_S = 2.0
# Not source: binaries and archives would make the tarball a few big files.
SKIPPED_SUFFIXES = (".pyc", ".so", ".a", ".whl")


@dataclass(frozen=True)
class Sizes:
    write_mib: int
    untar_files: int
    ls_entries: int
    insert_mib: int
    random_reads: int


FULL = Sizes(
    write_mib=512, untar_files=5000, ls_entries=10_000, insert_mib=100, random_reads=10_000
)
QUICK = Sizes(write_mib=64, untar_files=500, ls_entries=1000, insert_mib=16, random_reads=1000)


def emit(name: str, value: float, unit: str) -> None:
    print(f"{name} {value:.3f} {unit}", flush=True)


def pseudo_random(size_bytes: int, seed: bytes) -> bytes:
    # Different seeds for different files: BLAKE3's output for one seed is a prefix of a
    # longer output for the same seed, which would dedupe against it.
    return blake3.blake3(seed).digest(length=size_bytes)


# --- file I/O, timed -----------------------------------------------------------------------


def write_seconds(path: Path, data: bytes, *, mode: str = "wb", fsync: bool) -> float:
    """Write ``data`` with 1 MiB writes (unbuffered: each is one ``write`` call) and close."""
    view = memoryview(data)
    start = time.perf_counter()
    with open(path, mode, buffering=0) as file:
        for offset in range(0, len(view), MIB):
            piece = view[offset : offset + MIB]
            while piece:
                piece = piece[file.write(piece) :]
        if fsync:
            os.fsync(file.fileno())
    return time.perf_counter() - start


def read_seconds(path: Path, size_bytes: int, *, drop_page_cache: bool) -> float:
    """Read the whole file with 1 MiB reads into one buffer; with ``drop_page_cache``,
    first tell the kernel to drop the file's cached pages, so every read reaches the
    filesystem (the daemon, for a FUSE mount)."""
    buffer = bytearray(MIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        if drop_page_cache:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        total = 0
        start = time.perf_counter()
        while count := os.readv(fd, [buffer]):
            total += count
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    assert total == size_bytes, (path, total, size_bytes)
    return elapsed


def random_read_iops(path: Path, size_bytes: int, count: int) -> float:
    """``count`` 4 KiB ``pread`` calls at random 4 KiB-aligned offsets (one seed for every
    run), as reads a second."""
    pages = size_bytes // RANDOM_READ_BYTES
    offsets = [
        page * RANDOM_READ_BYTES for page in random.Random(12).choices(range(pages), k=count)
    ]
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        for offset in offsets:
            if len(os.pread(fd, RANDOM_READ_BYTES, offset)) != RANDOM_READ_BYTES:
                raise RuntimeError(f"short read at {offset} of {path}")
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return count / elapsed


def best_read_seconds(
    path: Path, size_bytes: int, *, drop_page_cache: bool, runs: int = 3
) -> float:
    return min(read_seconds(path, size_bytes, drop_page_cache=drop_page_cache) for _ in range(runs))


def drop_page_cache(path: Path) -> None:
    """Tell the kernel to drop the file's cached pages (``POSIX_FADV_DONTNEED``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def page_cache_left_bytes(path: Path) -> int:
    """How much of the file stays in the page cache after a DONTNEED (``fincore``)."""
    drop_page_cache(path)
    result = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(result.stdout.split()[0])


def same_content(path: Path, data: bytes) -> bool:
    view = memoryview(data)
    with open(path, "rb", buffering=0) as file:
        for offset in range(0, len(view), MIB):
            if file.read(MIB) != view[offset : offset + MIB]:
                return False
        return file.read(1) == b""


def create_files_seconds(directory: Path, count: int) -> float:
    directory.mkdir()
    start = time.perf_counter()
    for index in range(count):
        os.close(os.open(directory / f"entry-{index:05d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    return time.perf_counter() - start


def timed_run(argv: list[str], **kwargs: object) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - start


@dataclass
class Listing:
    """Times of ``ls -l`` runs on one directory, and the error lines they printed (an entry
    listed by readdir that a lookup then misses shows here)."""

    directory: Path
    errors: list[str]

    def seconds(self) -> float:
        env = {**os.environ, "LC_ALL": "C"}  # the same collation cost on both sides
        start = time.perf_counter()
        result = subprocess.run(
            ["ls", "-l", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=env, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        self.errors += result.stderr.splitlines()
        return elapsed

    def warm(self) -> tuple[float, float]:
        """Best and median of three runs, after one that warms the kernel's and the daemon's
        caches."""
        self.seconds()
        runs = [self.seconds() for _ in range(3)]
        return min(runs), statistics.median(runs)


def boxfs_sync_seconds(home: Path) -> float:
    """``boxfs sync`` for ``home``: returns once every change is on the server."""
    env = {**os.environ, "BOXFS_HOME": str(home)}
    start = time.perf_counter()
    result = subprocess.run(
        [*cli_command(), "sync"], env=env, capture_output=True, text=True,
        timeout=SYNC_TIMEOUT_S, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"boxfs sync failed ({result.returncode}): {result.stderr}")
    return elapsed


# --- processes -----------------------------------------------------------------------------


class MemfsProcess:
    """``bench_memfs.py`` at ``mountpoint``, stopped by its PID: serving one read-only file
    of ``size_bytes``, or, with ``size_bytes=None``, an empty writable tree (``--writable``).
    """

    def __init__(self, mountpoint: Path, size_bytes: int | None, log_path: Path) -> None:
        self.mountpoint = mountpoint
        self.size_bytes = size_bytes
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def file(self) -> Path:
        return self.mountpoint / MEMFS_FILE_NAME

    def start(self) -> MemfsProcess:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        mode = ["--writable"] if self.size_bytes is None else ["--size-bytes", str(self.size_bytes)]
        command = [sys.executable, str(MEMFS_SCRIPT), str(self.mountpoint), *mode]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"memfs exited at start: {self.log_path.read_text()}")
            if find_mount(self.mountpoint) is not None:
                return self
            time.sleep(0.05)
        raise RuntimeError("memfs did not mount in 60 s")

    def stop(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            stop_fuse_process(process, self.mountpoint, 10.0)


def stop_fuse_process(process: subprocess.Popen[bytes], mountpoint: Path, wait_s: float) -> None:
    """SIGTERM a FUSE daemon by its PID (killed after ``wait_s``), then lazily unmount
    ``mountpoint`` if it died without unmounting."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if find_mount(mountpoint) is not None:
        subprocess.run(
            ["fusermount3", "-u", "-z", str(mountpoint)], check=False, capture_output=True
        )


def read_ahead_path(mountpoint: Path) -> Path:
    info = find_mount(mountpoint)
    assert info is not None, mountpoint
    return Path(f"/sys/class/bdi/0:{info.device_minor}/read_ahead_kb")


def settled_read_ahead_kb(mountpoint: Path) -> int:
    """The mount's read-ahead once boxfs had its chance to raise it: it does so after the
    first request it serves (a stat here), so wait a little while it is still the kernel's
    default (only a mount that may not raise it costs the whole wait)."""
    os.stat(mountpoint)
    path = read_ahead_path(mountpoint)
    deadline = time.monotonic() + READ_AHEAD_SETTLE_S
    while (value := int(path.read_text())) == KERNEL_READ_AHEAD_KB:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return value


def set_read_ahead_kb(mountpoint: Path, kilobytes: int) -> int:
    """Give the mount this read-ahead (root only); the value it has afterwards."""
    path = read_ahead_path(mountpoint)
    try:
        path.write_text(str(kilobytes))
    except OSError as exc:
        print(f"bench mount: cannot set {path} ({exc})", file=sys.stderr)
    return int(path.read_text())


def memory_mib(process: subprocess.Popen[bytes] | None) -> tuple[float, float]:
    """(VmHWM, RssAnon) of a running process, in MiB."""
    assert process is not None
    fields = {}
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["VmHWM"][0]) / 1024, int(fields["RssAnon"][0]) / 1024


# --- what reached the server ---------------------------------------------------------------


@dataclass(frozen=True)
class ServerMark:
    blob_files: int
    blob_bytes: int
    audit_sequence: int
    head_sequence: int


@dataclass(frozen=True)
class Uploaded:
    """Between two marks: what the upload requests carried (audit log) and what the server
    newly stored (blob files), and how many commits moved the head."""

    chunks_received: int
    frame_bytes_received: int
    new_blobs_audited: int
    new_blob_files: int
    new_blob_bytes: int
    commits: int


class ServerWatch:
    """Reads the server's blob directory and, through the protocol, the account's audit
    log and head, from a session of its own (device ``bench-observer``)."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.url
        self.blob_dir = server.data_dir / "blobs"
        self.token = trio.run(self._login)

    async def _login(self) -> str:
        async with Remote(self.url) as remote:
            return (await remote.login(USERNAME, PASSWORD, "bench-observer")).token

    def _blobs(self) -> tuple[int, int]:
        files = total = 0
        for path in self.blob_dir.glob("??/??/*"):
            if len(path.name) == 64:  # not a temporary file of a put in progress
                files += 1
                total += path.stat().st_size
        return files, total

    async def _audit_uploads(self, after: int) -> list[dict[str, str]]:
        """The details of the upload records newer than the audit sequence ``after``."""
        details: list[dict[str, str]] = []
        async with Remote(self.url, self.token) as remote:
            cursor: str | None = None
            while True:
                page = await remote.audit(cursor=cursor, limit=100)
                for record in page.records:  # newest first
                    if record.sequence <= after:
                        return details
                    if record.action == "upload" and record.outcome == "success":
                        details.append(record.detail)
                if page.next_cursor is None:
                    return details
                cursor = page.next_cursor

    async def _download(self, ids: list[ChunkId], verify: bool) -> float:
        async with Remote(self.url, self.token) as remote:
            home = (await remote.home()).namespace_id
            start = time.perf_counter()
            async for record in remote.download_chunks(home, ids):
                assert record.payload is not None, record.object_id
                if verify:
                    decode_frame(record.payload, record.object_id)
            return time.perf_counter() - start

    def download_seconds(self, ids: list[ChunkId], *, verify: bool) -> float:
        """The chunks fetched through ``boxfs.remote`` by one task, no FUSE, no cache:
        what the server and HTTP deliver, and with ``verify`` each frame also decoded and
        checked (on the loop, between records) as the mount must."""
        return trio.run(self._download, ids, verify)

    async def _head_sequence(self) -> int:
        async with Remote(self.url, self.token) as remote:
            home = await remote.home()
            return (await remote.head(home.namespace_id)).sequence

    async def _newest_audit_sequence(self) -> int:
        async with Remote(self.url, self.token) as remote:
            page = await remote.audit(limit=1)
            return page.records[0].sequence if page.records else 0

    def mark(self) -> ServerMark:
        files, total = self._blobs()
        audit_sequence = trio.run(self._newest_audit_sequence)
        return ServerMark(files, total, audit_sequence, trio.run(self._head_sequence))

    def since(self, mark: ServerMark) -> Uploaded:
        files, total = self._blobs()
        details = trio.run(self._audit_uploads, mark.audit_sequence)

        def summed(key: str) -> int:
            return sum(int(detail.get(key, "0")) for detail in details)

        return Uploaded(
            chunks_received=summed("chunks"),
            frame_bytes_received=summed("frame_bytes"),
            new_blobs_audited=summed("new_blobs"),
            new_blob_files=files - mark.blob_files,
            new_blob_bytes=total - mark.blob_bytes,
            commits=trio.run(self._head_sequence) - mark.head_sequence,
        )


def emit_uploaded(prefix: str, uploaded: Uploaded) -> None:
    emit(f"{prefix}_uploaded_chunks", uploaded.chunks_received, "chunks")
    emit(f"{prefix}_uploaded_bytes", uploaded.frame_bytes_received, "bytes")
    emit(f"{prefix}_uploaded_mib", uploaded.frame_bytes_received / MIB, "MiB")
    emit(f"{prefix}_new_blob_files", uploaded.new_blob_files, "blobs")
    emit(f"{prefix}_new_blob_bytes", uploaded.new_blob_bytes, "bytes")
    emit(f"{prefix}_new_blobs_audited", uploaded.new_blobs_audited, "blobs")
    emit(f"{prefix}_commits", uploaded.commits, "commits")


# --- the store's own pipelines, in this process --------------------------------------------


def store_pipelines(data: bytes) -> tuple[float, float, list[ChunkId]]:
    """Seconds of the store's write pipeline (cut, hash, frame) and of its read pipeline
    (decode and verify every frame) over ``data``, on one thread; and the chunk ids."""
    frames: list[tuple[ChunkId, bytes]] = []
    start = time.perf_counter()
    stream = ChunkStream(io.BytesIO(data))
    frames.extend((piece.chunk_id, encode_frame(piece.data)) for piece in stream)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    for chunk_id, frame in frames:
        decode_frame(frame, chunk_id)
    read_s = time.perf_counter() - start
    return write_s, read_s, [chunk_id for chunk_id, _ in frames]


# --- the benchmark -------------------------------------------------------------------------


def source_files(count: int) -> Iterator[tuple[Path, str]]:
    """(path, name in the tarball) of the first ``count`` source files: the standard
    library, then site-packages, walked in sorted order."""
    paths = sysconfig.get_paths()
    found = 0
    for label, root in (("stdlib", paths["stdlib"]), ("site-packages", paths["purelib"])):
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = sorted(
                name for name in subdirectories if name not in ("__pycache__", "site-packages")
            )
            for name in sorted(files):
                path = Path(directory, name)
                if name.endswith(SKIPPED_SUFFIXES) or path.is_symlink() or not path.is_file():
                    continue
                yield path, f"src/{label}/{path.relative_to(root)}"
                found += 1
                if found == count:
                    return


def build_tarball(path: Path, count: int) -> tuple[int, int]:
    """A tarball of ``count`` source files (with their directories); (files, bytes)."""
    files = total = 0
    seen_dirs: set[str] = set()
    with tarfile.open(path, "w") as tar:
        for source, name in source_files(count):
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in seen_dirs:
                    seen_dirs.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, time.time()
                    tar.addfile(info)
            tar.add(source, arcname=name, recursive=False)
            files += 1
            total += source.stat().st_size
    return files, total


@dataclass
class Run:
    sizes: Sizes
    scratch: Path
    server: ServerProcess
    account: Account
    watch: ServerWatch
    mounts: list[MountProcess]
    local: Path
    untar_files: int = 0  # how many files the untar wrote, for the fresh device's check
    # Seconds measured by one part for the ratios of another.
    seq_write_s: float = 0.0  # the mount's write + sync
    store_read_s: float = 0.0  # the store's read pipeline over the same bytes
    remote_read_s: float = 0.0  # the same chunks downloaded and verified by boxfs.remote

    def mount_device(self, device: str) -> tuple[Path, MountProcess, float]:
        """A new device home logged in, mounted; (home, mount, seconds to mount)."""
        base = self.scratch / device
        home = self.account.device_home(base / "home", device)
        mount = MountProcess(home, base / "mnt", base / "mount.log", cache_size=CACHE_SIZE)
        self.mounts.append(mount)
        start = time.perf_counter()
        mount.start()
        return home, mount, time.perf_counter() - start

    def stop(self, mount: MountProcess, name: str) -> None:
        peak, anon = memory_mib(mount.process)
        emit(f"mount.{name}_peak_rss", peak, "MiB")
        emit(f"mount.{name}_rss_anon", anon, "MiB")
        code = mount.stop()
        if code != 0:
            print(f"the {name} mount stopped with {code}:\n{mount.log_tail()}", file=sys.stderr)


def bench_write(run: Run, home: Path, mnt: Path, data: bytes) -> None:
    mb = len(data) / 1e6
    emit("mount.file_size", len(data) / MIB, "MiB")
    local_s = write_seconds(run.local / "big.bin", data, fsync=True)
    close_s = write_seconds(mnt / "big.bin", data, fsync=False)
    sync_s = boxfs_sync_seconds(home)
    mount_s = run.seq_write_s = close_s + sync_s
    emit("mount.seq_write", mb / mount_s, "MB/s")
    emit("mount.seq_write_until_close", mb / close_s, "MB/s")
    emit("mount.seq_write_sync_s", sync_s, "s")
    emit("mount.seq_write_local", mb / local_s, "MB/s")
    emit("mount.seq_write_ratio_to_local", local_s / mount_s, "ratio")
    emit("mount.sync_empty_s", boxfs_sync_seconds(home), "s")


def bench_store(run: Run, data: bytes) -> None:
    """The store's pipelines on the written bytes, and the same chunks fetched from the
    server by the client library (the baselines of the cold read)."""
    write_s, read_s, ids = store_pipelines(data)
    download_s = run.watch.download_seconds(ids, verify=False)
    download_verify_s = run.watch.download_seconds(ids, verify=True)
    mb = len(data) / 1e6
    emit("mount.store_write_pipeline", mb / write_s, "MB/s")
    emit("mount.seq_write_ratio_to_store_write_pipeline", write_s / run.seq_write_s, "ratio")
    emit("mount.store_read_pipeline", mb / read_s, "MB/s")
    emit("mount.remote_download", mb / download_s, "MB/s")
    emit("mount.remote_download_and_verify", mb / download_verify_s, "MB/s")
    run.store_read_s, run.remote_read_s = read_s, download_verify_s


def read_through_mounts(run: Run, data: bytes) -> dict[str, float]:
    """Seconds of each read of the file on the reader device (and two figures that are not
    seconds: its read-ahead, and what the page cache kept after a drop)."""
    size = len(data)
    seconds: dict[str, float] = {}
    _, reader, seconds["mount_start"] = run.mount_device("reader")
    seconds["read_ahead_kb"] = settled_read_ahead_kb(reader.mountpoint)
    path = reader.mountpoint / "big.bin"
    seconds["cold"] = read_seconds(path, size, drop_page_cache=False)
    seconds["warm"] = best_read_seconds(path, size, drop_page_cache=False)
    seconds["page_cache_left_bytes"] = page_cache_left_bytes(path)
    seconds["warm_daemon"] = best_read_seconds(path, size, drop_page_cache=True)
    drop_page_cache(path)
    seconds["random_iops"] = random_read_iops(path, size, run.sizes.random_reads)
    if not same_content(path, data):
        raise RuntimeError("the mount read back different bytes")
    run.stop(reader, "reader")
    return seconds


def read_through_ceiling(run: Run, size: int, read_ahead_kb: int) -> dict[str, float]:
    """Seconds of the same reads on the memfs mount, given boxfs's read-ahead."""
    seconds: dict[str, float] = {}
    memfs = MemfsProcess(run.scratch / "memfs", size, run.scratch / "memfs.log")
    try:
        memfs.start()
        seconds["read_ahead_kb"] = set_read_ahead_kb(memfs.mountpoint, read_ahead_kb)
        seconds["first"] = read_seconds(memfs.file, size, drop_page_cache=False)
        seconds["page_cache"] = best_read_seconds(memfs.file, size, drop_page_cache=False)
        seconds["daemon"] = best_read_seconds(memfs.file, size, drop_page_cache=True)
        drop_page_cache(memfs.file)
        seconds["random_iops"] = random_read_iops(memfs.file, size, run.sizes.random_reads)
    finally:
        memfs.stop()
    return seconds


def bench_reads(run: Run, data: bytes) -> None:
    mb = len(data) / 1e6
    mount = read_through_mounts(run, data)
    local = run.local / "big.bin"
    local_disk_s = best_read_seconds(local, len(data), drop_page_cache=True)
    local_cached_s = best_read_seconds(local, len(data), drop_page_cache=False)
    ceiling = read_through_ceiling(run, len(data), int(mount["read_ahead_kb"]))

    emit("mount.mount_start_s", mount["mount_start"], "s")
    emit("mount.read_ahead_kb", mount["read_ahead_kb"], "KiB")
    emit("mount.ceiling_read_ahead_kb", ceiling["read_ahead_kb"], "KiB")
    emit("mount.seq_read_cold", mb / mount["cold"], "MB/s")
    emit("mount.seq_read_warm", mb / mount["warm"], "MB/s")
    emit("mount.seq_read_warm_daemon_page_cache_left", mount["page_cache_left_bytes"] / MIB, "MiB")
    emit("mount.seq_read_warm_daemon", mb / mount["warm_daemon"], "MB/s")
    emit("mount.ceiling_read_first", mb / ceiling["first"], "MB/s")
    emit("mount.ceiling_read_page_cache", mb / ceiling["page_cache"], "MB/s")
    emit("mount.ceiling_read_daemon", mb / ceiling["daemon"], "MB/s")
    emit("mount.random_read_cached", mount["random_iops"], "IOPS")
    emit("mount.ceiling_random_read", ceiling["random_iops"], "IOPS")
    emit(
        "mount.random_read_cached_ratio_to_ceiling",
        mount["random_iops"] / ceiling["random_iops"],
        "ratio",
    )
    emit("mount.seq_read_local_disk", mb / local_disk_s, "MB/s")
    emit("mount.seq_read_local_page_cache", mb / local_cached_s, "MB/s")
    emit(
        "mount.seq_read_warm_daemon_ratio_to_ceiling",
        ceiling["daemon"] / mount["warm_daemon"],
        "ratio",
    )
    emit(
        "mount.seq_read_warm_ratio_to_ceiling_page_cache",
        ceiling["page_cache"] / mount["warm"],
        "ratio",
    )
    emit(
        "mount.seq_read_cold_ratio_to_store_read_pipeline",
        run.store_read_s / mount["cold"],
        "ratio",
    )
    emit(
        "mount.seq_read_cold_ratio_to_remote_download_and_verify",
        run.remote_read_s / mount["cold"],
        "ratio",
    )
    emit("mount.seq_read_cold_ratio_to_local_disk", local_disk_s / mount["cold"], "ratio")


def bench_untar(run: Run, home: Path, mnt: Path) -> None:
    tarball = run.scratch / "source.tar"
    files, total = build_tarball(tarball, run.sizes.untar_files)
    emit("mount.untar_files", files, "files")
    emit("mount.untar_size", total / MIB, "MiB")
    # As root, tar would also chown every file (--same-owner); a user's untar does not.
    untar = ["tar", "--no-same-owner", "-xf", str(tarball), "-C"]

    # The local figure is the best of three (a single one swings several-fold with the
    # disk's writeback); the mount's untar is one run, it is the slow side.
    local_runs = []
    for attempt in range(3):
        target = run.local / f"untar-{attempt}"
        target.mkdir()
        untar_s = timed_run([*untar, str(target)])
        local_runs.append((untar_s, untar_s + timed_run(["sync", "-f", str(target)])))
    local_s = min(untar_s for untar_s, _ in local_runs)
    local_synced_s = min(synced_s for _, synced_s in local_runs)
    memfs_s, memfs_missing = untar_on_ceiling(run, untar, files)

    (mnt / "untar").mkdir()
    mark = run.watch.mark()
    mount_s = timed_run([*untar, str(mnt / "untar")])
    sync_s = boxfs_sync_seconds(home)
    commits = run.watch.since(mark).commits
    run.untar_files = files

    emit("mount.untar_s", mount_s, "s")
    emit("mount.untar_local_s", local_s, "s")
    emit("mount.untar_ratio_to_local", mount_s / local_s, "ratio")
    emit("mount.untar_memfs_s", memfs_s, "s")
    emit("mount.untar_memfs_ratio_to_local", memfs_s / local_s, "ratio")
    emit("mount.untar_ratio_to_memfs", mount_s / memfs_s, "ratio")
    emit("mount.untar_synced_s", mount_s + sync_s, "s")
    emit("mount.untar_local_synced_s", local_synced_s, "s")
    emit("mount.untar_synced_ratio_to_local", (mount_s + sync_s) / local_synced_s, "ratio")
    emit("mount.untar_commits", commits, "commits")
    # A correctness canary (should be 0): files tar wrote that the writer's view lost.
    emit("mount.untar_missing_files", files - count_files(mnt / "untar"), "files")
    emit("mount.untar_memfs_missing_files", memfs_missing, "files")


def untar_on_ceiling(run: Run, untar: list[str], files: int) -> tuple[float, int]:
    """The untar on a fresh writable memfs mount: the best of three runs, each into a new
    directory, and the most files a run lost (counted outside the clock; should be 0).
    The mount is stopped before returning, so its memory is back before boxfs's untar."""
    memfs = MemfsProcess(run.scratch / "memfs-tree", None, run.scratch / "memfs-tree.log")
    runs: list[float] = []
    missing = 0
    try:
        memfs.start()
        for attempt in range(3):
            target = memfs.mountpoint / f"untar-{attempt}"
            target.mkdir()
            runs.append(timed_run([*untar, str(target)]))
            missing = max(missing, files - count_files(target))
    finally:
        memfs.stop()
    return min(runs), missing


def count_files(root: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(root))


def bench_ls(run: Run, home: Path, mnt: Path) -> None:
    count = run.sizes.ls_entries
    emit("mount.ls_l_entries", count, "entries")
    local_create_s = create_files_seconds(run.local / "many", count)
    create_s = create_files_seconds(mnt / "many", count)
    sync_s = boxfs_sync_seconds(home)
    emit("mount.create_files_s", create_s, "s")
    emit("mount.create_files_local_s", local_create_s, "s")
    emit("mount.create_files_sync_s", sync_s, "s")

    on_mount = Listing(mnt / "many", [])
    best_s, median_s = on_mount.warm()
    local_best_s, local_median_s = Listing(run.local / "many", []).warm()
    emit("mount.ls_l_10k_warm", best_s, "s")
    emit("mount.ls_l_10k_warm_median", median_s, "s")
    emit("mount.ls_l_10k_local", local_best_s, "s")
    emit("mount.ls_l_10k_local_median", local_median_s, "s")
    emit("mount.ls_l_10k_warm_ratio_to_local", best_s / local_best_s, "ratio")

    _, lister, _ = run.mount_device("lister")
    cold = Listing(lister.mountpoint / "many", [])
    emit("mount.ls_l_10k_cold", cold.seconds(), "s")
    # Correctness canaries (all should be 0): entries a view lost, and ls errors (a name
    # readdir listed that a lookup then missed). The fresh device shows the server's state.
    emit("mount.ls_l_missing_entries", count - len(os.listdir(mnt / "many")), "entries")
    emit(
        "mount.ls_l_missing_entries_fresh_device",
        count - len(os.listdir(cold.directory)),
        "entries",
    )
    emit(
        "mount.untar_missing_files_fresh_device",
        run.untar_files - count_files(lister.mountpoint / "untar"),
        "files",
    )
    run.stop(lister, "lister")
    emit("mount.ls_l_errors", len(on_mount.errors) + len(cold.errors), "lines")
    for line in (on_mount.errors + cold.errors)[:5]:
        print(f"bench mount: ls: {line}", file=sys.stderr)


def bench_uploads(run: Run, home: Path, mnt: Path) -> None:
    original = pseudo_random(run.sizes.insert_mib * MIB, b"insert")
    path = mnt / "insert.bin"
    write_seconds(path, original, fsync=False)
    boxfs_sync_seconds(home)
    emit("mount.insert_file_size", len(original) / MIB, "MiB")

    edited = b"x" + original
    before = {ref.chunk_id for ref in chunk_bytes(original).chunks}
    after = chunk_bytes(edited).chunks
    emit(
        "mount.insert_1_byte_front_chunks_changed_in_store",
        sum(1 for ref in after if ref.chunk_id not in before),
        "chunks",
    )
    mark = run.watch.mark()
    edit_s = write_seconds(path, edited, mode="r+b", fsync=False)
    sync_s = boxfs_sync_seconds(home)
    emit("mount.insert_1_byte_front_synced_s", edit_s + sync_s, "s")
    emit_uploaded("mount.insert_1_byte_front", run.watch.since(mark))
    if not same_content(path, edited):
        raise RuntimeError("the edited file reads back wrong")

    mark = run.watch.mark()
    copy_s = timed_run(["cp", str(path), str(mnt / "insert-copy.bin")])
    sync_s = boxfs_sync_seconds(home)
    emit("mount.duplicate_copy_synced_s", copy_s + sync_s, "s")
    emit_uploaded("mount.duplicate_copy", run.watch.since(mark))


def mkdir_ms(directory: Path) -> float:
    started = time.perf_counter()
    directory.mkdir()
    return (time.perf_counter() - started) * 1000


def bench_fsync_stall(run: Run, mnt: Path) -> None:
    folder = mnt / "during-fsync"
    folder.mkdir()
    idle = [mkdir_ms(folder / f"idle-{number}") for number in range(50)]
    emit("mount.meta_idle_p50_ms", statistics.median(idle), "ms")
    data = pseudo_random(run.sizes.write_mib * MIB, b"fsync")
    fd = os.open(mnt / "fsync-big.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in range(0, len(data), MIB):
            os.write(fd, data[offset : offset + MIB])
        done = threading.Event()
        fsync_s: list[float] = []

        def flush() -> None:
            started = time.perf_counter()
            try:
                os.fsync(fd)
            finally:
                fsync_s.append(time.perf_counter() - started)
                done.set()

        flusher = threading.Thread(target=flush)
        flusher.start()
        during: list[float] = []
        while not done.is_set():
            during.append(mkdir_ms(folder / f"during-{len(during)}"))
        flusher.join()
    finally:
        os.close(fd)
    emit("mount.fsync_s", fsync_s[0], "s")
    emit("mount.meta_during_fsync_ops", len(during), "ops")
    emit("mount.meta_during_fsync_max_ms", max(during, default=0.0), "ms")
    emit("mount.meta_during_fsync_p50_ms", statistics.median(during) if during else 0.0, "ms")
    shutil.rmtree(folder)
    (mnt / "fsync-big.bin").unlink()


def bench(run: Run) -> None:
    # Other work on this 2-core machine moves every figure: the run says how busy it was.
    emit("mount.load_average_at_start", os.getloadavg()[0], "load")
    data = pseudo_random(run.sizes.write_mib * MIB, b"sequential")
    home, writer, _ = run.mount_device("writer")
    mnt = writer.mountpoint
    bench_write(run, home, mnt, data)
    bench_store(run, data)
    bench_reads(run, data)
    del data
    bench_untar(run, home, mnt)
    bench_ls(run, home, mnt)
    bench_uploads(run, home, mnt)
    bench_fsync_stall(run, mnt)
    run.stop(writer, "writer")
    emit("mount.load_average_at_end", os.getloadavg()[0], "load")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="64 MiB, 500 files, 1,000 entries, 16 MiB"
    )
    args = parser.parse_args()
    if not os.path.exists("/dev/fuse"):
        print("bench mount: /dev/fuse is missing: this machine cannot mount FUSE", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    # Each process runs the code as it was when it started: a source edited during the run
    # would make its figures a mix of versions, which the run then says.
    repo_root = Path(__file__).resolve().parent.parent
    sources_at_start = newest_source(repo_root)
    scratch = Path(tempfile.mkdtemp(prefix="boxfs-bench-mount-"))
    server: ServerProcess | None = None
    mounts: list[MountProcess] = []
    try:
        server = ServerProcess(scratch / "server").start()
        local = scratch / "local"
        local.mkdir()
        run = Run(
            sizes,
            scratch,
            server,
            register(server, USERNAME, scratch / "registrar"),
            ServerWatch(server),
            mounts,
            local,
        )
        bench(run)
        changed_at, changed = newest_source(repo_root)
        if changed_at > sources_at_start[0]:
            print(
                f"bench mount: {changed.relative_to(repo_root)} (and perhaps others) changed "
                f"at {time.strftime('%H:%M:%S', time.localtime(changed_at))}, during the run: "
                "processes started before that ran older code",
                file=sys.stderr,
            )
    finally:
        for mount in reversed(mounts):
            mount.stop()
        if server is not None:
            server.stop()
        remove_scratch(scratch, mounts)
    return 0


def newest_source(root: Path) -> tuple[float, Path]:
    """The most recently modified source file of the packages under test."""
    return max(
        (path.stat().st_mtime, path)
        for package in ("boxfs", "store", "server")
        for path in (root / package).rglob("*.py")
    )


def remove_scratch(scratch: Path, mounts: list[MountProcess]) -> None:
    # Removing a tree that still holds a mount would walk into the drive (or hang on it).
    left = [mount.mountpoint for mount in mounts if find_mount(mount.mountpoint) is not None]
    left += [path for path in scratch.glob("memfs*") if find_mount(path) is not None]
    if left:
        print(f"bench mount: still mounted, not removing {scratch}: {left}", file=sys.stderr)
        return
    shutil.rmtree(scratch)


if __name__ == "__main__":
    sys.exit(main())
