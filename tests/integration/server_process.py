"""A real ``boxfs-server`` process on loopback, for tests and benchmarks.

``ServerProcess`` starts the console script on a free port with its own data directory,
waits until ``/healthz`` answers, and stops it by its own PID: SIGTERM and a wait, or
SIGKILL for crash tests. Every process it started is stopped by ``stop`` / ``kill``, and
``running_servers`` lets a session-end hook sweep any a failed test left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from store import protocol

running_servers: set[ServerProcess] = set()

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_command() -> list[str]:
    script = Path(sys.executable).with_name("boxfs-server")
    return [str(script)] if script.exists() else [sys.executable, "-m", "server"]


class ServerProcess:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        assert self.process is None, "already running"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*server_command(), "--data", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        running_servers.add(self)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"boxfs-server exited at start:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}{protocol.HEALTH.template}", timeout=1.0).is_success:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"boxfs-server did not answer in {STARTUP_TIMEOUT_S} s")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.process is None:
            return 0
        process, self.process = self.process, None
        running_servers.discard(self)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
        return process.wait()

    def kill(self) -> None:
        """SIGKILL: the crash the tests need."""
        if self.process is None:
            return
        process, self.process = self.process, None
        running_servers.discard(self)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid
