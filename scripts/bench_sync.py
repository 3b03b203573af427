"""The sync benchmark (``scripts/bench sync``): how fast a change made through one mount
shows on another device's mount, how fast a burst converges, and how fast a journal built
up while the server was unreachable is replayed. Prints ``name value unit`` lines.

What runs: a real ``boxfs-server`` (``ServerProcess``) with its own data directory, one
account, two device homes logged in with ``boxfs login --password-stdin`` (A "laptop", B
"phone", one ``BOXFS_HOME`` each), each mounted with ``python -m boxfs.mount MOUNTPOINT``
(``MountProcess``). An *observer* in this process (``boxfs.remote.Remote`` logged in as a
third device, in a thread of its own) holds the server's event stream and records when each
head event arrives: that splits a change's trip into A's half (write, the uploader's quiet
period, upload, commit, publish) and B's half (event delivery, apply, invalidation, the
read). Every process started here is stopped by its own PID in ``finally``; the scratch
directory is removed at the end (``--keep`` leaves it, with the mount and server logs).

The bars (DESIGN.md §6): a change on one mount visible on another, p50 ≤ 300 ms and
p99 ≤ 1 s on loopback. The raw loopback commit-to-event latency is ``scripts/bench server``.

How each figure is taken:
- ``change_to_visible_*``: N changes (200; ``--quick``: 30), after 3 untimed warm-up
  changes, each a new distinct small content written to the same file on A
  (open/write/close); B polls the file (open, read, close, every ~2 ms) until it reads
  exactly the new content. Latency: from just before A's ``open`` to B's matching read.
  ``change_write`` is A's open/write/close alone. ``change_to_event`` is from before A's
  open to the observer receiving the first head event after it; ``event_to_visible`` is
  from that event to B's matching read (``change_commits`` counts events per change:
  1.000 means one commit per change). ``change_missed`` counts changes B did not show
  within the timeout (left out of the percentiles).
- ``create_to_visible_*``: the same with a new file name per change (B polls for the name
  and its content).
- ``converge_N_files_*``: A creates N (1,000; ``--quick``: 200) small files with distinct
  contents in a fresh folder as fast as it can (``create_s``: that alone), then runs
  ``boxfs sync`` for A's home; from the start, a thread polls B's folder (``os.listdir``
  every 20 ms and, once every name is there, ``stat`` of each for the right size).
  ``upload_s``: start of creation to ``boxfs sync`` returning; ``_s``: to B listing all N
  with the right sizes; ``first_visible_s``: to B listing the first of them; ``commits``:
  head events seen meanwhile. ``sync_cli_empty_s`` is what ``boxfs sync`` costs with
  nothing pending (the CLI's start and its two empty polls): it is inside every figure
  that waits for it.
- ``replay_N_pending_ops_*``: in a fresh folder A first makes (online, synced) the files
  the offline renames and deletes will touch; then the server is stopped and A makes N
  operations (1,000 = 800 creates of small files, 100 renames, 100 deletes; ``--quick``:
  200 = 160/20/20), and ``boxfs status`` on A must say offline with them pending
  (``pending_ops`` is its count; ``offline_ops_s``: A making them; ``server_stop_s``:
  SIGTERM to the server's exit, which waits for open event streams up to uvicorn's
  graceful-shutdown timeout). The server is started again on the same port and data
  directory; ``server_start_s`` is until it answers ``/healthz``, and the clock for the rest
  starts there. ``replay_N_pending_ops_s``: until ``boxfs sync`` on A returns (journal
  empty); ``visible_on_b_s``: until B lists the final folder exactly, with the right sizes.
  The reconnect backoffs (uploader: 0.2 s doubling to 10 s; syncer: to 5 s) are inside those:
  ``uploader_reconnect_s`` is when A's uploader first reached the server again (its log
  line "server reachable again, uploading"), ``a_stream_reconnect_s`` and
  ``b_stream_reconnect_s`` when each syncer followed the server again ("following the
  server's changes"); ``first_commit_s`` /
  ``last_commit_s`` / ``commits`` are the head events the observer saw, and ``work_s`` is
  last commit minus uploader reconnect (the upload itself, backoff excluded).
  ``server_down_s`` is how long the server was down (the backoff grows with it; it is at
  least ``--outage S``, default 0: as long as stopping it and the offline work take).
  Log times have millisecond resolution (the mounts' ``asctime``).

- ``cross_user_change_to_visible_*``: the same as ``change_to_visible`` between two users
  of a shared folder: bob writes, alice's mount reads (``scripts/bench_sharing.py``).
Last, with the mounts and their server stopped, ``scripts/bench_links.py`` runs on a fresh
server: a 1 GiB folder (``--quick``: 128 MiB) downloaded as a zip through a share link,
beside the raw chunk download of the same bytes (``links.*`` lines; see its docstring).

Everything shares this 2-core machine (two mounts, the server, and this process polling):
``load_average_at_*`` says how busy it was. ``--debug`` runs the mounts with ``--debug``
(every HTTP request in their logs, which slows them down); ``--keep`` keeps the logs.
Needs /dev/fuse and ``fusermount3``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_links  # scripts/bench_links.py, beside this file
from bench_sharing import bench_cross_user

from boxfs.remote import Remote
from store import protocol
from tests.fuse.conftest import PASSWORD, Account, MountProcess, cli_command, cli_ok
from tests.integration.server_process import ServerProcess

USERNAME = "bench-sync"
CHANGE_TIMEOUT_S = 30.0
CONVERGE_TIMEOUT_S = 600.0
POLL_READ_S = 0.002
POLL_LIST_S = 0.02
WARM_UP_CHANGES = 3
UPLOADER_BACK = "server reachable again, uploading"
SYNCER_BACK = "following the server's changes"
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


@dataclass(frozen=True)
class Sizes:
    changes: int
    converge_files: int
    replay_creates: int
    replay_renames: int
    replay_deletes: int

    @property
    def replay_ops(self) -> int:
        return self.replay_creates + self.replay_renames + self.replay_deletes


FULL = Sizes(changes=200, converge_files=1000, replay_creates=800, replay_renames=100,
             replay_deletes=100)  # fmt: skip
QUICK = Sizes(changes=30, converge_files=200, replay_creates=160, replay_renames=20,
              replay_deletes=20)  # fmt: skip


def emit(name: str, value: float, unit: str) -> None:
    print(f"{name} {value:.3f} {unit}", flush=True)


def note(message: str) -> None:
    print(f"bench sync: {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[int(fraction * (len(sorted_values) - 1))]


def emit_latencies(name: str, seconds: list[float]) -> None:
    if not seconds:
        note(f"{name}: no samples")
        return
    ordered = sorted(seconds)
    emit(f"{name}_p50", 1000 * statistics.median(ordered), "ms")
    emit(f"{name}_p99", 1000 * percentile(ordered, 0.99), "ms")
    emit(f"{name}_max", 1000 * ordered[-1], "ms")


# --- the observer: head events as the server publishes them ---------------------------------


class EventWatch:
    """A third device following the event stream in a thread of its own; ``arrivals`` are
    ``time.perf_counter()`` values (one clock with the rest of this process), one per new
    head sequence. Reconnects at once (every 50 ms) while the server is down."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.arrivals: list[float] = []
        self._lock = threading.Lock()
        self._sequence = -1
        self._connected = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, name="event-watch")

    def start(self) -> EventWatch:
        self._thread.start()
        if not self._connected.wait(30):
            raise RuntimeError(f"the observer did not connect: {self._failure!r}")
        return self

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            scope = self._scope
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(scope.cancel, trio_token=self._token)
        self._thread.join(30)

    def between(self, start: float, end: float) -> list[float]:
        with self._lock:
            return [t for t in self.arrivals if start < t <= end]

    def first_after(self, start: float) -> float | None:
        with self._lock:
            index = bisect_right(self.arrivals, start)
            return self.arrivals[index] if index < len(self.arrivals) else None

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except Exception as exc:  # noqa: BLE001  (reported by start(), not printed)
            self._failure = exc
            self._connected.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._scope = scope
            async with Remote(self.server_url) as remote:
                await remote.login(USERNAME, PASSWORD, "bench-observer")
                while True:
                    try:
                        async for event in remote.events(on_connected=self._connected.set):
                            arrived = time.perf_counter()
                            if event.sequence > self._sequence:
                                self._sequence = event.sequence
                                with self._lock:
                                    self.arrivals.append(arrived)
                    except protocol.UnavailableError:
                        pass
                    await trio.sleep(0.05)


