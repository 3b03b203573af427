"""Crash safety of the real mount: the mount process or the server killed with SIGKILL in
the middle of real work, then the same device home mounted again (the journal replays, the
uploader resumes) and ``boxfs sync`` run; what landed is checked from a second device with
an empty cache (``boxfs ls`` for the server's head, and a fresh mount of that device, so
every byte read comes from the server).

The states exercised (rows of ``docs/crash-states.md``):

- the mount killed while a 200 MiB file it journaled is being uploaded (chunks partly on
  the server, the put not yet sent or its batch in flight);
- the mount killed from another thread in the middle of a burst of 500 small-file creates;
- the mount killed right after ``close()`` returned, with and without an ``fsync`` first;
- the mount killed while a large new file is still being written (and an existing file is
  open with unsaved changes): neither was closed, so neither is committed. What a user
  sees: the next write or the close fails (ENOTCONN or ECONNABORTED); after the remount the new
  file is absent and the edited one shows its committed content; the staged files they
  left are swept;
- the server killed while the mount has a batch in flight, then restarted on the same port
  and data: the uploader resends the batch with its idempotency key.

The close tests pin why FLUSH journals the put: the kernel sends RELEASE asynchronously,
after ``close()`` has returned to the writer, so a put journaled only at RELEASE was lost
to a SIGKILL in that window (its staged file swept at the next mount).

A mount is killed by its own PID (``kill_mount``); the dead FUSE mount it leaves is cleared
with ``MountProcess.abort``. This module runs on the module's own server (``fuse_server``);
the test that kills a server starts one of its own. Every mount is stopped at teardown
(``Mounts``), every server in ``finally``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import blake3
import pytest

from boxfs.home import Home
from boxfs.journal import Journal, JournalError
from boxfs.mount import JOURNAL_FILE_NAME, find_mount
from tests.fuse.conftest import (
    PASSWORD,
    Account,
    MountProcess,
    cli_ok,
    run_cli,
    running_mounts,
)
from tests.integration.server_process import ServerProcess

pytestmark = pytest.mark.fuse

MIB: Final = 1024 * 1024
LARGE_FILE_MIB: Final = 200
BURST_FILES: Final = 500
BURST_KILL_AFTER: Final = 300  # closes that return before the killer thread fires
SERVER_BURST_FILES: Final = 600  # a full batch of the uploader (500 ops), then the rest
SERVER_KILLS: Final = 1
READ_THREADS: Final = 8
KILL_WAIT_S: Final = 15.0
SYNC_TIMEOUT_S: Final = 120.0
POLL_S: Final = 0.01
UPLOAD_START_TIMEOUT_S: Final = 60.0
# Kill the mount once this many new blobs are on the server: the upload has begun, and a
# 200 MiB file (about 200 chunks of 1 MiB on average) is far from done.
KILL_AFTER_BLOBS: Final = 8
GROWING_KILL_AT_MIB: Final = 48
GROWING_CAP_MIB: Final = 512
CONFLICT_MARK: Final = "(conflicted copy"


# --- mounts, kills and remounts ----------------------------------------------------------


def kill_mount(mount: MountProcess) -> None:
    """SIGKILL the mount's process by its own PID (if not killed already), reap it, and
    clear the dead FUSE mount it leaves behind (``MountProcess.abort``: abort the
    connection, ``fusermount3 -u -z``). ``mount`` is then stopped for good."""
    process, mount.process = mount.process, None
    try:
        if process is not None:
            process.kill()
            process.wait(KILL_WAIT_S)
    finally:
        mount.abort()
        running_mounts.discard(mount)
    assert find_mount(mount.mountpoint) is None, f"{mount.mountpoint} is still mounted"


class Mounts:
    """The mounts a test starts; ``stop_all`` (at teardown at the latest) stops each that
    still runs, by its own handle, and reports any that did not stop cleanly."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[MountProcess] = []

    def start(self, home: Path, name: str) -> MountProcess:
        mount = MountProcess(home, self.base / f"{name}-mnt", self.base / f"{name}-mount.log")
        self.started.append(mount)
        return mount.start()

    def remount(self, killed: MountProcess) -> MountProcess:
        """The same home at the same mountpoint again, after ``kill_mount``."""
        assert killed.process is None, "kill_mount it first"
        mount = MountProcess(killed.home, killed.mountpoint, killed.log_path)
        self.started.append(mount)
        return mount.start()

    def stop_all(self) -> None:
        unclean = []
        for mount in reversed(self.started):
            code = mount.stop()
            if code != 0:
                unclean.append(f"{mount.mountpoint} exited with {code}:\n{mount.log_tail()}")
        leftover = [str(m.mountpoint) for m in self.started if find_mount(m.mountpoint)]
        assert not unclean, unclean
        assert not leftover, f"still mounted: {leftover}"


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    started = Mounts(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


# --- content ----------------------------------------------------------------------------


def piece(seed: bytes, index: int) -> bytes:
    """MiB number ``index`` of the incompressible, deterministic stream of ``seed`` (the
    BLAKE3 XOF): no two pieces, and no two seeds, share a chunk."""
    return blake3.blake3(seed).digest(length=MIB, seek=index * MIB)


def write_pieces(path: Path, seed: bytes, count_mib: int) -> bytes:
    """Write ``count_mib`` pieces of ``seed`` to ``path`` (created), one MiB per write,
    and close it; the BLAKE3 of the content."""
    digest = blake3.blake3()
    with path.open("wb") as out:
        for index in range(count_mib):
            data = piece(seed, index)
            out.write(data)
            digest.update(data)
    return digest.digest()


def digest_of(path: Path) -> bytes:
    digest = blake3.blake3()
    with path.open("rb") as source:
        while data := source.read(MIB):
            digest.update(data)
    return digest.digest()


def small_content(index: int) -> bytes:
    """A few hundred bytes, different for every ``index``."""
    return f"file {index}\n".encode() * (20 + index % 40)


# --- the device's journal and the server, read from outside ------------------------------


def journal_path(home: Path) -> Path:
    return Home(home).journal_dir / JOURNAL_FILE_NAME


def pending_ops(home: Path) -> int:
    """Entries in the home's journal (pending or in flight), read-only as ``boxfs status``
    reads them; 0 before the journal exists."""
    path = journal_path(home)
    if not path.exists():
        return 0
    with Journal(path, readonly=True) as journal:
        return journal.count()


def batch_keys_in_flight(home: Path) -> set[str]:
    """The idempotency keys of batches persisted for sending and not completed."""
    path = journal_path(home)
    if not path.exists():
        return set()
    try:
        with Journal(path, readonly=True) as journal:
            return {
                batch.key
                for namespace_id in journal.namespaces()
                for batch in journal.batches_in_flight(namespace_id)
            }
    except (JournalError, sqlite3.Error):  # mid-checkpoint: the next poll reads it
        return set()


def orphan_staged_files(home: Path) -> set[str]:
    """Staged files of the home that no journal entry names: what a crash left of files
    still being written (a live mount also keeps the staged files of the files it wrote,
    pinned while their nodes live, so only these say anything)."""
    path = journal_path(home)
    named: set[str] = set()
    if path.exists():
        with Journal(path, readonly=True) as journal:
            named = journal.staged_names()
    staged = {p.name for p in Home(home).staging_dir.iterdir() if p.is_file()}
    return staged - named


def blob_count(server: ServerProcess) -> int:
    blobs = server.data_dir / "blobs"
    return sum(
        1 for _, _, names in os.walk(blobs) for name in names if not name.startswith(".tmp-")
    )


def sync(home: Path) -> None:
    """``boxfs sync``: returns once the home's journal is empty (a mount uploads it)."""
    result = run_cli(home, "sync", "--timeout", str(SYNC_TIMEOUT_S))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "in sync" in result.stdout


def assert_in_sync(home: Path) -> None:
    """``boxfs status``: nothing pending, nothing staged, no conflict or rejection."""
    out = cli_ok(home, "status")
    lines = dict(line.split(": ", 1) for line in out.splitlines() if not line.startswith(" "))
    assert lines["pending"] == "0 operations, 0 B staged", out
    assert lines["conflicts"] == "none", out


def listing(home: Path, folder: str) -> list[str]:
    """``boxfs ls FOLDER`` as the server's head has it, one name per entry."""
    return cli_ok(home, "ls", folder).splitlines()


def assert_listed_once(names: list[str], allowed: set[str]) -> None:
    assert len(names) == len(set(names)), f"duplicate entries: {names}"
    assert not [n for n in names if CONFLICT_MARK in n], f"conflicted copies: {names}"
    assert set(names) <= allowed, f"unexpected entries: {sorted(set(names) - allowed)}"


def assert_contents(folder: Path, contents: dict[str, bytes], names: list[str]) -> None:
    """Each of ``names`` under ``folder`` (a mount) holds its content in ``contents``; read
    by a few threads at once, as the mount serves requests concurrently."""

    def read(name: str) -> tuple[str, bytes]:
        return name, (folder / name).read_bytes()

    with ThreadPoolExecutor(READ_THREADS) as pool:
        wrong = [name for name, data in pool.map(read, names) if data != contents[name]]
    assert not wrong, f"wrong content: {wrong}"


# --- tests ------------------------------------------------------------------------------


def test_a_kill_9_of_the_mount_during_a_200_mib_upload_resumes_and_lands_the_file_once(
    account: Account,
    fuse_server: ServerProcess,
    mounts: Mounts,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    laptop = account.device_home(tmp_path / "laptop", "laptop")
    mount = mounts.start(laptop, "laptop")
    folder = mount.mountpoint / "large-upload"
    folder.mkdir()
    blobs_before = blob_count(fuse_server)
    expected = write_pieces(folder / "big.bin", b"crash: large upload", LARGE_FILE_MIB)

    # Kill once the upload has begun (new blobs on the server) and the put is still in
    # the journal; if the upload was already done, the checks below still apply.
    deadline = time.monotonic() + UPLOAD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        new_blobs = blob_count(fuse_server) - blobs_before
        pending = pending_ops(laptop)
        if new_blobs >= KILL_AFTER_BLOBS or (pending == 0 and new_blobs > 0):
            break
        time.sleep(POLL_S)
    kill_mount(mount)
    new_blobs = blob_count(fuse_server) - blobs_before
    pending = pending_ops(laptop)
    record_property("killed_at", f"{new_blobs} blobs on the server, {pending} journaled")
    print(f"killed with {new_blobs} new blobs on the server and {pending} ops journaled")

    mount = mounts.remount(mount)
    sync(laptop)
    assert_in_sync(laptop)
    assert (mount.mountpoint / "large-upload" / "big.bin").stat().st_size == LARGE_FILE_MIB * MIB

    phone = account.device_home(tmp_path / "phone", "phone")
    assert listing(phone, "/large-upload") == ["big.bin"]
    cold = mounts.start(phone, "phone")
    assert digest_of(cold.mountpoint / "large-upload" / "big.bin") == expected, cold.log_tail()


def test_every_file_closed_before_a_kill_9_in_a_burst_of_creates_lands_once(
    account: Account, mounts: Mounts, tmp_path: Path
) -> None:
    laptop = account.device_home(tmp_path / "laptop", "laptop")
    mount = mounts.start(laptop, "laptop")
    folder = mount.mountpoint / "burst"
    folder.mkdir()
    contents = {f"f{index:03d}.txt": small_content(index) for index in range(BURST_FILES)}
    assert mount.process is not None
    process = mount.process
    go = threading.Event()

    def killer() -> None:
        go.wait(KILL_WAIT_S)
        process.kill()  # by its PID, while the main thread goes on creating

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    closed: list[str] = []
    failed_at: str | None = None
    try:
        for name, content in contents.items():
            try:
                with (folder / name).open("wb") as out:
                    out.write(content)
            except OSError:
                failed_at = name  # open, write or close failed: the mount is gone
                break
            closed.append(name)
            if len(closed) == BURST_KILL_AFTER:
                go.set()
    finally:
        go.set()
        thread.join(KILL_WAIT_S)
        kill_mount(mount)
    assert len(closed) >= BURST_KILL_AFTER
    print(f"{len(closed)} files closed before the kill; the next one failed: {failed_at}")

    mount = mounts.remount(mount)
    sync(laptop)
    assert_in_sync(laptop)
    phone = account.device_home(tmp_path / "phone", "phone")
    names = listing(phone, "/burst")
    assert_listed_once(names, set(contents))
    assert sorted(os.listdir(mount.mountpoint / "burst")) == sorted(names)
    cold = mounts.start(phone, "phone")
    assert_contents(cold.mountpoint / "burst", contents, names)
    lost = [name for name in closed if name not in set(names)]
    assert not lost, (
        f"{len(lost)} of {len(closed)} files whose close() returned before the kill "
        f"are not on the drive: {lost}"
    )


def test_files_closed_right_before_a_kill_9_land_and_fsync_makes_sure_of_it(
    account: Account, mounts: Mounts, tmp_path: Path
) -> None:
    laptop = account.device_home(tmp_path / "laptop", "laptop")
    mount = mounts.start(laptop, "laptop")
    folder = mount.mountpoint / "closed"
    folder.mkdir()
    contents = {
        "plain.txt": b"written, then closed\n",
        "fsynced.txt": b"written, fsynced, closed\n",
    }
    plain = os.open(folder / "plain.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    fsynced = os.open(folder / "fsynced.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(plain, contents["plain.txt"])
        os.write(fsynced, contents["fsynced.txt"])
        os.fsync(fsynced)
    finally:
        # Returned: the kernel has sent FLUSH; each RELEASE may still be on its way.
        os.close(plain)
        os.close(fsynced)
    kill_mount(mount)

    mount = mounts.remount(mount)
    sync(laptop)
    assert_in_sync(laptop)
    names = listing(laptop, "/closed")
    assert_listed_once(names, set(contents))
    assert "fsynced.txt" in names, "fsync journals the put: it must survive the kill"
    phone = account.device_home(tmp_path / "phone", "phone")
    cold = mounts.start(phone, "phone")
    assert_contents(cold.mountpoint / "closed", contents, names)
    assert sorted(os.listdir(mount.mountpoint / "closed")) == sorted(names)
    assert "plain.txt" in names, "plain.txt was closed before the kill and is not on the drive"


def test_a_kill_9_while_files_are_still_being_written_commits_nothing_torn(
    account: Account, mounts: Mounts, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    laptop = account.device_home(tmp_path / "laptop", "laptop")
    mount = mounts.start(laptop, "laptop")
    folder = mount.mountpoint / "staging"
    folder.mkdir()
    small = {f"small-{index}.txt": small_content(index) for index in range(5)}
    for name, content in small.items():
        (folder / name).write_bytes(content)
    existing_digest = write_pieces(folder / "existing.bin", b"crash: existing, old", 4)
    sync(laptop)  # existing.bin as committed: the content an unsaved edit must not replace
    closed_digest = write_pieces(folder / "closed-before.bin", b"crash: closed before", 8)

    # An edit of existing.bin, still open at the kill; and a new file being written.
    edited = (folder / "existing.bin").open("r+b")
    edited.write(piece(b"crash: existing, new", 0))
    edited.flush()
    written_mib = 0
    killed_at_mib: int | None = None
    errors: dict[str, OSError] = {}
    started, stop = threading.Event(), threading.Event()

    def write_growing() -> None:
        # Writes until told to stop: after the kill they may still land in the kernel's
        # page cache (writeback caching) without an error; the close must fail then.
        nonlocal written_mib
        out = (folder / "growing.bin").open("wb", buffering=0)
        started.set()
        try:
            while not stop.is_set() and written_mib < GROWING_CAP_MIB:
                out.write(piece(b"crash: growing", written_mib))
                written_mib += 1
        except OSError as exc:
            errors["write"] = exc
        try:
            out.close()
        except OSError as exc:
            errors["close"] = exc

    thread = threading.Thread(target=write_growing, daemon=True)
    thread.start()
    try:
        started.wait(KILL_WAIT_S)
        deadline = time.monotonic() + KILL_WAIT_S
        while written_mib < GROWING_KILL_AT_MIB and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert mount.process is not None
        killed_at_mib = written_mib
        mount.process.kill()
        mount.process.wait(KILL_WAIT_S)
        time.sleep(0.2)  # a few more writes into the dead mount
        stop.set()
        thread.join(KILL_WAIT_S)
        assert not thread.is_alive(), "a write to the dead mount hangs"
    finally:
        stop.set()
        try:
            edited.close()
        except OSError as exc:  # the mount is gone: its FLUSH cannot be answered
            errors["edited close"] = exc
        kill_mount(mount)
    observed = {key: os.strerror(exc.errno or 0) for key, exc in errors.items()}
    record_property("growing", f"{killed_at_mib} MiB at the kill, {written_mib} written")
    record_property("errors", observed)
    print(f"growing.bin: {killed_at_mib} MiB written at the kill, {written_mib} in all; {observed}")
    # Neither writer may believe its file was saved.
    assert "close" in errors or "write" in errors, observed
    assert "edited close" in errors, observed
    # The two open files' staged content, which no journal entry names: never promised.
    torn = orphan_staged_files(laptop)
    assert torn, "no staged file of the open files"

    mount = mounts.remount(mount)
    assert not torn & orphan_staged_files(laptop), "the next mount kept the torn stages"
    view = mount.mountpoint / "staging"
    growing_after_remount = (view / "growing.bin").exists()
    record_property("growing_after_remount", growing_after_remount)
    print(f"growing.bin shown after the remount: {growing_after_remount}")
    assert digest_of(view / "existing.bin") == existing_digest
    assert digest_of(view / "closed-before.bin") == closed_digest
    sync(laptop)
    assert_in_sync(laptop)  # the staged file of the torn write was swept, not kept

    phone = account.device_home(tmp_path / "phone", "phone")
    names = listing(phone, "/staging")
    assert_listed_once(names, {*small, "existing.bin", "closed-before.bin", "growing.bin"})
    assert {*small, "existing.bin", "closed-before.bin"} <= set(names)
    cold = mounts.start(phone, "phone")
    shown = cold.mountpoint / "staging"
    assert_contents(shown, small, list(small))
    assert digest_of(shown / "existing.bin") == existing_digest
    assert digest_of(shown / "closed-before.bin") == closed_digest
    if "growing.bin" in names:  # allowed: what the kernel had written, whole MiB pieces
        size = (shown / "growing.bin").stat().st_size
        assert size % MIB == 0 and size <= written_mib * MIB, size
        prefix = blake3.blake3()
        for index in range(size // MIB):
            prefix.update(piece(b"crash: growing", index))
        assert digest_of(shown / "growing.bin") == prefix.digest()


def test_the_server_killed_with_a_batch_in_flight_gets_every_file_exactly_once(
    mounts: Mounts, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    server = ServerProcess(tmp_path / "server-data").start()
    try:
        registrar = tmp_path / "registrar"
        cli_ok(
            registrar, "register", "--server", server.url, "batch-user", "--email",
            "batch-user@example.com", "--password-stdin", stdin=f"{PASSWORD}\n",
        )  # fmt: skip
        account = Account(server, "batch-user")
        laptop = account.device_home(tmp_path / "laptop", "laptop")
        mount = mounts.start(laptop, "laptop")
        folder = mount.mountpoint / "batches"
        folder.mkdir()
        contents = {
            f"f{index:04d}.txt": small_content(index) for index in range(SERVER_BURST_FILES)
        }
        killed_keys: list[str] = []
        done = threading.Event()
        watcher_error: list[Exception] = []

        def kill_server_mid_batch() -> None:
            # SIGKILL the server whenever a batch not killed yet is in flight (its key
            # persisted, its request sent or about to be), then start it again on the same
            # port and data.
            try:
                while len(killed_keys) < SERVER_KILLS and not done.is_set():
                    fresh = batch_keys_in_flight(laptop) - set(killed_keys)
                    if not fresh:
                        time.sleep(POLL_S / 2)
                        continue
                    server.kill()
                    killed_keys.extend(sorted(fresh))
                    time.sleep(0.3)
                    server.start()
            except Exception as exc:  # noqa: BLE001  (reported by the test thread)
                watcher_error.append(exc)

        watcher = threading.Thread(target=kill_server_mid_batch, daemon=True)
        watcher.start()
        try:
            for name, content in contents.items():
                (folder / name).write_bytes(content)
            deadline = time.monotonic() + SYNC_TIMEOUT_S
            while watcher.is_alive() and pending_ops(laptop) and time.monotonic() < deadline:
                time.sleep(POLL_S)
        finally:
            done.set()
            watcher.join(60)
        assert not watcher_error, watcher_error
        assert server.process is not None, "the server was left down"
        record_property("batches_killed", len(killed_keys))
        print(f"server killed with batches in flight: {killed_keys}")
        assert killed_keys, "no batch was in flight while the files uploaded"

        sync(laptop)
        assert_in_sync(laptop)
        assert not batch_keys_in_flight(laptop)
        phone = account.device_home(tmp_path / "phone", "phone")
        names = listing(phone, "/batches")
        assert_listed_once(names, set(contents))
        assert sorted(names) == sorted(contents)
        cold = mounts.start(phone, "phone")
        assert_contents(cold.mountpoint / "batches", contents, names)
    finally:
        mounts.stop_all()
        server.stop()
