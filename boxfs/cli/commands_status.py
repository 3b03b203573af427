"""``status`` and ``sync``: what this device has not uploaded yet.

``status`` prints the account, the server (online or not), the mount process, pending
operations, the last sync and conflicts, read from ``boxfs.cli.device_state``; ``status
PATH`` says where a drive path is (the home, or a shared folder and one's role) and who
else has it open for writing, as the server says. ``sync``
polls the journal until it stays empty while a mount of this home uploads, or gives up:
exit 8 (``NOT_SYNCED``) when nothing uploads, a change was lost before its upload, or the
``--timeout`` passes with the server reachable; exit 6 when it does not answer. Neither
changes the journal (it is read beside a running mount); ``parser.main`` runs each in one
``trio.run``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
from typing import Final

import trio
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from boxfs.cli.device_state import (
    read_local_state,
    report_losses,
    running_mount,
    server_reachable,
    session_valid,
    state_of,
)
from boxfs.cli.drive import opened_drives, session_remote
from boxfs.cli.exit_codes import ExitCode
from boxfs.cli.output import (
    Context,
    OptionalProgress,
    count,
    format_time_ns,
    human_size,
    print_error,
    show_bytes,
    show_path,
)
from boxfs.cli.paths import RemoteTarget, parse_remote_path
from boxfs.errors import UsageError
from boxfs.home import Home

SYNC_POLL_S: Final = 0.2
SYNC_EMPTY_POLLS: Final = 2  # polls in a row that find the journal empty, with a mount


async def cmd_status(args: argparse.Namespace, ctx: Context) -> ExitCode:
    if args.path is not None:
        return await _path_status(parse_remote_path(args.path), ctx)
    local = await trio.to_thread.run_sync(read_local_state, ctx.home)
    mount = running_mount(ctx.home)
    session, server_url = state_of(ctx.home)
    url = session.server_url if session is not None else server_url
    online = url is not None and await server_reachable(url)
    if session is None:
        ctx.result("account: not logged in")
    elif online and not await session_valid(session):
        ctx.result(
            f"account: logged out: run boxfs login (the session of {session.username} on "
            f"{session.server_url} was ended; changes wait in the journal)"
        )
    else:
        ctx.result(f"account: {session.username} on {session.server_url} ({session.device_name})")
    pending = f"{local.pending_ops} pending"
    if url is None:
        ctx.result("server: none")
    elif online:
        ctx.result("server: online")
    else:
        ctx.result(f"server: offline, {pending}")
    if mount is not None and mount.mounted:
        ctx.result(f"mount: running at {mount.mountpoint} (pid {mount.pid})")
    elif mount is not None:
        ctx.result(f"mount: unmounted from {mount.mountpoint}, uploading (pid {mount.pid})")
    else:
        ctx.result("mount: not running")
    ctx.result(
        f"pending: {count(local.pending_ops, 'operation')}, {human_size(local.staged_bytes)} staged"
    )
    last = "-" if local.last_sync_ns is None else format_time_ns(local.last_sync_ns)
    ctx.result(f"last sync: {last}")
    ctx.result(f"conflicts: {len(local.conflicts) or 'none'}")
    for record in local.conflicts:
        copy = "" if record.conflict_path is None else f" -> /{show_bytes(record.conflict_path)}"
        kept = "" if record.local_copy is None else f" (content kept in {record.local_copy})"
        ctx.result(
            f"  {record.status}: /{show_bytes(record.path)}{copy}: "
            f"{' '.join(record.message.split())}{kept}"
        )
    return ExitCode.OK


async def _path_status(target: RemoteTarget, ctx: Context) -> ExitCode:
    """Where a drive path is (the home, or a shared folder and one's role there) and who
    else has it, or a file below it, open for writing now (as the server's heartbeats
    say: gone within seconds of a close or a crash)."""
    session = ctx.home.load_session()
    async with session_remote(session) as remote:
        async with opened_drives(ctx.home, remote, ctx.limiter) as drives:
            location = await drives.locate(target.path)
        editors = (await remote.editors(location.namespace_id)).editors
    shown = show_path(target.path)
    if location.mount_path is None:
        ctx.result(f"{shown}: in your home drive")
    else:
        ctx.result(
            f"{shown}: in the shared folder at {show_path(location.mount_path)}, as {location.role}"
        )
    below = location.path
    editing = [
        editor
        for editor in editors
        if below is None or editor.path == below or editor.path.is_within(below)
    ]
    if not editing:
        ctx.result("editing: nobody else")
    for editor in editing:
        since = editor.since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        ctx.result(
            f"editing: {editor.username} ({editor.device_name}) since {since}: "
            f"{show_path(editor.path)}"
        )
    return ExitCode.OK


class _SyncProgress(OptionalProgress):
    """A rich progress line on stderr when it is a terminal: operations uploaded out of
    those pending; plain lines (one per change of the count) otherwise, unless quiet."""

    def __init__(self, ctx: Context, total: int) -> None:
        self._ctx = ctx
        self._total = total
        self._shown = -1
        self._progress: Progress | None = None
        if ctx.shows_progress:
            self._progress = Progress(
                TextColumn("sync"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} operations uploaded"),
                TextColumn("{task.fields[left]} pending"),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task("sync", total=total, left=total)

    def update(self, left: int) -> None:
        self._total = max(self._total, left)
        if self._progress is not None:
            self._progress.update(
                self._task, total=self._total, completed=self._total - left, left=left
            )
        elif left != self._shown:
            self._ctx.say(f"waiting for {count(left, 'pending operation')} to upload")
        self._shown = left


async def _pending_ops(home: Home) -> int:
    return (await trio.to_thread.run_sync(read_local_state, home, 0)).pending_ops


async def cmd_sync(args: argparse.Namespace, ctx: Context) -> ExitCode:
    timeout_s: float | None = args.timeout
    if timeout_s is not None and timeout_s < 0:
        raise UsageError(f"--timeout {timeout_s}: must be 0 or more seconds")
    left = await _pending_ops(ctx.home)
    empty_polls = 0
    with (
        _SyncProgress(ctx, left) as progress,
        trio.move_on_after(math.inf if timeout_s is None else timeout_s),
    ):
        while True:
            mounted = running_mount(ctx.home) is not None
            if left == 0:
                # The kernel sends a file's last release (when the mount journals it) just
                # after close() returns: an empty journal counts once it stays empty.
                empty_polls += 1
                if not mounted or empty_polls >= SYNC_EMPTY_POLLS:
                    break
            else:
                empty_polls = 0
                if not mounted:
                    print_error(
                        f"{count(left, 'operation')} pending, and no mount of this home is "
                        "running to upload them (`boxfs mount MOUNTPOINT` resumes the upload)"
                    )
                    return ExitCode.NOT_SYNCED
                progress.update(left)
            await trio.sleep(SYNC_POLL_S)
            left = await _pending_ops(ctx.home)
    if left == 0:
        lost = await trio.to_thread.run_sync(report_losses, ctx.home)
        if lost:
            shown = ", ".join(f"/{show_bytes(record.path)}" for record in lost[:5])
            more = f" and {len(lost) - 5} more" if len(lost) > 5 else ""
            print_error(
                f"{count(len(lost), 'change')} never reached the server, its content gone "
                f"before the upload: {shown}{more} (see boxfs status)"
            )
            return ExitCode.NOT_SYNCED
        ctx.result("in sync: every change is on the server")
        return ExitCode.OK
    session, server_url = state_of(ctx.home)
    url = session.server_url if session is not None else server_url
    if url is not None and not await server_reachable(url):
        print_error(f"timed out: the server cannot be reached (offline, {left} pending)")
        return ExitCode.UNAVAILABLE
    print_error(f"timed out after {timeout_s:g} s: {count(left, 'operation')} still pending")
    return ExitCode.NOT_SYNCED