# --- helpers --------------------------------------------------------------------------------


def read_or_none(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def wait_until(check: Callable[[], bool], what: str, timeout_s: float, every_s: float) -> float:
    """Poll ``check`` (an OSError counts as not yet) until true: the perf_counter time."""
    deadline = time.perf_counter() + timeout_s
    while True:
        try:
            if check():
                return time.perf_counter()
        except OSError:
            pass
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not after {timeout_s} s: {what}")
        time.sleep(every_s)


def listing_matches(folder: Path, expected: dict[str, int]) -> bool:
    names = os.listdir(folder)
    if len(names) != len(expected) or set(names) != expected.keys():
        return False
    return all(os.stat(folder / name).st_size == size for name, size in expected.items())


def boxfs_sync(home: Path, timeout_s: float = CONVERGE_TIMEOUT_S) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*cli_command(), "-q", "sync", "--timeout", str(timeout_s)],
        env={**os.environ, "BOXFS_HOME": str(home)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str], what: str) -> None:
    stdout, stderr = process.communicate(timeout=CONVERGE_TIMEOUT_S + 60)
    if process.returncode != 0:
        raise RuntimeError(f"{what}: boxfs sync exited {process.returncode}: {stdout}{stderr}")


def sync_seconds(home: Path) -> float:
    start = time.perf_counter()
    finish(boxfs_sync(home), "sync")
    return time.perf_counter() - start


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def first_log_time(path: Path, offset: int, message: str) -> float | None:
    """The wall time (``time.time()`` scale) of the first line after ``offset`` that holds
    ``message``, from the line's ``asctime`` (local time, milliseconds)."""
    with path.open("rb") as log:
        log.seek(offset)
        for raw in log:
            line = raw.decode(errors="replace")
            match = LOG_TIME.match(line)
            if match and message in line:
                stamp = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp()
    return None


