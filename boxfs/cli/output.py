"""What the command line shows, and the ``Context`` every command runs with.

Results go to stdout even with ``--quiet`` (``Context.result``), information too unless
quiet (``Context.say``), errors to stderr as one ``boxfs: ...`` line (``print_error``), and
progress bars to stderr only when it is a terminal (``Transfer``, ``OptionalProgress``).
Sizes are binary units, times UTC to the second, and names and paths from the drive are
escaped (``show_bytes``) so that none acts on the terminal.

It must not talk to the server, read the home or decide an exit code. Called from the trio
thread of every command; a progress bar is advanced from there only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import sys
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from boxfs.home import Home
from store import protocol

_KIB: Final = 1024


def human_size(size_bytes: int) -> str:
    if size_bytes < _KIB:
        return f"{size_bytes} B"
    value = float(size_bytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def format_time_ns(time_ns: int) -> str:
    """UTC, to the second, in a form ``restore --at`` accepts: ``2026-11-28T03:15:02Z``."""
    moment = dt.datetime.fromtimestamp(time_ns // 1_000_000_000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# What a name may hold that would act on the terminal instead of showing: C0 and C1 control
# characters and DEL (a newline, an escape sequence), and the bidirectional overrides that
# make text show in another order than it reads. A backslash is doubled so that every shown
# name maps back to one byte string.
_UNSHOWABLE: Final = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def show_bytes(raw: bytes) -> str:
    """A name or path for the terminal: control characters and bytes that are not UTF-8
    show as backslash escapes (``\\n`` as ``\\x0a``, a stray byte as ``\\xff``)."""
    text = raw.decode("utf-8", "surrogateescape")
    shown = _UNSHOWABLE.sub(_escape_char, text)
    return shown.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def show_path(path: protocol.DrivePath | None) -> str:
    return "/" if path is None else show_bytes(bytes(path))


@dataclass(slots=True)
class Context:
    """What every command gets: the device home and how chatty to be."""

    home: Home
    quiet: bool
    limiter: trio.CapacityLimiter = dataclasses.field(
        default_factory=lambda: trio.CapacityLimiter(os.cpu_count() or 2)
    )

    def say(self, line: str) -> None:
        """Information on stdout (left out with ``--quiet``)."""
        if not self.quiet:
            print(line, flush=True)

    def result(self, line: str) -> None:
        """An outcome the user must see, even with ``--quiet``."""
        print(line, flush=True)

    @property
    def shows_progress(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    def transfer(self, description: str, total_bytes: int | None) -> Transfer:
        return Transfer(description, total_bytes, enabled=self.shows_progress)


class OptionalProgress:
    """A rich progress display that exists only when stderr is a terminal: entering and
    leaving start and stop it, and do nothing otherwise."""

    _progress: Progress | None = None

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


class Transfer(OptionalProgress):
    """A rich progress bar on stderr when it is a terminal, nothing otherwise. Advanced from
    the trio thread only."""

    def __init__(self, description: str, total_bytes: int | None, *, enabled: bool) -> None:
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task(description, total=total_bytes)

    def advance(self, size_bytes: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, size_bytes)


def count(number: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def describe_result(result: protocol.OpResult) -> str:
    """One line for what the server did with one op."""
    path = show_path(result.path)
    if result.status == "applied":
        return f"applied: {path}"
    if result.status == "merged":
        return f"merged: {path} (combined with changes made elsewhere)"
    if result.status == "conflicted_copy":
        return (
            f"conflicted copy: {path} was changed elsewhere; "
            f"this version is at {show_path(result.conflict_path)}"
        )
    return f"rejected: {path}: {result.message or result.code}"


def print_error(line: str) -> None:
    """An error, as the one line ``boxfs: ...`` on stderr."""
    print(f"boxfs: {line}", file=sys.stderr, flush=True)
