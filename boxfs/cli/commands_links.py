"""``link``: share a file or folder of the drive as a public URL, list this account's links,
revoke one.

``boxfs link PATH`` prints the URL (``SERVER/l/TOKEN``: the token is shown this once, the
server keeps only its hash); ``--password`` asks for a password (``--password-stdin``
reads it), ``--expires 7d`` bounds its life, ``--upload-only`` makes a folder a
file-request page. ``--list`` shows the links, ``--revoke ID`` ends one at once.

``link_target`` is the one place that turns a drive path into the namespace it lives in and
the path inside it (through a shared folder's mount entry, that folder's). The command
parses, calls ``boxfs.remote.Remote`` and prints; ``parser.main`` runs it in one
``trio.run``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from typing import Final

from boxfs.cli.commands_account import checked, read_password
from boxfs.cli.drive import opened_drives, session_remote
from boxfs.cli.exit_codes import ExitCode
from boxfs.cli.output import Context, show_path
from boxfs.cli.paths import RemoteTarget, parse_remote_path
from boxfs.errors import UsageError
from boxfs.remote import Remote
from store import protocol
from store.errors import FormatError
from store.ids import LinkId, NamespaceId

_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION: Final = re.compile(r"^\s*(\d{1,12})\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration_s(text: str) -> int:
    """``7d``, ``12h``, ``30m``, ``2s``, ``2w``: a whole number and a unit, as seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(f"--expires {text!r}: expected a number and a unit, e.g. 7d, 12h, 30m")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2).lower()]
    if not 1 <= seconds <= protocol.MAX_LINK_LIFETIME_S:
        raise UsageError(f"--expires {text!r}: between 1s and {protocol.MAX_LINK_LIFETIME_S}s")
    return seconds


async def link_target(
    ctx: Context, remote: Remote, target: RemoteTarget
) -> tuple[NamespaceId, protocol.DrivePath | None]:
    """The namespace a drive path lives in and the path inside it (``None``: its root): a
    path through a shared folder's mount entry is that folder's (``Drives.locate``), so a
    link to ``Team/plan.txt`` is a link into Team (which its owner may revoke as well)."""
    async with opened_drives(ctx.home, remote, ctx.limiter) as drives:
        location = await drives.locate(target.path)
    return location.namespace_id, location.path


def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return "never"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expiry(info: protocol.LinkInfo, now: dt.datetime) -> str:
    if info.revoked_at is not None:
        return "revoked"
    if info.expires_at is not None and info.expires_at <= now:
        return "expired"
    return _when(info.expires_at)


async def cmd_link(args: argparse.Namespace, ctx: Context) -> ExitCode:
    chosen = [args.path is not None, args.list, args.revoke is not None]
    if sum(chosen) != 1:
        raise UsageError("link needs a PATH to share, or --list, or --revoke ID")
    if not args.path and (args.password or args.password_stdin or args.expires or args.upload_only):
        raise UsageError("--password, --expires and --upload-only go with a PATH")
    session = ctx.home.load_session()
    async with session_remote(session) as remote:
        if args.list:
            listed = await remote.links()
            _print_links(ctx, listed.links)
            return ExitCode.OK
        if args.revoke is not None:
            try:
                link_id = LinkId.from_hex(args.revoke)
            except FormatError as exc:
                raise UsageError(f"--revoke {args.revoke!r}: {exc}") from exc
            await remote.revoke_link(link_id)
            ctx.result(f"revoked {link_id.hex()}")
            return ExitCode.OK
        request = _create_request(args)
        namespace_id, path = await link_target(ctx, remote, parse_remote_path(args.path))
        created = await remote.create_link(namespace_id, request.model_copy(update={"path": path}))
    info = created.link
    ctx.result(f"{session.server_url}{created.url_path}")
    extras = [info.kind, f"expires {_when(info.expires_at)}"]
    if info.upload_only:
        extras.append("upload only")
    if info.has_password:
        extras.append("password")
    ctx.say(f"link {info.link_id.hex()} to {show_path(info.path)}: {', '.join(extras)}")
    return ExitCode.OK


def _create_request(args: argparse.Namespace) -> protocol.LinkCreateRequest:
    password = None
    if args.password or args.password_stdin:
        password = read_password(args, confirm=True)
    expires_in_s = parse_duration_s(args.expires) if args.expires else None
    upload_only = bool(args.upload_only)
    checked(
        protocol.LinkCreateRequest,
        password=password,
        expires_in_s=expires_in_s,
        upload_only=upload_only,
    )
    return protocol.LinkCreateRequest(
        password=password, expires_in_s=expires_in_s, upload_only=upload_only
    )


def _print_links(ctx: Context, links: tuple[protocol.LinkInfo, ...]) -> None:
    now = dt.datetime.now(dt.UTC)
    rows: list[tuple[str, ...]] = [
        (
            info.link_id.hex(),
            show_path(info.path),
            info.kind,
            _expiry(info, now),
            "upload-only" if info.upload_only else "-",
            "password" if info.has_password else "-",
            _when(info.created_at),
            str(info.uses),
        )
        for info in links
    ]
    if sys.stdout.isatty():
        rows.insert(0, ("ID", "PATH", "KIND", "EXPIRES", "UPLOAD", "PASSWORD", "CREATED", "USES"))
    if not rows:
        return
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        ctx.result("  ".join(cells).rstrip())
