"""Two devices of one account, two real mounts on one machine, one real server process:
changes made through one mount show on the other without a remount.

Covered: create, modify, append, truncate, rename and delete on A appear on B (a renamed
or deleted name is gone on B the moment the change arrives, not after the kernel's entry
timeout, because the notifier invalidates it); a descriptor held open on B reads the new
content; edits of one text file made on both devices while the server was down merge (in
different places) or leave a conflicted copy (the same place) on both, nothing lost; with
the server stopped, cached files stay readable, an uncached read fails with ENOTCONN in bounded
time, creates/renames/deletes keep working and wait in the journal (``boxfs status`` says
"offline, N pending"), and once the server is back both devices converge (``diff -r``);
``boxfs unmount --no-wait`` leaves what is pending in the journal for the next mount; a
mount started with the server down shows what this device last synced (the head shown once
more at unmount) and journals new changes.

The module runs its own server (tests here stop and start it); each test works in a folder
of its own.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from boxfs.mount import find_mount
from tests.fuse.conftest import (
    PASSWORD,
    Account,
    MountProcess,
    cli_ok,
    fuse_missing_reason,
    run_cli,
)
from tests.integration.server_process import ServerProcess

pytestmark = pytest.mark.fuse

SYNC_TIMEOUT_S = 15.0  # a change reaching the other mount (normally well under a second)
CONVERGE_TIMEOUT_S = 60.0  # after the server comes back (reconnect backoff, upload, events)
OFFLINE_READ_LIMIT_S = 30.0  # an uncached read with the server down must fail within this
INVALIDATED_S = 0.15  # how long a stale name may linger after the change arrived


@dataclass
class Devices:
    server: ServerProcess
    account: Account
    a: MountProcess
    b: MountProcess

    @contextmanager
    def server_down(self) -> Iterator[None]:
        """The server stopped for the block, started again (same port, same data) after."""
        self.server.stop()
        try:
            yield
        finally:
            self.server.start()


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devices]:
    if fuse_missing_reason() is not None:
        pytest.skip(fuse_missing_reason() or "")
    base = tmp_path_factory.mktemp("sync")
    server = ServerProcess(base / "data").start()
    mounts: list[MountProcess] = []
    try:
        cli_ok(
            base / "registrar", "register", "--server", server.url, "sync-user", "--email",
            "sync-user@example.com", "--password-stdin", stdin=f"{PASSWORD}\n",
        )  # fmt: skip
        account = Account(server, "sync-user")
        for device in ("laptop", "phone"):
            home = account.device_home(base / f"{device}-home", device)
            mount = MountProcess(home, base / f"{device}-mnt", base / f"{device}-mount.log")
            mounts.append(mount.start())
        yield Devices(server, account, mounts[0], mounts[1])
    finally:
        for mount in mounts:
            mount.stop()
        server.stop()


@pytest.fixture
def folders(devices: Devices, request: pytest.FixtureRequest) -> Iterator[tuple[Path, Path]]:
    """A folder of the test's own, made on A and seen on B."""
    name = request.node.name[:60]
    on_a = devices.a.mountpoint / name
    on_a.mkdir()
    on_b = devices.b.mountpoint / name
    eventually(on_b.is_dir, f"{name}/ on B")
    yield on_a, on_b
    subprocess.run(["rm", "-rf", str(on_a)], check=False, timeout=60)


def eventually(check: Callable[[], object], what: str, timeout_s: float = SYNC_TIMEOUT_S) -> None:
    """Poll ``check`` until it is true (an OSError counts as not yet), bounded."""
    deadline = time.monotonic() + timeout_s
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError as exc:
            last_error = exc
        time.sleep(0.02)
    raise AssertionError(f"not after {timeout_s} s: {what} (last error: {last_error})")


def unmount_no_wait(mount: MountProcess, wait_s: float) -> str:
    """``boxfs unmount --no-wait`` for ``mount``'s home; waits for its process to exit
    cleanly. What the command printed."""
    result = run_cli(mount.home, "unmount", "--no-wait", str(mount.mountpoint))
    assert result.returncode == 0, result.stderr
    assert mount.process is not None
    assert mount.process.wait(wait_s) == 0
    mount.process = None
    return result.stdout


