"""The ``boxfs`` argument parser and ``main``, the command line's one error boundary.

``build_parser`` declares every command, its arguments and its help; ``main`` parses, builds
the ``Context`` (the device home from ``BOXFS_HOME``, ``--quiet``), runs the command's
handler in one ``trio.run`` and turns whatever it raises into one ``boxfs: ...`` line on
stderr and an exit code (``boxfs.cli.exit_codes``). Only bugs print a traceback. It must
hold no command's logic. Called by the console script ``boxfs`` (``boxfs.cli:main``) and by
tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Final

import trio

from boxfs.cli.commands_account import cmd_devices, cmd_login, cmd_logout, cmd_register, cmd_whoami
from boxfs.cli.commands_files import cmd_get, cmd_ls, cmd_mkdir, cmd_mv, cmd_put, cmd_rm
from boxfs.cli.commands_history import cmd_restore, cmd_versions
from boxfs.cli.commands_links import cmd_link
from boxfs.cli.commands_mount import cmd_mount, cmd_unmount
from boxfs.cli.commands_sharing import (
    DEFAULT_LOG_COMMITS,
    cmd_accept,
    cmd_decline,
    cmd_invitations,
    cmd_leave,
    cmd_log,
    cmd_share,
    cmd_unshare,
)
from boxfs.cli.commands_status import cmd_status, cmd_sync
from boxfs.cli.exit_codes import ExitCode, describe, exit_code_for, leaf
from boxfs.cli.output import Context, print_error
from boxfs.home import Home
from store import protocol

# A command's handler: it parses ``args``, calls, prints, and returns its exit code.
Command = Callable[[argparse.Namespace, Context], Awaitable[ExitCode]]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars and no informational lines (results and errors still show)",
    )
    parser = argparse.ArgumentParser(
        prog="boxfs",
        description="The boxfs drive client. Exit codes: see docs/cli.md.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"boxfs {version('boxfs')}")
    # Not quiet=False here: the -q action is shared with every subparser (argparse parents
    # copy actions by reference), so a default set here would undo `boxfs -q CMD`.
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def add(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(command=name, handler=handler)
        return sub

    def password_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input",
        )

    server_help = "the server, e.g. https://box.example.com (default: the one used last)"
    sub = add("register", cmd_register, "create an account on a server")
    sub.add_argument("--server", metavar="URL", help=server_help)
    sub.add_argument("username")
    sub.add_argument("--email", required=True)
    password_option(sub)

    sub = add("login", cmd_login, "log this device in (stores the session in the device home)")
    sub.add_argument("--server", metavar="URL", help=server_help)
    sub.add_argument("username")
    sub.add_argument("--device", metavar="NAME", help="this device's name (default: host name)")
    password_option(sub)

    add("logout", cmd_logout, "end this device's session on the server and forget it")
    add("whoami", cmd_whoami, "show the account and device of this session")

    sub = add("ls", cmd_ls, "list a folder of the drive (or show one file)")
    sub.add_argument("path", nargs="?", default="/", metavar="PATH")
    sub.add_argument("-l", dest="long", action="store_true", help="mode, kind, size and mtime")

    sub = add("get", cmd_get, "download a file, verified, to LOCAL_PATH (- for stdout)")
    sub.add_argument("remote_path", metavar="REMOTE_PATH")
    sub.add_argument("local_path", metavar="LOCAL_PATH")
    sub.add_argument("-r", dest="recursive", action="store_true", help="a folder, whole")

    _add_editing_commands(add)

    sub = add("versions", cmd_versions, "list the versions of a path, newest first")
    sub.add_argument("path", metavar="PATH")

    sub = add("restore", cmd_restore, "bring back a path as it was at a time, as a new version")
    sub.add_argument("path", metavar="PATH")
    sub.add_argument(
        "--at",
        required=True,
        metavar="TIME",
        help="ISO 8601 UTC time (2026-11-28T03:15:02Z) or a commit id prefix from `versions`",
    )

    _add_link_command(add)
    _add_sharing_commands(add)

    _add_mount_arguments(
        add("mount", cmd_mount, "mount the drive at MOUNTPOINT (in the background by default)")
    )

    sub = add("unmount", cmd_unmount, "unmount the drive at MOUNTPOINT (fusermount3 -u)")
    sub.add_argument("mountpoint", metavar="MOUNTPOINT")
    sub.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait for pending uploads: they stay journaled for the next mount",
    )

    sub = add(
        "status", cmd_status,
        "pending uploads, the mount, the last sync and conflicts; with PATH, who is editing it",
    )  # fmt: skip
    sub.add_argument("path", nargs="?", default=None, metavar="PATH")
    sub = add("sync", cmd_sync, "wait until every local change is on the server")
    sub.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up after S seconds (exit 6 if the server is unreachable, else 8)",
    )
    return parser


def _add_editing_commands(add: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    """The commands that change the drive (folders, moves, deletes, puts) or end a session."""
    sub = add("mkdir", cmd_mkdir, "make folders on the drive")
    sub.add_argument("paths", nargs="+", metavar="PATH")
    sub.add_argument("-p", dest="parents", action="store_true", help="and missing parents")

    sub = add("mv", cmd_mv, "move or rename a file or folder on the drive")
    sub.add_argument("source", metavar="SOURCE")
    sub.add_argument("destination", metavar="DESTINATION")

    sub = add("rm", cmd_rm, "remove files (and with -r folders) from the drive")
    sub.add_argument("paths", nargs="+", metavar="PATH")
    sub.add_argument("-r", dest="recursive", action="store_true", help="folders and their content")

    sub = add("devices", cmd_devices, "list this account's devices (sessions), or revoke one")
    sub.add_argument("--revoke", metavar="SESSION_ID", help="end that session on the server")

    sub = add("put", cmd_put, "upload a file or a folder (only missing chunks are sent)")
    sub.add_argument("local_path", metavar="LOCAL_PATH")
    sub.add_argument("remote_path", metavar="REMOTE_PATH")


def _add_link_command(add: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    sub = add("link", cmd_link, "share a file or folder as a public URL; list or revoke links")
    sub.add_argument("path", nargs="?", default=None, metavar="PATH")
    sub.add_argument("--password", action="store_true", help="ask for a password for the link")
    sub.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the link's password from the first line of standard input",
    )
    sub.add_argument("--expires", metavar="DURATION", help="e.g. 7d, 12h, 30m (default: never)")
    sub.add_argument(
        "--upload-only", action="store_true", help="a folder as a file-request page (no listing)"
    )
    sub.add_argument("--list", action="store_true", help="this account's links")
    sub.add_argument("--revoke", metavar="ID", help="end a link at once")


def _add_sharing_commands(add: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    """Shared folders, invitations, and the log of the namespace a path is in."""
    sub = add(
        "share",
        cmd_share,
        "share a folder: invite users (--with), change roles, remove them, or --list them",
    )
    sub.add_argument("path", metavar="PATH")
    sub.add_argument(
        "--with",
        dest="with_users",
        action="append",
        default=[],
        metavar="USER",
        help="invite USER, or set USER's role (repeatable)",
    )
    sub.add_argument(
        "--role",
        choices=("editor", "viewer"),
        default=None,
        help="the role --with gives (default: editor)",
    )
    sub.add_argument(
        "--remove",
        action="append",
        default=[],
        metavar="USER",
        help="remove a member or withdraw an invitation (repeatable)",
    )
    sub.add_argument("--list", action="store_true", help="list members and invitations")

    sub = add("unshare", cmd_unshare, "stop sharing a folder you own: it is only yours again")
    sub.add_argument("path", metavar="PATH")

    sub = add("leave", cmd_leave, "leave a shared folder you are a member of")
    sub.add_argument("path", metavar="PATH")

    add("invitations", cmd_invitations, "list the invitations to shared folders waiting for you")

    sub = add("accept", cmd_accept, "accept an invitation: the shared folder joins your drive")
    sub.add_argument("invitation_id", metavar="ID")
    sub.add_argument(
        "--at", metavar="PATH", help="where it goes (default: its name at the drive's top)"
    )

    sub = add("decline", cmd_decline, "decline an invitation")
    sub.add_argument("invitation_id", metavar="ID")

    sub = add("log", cmd_log, "the commits of the drive, or of the shared folder PATH is in")
    sub.add_argument("path", nargs="?", default="/", metavar="PATH")
    sub.add_argument(
        "-n",
        dest="count",
        type=int,
        default=DEFAULT_LOG_COMMITS,
        metavar="N",
        help=f"show the newest N commits (default: {DEFAULT_LOG_COMMITS})",
    )


def _add_mount_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("mountpoint", metavar="MOUNTPOINT")
    sub.add_argument("--foreground", action="store_true", help="stay attached; log to stderr")
    sub.add_argument("--cache-size", metavar="SIZE", help="object cache budget, e.g. 2G")
    sub.add_argument("--allow-other", action="store_true", help="let other local users in")
    sub.add_argument(
        "--preserve-ownership", action="store_true", help="show and enforce stored uid/gid"
    )
    sub.add_argument(
        "-o", dest="options", action="append", default=[], metavar="OPT", help="a FUSE option"
    )
    sub.add_argument(
        "--nonempty",
        action="store_true",
        help="mount over a folder that has files (the drive hides them while mounted)",
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code (``ExitCode``, 130 on Ctrl-C)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's usage error (2)
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    handler: Command = args.handler
    try:
        ctx = Context(home=Home.from_env(), quiet=getattr(args, "quiet", False))
        return int(trio.run(handler, args, ctx))
    except BaseException as raised:  # noqa: BLE001  (the one boundary: errors become exit codes)
        return _exit_for_exception(raised, args.command)


_COMMANDS_WITHOUT_SESSION: Final = frozenset({"register", "login"})


def _exit_for_exception(raised: BaseException, command: str) -> int:
    """Whatever a command raised, as one line on stderr and its exit code."""
    error = leaf(raised)
    if isinstance(error, KeyboardInterrupt):
        print_error("interrupted")
        return 130
    if isinstance(error, BrokenPipeError):  # `boxfs get x - | head`: the reader left
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.FAILURE
    if isinstance(error, SystemExit):
        raise error
    code = exit_code_for(error)
    if code is None:
        traceback.print_exception(raised)
        print_error(f"internal error (a bug, please report it): {type(error).__name__}: {error}")
        return ExitCode.FAILURE
    line = describe(error)
    if isinstance(error, protocol.UnauthorizedError) and command not in _COMMANDS_WITHOUT_SESSION:
        line += ": run `boxfs login` again"
    print_error(line)
    return code
