"""Fixtures for real mounts: a server process, logged-in device homes, and mounts run as
subprocesses (``python -m boxfs.mount MOUNTPOINT``, in the foreground of that process).

A mount is ready when its mountpoint shows in /proc/self/mountinfo. It is stopped by
SIGTERM to its own PID (the mount then unmounts itself and drains the journal, bounded); if
it has not gone within the timeout, the FUSE connection is aborted through
/sys/fs/fuse/connections/N/abort (N: the mount's device minor), ``fusermount3 -u -z``
detaches the mountpoint, and the process is killed by its PID. Never by name.
``pytest_sessionfinish`` does the same for any mount a failed test left.

``BOXFS_TEST_MOUNT_DEBUG=1`` runs the mounts with ``--debug`` (every detail in their logs).

Without /dev/fuse every test here is skipped, with that reason printed; with it (this
machine, CI) they must run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from boxfs.mount import find_mount
from tests.integration.server_process import ServerProcess, running_servers

PASSWORD = "fuse test password"  # noqa: S105  (a test account)
MOUNT_START_TIMEOUT_S = 30.0
MOUNT_STOP_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 20.0

running_mounts: set[MountProcess] = set()


def fuse_missing_reason() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: this machine cannot mount FUSE filesystems"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = fuse_missing_reason()
    if reason is None:
        return
    print(f"\ntests/fuse skipped: {reason}", file=sys.stderr)
    for item in items:
        if item.get_closest_marker("fuse") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("boxfs")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from boxfs.cli import main; sys.exit(main())"]


def run_cli(home: Path, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BOXFS_HOME": str(home)}
    return subprocess.run(
        [*cli_command(), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def cli_ok(home: Path, *argv: str, stdin: str | None = None) -> str:
    result = run_cli(home, *argv, stdin=stdin)
    assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result.stdout


@dataclass(frozen=True)
class Account:
    server: ServerProcess
    username: str

    def device_home(self, home: Path, device: str) -> Path:
        """A new device home logged in as this account."""
        cli_ok(
            home, "login", "--server", self.server.url, self.username, "--device", device,
            "--password-stdin", stdin=f"{PASSWORD}\n",
        )  # fmt: skip
        return home


class MountProcess:
    """One ``python -m boxfs.mount`` process serving ``mountpoint`` for ``home``."""

    def __init__(
        self,
        home: Path,
        mountpoint: Path,
        log_path: Path,
        cache_size: str = "256M",
        options: tuple[str, ...] = (),
    ) -> None:
        self.home = home
        self.mountpoint = mountpoint
        self.log_path = log_path
        self.cache_size = cache_size
        self.options = options  # more ``boxfs.mount`` arguments, e.g. ``--allow-other``
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MountProcess:
        assert self.process is None, "already running"
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "BOXFS_HOME": str(self.home)}
        command = [
            sys.executable, "-m", "boxfs.mount", str(self.mountpoint),
            "--cache-size", self.cache_size, "--drain-timeout", str(DRAIN_TIMEOUT_S),
            *self.options,
            *(["--debug"] if os.environ.get("BOXFS_TEST_MOUNT_DEBUG") else []),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        running_mounts.add(self)
        deadline = time.monotonic() + MOUNT_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the mount exited at start:\n{self.log_tail()}")
            if find_mount(self.mountpoint) is not None:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"no mount after {MOUNT_START_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout_s: float = MOUNT_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; abort the connection and kill if it does not go. The exit
        code, or None if it had to be killed."""
        if self.process is None:
            return 0
        process, self.process = self.process, None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    return process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    pass
            else:
                return process.returncode
            self.abort()
            process.kill()
            process.wait()
            return None
        finally:
            if find_mount(self.mountpoint) is not None:
                self.abort()
            running_mounts.discard(self)

    def abort(self) -> None:
        """The way out of a hung mount: abort its FUSE connection, detach it."""
        info = find_mount(self.mountpoint)
        if info is None:
            return
        abort_file = Path(f"/sys/fs/fuse/connections/{info.device_minor}/abort")
        if abort_file.exists():
            abort_file.write_text("1")
        subprocess.run(
            ["fusermount3", "-u", "-z", str(self.mountpoint)], check=False, capture_output=True
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for mount in list(running_mounts):
        mount.stop(timeout_s=5.0)
    for server in list(running_servers):
        server.kill()


def register(server: ServerProcess, username: str, registrar_home: Path) -> Account:
    """A new account on ``server`` (password ``PASSWORD``), registered with the CLI from a
    home of its own."""
    cli_ok(
        registrar_home, "register", "--server", server.url, username, "--email",
        f"{username}@example.com", "--password-stdin", stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    return Account(server, username)


@pytest.fixture(scope="module")
def fuse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module (starting one per test would eat the time budget)."""
    if fuse_missing_reason() is not None:
        pytest.skip(fuse_missing_reason() or "")
    server = ServerProcess(tmp_path_factory.mktemp("fuse-server") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def account(fuse_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Account:
    return register(fuse_server, "fuse-user", tmp_path_factory.mktemp("registrar"))


@pytest.fixture(scope="module")
def drive(account: Account, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MountProcess]:
    """The account's drive mounted from a device home, for the whole module; each test
    works in a folder of its own and removes it."""
    base = tmp_path_factory.mktemp("drive")
    home = account.device_home(base / "home", "laptop")
    mount = MountProcess(home, base / "mnt", base / "mount.log").start()
    try:
        yield mount
    finally:
        code = mount.stop()
        assert code == 0, f"the mount did not stop cleanly ({code}):\n{mount.log_tail()}"
