"""The peer benchmark (``scripts/bench peers``): one workload on a plain local directory,
a boxfs mount, an rclone mount and the minimal pyfuse3 filesystem, interleaved, the
median of three rounds in one run. Prints ``name value unit`` lines: each figure per
target, then boxfs's ratio to each of the others (above 1: boxfs is faster).

What runs: a real ``boxfs-server`` (``ServerProcess``) with its own data directory, one
account and one device home, mounted as a user would (``python -m boxfs.mount MOUNTPOINT
--allow-other --preserve-ownership --cache-size 2G``); ``rclone mount SRC MOUNTPOINT
--vfs-cache-mode full --allow-other`` with the local backend (a directory of the scratch
directory), its cache and an empty config under the scratch directory, and its remote
control on a free loopback port (to ask whether its uploads are done); ``bench_memfs.py
--writable`` (the ceiling: what pyfuse3 and trio alone cost); and a ``tempfile.mkdtemp``
directory on this machine's disk. Every process started here is stopped by its own PID in
``finally``, and the scratch directory is removed at the end.

Each round runs the whole workload on every target, in a new folder of it, the targets'
order turning by one each round; between steps, untimed, each target is let settle:
``boxfs sync`` (every change on the server), rclone's uploads queue empty (``vfs/stats``),
and then for every target ``sync`` (each step starts with no dirty page in the machine:
one that found another's would be slowed by the kernel's write throttling). The figures:
- ``copy_first_s`` / ``copy_second_s``: ``cp`` of a file of N MiB (pseudo-random bytes, new
  ones each round) from the local disk to the target, then ``cp`` of the same file to a
  second name: the second copy holds bytes the target already has.
- ``seq_read_warm``: that copy read with 1 MiB reads, once untimed, then the best of three
  (the page cache may serve it). ``seq_read_cold``: the same after the kernel dropped its
  pages (``posix_fadvise(DONTNEED)``, then ``sync`` and ``/proc/sys/vm/drop_caches`` 1), so
  the read reaches the filesystem and what it keeps on disk.
- ``random_read``: after the same drops, 4 KiB ``pread`` calls at random 4 KiB-aligned
  offsets of the copy (one seed for every target), as IOPS.
- ``create_s``: N empty files made with ``open(O_CREAT|O_EXCL)`` and ``close``.
- ``stat_cold_s`` / ``stat_warm_s``: ``lstat`` of each of them after ``drop_caches`` 2 (the
  kernel forgets its dentries and inodes, so each is a lookup) and right after.
- ``untar_s``: ``tar --no-same-owner -xf`` of a tarball of the first N source files of this
  interpreter's standard library and site-packages (the one ``bench mount`` builds).
- ``du_cold_s`` / ``ls_lR_cold_s``: ``du -s`` and ``ls -lR`` (``LC_ALL=C``) of that tree,
  each after ``drop_caches`` 2.
- ``delete_s``: ``rm -rf`` of the tree.
Canaries, expected 0: ``peers.missing_files`` (files the create or the untar made that the
target then does not list) and ``peers.content_mismatches`` (copies that read back other
bytes), summed over every target and round.

``--quick`` shrinks everything (16 MiB, 300 files, 300 source files, 1,000 reads, one
round) for a smoke test. Needs /dev/fuse, ``fusermount3``, ``rclone``, ``tar``, ``du``,
``ls``, ``cp`` and root (``drop_caches``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mount import (
    MIB,
    MemfsProcess,
    boxfs_sync_seconds,
    build_tarball,
    count_files,
    create_files_seconds,
    drop_page_cache,
    emit,
    pseudo_random,
    random_read_iops,
    read_seconds,
    same_content,
    stop_fuse_process,
    timed_run,
)

from boxfs.mount import find_mount
from tests.fuse.conftest import MountProcess, register
from tests.integration.server_process import ServerProcess

USERNAME = "bench-peers"
CACHE_SIZE = "2G"
RCLONE_START_TIMEOUT_S = 30.0
RCLONE_SETTLE_TIMEOUT_S = 600.0
TARGETS = ("local", "boxfs", "rclone", "memfs")
PEERS = ("rclone", "local", "memfs")


@dataclass(frozen=True)
class Sizes:
    file_mib: int
    create_files: int
    untar_files: int
    random_reads: int
    rounds: int


FULL = Sizes(file_mib=256, create_files=5000, untar_files=6725, random_reads=10_000, rounds=3)
QUICK = Sizes(file_mib=16, create_files=300, untar_files=300, random_reads=1000, rounds=1)

# Each figure: its unit, and whether a higher value is the better one.
FIGURES: dict[str, tuple[str, bool]] = {
    "copy_first_s": ("s", False),
    "copy_second_s": ("s", False),
    "seq_read_warm": ("MB/s", True),
    "seq_read_cold": ("MB/s", True),
    "random_read": ("IOPS", True),
    "create_s": ("s", False),
    "stat_cold_s": ("s", False),
    "stat_warm_s": ("s", False),
    "untar_s": ("s", False),
    "du_cold_s": ("s", False),
    "ls_lR_cold_s": ("s", False),
    "delete_s": ("s", False),
}


def drop_caches(level: int) -> None:
    """``1``: the page cache, written back first (a dirty page is not dropped); ``2``:
    dentries and inodes (every path is looked up again)."""
    if level == 1:
        os.sync()
    Path("/proc/sys/vm/drop_caches").write_text(f"{level}\n")


def drop_file_pages(path: Path) -> None:
    drop_page_cache(path)
    drop_caches(1)


def stat_seconds(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        os.lstat(path)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RcloneProcess:
    """``rclone mount`` of a local directory with the full VFS cache, stopped by its PID."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.mountpoint = base / "mnt"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RcloneProcess:
        for name in ("src", "mnt", "cache"):
            (self.base / name).mkdir(parents=True)
        command = [
            "rclone", "mount", str(self.base / "src"), str(self.mountpoint),
            "--vfs-cache-mode", "full", "--cache-dir", str(self.base / "cache"),
            "--config", str(self.base / "rclone.conf"), "--allow-other",
            "--rc", "--rc-addr", f"127.0.0.1:{self.port}", "--rc-no-auth",
        ]  # fmt: skip
        with (self.base / "rclone.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + RCLONE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rclone exited at start: {self.log_tail()}")
            if find_mount(self.mountpoint) is not None:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"rclone did not mount in {RCLONE_START_TIMEOUT_S:.0f} s")

    def log_tail(self) -> str:
        return "\n".join((self.base / "rclone.log").read_text(errors="replace").splitlines()[-20:])

    def pending_uploads(self) -> int:
        result = subprocess.run(
            ["rclone", "rc", "--url", f"http://127.0.0.1:{self.port}/", "vfs/stats"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        cache = json.loads(result.stdout)["diskCache"]
        return int(cache["uploadsInProgress"]) + int(cache["uploadsQueued"])

    def settle(self) -> None:
        deadline = time.monotonic() + RCLONE_SETTLE_TIMEOUT_S
        while self.pending_uploads():
            if time.monotonic() > deadline:
                raise RuntimeError(f"rclone's uploads did not finish: {self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            stop_fuse_process(process, self.mountpoint, 30.0)


@dataclass
class Target:
    name: str
    root: Path
    settle: Callable[[], object]
    figures: dict[str, list[float]] = field(default_factory=dict)
    settle_s: float = 0.0

    def record(self, figure: str, value: float) -> None:
        self.figures.setdefault(figure, []).append(value)

    def settled(self) -> None:
        """The target's own settling, then every dirty page of the machine written back:
        a step that finds another's dirty pages waits on the kernel's write throttling
        (here a 256 MiB write is several times slower with 256 MiB already dirty)."""
        start = time.perf_counter()
        self.settle()
        self.settle_s += time.perf_counter() - start
        os.sync()


@dataclass
class Workload:
    """What every target is given, and the canaries its rounds add to."""

    sizes: Sizes
    source: Path  # the file copied, new bytes each round
    archive: Path  # the tarball untarred
    archive_files: int
    missing_files: int = 0
    content_mismatches: int = 0


def run_round(target: Target, number: int, work: Workload) -> None:
    folder = target.root / f"round-{number}"
    folder.mkdir()
    source, sizes = work.source, work.sizes
    size = source.stat().st_size
    mb = size / 1e6
    first, second = folder / "copy-1.bin", folder / "copy-2.bin"
    target.record("copy_first_s", timed_run(["cp", str(source), str(first)]))
    target.settled()
    target.record("copy_second_s", timed_run(["cp", str(source), str(second)]))
    target.settled()

    read_seconds(first, size, drop_page_cache=False)
    warm_s = min(read_seconds(first, size, drop_page_cache=False) for _ in range(3))
    target.record("seq_read_warm", mb / warm_s)
    drop_file_pages(first)
    target.record("seq_read_cold", mb / read_seconds(first, size, drop_page_cache=False))
    drop_file_pages(second)
    target.record("random_read", random_read_iops(second, size, sizes.random_reads))
    with source.open("rb") as original:
        expected = original.read()
    work.content_mismatches += sum(not same_content(copy, expected) for copy in (first, second))
    del expected

    many = folder / "many"
    target.record("create_s", create_files_seconds(many, sizes.create_files))
    target.settled()
    work.missing_files += sizes.create_files - len(os.listdir(many))
    paths = [many / f"entry-{index:05d}" for index in range(sizes.create_files)]
    drop_caches(2)
    target.record("stat_cold_s", stat_seconds(paths))
    target.record("stat_warm_s", stat_seconds(paths))

    tree = folder / "untar"
    tree.mkdir()
    archive, files = work.archive, work.archive_files
    target.record(
        "untar_s", timed_run(["tar", "--no-same-owner", "-xf", str(archive), "-C", str(tree)])
    )
    target.settled()
    work.missing_files += files - count_files(tree)
    env = {**os.environ, "LC_ALL": "C"}
    drop_caches(2)
    target.record(
        "du_cold_s", timed_run(["du", "-s", str(tree)], stdout=subprocess.DEVNULL, env=env)
    )
    drop_caches(2)
    target.record(
        "ls_lR_cold_s", timed_run(["ls", "-lR", str(tree)], stdout=subprocess.DEVNULL, env=env)
    )
    target.record("delete_s", timed_run(["rm", "-rf", str(tree)]))
    target.settled()
    shutil.rmtree(folder)  # untimed: the next round starts from an empty drive again
    target.settled()


def report(targets: dict[str, Target]) -> None:
    ahead = 0
    for figure, (unit, higher_is_better) in FIGURES.items():
        medians = {name: statistics.median(t.figures[figure]) for name, t in targets.items()}
        for name in TARGETS:
            emit(f"peers.{figure}.{name}", medians[name], unit)
        for peer in PEERS:
            mine, theirs = medians["boxfs"], medians[peer]
            emit(
                f"peers.{figure}.boxfs_vs_{peer}",
                mine / theirs if higher_is_better else theirs / mine,
                "ratio",
            )
        ahead += (medians["boxfs"] > medians["rclone"]) == higher_is_better
    emit("peers.figures_ahead_of_rclone", ahead, f"of_{len(FIGURES)}")
    for name in ("boxfs", "rclone"):
        emit(f"peers.settle_s.{name}", targets[name].settle_s, "s")


def run_rounds(targets: dict[str, Target], sizes: Sizes, scratch: Path) -> None:
    archive = scratch / "source.tar"
    files, total = build_tarball(archive, sizes.untar_files)
    emit("peers.untar_files", files, "files")
    emit("peers.untar_size", total / MIB, "MiB")
    emit("peers.file_size", sizes.file_mib, "MiB")
    work = Workload(sizes, scratch / "source.bin", archive, files)
    order = list(TARGETS)
    for number in range(sizes.rounds):
        work.source.write_bytes(pseudo_random(sizes.file_mib * MIB, f"peers-{number}".encode()))
        subprocess.run(["sync", "-f", str(work.source)], check=True)
        for name in order:
            print(f"bench peers: round {number + 1} of {sizes.rounds}: {name}", file=sys.stderr)
            run_round(targets[name], number, work)
        order = order[1:] + order[:1]
    report(targets)
    emit("peers.missing_files", work.missing_files, "files")
    emit("peers.content_mismatches", work.content_mismatches, "files")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 MiB, 300 files, one round")
    args = parser.parse_args()
    for tool in ("rclone", "fusermount3", "tar", "du"):
        if shutil.which(tool) is None:
            print(f"bench peers: {tool} is missing (scripts/bench installs it)", file=sys.stderr)
            return 2
    if not os.path.exists("/dev/fuse") or os.geteuid() != 0:
        print("bench peers: needs /dev/fuse and root (for drop_caches)", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    scratch = Path(tempfile.mkdtemp(prefix="boxfs-bench-peers-"))
    server: ServerProcess | None = None
    mount: MountProcess | None = None
    rclone = RcloneProcess(scratch / "rclone")
    memfs = MemfsProcess(scratch / "memfs", None, scratch / "memfs.log")
    try:
        emit("peers.load_average_at_start", os.getloadavg()[0], "load")
        server = ServerProcess(scratch / "server").start()
        account = register(server, USERNAME, scratch / "registrar")
        home = account.device_home(scratch / "boxfs" / "home", "peers")
        mount = MountProcess(
            home, scratch / "boxfs" / "mnt", scratch / "boxfs" / "mount.log",
            cache_size=CACHE_SIZE, options=("--allow-other", "--preserve-ownership"),
        )  # fmt: skip
        mount.start()
        rclone.start()
        memfs.start()
        local = scratch / "local"
        local.mkdir()
        targets = {
            "local": Target("local", local, lambda: None),
            "boxfs": Target("boxfs", mount.mountpoint, lambda: boxfs_sync_seconds(home)),
            "rclone": Target("rclone", rclone.mountpoint, rclone.settle),
            "memfs": Target("memfs", memfs.mountpoint, lambda: None),
        }
        run_rounds(targets, sizes, scratch)
        emit("peers.load_average_at_end", os.getloadavg()[0], "load")
    finally:
        memfs.stop()
        rclone.stop()
        if mount is not None:
            code = mount.stop()
            if code != 0:
                print(
                    f"bench peers: the mount stopped with {code}:\n{mount.log_tail()}",
                    file=sys.stderr,
                )
        if server is not None:
            server.stop()
        left = [path for path in (memfs.mountpoint, rclone.mountpoint, scratch / "boxfs" / "mnt")
                if find_mount(path) is not None]  # fmt: skip
        if left:
            print(f"bench peers: still mounted, not removing {scratch}: {left}", file=sys.stderr)
        else:
            shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
