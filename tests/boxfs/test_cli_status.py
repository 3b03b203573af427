"""``boxfs status`` and ``boxfs sync`` on a device home whose journal the test fills itself,
with no mount running and no server listening: the lines status prints (pending count and
staged bytes, ``offline, N pending``, conflicts), and sync refusing to wait for uploads
nothing will make (exit 8), giving up with exit 6 when its timeout passes while the server
is unreachable (beside a stand-in mount process), or returning at once when there is
nothing pending.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from boxfs import cli
from boxfs.home import Home, Session
from boxfs.journal import Journal, StagedPut
from boxfs.staging import Staging
from store.ids import NamespaceId
from store.ops import Attrs, Mkdir
from store.protocol import DrivePath
from tests.integration.server_process import free_port

NAMESPACE = NamespaceId(bytes(16))
ATTRS = Attrs(mode=0o644, uid=1000, gid=1000, mtime_ns=1_700_000_000_000_000_000)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.setenv("BOXFS_HOME", str(tmp_path / "home"))
    return Home.from_env()


def log_in_to_nowhere(home: Home) -> None:
    """A session whose server does not listen (a free port nobody took)."""
    url = f"http://127.0.0.1:{free_port()}"
    home.save_session(Session(url, "token", "session-id", "alice", "laptop"))


def fill_journal(home: Home, staged_bytes: int) -> None:
    """A pending mkdir and a pending put of ``staged_bytes``, and one rejected op."""
    staging = Staging(home.staging_dir)
    with staging.new() as staged:
        staged.write_at(0, b"x" * staged_bytes)
        name = staged.name
    with Journal(home.journal_dir / "journal.sqlite3") as journal:
        journal.append(NAMESPACE, Mkdir(DrivePath((b"docs",)), ATTRS))
        journal.append(NAMESPACE, StagedPut(DrivePath((b"docs", b"a.txt")), ATTRS, staged=name))
        gone = journal.append(NAMESPACE, Mkdir(DrivePath((b"gone",)), ATTRS))
        journal.reject(gone, "invalid", "the server refused it")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_status_of_an_empty_home_without_a_session(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = run(["status"], capsys)
    assert code == 0
    assert lines == [
        "account: not logged in",
        "server: none",
        "mount: not running",
        "pending: 0 operations, 0 B staged",
        "last sync: -",
        "conflicts: none",
    ]


def test_status_offline_shows_pending_ops_staged_bytes_and_conflicts(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    log_in_to_nowhere(home)
    fill_journal(home, staged_bytes=3000)
    code, lines, _ = run(["status"], capsys)
    assert code == 0
    assert lines[0].startswith("account: alice on http://127.0.0.1:")
    assert lines[1:6] == [
        "server: offline, 2 pending",
        "mount: not running",
        "pending: 2 operations, 2.9 KiB staged",
        "last sync: -",
        "conflicts: 1",
    ]
    assert lines[6] == "  rejected: /gone: the server refused it"


def test_status_ignores_a_stale_pid_file(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    home.data_dir.mkdir(parents=True, exist_ok=True)
    (home.data_dir / "mount.pid").write_text(f"{os.getpid()}\n{home.data_dir}\n")
    code, lines, _ = run(["status"], capsys)
    assert code == 0
    assert "mount: not running" in lines


def test_sync_without_a_mount_exits_8_instead_of_waiting(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    log_in_to_nowhere(home)
    fill_journal(home, staged_bytes=10)
    code, _, err = run(["sync"], capsys)
    assert code == cli.ExitCode.NOT_SYNCED
    assert int(cli.ExitCode.NOT_SYNCED) == 8
    assert err.strip().splitlines() == [
        "boxfs: 2 operations pending, and no mount of this home is running to upload them "
        "(`boxfs mount MOUNTPOINT` resumes the upload)"
    ]


def test_sync_with_nothing_pending_returns_at_once(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = run(["sync", "--timeout", "5"], capsys)
    assert code == 0
    assert lines == ["in sync: every change is on the server"]


def test_sync_refuses_a_negative_timeout(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    home.data_dir.mkdir(parents=True, exist_ok=True)
    fill_journal(home, staged_bytes=1)
    code, _, err = run(["sync", "--timeout", "-1"], capsys)
    assert code == 2
    assert "--timeout" in err


@pytest.fixture
def mount_like_process(home: Home) -> Iterator[int]:
    """A live process whose command line looks like a mount's (``... boxfs.mount``) named
    by the home's pid file, with nothing mounted: a mount that is still uploading after its
    unmount. Stopped by its PID."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "boxfs.mount"],
        stdin=subprocess.DEVNULL,
    )
    try:
        home.data_dir.mkdir(parents=True, exist_ok=True)
        (home.data_dir / "mount.pid").write_text(f"{process.pid}\n{home.data_dir / 'mnt'}\n")
        yield process.pid
    finally:
        process.kill()
        process.wait()


def test_sync_times_out_with_exit_6_while_the_server_is_unreachable(
    home: Home, mount_like_process: int, capsys: pytest.CaptureFixture[str]
) -> None:
    log_in_to_nowhere(home)
    fill_journal(home, staged_bytes=10)
    code, lines, _ = run(["status"], capsys)
    assert (
        f"mount: unmounted from {home.data_dir / 'mnt'}, uploading (pid {mount_like_process})"
        in lines
    )
    started = time.monotonic()
    code, _, err = run(["sync", "--timeout", "0.5"], capsys)
    assert code == cli.ExitCode.UNAVAILABLE
    assert err.strip().splitlines() == [
        "boxfs: timed out: the server cannot be reached (offline, 2 pending)"
    ]
    assert time.monotonic() - started < 10


def test_a_lost_put_fails_the_next_sync_naming_it_and_stays_in_status(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    with Journal(home.journal_dir / "journal.sqlite3") as journal:
        seq = journal.append(
            NAMESPACE, StagedPut(DrivePath((b"report.txt",)), ATTRS, staged="a" * 32)
        )
        journal.reject(seq, "staged_missing", "staged file aaaa is missing", lost=True)
    code, lines, err = run(["sync", "--timeout", "5"], capsys)
    assert code == cli.ExitCode.NOT_SYNCED
    assert lines == []
    assert err.strip().splitlines() == [
        "boxfs: 1 change never reached the server, its content gone before the upload: "
        "/report.txt (see boxfs status)"
    ]
    code, lines, _ = run(["status"], capsys)
    assert code == 0
    assert "conflicts: 1" in lines
    assert "  lost: /report.txt: staged file aaaa is missing" in lines
    # Reported once: the next sync has nothing new to say.
    code, lines, _ = run(["sync", "--timeout", "5"], capsys)
    assert (code, lines) == (0, ["in sync: every change is on the server"])