def content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def shows(path: Path, data: bytes) -> Callable[[], bool]:
    return lambda: content(path) == data


def test_changes_on_one_device_appear_on_the_other(folders: tuple[Path, Path]) -> None:
    on_a, on_b = folders
    (on_a / "note.txt").write_bytes(b"first\n")
    eventually(shows(on_b / "note.txt", b"first\n"), "create")

    (on_a / "note.txt").write_bytes(b"second version\n")
    eventually(shows(on_b / "note.txt", b"second version\n"), "modify")

    with (on_a / "note.txt").open("ab") as appended:
        appended.write(b"appended line\n")
    eventually(shows(on_b / "note.txt", b"second version\nappended line\n"), "append")

    os.truncate(on_a / "note.txt", 6)
    eventually(shows(on_b / "note.txt", b"second"), "truncate")
    assert (on_b / "note.txt").stat().st_size == 6

    (on_a / "sub").mkdir()
    (on_a / "sub" / "inner.bin").write_bytes(os.urandom(300_000))
    expected = (on_a / "sub" / "inner.bin").read_bytes()
    eventually(shows(on_b / "sub" / "inner.bin", expected), "a new directory with a file")

    (on_a / "note.txt").unlink()
    eventually(lambda: not (on_b / "note.txt").exists(), "delete")


def test_directory_times_and_device_nodes_travel_between_devices(
    folders: tuple[Path, Path],
) -> None:
    on_a, on_b = folders
    (on_a / "sub").mkdir()
    eventually((on_b / "sub").is_dir, "the directory on B")
    before_on_b = os.stat(on_b / "sub")
    (on_a / "sub" / "new.txt").write_bytes(b"x")
    written_on_a = os.stat(on_a / "sub").st_mtime_ns
    eventually(shows(on_b / "sub" / "new.txt", b"x"), "the new name on B")
    # The sync that carried the name must not set A's directory mtime back; B's moves, as
    # a name came into its listing.
    assert os.stat(on_a / "sub").st_mtime_ns == written_on_a
    after_on_b = os.stat(on_b / "sub")
    assert after_on_b.st_mtime_ns > before_on_b.st_mtime_ns
    assert after_on_b.st_ctime_ns > before_on_b.st_ctime_ns

    os.mknod(on_a / "disk", 0o640 | stat.S_IFBLK, os.makedev(8, 1))
    os.mknod(on_a / "tty", 0o600 | stat.S_IFCHR, os.makedev(4, 1))
    os.chmod(on_a / "tty", 0o620)
    eventually(lambda: os.lstat(on_b / "tty").st_mode & 0o777 == 0o620, "the nodes on B")
    disk, tty = os.lstat(on_b / "disk"), os.lstat(on_b / "tty")
    assert stat.S_ISBLK(disk.st_mode) and disk.st_rdev == os.makedev(8, 1)
    assert stat.S_ISCHR(tty.st_mode) and tty.st_rdev == os.makedev(4, 1)


def test_renamed_and_deleted_names_vanish_on_the_other_device_at_once(
    folders: tuple[Path, Path],
) -> None:
    on_a, on_b = folders
    (on_a / "old.txt").write_bytes(b"moving\n")
    (on_a / "doomed.txt").write_bytes(b"to be deleted\n")
    eventually(shows(on_b / "doomed.txt", b"to be deleted\n"), "both files on B")
    eventually(shows(on_b / "old.txt", b"moving\n"), "both files on B")

    # B keeps looking up both names, so the kernel holds fresh entries for them (valid for
    # its 1 s entry timeout). Once the new name shows, the old one must be gone within a
    # moment (the notifier runs just after the change is applied): well inside the
    # timeout, which only an invalidation achieves.
    (on_a / "old.txt").rename(on_a / "new.txt")
    (on_a / "doomed.txt").unlink()
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while not (on_b / "new.txt").exists():
        (on_b / "old.txt").exists()
        (on_b / "doomed.txt").exists()
        assert time.monotonic() < deadline, "the rename never arrived on B"
        time.sleep(0.005)
    eventually(lambda: not (on_b / "old.txt").exists(), "the old name gone", INVALIDATED_S)
    assert content(on_b / "new.txt") == b"moving\n"
    eventually(lambda: not (on_b / "doomed.txt").exists(), "the deleted name")
    assert sorted(p.name for p in on_b.iterdir()) == ["new.txt"]


