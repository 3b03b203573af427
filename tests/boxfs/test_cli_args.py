"""The command line's pure parts: drive paths as typed, ``--at`` times and prefixes, which
version a restore picks, the base of a put, and the exit code of each kind of error."""

from __future__ import annotations

import datetime as dt

import pytest

from boxfs.cli import main
from boxfs.cli.commands_history import When, parse_when, pick_version
from boxfs.cli.drive import base_for_put
from boxfs.cli.exit_codes import ExitCode, exit_code_for
from boxfs.cli.output import show_bytes
from boxfs.cli.parser import build_parser
from boxfs.cli.paths import parse_remote_path
from boxfs.errors import (
    HomeError,
    HomeInUseError,
    NoSuchVersionError,
    NotLoggedInError,
    UsageError,
)
from store import protocol
from store.errors import (
    ConflictError,
    FormatError,
    IntegrityError,
    InvalidPathError,
    NotFoundError,
)
from store.ids import CommitId, chunk_id_of, content_hash_of
from store.merkle import EMPTY_TREE_ID
from store.objects import ChunkRef, EntryKind, FileEntry

NS_PER_S = 1_000_000_000


def at(text: str) -> int:
    """Nanoseconds since the epoch of an aware ISO time."""
    moment = dt.datetime.fromisoformat(text)
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1) * 1000


@pytest.mark.parametrize(
    ("text", "components", "inside"),
    [
        ("a/b.txt", (b"a", b"b.txt"), False),
        ("/a/b.txt", (b"a", b"b.txt"), False),
        ("a//b/", (b"a", b"b"), True),
        ("/", None, True),
        ("", None, True),
        (".", None, True),
        ("caf\u00e9", ("caf\u00e9".encode(),), False),
    ],
)
def test_remote_paths_are_posix_style_from_the_drive_root(
    text: str, components: tuple[bytes, ...] | None, inside: bool
) -> None:
    target = parse_remote_path(text)
    assert (target.path.components if target.path else None) == components
    assert target.inside is inside


@pytest.mark.parametrize("text", ["..", "../x", "a/../b", "a/./b", "a\0b", "x" * 256])
def test_hostile_remote_paths_are_refused_before_anything_is_sent(text: str) -> None:
    with pytest.raises(UsageError, match="remote path"):
        parse_remote_path(text)


def test_times_cover_the_precision_they_are_written_to() -> None:
    second = parse_when("2026-11-28T03:15:02Z")
    assert second.until_ns == at("2026-11-28T03:15:02+00:00") + NS_PER_S - 1
    assert parse_when("2026-11-28T03:15:02") == second  # no zone: UTC
    assert parse_when("2026-11-28T03-15-02Z") == second  # as .versions/ names it
    assert parse_when("2026-11-28T04:15:02+01:00") == second
    minute = parse_when("2026-11-28T03:15Z")
    assert minute.until_ns == at("2026-11-28T03:16:00+00:00") - 1
    day = parse_when("2026-11-28")
    assert day.until_ns == at("2026-11-29T00:00:00+00:00") - 1
    exact = parse_when("2026-11-28T03:15:02.5Z")
    assert exact.until_ns == at("2026-11-28T03:15:02.5+00:00") + 999


def test_hex_is_a_commit_prefix_and_nonsense_is_a_usage_error() -> None:
    assert parse_when("01CA13af") == When(commit_prefix="01ca13af")
    for text in ("abc", "yesterday", "2026-13-01"):
        with pytest.raises(UsageError, match="--at"):
            parse_when(text)


def version(time_s: int, commit_byte: int, *, deleted: bool = False) -> protocol.FileVersion:
    entry = None
    if not deleted:
        entry = protocol.EntryModel(kind="fifo", mode=0o644, uid=0, gid=0, size=0, mtime_ns=0)
    return protocol.FileVersion(
        commit_id=CommitId(bytes([commit_byte]) * 32),
        time_ns=time_s * NS_PER_S + 400_000_000,
        author="a",
        device="d",
        entry=entry,
    )


def test_restore_picks_the_newest_version_at_or_before_the_time() -> None:
    versions = [version(300, 0xCC), version(200, 0xBB), version(100, 0xAA)]  # newest first
    assert pick_version(versions, When(until_ns=250 * NS_PER_S), "t", "p") is versions[1]
    # A time to the second covers that second: the version printed with it is found.
    assert pick_version(versions, When(until_ns=201 * NS_PER_S - 1), "t", "p") is versions[1]
    with pytest.raises(NoSuchVersionError, match="at or before"):
        pick_version(versions, When(until_ns=99 * NS_PER_S), "t", "p")
    assert pick_version(versions, When(commit_prefix="bbbb"), "bbbb", "p") is versions[1]
    with pytest.raises(NoSuchVersionError):
        pick_version(versions, When(commit_prefix="dddd"), "dddd", "p")


