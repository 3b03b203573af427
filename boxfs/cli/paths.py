"""Paths as the user types them: drive paths (``parse_remote_path``) and local names.

A drive path is POSIX-style from the drive's root; ``..``, ``.`` inside a path, NUL and
names the format refuses are a ``UsageError`` raised before anything is sent. A trailing
``/`` (or the root) means "inside this folder". A local file's name must be one the drive
can store (``local_name``). Pure (no I/O, no printing); called by the commands while they
parse their arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from boxfs.cli.output import show_path
from boxfs.errors import UsageError
from store import protocol
from store.errors import FormatError, InvalidPathError, NotFoundError
from store.objects import validate_name


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """A drive path as the user wrote it. ``path`` is ``None`` for the drive's root;
    ``inside`` is true when it ended with ``/`` (a folder: put things inside it)."""

    path: protocol.DrivePath | None
    inside: bool
    text: str


def parse_remote_path(text: str) -> RemoteTarget:
    """A POSIX-style path relative to the drive root (a leading ``/`` allowed, repeated
    slashes collapsed). ``..``, ``.`` inside a path, NUL and names the format refuses are a
    ``UsageError``, raised before anything is sent."""
    if "\0" in text:
        raise UsageError(f"remote path {text!r} contains a NUL character")
    raw = os.fsencode(text)
    parts = [part for part in raw.split(b"/") if part]
    if parts == [b"."]:
        parts = []
    for part in parts:
        if part in (b".", b".."):
            raise UsageError(
                f"remote path {text!r}: {part.decode()!r} is not allowed "
                "(drive paths start at the drive's root)"
            )
    try:
        path = protocol.DrivePath(parts) if parts else None
    except InvalidPathError as exc:
        raise UsageError(f"remote path {text!r}: {exc}") from exc
    return RemoteTarget(path, raw.endswith(b"/") or path is None, text)


def child_path(parent: protocol.DrivePath | None, name: bytes) -> protocol.DrivePath:
    """``name`` inside ``parent`` (``None``: the drive's root)."""
    return parent.child(name) if parent is not None else protocol.DrivePath((name,))


def local_name(local: Path) -> bytes:
    """The name a local file or folder gets on the drive (``.`` is the folder's own name)."""
    name = os.fsencode(local.absolute().name if local.name in ("", ".", "..") else local.name)
    try:
        validate_name(name)
    except FormatError as exc:
        raise UsageError(f"{local}: its name cannot be stored on the drive: {exc}") from exc
    return name


def not_found(path: protocol.DrivePath | None) -> NotFoundError:
    """The error for a drive path that does not exist (exit 4)."""
    return NotFoundError("drive path", show_path(path))