# --- the run --------------------------------------------------------------------------------


@dataclass
class Run:
    sizes: Sizes
    scratch: Path
    server: ServerProcess
    a: MountProcess
    b: MountProcess
    watch: EventWatch

    def folder(self, name: str) -> tuple[Path, Path]:
        """A fresh folder made on A and seen on B."""
        on_a, on_b = self.a.mountpoint / name, self.b.mountpoint / name
        on_a.mkdir()
        wait_until(on_b.is_dir, f"{name}/ on B", CHANGE_TIMEOUT_S, POLL_LIST_S)
        return on_a, on_b


def one_change(on_a: Path, on_b: Path, data: bytes) -> tuple[float, float, float] | None:
    """Write ``data`` on A, poll B until it reads it: (start, written, visible) or None."""
    start = time.perf_counter()
    write_file(on_a, data)
    written = time.perf_counter()
    deadline = written + CHANGE_TIMEOUT_S
    while True:
        try:
            if read_or_none(on_b) == data:
                return start, written, time.perf_counter()
        except OSError:
            pass
        if time.perf_counter() > deadline:
            return None
        time.sleep(POLL_READ_S)


def bench_changes(run: Run, prefix: str, *, new_names: bool) -> None:
    on_a, on_b = run.folder(prefix)
    total, write_s, to_event_s, event_to_visible_s = [], [], [], []
    missed = 0
    events = 0
    for index in range(-WARM_UP_CHANGES, run.sizes.changes):
        name = f"new-{index + WARM_UP_CHANGES:04d}.txt" if new_names else "changing.txt"
        data = f"change {index} {secrets.token_hex(8)}\n".encode()
        timed = one_change(on_a / name, on_b / name, data)
        if index < 0:
            if timed is None:
                raise RuntimeError(f"{prefix}: a warm-up change never reached B")
            continue
        if timed is None:
            missed += 1
            note(f"{prefix}: change {index} not on B after {CHANGE_TIMEOUT_S} s")
            continue
        start, written, visible = timed
        total.append(visible - start)
        write_s.append(written - start)
        events += len(run.watch.between(start, visible))
        event = run.watch.first_after(start)
        if event is not None and event <= visible:
            to_event_s.append(event - start)
            event_to_visible_s.append(visible - event)
    emit_latencies(f"sync.{prefix}_to_visible", total)
    emit_latencies(f"sync.{prefix}_write", write_s)
    emit_latencies(f"sync.{prefix}_to_event", to_event_s)
    emit_latencies(f"sync.{prefix}_event_to_visible", event_to_visible_s)
    emit(f"sync.{prefix}_commits", events / max(1, len(total)), "commits/change")
    emit(f"sync.{prefix}_missed", missed, "changes")