def file_entry(data: bytes) -> FileEntry:
    return FileEntry(
        name=b"f", kind=EntryKind.FILE, mode=0o644, uid=0, gid=0, size=len(data), mtime_ns=0,
        chunks=(ChunkRef(chunk_id_of(data), len(data)),) if data else (),
        content_hash=content_hash_of(data),
    )  # fmt: skip


def test_a_put_is_based_on_what_this_device_saw_else_on_the_drive() -> None:
    seen = content_hash_of(b"old")
    on_drive = file_entry(b"newer, from elsewhere")
    assert base_for_put(seen, on_drive) == seen  # an edit elsewhere gets merged, not lost
    assert base_for_put(None, on_drive) == on_drive.content_hash  # an explicit replace
    assert base_for_put(seen, None) is None  # nothing there now
    folder = FileEntry(
        name=b"d", kind=EntryKind.DIR, mode=0o755, uid=0, gid=0, size=0, mtime_ns=0,
        tree_id=EMPTY_TREE_ID,
    )  # fmt: skip
    assert base_for_put(seen, folder) is None


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("x"), ExitCode.USAGE),
        (protocol.InvalidNameError("x"), ExitCode.USAGE),
        (InvalidPathError("x"), ExitCode.USAGE),
        (NotLoggedInError("x"), ExitCode.AUTH),
        (protocol.TokenExpiredError("x"), ExitCode.AUTH),
        (protocol.ForbiddenError("x"), ExitCode.AUTH),
        (NotFoundError("path", "x"), ExitCode.NOT_FOUND),
        (NoSuchVersionError("x"), ExitCode.NOT_FOUND),
        (FileNotFoundError(2, "No such file", "x"), ExitCode.NOT_FOUND),
        (protocol.StaleBaseError("x", "y"), ExitCode.CONFLICT),
        (ConflictError("x", "y"), ExitCode.CONFLICT),
        (protocol.UsernameTakenError("x"), ExitCode.CONFLICT),
        (protocol.UnavailableError("x"), ExitCode.UNAVAILABLE),
        (protocol.RateLimitedError("x"), ExitCode.UNAVAILABLE),
        (IntegrityError("a", "b"), ExitCode.INTEGRITY),
        (HomeInUseError("x"), ExitCode.IN_USE),
        (HomeError("x"), ExitCode.FAILURE),
        (protocol.InternalError("x"), ExitCode.FAILURE),
        (FormatError("x"), ExitCode.FAILURE),
        (PermissionError(13, "Permission denied", "x"), ExitCode.FAILURE),
        (KeyError("a bug"), None),
        (AssertionError("a bug"), None),
    ],
)
def test_each_kind_of_error_has_its_documented_exit_code(
    error: BaseException, code: ExitCode | None
) -> None:
    assert exit_code_for(error) == code


def test_argparse_mistakes_are_exit_2_and_help_is_exit_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["get"]) == 2
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert main(["--version"]) == 0
    assert "boxfs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "quiet"),
    [(["-q", "ls"], True), (["ls", "--quiet"], True), (["ls"], False), (["-q", "whoami"], True)],
)
def test_quiet_is_accepted_before_or_after_the_command(argv: list[str], quiet: bool) -> None:
    assert getattr(build_parser().parse_args(argv), "quiet", False) is quiet


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (b"plain.txt", "plain.txt"),
        ("caf\u00e9".encode(), "caf\u00e9"),
        (b"two\nlines", "two\\x0alines"),
        (b"\x1b[31mred", "\\x1b[31mred"),
        (b"tab\there", "tab\\x09here"),
        (b"del\x7f", "del\\x7f"),
        ("c1\u0085".encode(), "c1\\x85"),
        ("evil\u202etxt.exe".encode(), "evil\\u202etxt.exe"),
        (b"back\\slash", "back\\\\slash"),
        (b"not utf-8 \xff", "not utf-8 \\xff"),
    ],
)
def test_names_show_control_characters_as_escapes_never_raw(name: bytes, shown: str) -> None:
    text = show_bytes(name)
    assert text == shown
    assert text.isprintable()
