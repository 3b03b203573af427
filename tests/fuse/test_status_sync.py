"""``boxfs status`` and ``boxfs sync`` beside a real mount and a real server process: the
pending count while the server is down (``offline, N pending``), ``sync --timeout`` giving
up with exit 6 while it is unreachable, then draining to 0 once it is back; and
``scripts/demo --check`` bringing up a server and a mounted drive under a tmp dir and
tearing them down.

This module runs its own server (it stops and restarts it) and its own mount; both are
stopped in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from boxfs.home import Home
from boxfs.mount import find_mount
from boxfs.remote import Remote
from tests.fuse.conftest import PASSWORD, MountProcess, cli_ok, run_cli
from tests.integration.server_process import ServerProcess, free_port

pytestmark = pytest.mark.fuse

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_S = 90.0


@dataclass
class Setup:
    server: ServerProcess
    home: Path
    mount: MountProcess


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    server = ServerProcess(tmp_path / "server").start()
    mount: MountProcess | None = None
    made: Setup | None = None
    try:
        home = tmp_path / "home"
        cli_ok(
            home, "register", "--server", server.url, "status-user", "--email",
            "status-user@example.com", "--password-stdin", stdin=f"{PASSWORD}\n",
        )  # fmt: skip
        cli_ok(
            home, "login", "--server", server.url, "status-user", "--device", "laptop",
            "--password-stdin", stdin=f"{PASSWORD}\n",
        )  # fmt: skip
        mount = MountProcess(home, tmp_path / "mnt", tmp_path / "mount.log").start()
        made = Setup(server, home, mount)
        yield made
    finally:
        if mount is not None:
            mount.stop()
        (made.server if made is not None else server).stop()


def status_lines(home: Path) -> dict[str, str]:
    out = cli_ok(home, "status")
    return dict(line.split(": ", 1) for line in out.splitlines() if not line.startswith(" "))


def test_status_shows_the_running_mount_and_nothing_pending(setup: Setup) -> None:
    (setup.mount.mountpoint / "a.txt").write_text("hello")
    assert run_cli(setup.home, "sync", "--timeout", "30").returncode == 0
    lines = status_lines(setup.home)
    assert lines["server"] == "online"
    assert lines["mount"].startswith(f"running at {setup.mount.mountpoint} (pid ")
    assert lines["pending"] == "0 operations, 0 B staged"
    assert lines["last sync"] != "-"
    assert lines["conflicts"] == "none"


def test_status_offline_then_sync_drains_once_the_server_is_back(setup: Setup) -> None:
    port, data_dir = setup.server.port, setup.server.data_dir
    setup.server.stop()
    try:
        (setup.mount.mountpoint / "offline.txt").write_bytes(b"x" * 5000)
        (setup.mount.mountpoint / "folder").mkdir()
        lines = status_lines(setup.home)
        pending = int(lines["pending"].split()[0])
        assert pending >= 2, lines
        assert lines["server"] == f"offline, {pending} pending"
        assert lines["pending"].endswith("staged")

        started = time.monotonic()
        result = run_cli(setup.home, "sync", "--timeout", "1")
        assert result.returncode == 6, (result.stdout, result.stderr)
        assert "cannot be reached" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert time.monotonic() - started < 20
    finally:
        setup.server = ServerProcess(data_dir, port=port).start()

    result = run_cli(setup.home, "sync", "--timeout", "40")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert status_lines(setup.home)["pending"] == "0 operations, 0 B staged"
    assert cli_ok(setup.home, "ls", "/").split().count("offline.txt") == 1


def test_a_mount_whose_session_was_revoked_says_so_and_uploads_after_a_new_login(
    setup: Setup, tmp_path: Path
) -> None:
    laptop = Home(setup.home).load_session()
    phone_home = tmp_path / "phone"
    cli_ok(
        phone_home, "login", "--server", setup.server.url, "status-user", "--device", "phone",
        "--password-stdin", stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    phone = Home(phone_home).load_session()

    async def revoke_the_laptop() -> None:
        async with Remote(setup.server.url, phone.token) as remote:
            await remote.revoke_session(laptop.session_id)

    trio.run(revoke_the_laptop)
    (setup.mount.mountpoint / "while-revoked.txt").write_text("kept in the journal")
    lines = status_lines(setup.home)
    assert lines["account"].startswith("logged out: run boxfs login"), lines
    assert int(lines["pending"].split()[0]) >= 1, lines
    assert run_cli(setup.home, "sync", "--timeout", "2").returncode == 8

    cli_ok(setup.home, "login", "status-user", "--password-stdin", stdin=f"{PASSWORD}\n")
    result = run_cli(setup.home, "sync", "--timeout", "40")
    assert result.returncode == 0, (result.stdout, result.stderr, setup.mount.log_tail())
    assert status_lines(setup.home)["account"].startswith("status-user on ")
    assert "while-revoked.txt" in cli_ok(setup.home, "ls", "/").split()


def test_demo_check_brings_up_a_drive_and_tears_it_down(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DEMO_DIR": str(tmp_path), "DEMO_PORT": str(port)}
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "demo"), "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "demo: mounted" in result.stdout
    assert "demo: check passed" in result.stdout
    assert find_mount(tmp_path / "BoxDrive") is None
    assert not (tmp_path / ".demo" / "home" / "mount.pid").exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the demo's server is gone


def _pids_of_command_with(argument: str) -> list[int]:
    """PIDs whose command line holds ``argument`` exactly (this test's own paths)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in argv:
            found.append(int(entry.name))
    return found


def test_demo_cleans_up_after_ctrl_c_even_when_its_output_pipe_is_gone(tmp_path: Path) -> None:
    """`scripts/demo | tee log` and Ctrl-C: the signal ends tee too, so the demo's stdout is
    a broken pipe while it cleans up; the drive must still be unmounted, the server stopped."""
    port = free_port()
    env = {**os.environ, "DEMO_DIR": str(tmp_path), "DEMO_PORT": str(port)}
    drive = tmp_path / "BoxDrive"
    server_data = str(tmp_path / ".demo" / "server")
    with (tmp_path / "demo.err").open("wb") as errors:
        demo = subprocess.Popen(
            [str(REPO_ROOT / "scripts" / "demo")],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    try:
        assert demo.stdout is not None
        shown = b""
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while b"Press Ctrl-C" not in shown and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            shown += line
        assert b"Press Ctrl-C" in shown, (shown, (tmp_path / "demo.err").read_text())
        assert find_mount(drive) is not None
        demo.stdout.close()  # tee is gone
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: to the whole foreground group
        assert demo.wait(timeout=60) == 130
        assert find_mount(drive) is None, (tmp_path / ".demo" / "demo.log").read_text()
        assert _pids_of_command_with(server_data) == []
        assert "demo: stopped" in (tmp_path / ".demo" / "demo.log").read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if find_mount(drive) is not None:
            MountProcess(tmp_path / ".demo" / "home", drive, tmp_path / "unused.log").abort()
        for pid in _pids_of_command_with(server_data):
            os.kill(pid, signal.SIGTERM)
        mount_pid = tmp_path / ".demo" / "home" / "mount.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(mount_pid.read_text().split()[0])
            if str(tmp_path) in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGTERM)
