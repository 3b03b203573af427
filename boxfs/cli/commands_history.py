"""``versions`` and ``restore``: a path's history on the server.

``versions`` lists every version of a path, newest first; ``restore --at`` takes a time
(ISO 8601, UTC by default, or the ``.versions`` folder form) or a commit id prefix
(``parse_when``), picks the version it names (``pick_version``) and asks the server to
bring it back as a new version (history is never rewritten). A path inside a shared folder
is looked up in that folder's namespace (``boxfs.drive.Drives.at``); a shared folder named
itself is its mount entry in the home. The commands parse, call the
server through ``boxfs.cli.drive`` and print; ``parser.main`` runs each in one
``trio.run``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from boxfs.cli.drive import opened_drives, outer_results, require_writable, session_remote
from boxfs.cli.exit_codes import ExitCode, exit_for_results
from boxfs.cli.output import Context, describe_result, format_time_ns, show_path
from boxfs.cli.paths import not_found, parse_remote_path
from boxfs.drive import new_key
from boxfs.errors import NoSuchVersionError, UsageError
from store import protocol

_COMMIT_PREFIX_SHOWN: Final = 12


def _version_size(version: protocol.FileVersion) -> str:
    entry = version.entry
    if entry is None:
        return "deleted"
    return str(entry.size) if entry.kind == "file" else entry.kind


async def cmd_versions(args: argparse.Namespace, ctx: Context) -> ExitCode:
    target = parse_remote_path(args.path)
    if target.path is None:
        raise UsageError("versions needs a path on the drive; the root has no versions")
    session = ctx.home.load_session()
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        view, where = await drives.at(target.path, follow_last=False)
        assert where.path is not None  # a mount entry itself stays in the home
        versions = await view.versions(where.path)
    if not versions:
        raise not_found(target.path)
    rows = [
        (
            format_time_ns(v.time_ns),
            v.device,
            _version_size(v),
            v.commit_id.hex()[:_COMMIT_PREFIX_SHOWN],
        )
        for v in versions
    ]
    if sys.stdout.isatty():
        rows.insert(0, ("TIME (UTC)", "DEVICE", "SIZE", "COMMIT"))
    device_width = max(len(row[1]) for row in rows)
    size_width = max(len(row[2]) for row in rows)
    for when, device, size, commit in rows:
        ctx.result(f"{when}  {device:<{device_width}}  {size:>{size_width}}  {commit}")
    return ExitCode.OK


_HEX_PREFIX: Final = re.compile(r"[0-9a-fA-F]+")
_MIN_PREFIX_CHARS: Final = 4
_ZONE_SUFFIX: Final = re.compile(r"(Z|[+-]\d{2}(:?\d{2})?)$", re.IGNORECASE)
_VERSIONS_DIR_TIME: Final = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2})-(\d{2})-(\d{2})Z$")
_NS_PER_S: Final = 1_000_000_000
# What a time written to a precision covers, by the number of colons in its time of day.
_SPAN_OF_COLONS: Final = {0: 3600 * _NS_PER_S, 1: 60 * _NS_PER_S, 2: _NS_PER_S}
_DAY_NS: Final = 86_400 * _NS_PER_S


def _span_ns(text: str) -> int:
    """How much time an ISO 8601 text covers: a day for a date alone, an hour, minute or
    second for a time to that precision, a microsecond with fractions."""
    _date, separator, time_of_day = text.replace(" ", "T").partition("T")
    if not separator:
        return _DAY_NS
    time_of_day = _ZONE_SUFFIX.sub("", time_of_day)
    if "." in time_of_day or "," in time_of_day:
        return 1000
    return _SPAN_OF_COLONS.get(time_of_day.count(":"), 1000)


@dataclass(frozen=True, slots=True)
class When:
    """``--at``: a moment (the last nanosecond it covers) or a commit id prefix."""

    until_ns: int | None = None
    commit_prefix: str | None = None


def parse_when(text: str) -> When:
    """An ISO 8601 time (UTC if no zone is given; ``Z`` or an offset accepted; the
    ``.versions`` folder form ``2026-11-28T03-15-02Z`` too), or a commit id prefix of at
    least 4 hex digits. A time without fractions covers its whole second (minute, day), as
    ``versions`` prints times to the second."""
    text = text.strip()
    if _HEX_PREFIX.fullmatch(text):
        if len(text) < _MIN_PREFIX_CHARS:
            raise UsageError(f"--at {text!r}: a commit id prefix needs {_MIN_PREFIX_CHARS}+ digits")
        return When(commit_prefix=text.lower())
    folder = _VERSIONS_DIR_TIME.match(text)
    if folder:
        text = f"{folder[1]}T{folder[2]}:{folder[3]}:{folder[4]}Z"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--at {text!r}: expected an ISO 8601 UTC time (2026-11-28T03:15:02Z) "
            "or a commit id prefix from `boxfs versions`"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    since_epoch = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    start_ns = since_epoch // dt.timedelta(microseconds=1) * 1000
    return When(until_ns=start_ns + _span_ns(text) - 1)


def pick_version(
    versions: Sequence[protocol.FileVersion], when: When, text: str, shown: str
) -> protocol.FileVersion:
    """The version ``--at`` names, from ``versions`` (newest first)."""
    if when.commit_prefix is not None:
        matches = [v for v in versions if v.commit_id.hex().startswith(when.commit_prefix)]
        if not matches:
            raise NoSuchVersionError(f"no version of {shown} has a commit id starting {text}")
        if len({v.commit_id for v in matches}) > 1:
            raise UsageError(f"--at {text}: the prefix names several commits; give more digits")
        return matches[0]
    assert when.until_ns is not None
    chosen = next((v for v in versions if v.time_ns <= when.until_ns), None)
    if chosen is None:
        oldest = format_time_ns(versions[-1].time_ns) if versions else "none"
        raise NoSuchVersionError(
            f"no version of {shown} at or before {text} (the oldest is from {oldest})"
        )
    return chosen


async def cmd_restore(args: argparse.Namespace, ctx: Context) -> ExitCode:
    target = parse_remote_path(args.path)
    if target.path is None:
        raise UsageError("restore needs a path on the drive (a file or a folder)")
    when = parse_when(args.at)
    session = ctx.home.load_session()
    async with (
        session_remote(session) as remote,
        opened_drives(ctx.home, remote, ctx.limiter) as drives,
    ):
        view, where = await drives.at(target.path, follow_last=False)
        assert where.path is not None  # a mount entry itself stays in the home
        require_writable(where)
        versions = await view.versions(where.path)
        if not versions:
            raise not_found(target.path)
        chosen = pick_version(versions, when, args.at, show_path(target.path))
        moment = format_time_ns(chosen.time_ns)
        if chosen.entry is None:
            raise NoSuchVersionError(
                f"{show_path(target.path)} did not exist at {args.at} (deleted at {moment})"
            )
        request = protocol.RestoreRequest(
            path=where.path, commit_id=chosen.commit_id, idempotency_key=new_key()
        )
        reply = await remote.restore(view.namespace_id, request)
    result = outer_results(where, reply.results)[0]
    commit = chosen.commit_id.hex()[:_COMMIT_PREFIX_SHOWN]
    if result.status == "rejected":
        ctx.result(describe_result(result))
    elif reply.commit_id is None:
        ctx.result(f"unchanged: {show_path(target.path)} is already as it was at {moment}")
    else:
        ctx.result(f"restored: {show_path(target.path)} as of {moment} (commit {commit})")
    return exit_for_results(reply.results)