class ListingWatch:
    """Polls a folder of B (``os.listdir``, then ``stat`` of each name once all are
    there) in a thread of its own until it lists exactly ``expected`` (name: size), so it
    runs while this process writes on A. Times are ``time.perf_counter()`` values."""

    def __init__(self, folder: Path, expected: dict[str, int]) -> None:
        self.folder = folder
        self.expected = expected
        self.first_seen: float | None = None  # the folder listed anything
        self.visible: float | None = None  # the folder listed exactly ``expected``
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="listing-watch", daemon=True)

    def start(self) -> ListingWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def wait(self, timeout_s: float = CONVERGE_TIMEOUT_S) -> float:
        self._thread.join(timeout_s)
        self.stop()
        if self.visible is None:
            raise RuntimeError(f"B did not list {self.folder.name}/ as expected in {timeout_s} s")
        return self.visible

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                names = os.listdir(self.folder)
                if names and self.first_seen is None:
                    self.first_seen = time.perf_counter()
                if len(names) == len(self.expected) and listing_matches(self.folder, self.expected):
                    self.visible = time.perf_counter()
                    return
            except OSError:
                pass
            time.sleep(POLL_LIST_S)


def sync_seconds_and_wait(run: Run, watch: ListingWatch) -> tuple[float, float]:
    """Run ``boxfs sync`` for A, then wait for ``watch``: when each ended (perf_counter)."""
    try:
        finish(boxfs_sync(run.a.home), "sync")
    except BaseException:
        watch.stop()
        raise
    synced = time.perf_counter()
    return synced, watch.wait()


def bench_converge(run: Run) -> None:
    count = run.sizes.converge_files
    prefix = f"sync.converge_{count}_files"
    on_a, on_b = run.folder(f"converge-{count}")
    contents = {
        f"f{index:05d}.txt": f"file {index} {secrets.token_hex(8)}\n".encode()
        for index in range(count)
    }
    watch = ListingWatch(on_b, {name: len(data) for name, data in contents.items()}).start()
    start = time.perf_counter()
    for name, data in contents.items():
        write_file(on_a / name, data)
    created = time.perf_counter()
    synced, visible = sync_seconds_and_wait(run, watch)
    emit(f"{prefix}_create_s", created - start, "s")
    emit(f"{prefix}_upload_s", synced - start, "s")
    emit(f"{prefix}_s", visible - start, "s")
    if watch.first_seen is not None:
        emit(f"{prefix}_first_visible_s", watch.first_seen - start, "s")
    emit(f"{prefix}_commits", len(run.watch.between(start, visible)), "commits")
    for name in ("f00000.txt", f"f{count - 1:05d}.txt"):  # outside the clock
        assert read_or_none(on_b / name) == contents[name], name


