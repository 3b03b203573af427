"""History and integrity on a real mount, with a real server process.

``boxfs restore`` from the command line: a file written on the mount and edited (each
version synced with ``boxfs sync``) is brought back as it was at the time ``boxfs
versions`` lists for it; the restore is a new version (``versions`` lists three) and the
edited content stays in history, under ``.versions/`` of the drive. The running mount shows
the restored content (it follows the server's head), and so does the same home mounted
again.

A corrupt chunk: a second device logs in through ``FaultyServer`` (``faulty_server.py``), a
loopback proxy that forwards everything to the real server (the event stream included) but
flips bytes inside the frames of chosen chunks in chunk downloads, keeping the record
framing valid, so the client sees a hash mismatch and not a protocol error. The corrupted
chunks are those of ``bad.bin``, computed with ``store.chunking`` (boundaries are
deterministic). Reading ``bad.bin`` through the mount fails with EIO, promptly; ``good.bin``
reads back byte for byte, the folder still lists, the mount stays up, and nothing corrupt
lands in the device's cache: with the fault turned off, the same home mounted again reads
``bad.bin`` whole.

Every mount and the proxy are stopped in ``finally`` or fixture teardown, by their own
handles.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from boxfs.mount import find_mount
from store.cache import ObjectCache, ObjectKind
from store.chunking import chunk_bytes
from tests.fuse.conftest import PASSWORD, Account, MountProcess, cli_ok
from tests.fuse.faulty_server import FaultyServer
from tests.integration.server_process import ServerProcess

pytestmark = pytest.mark.fuse

MIB = 1024 * 1024
SYNC_TIMEOUT_S = 30
EIO_WITHIN_S = 5.0  # the fetcher's request timeout is 10 s: a hang would show well past this


def sync(home: Path) -> None:
    """Wait until every change of the home's mount is on the server."""
    cli_ok(home, "sync", "--timeout", str(SYNC_TIMEOUT_S))


def wait_for_the_next_second() -> None:
    """Sleep past the next whole second of the clock, so the commits made after this are
    in a later second than those before (``versions`` prints times to the second)."""
    now = time.time()
    time.sleep(int(now) + 1 - now + 0.05)


@dataclass(frozen=True)
class VersionRow:
    """One line of ``boxfs versions`` (not a terminal: no header)."""

    time: str
    device: str
    size: str
    commit: str


def versions_of(home: Path, remote_path: str) -> list[VersionRow]:
    """Newest first."""
    rows = [line.split() for line in cli_ok(home, "versions", remote_path).splitlines()]
    assert all(len(row) == 4 for row in rows), rows
    return [VersionRow(*row) for row in rows]


def snapshots_by_time(versions: Path) -> list[str]:
    """The ``.versions`` folders, oldest first (by their mtime: the commit's time)."""
    return sorted(os.listdir(versions), key=lambda name: (versions / name).stat().st_mtime_ns)


def test_restore_from_the_cli_brings_back_a_version_as_a_new_one_seen_on_the_mount(
    account: Account, tmp_path: Path
) -> None:
    original = b"quarterly report\n" + b"first numbers\n" * 100
    edited = b"quarterly report\n" + b"revised numbers, longer\n" * 120
    assert len(original) != len(edited)  # versions tells them apart by size
    remote = "/restore-me/report.txt"
    home = account.device_home(tmp_path / "home", "restorer")
    mount = MountProcess(home, tmp_path / "mnt", tmp_path / "mount.log").start()
    try:
        path = mount.mountpoint / "restore-me" / "report.txt"
        path.parent.mkdir()
        path.write_bytes(original)
        sync(home)
        wait_for_the_next_second()
        path.write_bytes(edited)
        sync(home)
        assert path.read_bytes() == edited

        before = versions_of(home, remote)
        assert before[0].size == str(len(edited)), before
        (first,) = [row for row in before if row.size == str(len(original))]
        assert first.time != before[0].time, before
        assert first.device == before[0].device == "restorer"
        out = cli_ok(home, "restore", remote, "--at", first.time)
        assert out.startswith("restored: ") and f" as of {first.time} " in out, out

        after = versions_of(home, remote)
        assert len(after) >= 3, after
        assert after[0].size == str(len(original)), after
        assert after[0].commit not in {row.commit for row in before}
        assert after[1:] == before, "restore rewrote history"

        # The running mount follows the server: the restore shows without a remount.
        deadline = time.monotonic() + 15.0
        while path.read_bytes() != original:
            assert time.monotonic() < deadline, mount.log_tail()
            time.sleep(0.05)
        assert path.stat().st_size == len(original)
        # And a fresh mount of the same home starts from it.
        assert mount.stop() == 0, mount.log_tail()
        mount.start()
        assert path.read_bytes() == original, mount.log_tail()

        versions = mount.mountpoint / ".versions"
        relative = path.relative_to(mount.mountpoint)
        held: list[bytes] = []
        for snapshot in snapshots_by_time(versions):
            try:
                held.append((versions / snapshot / relative).read_bytes())
            except FileNotFoundError:
                continue
        # Oldest to newest: the first write, the edit (still there), the restore.
        distinct = [c for i, c in enumerate(held) if i == 0 or held[i - 1] != c]
        assert distinct == [original, edited, original], [len(content) for content in held]
    finally:
        code = mount.stop()
    assert code == 0, mount.log_tail()