def test_a_descriptor_open_on_the_other_device_reads_the_new_content(
    folders: tuple[Path, Path],
) -> None:
    on_a, on_b = folders
    (on_a / "live.txt").write_bytes(b"version one\n")
    eventually(shows(on_b / "live.txt", b"version one\n"), "the file on B")
    with (on_b / "live.txt").open("rb") as held:
        assert held.read() == b"version one\n"  # now in B's page cache
        (on_a / "live.txt").write_bytes(b"version two, longer\n")

        def held_reads_new() -> bool:
            held.seek(0)
            return held.read() == b"version two, longer\n"

        eventually(held_reads_new, "the new content through the open descriptor")


def test_edits_in_different_places_merge_on_both_devices(
    devices: Devices, folders: tuple[Path, Path]
) -> None:
    on_a, on_b = folders
    lines = [f"line {n}\n" for n in range(1, 11)]
    (on_a / "shared.txt").write_text("".join(lines))
    eventually(shows(on_b / "shared.txt", "".join(lines).encode()), "the file on B")
    a_lines, b_lines = list(lines), list(lines)
    a_lines[1] = "line 2 edited on the laptop\n"
    b_lines[8] = "line 9 edited on the phone\n"
    with devices.server_down():
        (on_a / "shared.txt").write_text("".join(a_lines))
        (on_b / "shared.txt").write_text("".join(b_lines))
    merged = list(lines)
    merged[1], merged[8] = a_lines[1], b_lines[8]
    expected = "".join(merged).encode()
    eventually(shows(on_a / "shared.txt", expected), "the merge on A", CONVERGE_TIMEOUT_S)
    eventually(shows(on_b / "shared.txt", expected), "the merge on B", CONVERGE_TIMEOUT_S)
    assert sorted(p.name for p in on_a.iterdir()) == ["shared.txt"]
    assert sorted(p.name for p in on_b.iterdir()) == ["shared.txt"]


def test_edits_in_the_same_place_leave_a_conflicted_copy_on_both_devices(
    devices: Devices, folders: tuple[Path, Path]
) -> None:
    on_a, on_b = folders
    (on_a / "plan.txt").write_text("the plan: undecided\n")
    eventually(shows(on_b / "plan.txt", b"the plan: undecided\n"), "the file on B")
    with devices.server_down():
        (on_a / "plan.txt").write_text("the plan: laptop's idea\n")
        (on_b / "plan.txt").write_text("the plan: phone's idea\n")

    def both_versions_on(folder: Path) -> bool:
        names = sorted(p.name for p in folder.iterdir())
        if len(names) != 2 or "plan.txt" not in names:
            return False
        copy = next(name for name in names if name != "plan.txt")
        versions = {content(folder / "plan.txt"), content(folder / copy)}
        return "conflicted copy" in copy and versions == {
            b"the plan: laptop's idea\n",
            b"the plan: phone's idea\n",
        }

    eventually(lambda: both_versions_on(on_a), "both versions on A", CONVERGE_TIMEOUT_S)
    eventually(lambda: both_versions_on(on_b), "both versions on B", CONVERGE_TIMEOUT_S)
    assert sorted(os.listdir(on_a)) == sorted(os.listdir(on_b))
    status = cli_ok(devices.a.home, "status") + cli_ok(devices.b.home, "status")
    assert "conflicted" in status, status


