"""Fixtures of the server tests: an in-process drive and its first user, and a bare
metadata database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.db import Database, sqlite_url
from server.settings import Settings
from tests.server.drive import Drive, User


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Drive]:
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as client:
        yield Drive(client)


@pytest.fixture
def alice(drive: Drive) -> User:
    return drive.register("alice", "laptop")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(sqlite_url(tmp_path))
    try:
        yield database
    finally:
        database.close()
