"""``share``, ``unshare``, ``leave``, ``invitations``, ``accept``, ``decline`` and ``log``:
shared folders and the history of the namespace a path is in.

A shared folder is named by the home path of its mount entry (``boxfs.drive.resolve`` with
``follow_last`` false finds it); ``share`` of a plain folder of the home shares it first.
What the caller's role does not allow is refused here, before anything is sent, with the
same ``ForbiddenError`` the server would answer (exit 3); the server checks again. Each
command parses, calls the server through ``boxfs.remote.Remote`` (and reads the home's tree
through ``boxfs.cli.drive``) and prints; ``parser.main`` runs each in one ``trio.run`` and
turns what it raises into one line and an exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from boxfs.cli.drive import opened_drives, session_remote
from boxfs.cli.exit_codes import ExitCode
from boxfs.cli.output import Context, format_time_ns, show_bytes, show_path
from boxfs.cli.paths import not_found, parse_remote_path
from boxfs.drive import Drives
from boxfs.errors import UsageError
from boxfs.remote import Remote
from store import protocol
from store.errors import NotFoundError
from store.ids import NamespaceId
from store.objects import EntryKind

_COMMIT_PREFIX_SHOWN: Final = 12
DEFAULT_LOG_COMMITS: Final = 20


@dataclass(frozen=True, slots=True)
class SharedFolder:
    """A shared folder of the caller's home: its namespace, where its mount entry is, and
    the caller's role in it."""

    namespace_id: NamespaceId
    path: protocol.DrivePath
    role: protocol.Role

    @property
    def shown(self) -> str:
        return show_path(self.path)