def pending_ops(status: str) -> int:
    match = re.search(r"^pending: (\d+) operation", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no pending count in `boxfs status`:\n{status}")
    return int(match.group(1))


def offline_ops(sizes: Sizes, on_a: Path) -> dict[str, int]:
    """The replay's operations on A (server down): the final listing (name: size)."""
    expected = {}
    for index in range(sizes.replay_creates):
        data = f"offline {index} {secrets.token_hex(8)}\n".encode()
        write_file(on_a / f"new-{index:04d}.txt", data)
        expected[f"new-{index:04d}.txt"] = len(data)
    for index in range(sizes.replay_renames):
        os.rename(on_a / f"old-{index:04d}.txt", on_a / f"renamed-{index:04d}.txt")
        expected[f"renamed-{index:04d}.txt"] = len(f"old {index}\n")
    for index in range(sizes.replay_renames, sizes.replay_renames + sizes.replay_deletes):
        os.unlink(on_a / f"old-{index:04d}.txt")
    return expected


def emit_reconnects(
    prefix: str, run: Run, offsets: tuple[int, int], back_wall: float
) -> float | None:
    """When A's uploader and both syncers reached the server again, from the mount logs
    (seconds after ``back_wall``, a ``time.time()`` value); the uploader's, in seconds
    after ``back_wall``, or None."""
    a_offset, b_offset = offsets
    reconnect = first_log_time(run.a.log_path, a_offset, UPLOADER_BACK)
    if reconnect is not None:
        emit(f"{prefix}_uploader_reconnect_s", reconnect - back_wall, "s")
    else:
        note(f"no {UPLOADER_BACK!r} line in A's log")
    for device, path, offset in (("a", run.a.log_path, a_offset), ("b", run.b.log_path, b_offset)):
        stream_back = first_log_time(path, offset, SYNCER_BACK)
        if stream_back is not None:
            emit(f"{prefix}_{device}_stream_reconnect_s", stream_back - back_wall, "s")
        else:
            note(f"no {SYNCER_BACK!r} line in {device.upper()}'s log")
    return None if reconnect is None else reconnect - back_wall


def bench_replay(run: Run, outage_s: float) -> None:
    sizes = run.sizes
    prefix = f"sync.replay_{sizes.replay_ops}_pending_ops"
    on_a, on_b = run.folder(f"replay-{sizes.replay_ops}")
    touched = sizes.replay_renames + sizes.replay_deletes
    for index in range(touched):
        write_file(on_a / f"old-{index:04d}.txt", f"old {index}\n".encode())
    cli_ok(run.a.home, "-q", "sync", "--timeout", str(CONVERGE_TIMEOUT_S))
    old = {f"old-{index:04d}.txt": len(f"old {index}\n") for index in range(touched)}
    wait_until(lambda: listing_matches(on_b, old), "the old files on B", 60, POLL_LIST_S)

    down = time.perf_counter()
    run.server.stop()
    emit(f"{prefix}_server_stop_s", time.perf_counter() - down, "s")
    offline_start = time.perf_counter()
    expected = offline_ops(sizes, on_a)
    emit(f"{prefix}_offline_ops_s", time.perf_counter() - offline_start, "s")
    status = cli_ok(run.a.home, "status")
    if "server: offline" not in status:
        raise RuntimeError(f"`boxfs status` on A does not say offline:\n{status}")
    pending = pending_ops(status)
    emit(f"{prefix}_pending_ops", pending, "ops")
    if pending < sizes.replay_ops:
        note(f"only {pending} operations pending, {sizes.replay_ops} made:\n{status}")
    time.sleep(max(0.0, down + outage_s - time.perf_counter()))

    offsets = log_size(run.a.log_path), log_size(run.b.log_path)
    wall_minus_perf = time.time() - time.perf_counter()
    started = time.perf_counter()
    run.server.start()
    back = time.perf_counter()
    emit(f"{prefix}_server_down_s", started - down, "s")
    emit(f"{prefix}_server_start_s", back - started, "s")
    synced, visible = sync_seconds_and_wait(run, ListingWatch(on_b, expected).start())
    emit(f"{prefix}_s", synced - back, "s")
    emit(f"{prefix}_visible_on_b_s", visible - back, "s")
    commits = run.watch.between(started, max(visible, synced))
    emit(f"{prefix}_commits", len(commits), "commits")
    reconnect_s = emit_reconnects(prefix, run, offsets, back + wall_minus_perf)
    if commits:
        emit(f"{prefix}_first_commit_s", commits[0] - back, "s")
        emit(f"{prefix}_last_commit_s", commits[-1] - back, "s")
        if reconnect_s is not None:
            emit(f"{prefix}_work_s", commits[-1] - back - reconnect_s, "s")
    for name in ("new-0000.txt", "renamed-0000.txt"):  # outside the clock
        assert read_or_none(on_b / name) == read_or_none(on_a / name), name


def bench(run: Run, outage_s: float) -> None:
    emit("sync.load_average_at_start", os.getloadavg()[0], "load")
    bench_changes(run, "change", new_names=False)
    bench_changes(run, "create", new_names=True)
    emit("sync.sync_cli_empty_s", min(sync_seconds(run.a.home) for _ in range(3)), "s")
    bench_converge(run)
    bench_replay(run, outage_s)
    bench_cross_user(
        run.server, run.scratch, run.sizes.changes, one_change=one_change,
        wait_until=lambda check, what: wait_until(check, what, CHANGE_TIMEOUT_S, POLL_LIST_S),
        emit_latencies=emit_latencies, emit=emit,
    )  # fmt: skip
    emit("sync.load_average_at_end", os.getloadavg()[0], "load")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer changes, files and ops")
    parser.add_argument("--debug", action="store_true", help="run the mounts with --debug")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (logs)")
    parser.add_argument(
        "--outage", type=float, default=0.0, metavar="S",
        help="keep the server down at least S seconds in the replay (the backoff grows)",
    )  # fmt: skip
    args = parser.parse_args()
    if not os.path.exists("/dev/fuse"):
        sys.exit("bench sync: /dev/fuse is missing: this machine cannot mount FUSE")
    if args.debug:
        os.environ["BOXFS_TEST_MOUNT_DEBUG"] = "1"
    scratch = Path(tempfile.mkdtemp(prefix="boxfs-bench-sync-"))
    server = ServerProcess(scratch / "data")
    mounts: list[MountProcess] = []
    watch: EventWatch | None = None
    try:
        server.start()
        cli_ok(
            scratch / "registrar", "register", "--server", server.url, USERNAME, "--email",
            f"{USERNAME}@example.com", "--password-stdin", stdin=f"{PASSWORD}\n",
        )  # fmt: skip
        account = Account(server, USERNAME)
        for device in ("laptop", "phone"):
            home = account.device_home(scratch / f"{device}-home", device)
            mount = MountProcess(home, scratch / f"{device}-mnt", scratch / f"{device}.log")
            mounts.append(mount.start())
        watch = EventWatch(server.url).start()
        sizes = QUICK if args.quick else FULL
        bench(Run(sizes, scratch, server, mounts[0], mounts[1], watch), args.outage)
    finally:
        if watch is not None:
            watch.stop()
        for mount in mounts:
            code = mount.stop()
            if code != 0:
                note(f"the mount at {mount.mountpoint} stopped with {code}:\n{mount.log_tail()}")
        server.stop()
        if args.keep:
            note(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    # Then, with the mounts and their server gone: a folder's zip through a share link
    # beside the raw chunk download of the same bytes (scripts/bench_links.py).
    bench_links.run(quick=args.quick)


if __name__ == "__main__":
    main()
