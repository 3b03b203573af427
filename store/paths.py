"""Paths inside a namespace: ``DrivePath``, the one path type of the store, the client and
the server.

A path is a tuple of names, each as the format allows it (``store.objects.validate_name``),
1 to ``MAX_PATH_DEPTH`` deep; anything else is an ``InvalidPathError`` (a ``FormatError``),
a store error that each boundary translates once: the server answers it as
``invalid_name`` (HTTP 400), the mount as EINVAL, the CLI as a usage error. How a path
travels on the wire (``store.protocol.WirePath``) is the protocol's business, not this
module's. Immutable values: any thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from store.errors import FormatError, InvalidPathError
from store.objects import validate_name

# Paths deeper than this are refused (a hostile peer cannot make either side recurse far).
MAX_PATH_DEPTH: Final = 256


class DrivePath:
    """A path inside a namespace, relative to its root: 1 to ``MAX_PATH_DEPTH`` names.

    Its bytes form joins the names with ``/`` (no leading or trailing slash); on the wire
    that byte string travels as any other byte string (``store.protocol.WirePath``). The
    root itself is not a ``DrivePath``: no operation names it.
    """

    __slots__ = ("components",)
    components: tuple[bytes, ...]

    def __init__(self, components: Iterable[bytes]) -> None:
        parts = tuple(components)
        if not parts:
            raise InvalidPathError("a path needs at least one name")
        if len(parts) > MAX_PATH_DEPTH:
            raise InvalidPathError(f"path is {len(parts)} names deep, over {MAX_PATH_DEPTH}")
        for part in parts:
            try:
                validate_name(part)
            except FormatError as exc:
                raise InvalidPathError(str(exc)) from exc
        object.__setattr__(self, "components", parts)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("DrivePath is immutable")

    def __reduce__(self) -> tuple[type[DrivePath], tuple[tuple[bytes, ...]]]:
        return (DrivePath, (self.components,))

    @classmethod
    def from_bytes(cls, raw: bytes) -> DrivePath:
        """``b"a/b/c"`` → the path of three names; any empty name is refused."""
        if raw.count(b"/") >= MAX_PATH_DEPTH:  # refuse before splitting a huge input
            raise InvalidPathError(f"path is over {MAX_PATH_DEPTH} names deep")
        return cls(raw.split(b"/"))

    def __bytes__(self) -> bytes:
        return b"/".join(self.components)

    @property
    def name(self) -> bytes:
        return self.components[-1]

    @property
    def parent(self) -> DrivePath | None:
        """The parent directory, or ``None`` for a name directly under the root."""
        return DrivePath(self.components[:-1]) if len(self.components) > 1 else None

    def child(self, name: bytes) -> DrivePath:
        return DrivePath((*self.components, name))

    def is_within(self, other: DrivePath) -> bool:
        """True if this path is ``other`` or lies beneath it."""
        return self.components[: len(other.components)] == other.components

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DrivePath) and self.components == other.components

    def __hash__(self) -> int:
        return hash(self.components)

    def __repr__(self) -> str:
        return f"DrivePath({bytes(self)!r})"