def _table(ctx: Context, rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    """Rows in aligned columns (the last one unpadded), a header when stdout is a terminal."""
    shown = [list(header), *map(list, rows)] if sys.stdout.isatty() else [list(r) for r in rows]
    if not shown:
        return
    widths = [max(len(row[column]) for row in shown) for column in range(len(shown[0]) - 1)]
    for row in shown:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        ctx.result("  ".join([*cells, row[-1]]))


def _folder_path(text: str, command: str) -> protocol.DrivePath:
    target = parse_remote_path(text)
    if target.path is None:
        raise UsageError(f"{command} needs a folder of the drive, not its root")
    return target.path


async def _locate_folder(
    drives: Drives, path: protocol.DrivePath, command: str
) -> SharedFolder | None:
    """What ``path`` of the home is: a shared folder (its mount entry), or ``None`` for a
    plain folder. Anything else is a one-line error: a path inside a shared
    folder (they do not nest), a file, nothing there."""
    where = await drives.locate(path, follow_last=False)
    if where.shared:
        assert where.mount_path is not None
        raise UsageError(
            f"{show_path(path)} is inside the shared folder {show_path(where.mount_path)}: "
            f"{command} takes the shared folder itself (shared folders do not nest)"
        )
    entry = await drives.home.lookup(path)
    if entry is None:
        raise not_found(path)
    if entry.kind is EntryKind.MOUNT:
        assert entry.namespace_id is not None
        info = drives.namespaces.get(entry.namespace_id)
        if info is None:  # the server removed the membership and the entry meanwhile
            raise NotFoundError("shared folder", show_path(path))
        return SharedFolder(entry.namespace_id, path, info.role)
    if entry.kind is not EntryKind.DIR:
        kind = entry.kind.name.lower()
        raise UsageError(f"{show_path(path)} is a {kind}: {command} takes a folder")
    return None


async def _shared_folder(drives: Drives, path: protocol.DrivePath, command: str) -> SharedFolder:
    folder = await _locate_folder(drives, path, command)
    if folder is None:
        raise UsageError(f"{show_path(path)} is not a shared folder")
    return folder


def _require_owner(folder: SharedFolder, what: str) -> None:
    if folder.role != "owner":
        raise protocol.ForbiddenError(
            f"only the owner of {folder.shown} {what} (you are a {folder.role})"
        )


# --- share ----------------------------------------------------------------------------------


async def cmd_share(args: argparse.Namespace, ctx: Context) -> ExitCode:
    path = _folder_path(args.path, "share")
    invite: list[str] = [protocol.parse_username(name) for name in args.with_users]
    remove: list[str] = [protocol.parse_username(name) for name in args.remove]
    if args.list and (invite or remove or args.role):
        raise UsageError("share --list only lists: give --with, --role or --remove without it")
    if args.role and not invite:
        raise UsageError("--role needs --with USER: whose role to set")
    if set(invite) & set(remove):
        raise UsageError("a user cannot be given both --with and --remove")
    role: protocol.MemberRole = args.role or "editor"
    session = ctx.home.load_session()
    if session.username in (*invite, *remove):
        raise UsageError(
            f"{session.username} is you: the owner's role does not change "
            "(`boxfs unshare` ends sharing a folder)"
        )
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        folder = await _locate_folder(drives, path, "share")
        if args.list:
            if folder is None:
                raise UsageError(f"{show_path(path)} is not a shared folder")
            members = await remote.members(folder.namespace_id)
            rows = [(m.username, m.role, m.state) for m in members]
            _table(ctx, rows, ("USER", "ROLE", "STATE"))
            return ExitCode.OK
        if folder is None:
            if remove:
                raise UsageError(f"{show_path(path)} is not a shared folder: nobody to remove")
            info = await remote.share(drives.home.namespace_id, path)
            folder = SharedFolder(info.namespace_id, path, "owner")
            ctx.result(f"shared {folder.shown}")
        elif not (invite or remove):
            ctx.result(f"{folder.shown} is shared already (share --list shows with whom)")
            return ExitCode.OK
        _require_owner(folder, "invites, changes roles and removes")
        await _change_members(ctx, remote, folder, invite=invite, role=role, remove=remove)
    return ExitCode.OK


async def _change_members(
    ctx: Context,
    remote: Remote,
    folder: SharedFolder,
    *,
    invite: Sequence[str],
    role: protocol.MemberRole,
    remove: Sequence[str],
) -> None:
    """Invite or set the role of each of ``invite``, then remove each of ``remove``, saying
    what each step did (the members before tell an invitation from a role change)."""
    before = {m.username: m for m in await remote.members(folder.namespace_id)}
    for username in invite:
        reply = await remote.set_member(folder.namespace_id, username, role)
        earlier = before.get(username)
        if earlier is None:
            ctx.result(f"invited {username} to {folder.shown} as {reply.role}")
        elif earlier.state == "invited":
            ctx.result(f"changed the invitation of {username} to {reply.role}")
        else:
            ctx.result(f"changed the role of {username} to {reply.role}")
    for username in remove:
        earlier = before.get(username)
        await remote.remove_member(folder.namespace_id, username)
        if earlier is not None and earlier.state == "invited":
            ctx.result(f"withdrew the invitation of {username} to {folder.shown}")
        else:
            ctx.result(f"removed {username} from {folder.shown}")


async def cmd_unshare(args: argparse.Namespace, ctx: Context) -> ExitCode:
    path = _folder_path(args.path, "unshare")
    session = ctx.home.load_session()
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        folder = await _shared_folder(drives, path, "unshare")
        if folder.role != "owner":
            raise protocol.ForbiddenError(
                f"only the owner of {folder.shown} unshares it: `boxfs leave {folder.shown}` "
                "leaves it"
            )
        await remote.unshare(folder.namespace_id)
    ctx.result(f"unshared {folder.shown}: it is a folder of your drive again, and only yours")
    return ExitCode.OK


async def cmd_leave(args: argparse.Namespace, ctx: Context) -> ExitCode:
    path = _folder_path(args.path, "leave")
    session = ctx.home.load_session()
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        folder = await _shared_folder(drives, path, "leave")
        if folder.role == "owner":
            raise UsageError(
                f"you own {folder.shown}: `boxfs unshare {folder.shown}` ends sharing it"
            )
        await remote.remove_member(folder.namespace_id, session.username)
    ctx.result(f"left {folder.shown}")
    return ExitCode.OK


# --- invitations ----------------------------------------------------------------------------


async def cmd_invitations(args: argparse.Namespace, ctx: Context) -> ExitCode:
    session = ctx.home.load_session()
    async with session_remote(session) as remote:
        invitations = await remote.invitations()
    if not invitations:
        ctx.say("no invitations")
        return ExitCode.OK
    rows = [
        (
            i.invitation_id,
            show_bytes(i.name.encode()),
            i.owner,
            i.role,
            format_time_ns(int(i.time.timestamp()) * 1_000_000_000),
        )
        for i in invitations
    ]
    _table(ctx, rows, ("ID", "FOLDER", "OWNER", "ROLE", "TIME (UTC)"))
    return ExitCode.OK


def _invitation_id(text: str) -> str:
    try:
        return protocol.parse_invitation_id(text.strip())
    except protocol.InvalidIdError:
        raise UsageError(
            f"{text!r} is not an invitation id (32 hex digits, as `boxfs invitations` shows)"
        ) from None


async def cmd_accept(args: argparse.Namespace, ctx: Context) -> ExitCode:
    invitation_id = _invitation_id(args.invitation_id)
    at = None
    if args.at is not None:
        at = parse_remote_path(args.at).path
        if at is None:
            raise UsageError("--at needs a path for the shared folder, not the drive's root")
    session = ctx.home.load_session()
    async with session_remote(session) as remote:
        reply = await remote.accept_invitation(invitation_id, at)
    ctx.result(f"accepted: the shared folder is at {show_path(reply.path)}")
    return ExitCode.OK


async def cmd_decline(args: argparse.Namespace, ctx: Context) -> ExitCode:
    invitation_id = _invitation_id(args.invitation_id)
    session = ctx.home.load_session()
    async with session_remote(session) as remote:
        await remote.decline_invitation(invitation_id)
    ctx.result(f"declined the invitation {invitation_id}")
    return ExitCode.OK


# --- log --------------------------------------------------------------------------------------


async def cmd_log(args: argparse.Namespace, ctx: Context) -> ExitCode:
    if args.count < 1:
        raise UsageError(f"-n {args.count}: give at least 1 commit")
    target = parse_remote_path(args.path)
    session = ctx.home.load_session()
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        where = await drives.locate(target.path)
        commits: list[protocol.CommitInfo] = []
        cursor: str | None = None
        while len(commits) < args.count:
            limit = min(args.count - len(commits), protocol.MAX_PAGE_SIZE)
            page = await remote.log(where.namespace_id, cursor, limit)
            commits.extend(page.commits)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    rows = [
        (
            format_time_ns(c.time_ns),
            c.commit_id.hex()[:_COMMIT_PREFIX_SHOWN],
            show_bytes(c.author.encode()),
            show_bytes(c.device.encode()),
            show_bytes(c.summary.encode()),
        )
        for c in commits[: args.count]
    ]
    _table(ctx, rows, ("TIME (UTC)", "COMMIT", "AUTHOR", "DEVICE", "SUMMARY"))
    return ExitCode.OK
