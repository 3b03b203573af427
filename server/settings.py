"""The server's settings: where its data lives, what it listens on, and its limits.

Everything has an embedded default, so ``boxfs-server --data DIR`` needs nothing else.
Immutable once built; the app reads it, nothing writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from server.db import sqlite_url
from store.protocol import MAX_LINK_UPLOAD_BYTES

DEFAULT_LISTEN = "127.0.0.1:8470"
HOUR_S = 3600
DAY_S = 24 * HOUR_S


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Which commits history keeps: every commit younger than ``keep_all_s``, then the
    newest commit of each hour up to ``keep_hourly_s``, then of each day up to
    ``keep_daily_s``; the head is always kept."""

    keep_all_s: int = DAY_S
    keep_hourly_s: int = 30 * DAY_S
    keep_daily_s: int = 365 * DAY_S


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    listen: str = DEFAULT_LISTEN
    database_url: str | None = None  # default: SQLite in data_dir
    session_lifetime_s: int = 90 * DAY_S
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    # A chunk uploaded less than this long ago is never collected, referenced or not:
    # its commit may still be on its way.
    gc_grace_s: int = DAY_S
    heartbeat_s: float = 15.0
    # How often history is thinned and garbage collected (``server.retention``).
    retention_interval_s: float = 3600.0
    # The largest body one upload through a file-request link may send (413 above it).
    link_upload_max_bytes: int = MAX_LINK_UPLOAD_BYTES

    @property
    def db_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir)

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def master_key_path(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)
