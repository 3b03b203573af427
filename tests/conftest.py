"""Fixtures shared by every test package, and the session-end sweep."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.server_process import ServerProcess, running_servers


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real boxfs-server on a free loopback port, stopped after the test."""
    server = ServerProcess(tmp_path / "server-data").start()
    try:
        yield server
    finally:
        server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Whatever a failed test left running is stopped here, by its own PID.
    for server in list(running_servers):
        server.kill()