# --------------------------------------------------------------------------------------
# A corrupt chunk


@pytest.fixture(scope="module")
def faulty_server(fuse_server: ServerProcess) -> Iterator[FaultyServer]:
    with FaultyServer(fuse_server.url) as proxy:
        yield proxy


def login_through(proxy: FaultyServer, account: Account, home: Path, device: str) -> Path:
    cli_ok(
        home, "login", "--server", proxy.url, account.username, "--device", device,
        "--password-stdin", stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    return home


def drop_page_cache_of(path: Path) -> None:
    """So the next read of ``path`` goes to the mount, not the kernel's page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_fails_with_eio(path: Path) -> float:
    """Read ``path`` whole, expecting EIO; how long that took."""
    started = time.monotonic()
    with pytest.raises(OSError) as raised:
        path.read_bytes()
    elapsed = time.monotonic() - started
    assert raised.value.errno == errno.EIO, raised.value
    return elapsed


def test_corrupt_chunk_fails_only_that_file_with_eio(
    account: Account, faulty_server: FaultyServer, tmp_path: Path
) -> None:
    rng = random.Random(2024)
    contents = {
        "good.bin": rng.randbytes(3 * MIB + 12_345),
        "bad.bin": rng.randbytes(3 * MIB + 54_321),
    }  # random: every frame is raw, and no chunk is shared
    writer = account.device_home(tmp_path / "writer-home", "writer")
    for name, content in contents.items():
        local = tmp_path / name
        local.write_bytes(content)
        cli_ok(writer, "-q", "put", str(local), f"/faults/{name}")
    bad_ids = {ref.chunk_id for ref in chunk_bytes(contents["bad.bin"]).chunks}
    good_ids = {ref.chunk_id for ref in chunk_bytes(contents["good.bin"]).chunks}
    assert len(bad_ids) >= 2 and len(good_ids) >= 2 and not bad_ids & good_ids
    faulty_server.corrupt(bad_ids)

    reader = login_through(faulty_server, account, tmp_path / "reader-home", "reader")
    mount = MountProcess(reader, tmp_path / "reader-mnt", tmp_path / "reader-mount.log").start()
    try:
        folder = mount.mountpoint / "faults"
        assert sorted(os.listdir(folder)) == ["bad.bin", "good.bin"]

        elapsed = read_fails_with_eio(folder / "bad.bin")
        assert elapsed < EIO_WITHIN_S, f"EIO after {elapsed:.1f} s"
        assert set(faulty_server.corrupted) <= bad_ids
        assert faulty_server.corrupted, "the proxy corrupted nothing: no chunk download seen"

        # The rest of the drive is untouched: the other file, listings, attributes.
        assert (folder / "good.bin").read_bytes() == contents["good.bin"], mount.log_tail()
        listing = subprocess.run(
            ["ls", "-l", folder], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        assert "bad.bin" in listing and "good.bin" in listing, listing
        assert (folder / "bad.bin").stat().st_size == len(contents["bad.bin"])

        # The mount is still up and serving: the good file again, through the mount.
        assert mount.process is not None and mount.process.poll() is None, mount.log_tail()
        assert find_mount(mount.mountpoint) is not None
        drop_page_cache_of(folder / "good.bin")
        assert (folder / "good.bin").read_bytes() == contents["good.bin"], mount.log_tail()
        elapsed = read_fails_with_eio(folder / "bad.bin")
        assert elapsed < EIO_WITHIN_S, f"second EIO after {elapsed:.1f} s"
        assert "failed verification" in mount.log_tail(200)
    finally:
        code = mount.stop()
    assert code == 0, mount.log_tail()

    cache = ObjectCache.open(reader / "cache", readonly=True)
    try:
        cache.verify()
        cached_bad = [i for i in bad_ids if cache.contains(ObjectKind.FRAME, i)]
        cached_good = [i for i in good_ids if cache.contains(ObjectKind.FRAME, i)]
    finally:
        cache.close()
    assert cached_bad == [], "a corrupt frame was cached"
    assert len(cached_good) == len(good_ids)

    # Fault off: the same home (same cache) mounted again reads bad.bin whole.
    faulty_server.corrupt(())
    mount.start()
    try:
        assert (folder / "bad.bin").read_bytes() == contents["bad.bin"], mount.log_tail()
    finally:
        code = mount.stop()
    assert code == 0, mount.log_tail()
