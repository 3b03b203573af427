"""``register``, ``login``, ``logout``, ``whoami`` and ``devices``: the account and this
device's session.

The session lives in the device home (``boxfs.home``: ``BOXFS_HOME`` or the XDG
directories). A password is read from the terminal or ``--password-stdin``, never from an
argument, and checked against the protocol's rules before it is sent. Each command parses
its arguments, calls ``boxfs.remote.Remote`` and prints; ``parser.main`` runs it in one
``trio.run``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from typing import Final

import httpx
import pydantic
import trio

from boxfs.cli.drive import session_remote
from boxfs.cli.exit_codes import ExitCode, describe
from boxfs.cli.output import Context, show_bytes
from boxfs.errors import UsageError
from boxfs.home import Home, HomeState, Session, default_device_name
from boxfs.remote import Remote
from store import protocol
from store.errors import TransientError

_PASSWORD_PROMPT: Final = "Password: "  # noqa: S105  (a prompt, not a secret)
_REPEAT_PROMPT: Final = "Repeat password: "


def read_password(args: argparse.Namespace, *, confirm: bool) -> str:
    """From stdin (``--password-stdin``: its first line), or asked on the terminal (twice
    when ``confirm``). Never from an argument, where other users could see it."""
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise UsageError("--password-stdin: standard input holds no password")
        return password
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: use --password-stdin")
    password = getpass.getpass(_PASSWORD_PROMPT)
    if confirm and getpass.getpass(_REPEAT_PROMPT) != password:
        raise UsageError("the two passwords differ")
    return password


def checked(model: type[protocol.WireModel], **fields: object) -> None:
    """Refuse user input the protocol refuses, with the very error the server would give
    (``BadRequestError``, exit 2), before ``Remote`` builds its request from it."""
    try:
        model(**fields)
    except pydantic.ValidationError as exc:
        _status, body = protocol.validation_error_body(exc.errors())
        raise protocol.error_for(body) from None


def server_url(given: str | None, home: Home) -> str:
    """``--server`` (checked), else the server this home used last."""
    if given is None:
        remembered = home.read_state().server_url
        if remembered is None:
            raise UsageError("no server known on this device: pass --server URL")
        return remembered
    try:
        url = httpx.URL(given)
    except httpx.InvalidURL as exc:
        raise UsageError(f"--server {given!r}: not a URL ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"--server {given!r}: expected http://HOST[:PORT] or https://...")
    return given.rstrip("/")


async def cmd_register(args: argparse.Namespace, ctx: Context) -> ExitCode:
    url = server_url(args.server, ctx.home)
    password = read_password(args, confirm=True)
    checked(protocol.RegisterRequest, username=args.username, email=args.email, password=password)
    async with Remote(url) as remote:
        account = await remote.register(args.username, args.email, password)
    state = ctx.home.read_state()
    if state.server_url != url:  # remembered: `boxfs login USERNAME` needs no --server
        ctx.home.write_state(HomeState(url, state.session))
    ctx.say(f"registered {account.username} <{account.email}> on {url}")
    ctx.say(f"next: boxfs login {account.username}")
    return ExitCode.OK


async def cmd_login(args: argparse.Namespace, ctx: Context) -> ExitCode:
    url = server_url(args.server, ctx.home)
    previous = ctx.home.read_state().session
    device = args.device or default_device_name()
    password = read_password(args, confirm=False)
    checked(protocol.LoginRequest, username=args.username, password=password, device_name=device)
    async with Remote(url) as remote:
        reply = await remote.login(args.username, password, device)
    session = Session(url, reply.token, reply.session_id, reply.username, reply.device_name)
    ctx.home.save_session(session)
    if previous is not None and previous.token != session.token:
        await _end_session(previous)  # best effort: don't leave the old session valid
    ctx.say(f"logged in to {url} as {reply.username} (device {reply.device_name})")
    return ExitCode.OK


async def _end_session(session: Session) -> None:
    with trio.move_on_after(5):
        async with Remote(session.server_url, session.token, timeout_s=5) as remote:
            try:
                await remote.logout()
            except (protocol.UnauthorizedError, TransientError, protocol.ProtocolError):
                return  # already ended, or the old server is gone: nothing more to do


async def cmd_logout(args: argparse.Namespace, ctx: Context) -> ExitCode:
    session = ctx.home.load_session()
    async with Remote(session.server_url, session.token) as remote:
        try:
            await remote.logout()
        except protocol.UnauthorizedError:
            pass  # the server had ended it already: forgetting it here is all that is left
        except TransientError as exc:
            ctx.home.clear_session()
            raise protocol.UnavailableError(
                f"logged out on this device, but the server could not be told ({describe(exc)}):"
                " the session stays valid there until it is revoked from another device"
            ) from exc
    ctx.home.clear_session()
    ctx.say(f"logged out {session.username} from {session.server_url}")
    return ExitCode.OK


async def cmd_whoami(args: argparse.Namespace, ctx: Context) -> ExitCode:
    session = ctx.home.load_session()
    async with Remote(session.server_url, session.token) as remote:
        me = await remote.whoami()
    ctx.result(f"{me.username} <{me.email}> on {session.server_url} (device {me.device_name})")
    return ExitCode.OK


async def cmd_devices(args: argparse.Namespace, ctx: Context) -> ExitCode:
    session = ctx.home.load_session()
    async with session_remote(session) as remote:
        if args.revoke is not None:
            session_id = args.revoke
            try:
                session_id = protocol.parse_session_id(session_id)
            except protocol.BadRequestError as exc:
                raise UsageError(f"--revoke {args.revoke!r}: {exc.message}") from exc
            await remote.revoke_session(session_id)
            ctx.result(f"revoked {session_id}")
            if session_id == session.session_id:
                ctx.home.clear_session()
                ctx.say("that was this device's session: run `boxfs login` to use it again")
            return ExitCode.OK
        listed = await remote.sessions()
    for info in sorted(listed.sessions, key=lambda item: item.last_used_at, reverse=True):
        used = info.last_used_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        this = "  (this device)" if info.current else ""
        ctx.result(f"{info.session_id}  {used}  {show_bytes(info.device_name.encode())}{this}")
    return ExitCode.OK
