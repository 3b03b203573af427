"""What this device has not uploaded yet, and who is uploading it: for ``status``,
``sync`` and ``unmount``.

It reads the home's journal read-only (beside a running mount: pending operations, staged
bytes, conflicts and lost puts), finds the home's mount process from the pid file it
writes, and asks whether the server answers. The one file it writes is the
``sync-reported`` marker (which lost puts ``sync`` has reported). Blocking functions say
so: call them in a worker thread. It must not print.

The journal's and the pid file's names come from ``boxfs.mount``, which pulls in pyfuse3:
it is imported inside the functions that need them, never when this module is.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import trio

from boxfs.home import Home, Session
from boxfs.journal import MAX_CONFLICTS_KEPT, ConflictRecord, Journal
from boxfs.remote import Remote
from store import protocol
from store.errors import TransientError

HEALTH_TIMEOUT_S: Final = 3.0  # how long `status` and `sync` wait for the server to answer


@dataclass(frozen=True, slots=True)
class RunningMount:
    """A mount of this home whose process is alive, from the pid file it writes."""

    pid: int
    mountpoint: str
    mounted: bool  # False: unmounted, its process still uploading what is pending


@dataclass(frozen=True, slots=True)
class LocalState:
    """What this device has not uploaded yet, read from its journal (read-only)."""

    pending_ops: int
    staged_bytes: int
    last_sync_ns: int | None  # when the journal last emptied (approximate), if it is empty
    conflicts: tuple[ConflictRecord, ...]


def journal_path_of(home: Home) -> Path:
    """Where the mount of ``home`` keeps its journal."""
    from boxfs import mount  # noqa: PLC0415  (as in commands_mount.cmd_mount)

    return home.data_dir / "journal" / mount.JOURNAL_FILE_NAME


def journal_count(journal_path: Path) -> int:
    """Operations pending in a home's journal (read-only; none without a journal)."""
    if not journal_path.exists():
        return 0
    with Journal(journal_path, readonly=True) as journal:
        return journal.count()


def _is_mount_command(cmdline: bytes) -> bool:
    """``python -m boxfs.mount ...`` or ``boxfs mount ...`` (``--foreground``)."""
    argv = cmdline.split(b"\0")
    return b"boxfs.mount" in argv or any(
        os.path.basename(arg) == b"boxfs" and argv[i + 1 : i + 2] == [b"mount"]
        for i, arg in enumerate(argv)
    )


def running_mount(home: Home) -> RunningMount | None:
    """The mount process of ``home`` if its pid file names a live mount process; ``None``
    otherwise (a stale pid file, whose pid is gone or reused, is ignored). The process may
    have been unmounted already and still be uploading (``RunningMount.mounted``)."""
    from boxfs import mount  # noqa: PLC0415  (as in commands_mount.cmd_mount)

    try:
        pid_text, mountpoint, *_ = (
            (home.data_dir / mount.MOUNT_PID_NAME).read_text(encoding="utf-8").split("\n")
        )
        pid = int(pid_text)
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if not _is_mount_command(command):
        return None
    return RunningMount(pid, mountpoint, mount.is_boxfs_mount(mountpoint))


def read_local_state(home: Home, conflicts_limit: int = 20) -> LocalState:
    """The journal's pending operations, the bytes of their staged content, and the newest
    conflicts. Blocking (SQLite, stat): call it in a worker thread."""
    journal_path = journal_path_of(home)
    if not journal_path.exists():
        return LocalState(0, 0, None, ())
    with Journal(journal_path, readonly=True) as journal:
        pending = journal.count()
        names = journal.staged_names()
        conflicts = tuple(journal.conflicts(conflicts_limit))
    staging_dir = home.data_dir / "staging"
    staged_bytes = 0
    for name in names:
        with contextlib.suppress(OSError):
            staged_bytes += (staging_dir / name).stat().st_size
    last_sync_ns = None
    if pending == 0:  # the last write to the journal (WAL) confirmed the last entry
        times = [
            path.stat().st_mtime_ns
            for path in (journal_path, journal_path.with_name(journal_path.name + "-wal"))
            if path.exists()
        ]
        last_sync_ns = max(times) if times else None
    return LocalState(pending, staged_bytes, last_sync_ns, conflicts)


async def server_reachable(server_url: str) -> bool:
    """Whether the server answers ``/healthz`` within ``HEALTH_TIMEOUT_S``."""
    with trio.move_on_after(HEALTH_TIMEOUT_S + 1.0):
        try:
            async with Remote(server_url, timeout_s=HEALTH_TIMEOUT_S) as remote:
                await remote.health()
        except (TransientError, httpx.HTTPError, OSError, protocol.ProtocolError):
            return False
        return True
    return False


async def session_valid(session: Session) -> bool:
    """Whether the server still accepts this session (a server that does not answer in
    time counts as accepting it: ``status`` then says offline)."""
    with trio.move_on_after(HEALTH_TIMEOUT_S + 1.0):
        async with Remote(session.server_url, session.token, timeout_s=HEALTH_TIMEOUT_S) as remote:
            try:
                await remote.whoami()
            except protocol.UnauthorizedError:
                return False
            except (TransientError, protocol.ProtocolError):
                return True
    return True


def state_of(home: Home) -> tuple[Session | None, str | None]:
    """The session (if logged in) and the server last used, from the home."""
    state = home.read_state()
    return state.session, state.server_url


# The id of the newest lost put (a journal record of status `lost`) that `boxfs sync` has
# reported, in the home's data dir: each loss fails one sync, and `status` keeps listing it.
SYNC_REPORTED_NAME: Final = "sync-reported"


def report_losses(home: Home) -> list[ConflictRecord]:
    """The lost puts no ``sync`` has reported yet, oldest first; they count as reported
    from now on. Blocking (SQLite): call it in a worker thread."""
    journal_path = journal_path_of(home)
    if not journal_path.exists():
        return []
    marker = home.data_dir / SYNC_REPORTED_NAME
    try:
        reported = int(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        reported = 0
    with Journal(journal_path, readonly=True) as journal:
        records = journal.conflicts(MAX_CONFLICTS_KEPT)
    lost = [r for r in reversed(records) if r.status == "lost" and r.id > reported]
    if lost:
        marker.write_text(f"{lost[-1].id}\n", encoding="utf-8")
    return lost