def test_offline_reads_cached_files_queues_changes_and_converges(
    devices: Devices, folders: tuple[Path, Path]
) -> None:
    on_a, on_b = folders
    cached = os.urandom(2_000_000)
    uncached = os.urandom(3_000_000)
    (on_a / "cached.bin").write_bytes(cached)
    (on_a / "uncached.bin").write_bytes(uncached)
    (on_a / "keep.txt").write_bytes(b"keep\n")
    (on_a / "rename-me.txt").write_bytes(b"renamed offline\n")
    (on_a / "delete-me.txt").write_bytes(b"deleted offline\n")
    eventually(shows(on_b / "cached.bin", cached), "cached.bin read once on B")
    eventually((on_b / "delete-me.txt").exists, "every file listed on B")
    eventually(lambda: (on_b / "uncached.bin").stat().st_size == len(uncached), "uncached.bin")

    with devices.server_down():
        # B: the cached file reads (drop the page cache first: the mount serves it).
        with (on_b / "cached.bin").open("rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert handle.read() == cached
        started = time.monotonic()
        with pytest.raises(OSError) as failure:
            (on_b / "uncached.bin").read_bytes()
        assert failure.value.errno == errno.ENOTCONN  # the server, not the data, is missing
        assert time.monotonic() - started < OFFLINE_READ_LIMIT_S

        # A: changes keep working and wait in the journal.
        (on_a / "offline-new.txt").write_bytes(b"made offline\n")
        (on_a / "rename-me.txt").rename(on_a / "renamed.txt")
        (on_a / "delete-me.txt").unlink()
        (on_a / "offline-dir").mkdir()
        (on_a / "offline-dir" / "deep.txt").write_bytes(b"deep\n")
        assert content(on_a / "renamed.txt") == b"renamed offline\n"
        status = ""

        def offline_and_pending() -> bool:
            nonlocal status
            status = cli_ok(devices.a.home, "status")
            return "server: offline" in status and "pending: 0 operations" not in status

        eventually(offline_and_pending, "`boxfs status` saying offline with work pending")
        assert "offline, " in status and "pending" in status, status

    expected = {
        "cached.bin", "uncached.bin", "keep.txt", "renamed.txt", "offline-new.txt",
        "offline-dir",
    }  # fmt: skip
    eventually(lambda: set(os.listdir(on_b)) == expected, "B converging", CONVERGE_TIMEOUT_S)
    eventually(lambda: content(on_b / "offline-dir" / "deep.txt") == b"deep\n", "deep.txt")
    cli_ok(devices.a.home, "sync", "--timeout", str(CONVERGE_TIMEOUT_S))
    diff = subprocess.run(
        ["diff", "-r", str(on_a), str(on_b)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert content(on_b / "uncached.bin") == uncached  # fetched now that the server is back


def test_unmount_no_wait_leaves_pending_changes_for_the_next_mount(
    devices: Devices, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    on_a, _ = folders
    home = devices.account.device_home(tmp_path / "tablet-home", "tablet")
    tablet = MountProcess(home, tmp_path / "tablet-mnt", tmp_path / "tablet-mount.log").start()
    try:
        folder = tablet.mountpoint / on_a.name
        eventually(folder.is_dir, "the folder on the tablet")
        with devices.server_down():
            for number in range(3):
                (folder / f"queued-{number}.txt").write_bytes(b"queued %d\n" % number)
            said = unmount_no_wait(tablet, wait_s=10)  # gone without waiting for the server
            assert "left journaled" in said, said
            assert find_mount(tablet.mountpoint) is None
        tablet.start()
        cli_ok(home, "sync", "--timeout", str(CONVERGE_TIMEOUT_S))
        for number in range(3):
            eventually(
                shows(on_a / f"queued-{number}.txt", b"queued %d\n" % number),
                "the queued file on A",
            )
    finally:
        tablet.stop()


def test_a_mount_started_offline_shows_what_this_device_last_synced(
    devices: Devices, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    on_a, _ = folders
    home = devices.account.device_home(tmp_path / "desk-home", "desk")
    desk = MountProcess(home, tmp_path / "desk-mnt", tmp_path / "desk-mount.log").start()
    try:
        folder = desk.mountpoint / on_a.name
        eventually(folder.is_dir, "the folder on the desk")
        (folder / "last.txt").write_bytes(b"written just before unmounting\n")
        assert desk.stop() == 0, desk.log_tail()  # drains, then shows the head once more
        with devices.server_down():
            desk.start()  # the server is down: the view the journal remembers
            assert "last.txt" in os.listdir(folder), desk.log_tail()
            (folder / "offline.txt").write_bytes(b"made offline\n")
            unmount_no_wait(desk, wait_s=30)
        desk.start()
        cli_ok(home, "sync", "--timeout", str(CONVERGE_TIMEOUT_S))
        eventually(shows(on_a / "offline.txt", b"made offline\n"), "the offline file on A")
        assert content(on_a / "last.txt") == b"written just before unmounting\n"
    finally:
        desk.stop()
