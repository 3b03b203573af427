"""The operations on a namespace: put, mkdir, move, delete and setattr, one set of types.

Every part that speaks of a change to a drive uses these: the client's journal (a put
whose content is still a staged file is the journal's ``StagedPut`` until the uploader has
cut it into chunks), the wire (``store.protocol.ops`` encodes each as its JSON model and
decodes it back, ``op_to_wire``/``op_from_wire``), the server's commit path and
``store.merkle.apply_edits``. Paths are ``store.paths.DrivePath``; attributes are checked
against the format's rules (``store.objects``) when an op is made, so an op that exists is
one the format accepts, and a bad one is a ``FormatError`` (a store error, which each
boundary translates once).

What an op means, in one place:

- ``Put``: create or replace a non-directory at ``path`` with ``entry`` (named as the
  path's last name). ``base`` is the content hash the sender last saw there (``None``: it
  believes the name is new); the server compares it with the head (merge, conflicted copy,
  never an overwrite). The server's history may also put a whole directory entry (restore);
  the wire refuses that.
- ``Mkdir``: create an empty directory with ``attrs``.
- ``Move``: rename(2) ``src`` to ``dst``, carrying a subtree along; ``dst`` is never
  ``src`` or inside it.
- ``Delete``: remove a non-directory or a whole directory; with ``base``, only while the
  file still has that content. The commit path refuses a client's delete of a directory
  that is not empty at the head (``server.commits``); the server's history deletes whole
  ones.
- ``SetAttr``: change the attributes ``changes`` sets; content and children stay.

``apply_edits`` applies ops as they are, without ``base``: comparing a base with the head
is the commit path's job before it hands the edits over. Immutable values: any thread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from store.errors import FormatError
from store.ids import ContentHash
from store.objects import EMPTY_TREE, EntryKind, FileEntry
from store.paths import DrivePath

Xattrs: TypeAlias = tuple[tuple[bytes, bytes], ...]

# A throwaway name under which the format's own rules check attributes without an entry.
_PROBE_NAME: Final = b"probe"


def check_attributes(
    mode: int, uid: int, gid: int, mtime_ns: int, xattrs: Xattrs, *, atime_ns: int | None = None
) -> None:
    """``FormatError`` unless the format accepts these attributes (``mode``: permission
    bits only)."""
    # The format owns the rules; a FIFO entry (no content) applies them alone.
    FileEntry(
        name=_PROBE_NAME, kind=EntryKind.FIFO, mode=mode, uid=uid, gid=gid, size=0,
        mtime_ns=mtime_ns, xattrs=xattrs, atime_ns=atime_ns,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Attrs:
    """The attributes a new entry gets (``mode``: permission bits only; ``atime_ns``: as in
    ``FileEntry``)."""

    mode: int
    uid: int
    gid: int
    mtime_ns: int
    xattrs: Xattrs = ()
    atime_ns: int | None = None

    def __post_init__(self) -> None:
        if self.atime_ns == self.mtime_ns:
            object.__setattr__(self, "atime_ns", None)
        check_attributes(
            self.mode, self.uid, self.gid, self.mtime_ns, self.xattrs, atime_ns=self.atime_ns
        )

    @classmethod
    def of(cls, entry: FileEntry) -> Attrs:
        return cls(entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs, entry.atime_ns)


@dataclass(frozen=True, slots=True)
class AttrChanges:
    """What a setattr changes: ``None`` leaves a field as it is; ``xattrs`` replaces the
    whole list. At least one field is set. ``atime_ns`` sets the access time; left ``None``,
    an entry's access time stays as stored, so one that had none apart follows a new mtime
    (a caller that means to keep it, as ``utimensat`` with only the mtime does, sets it)."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None
    xattrs: Xattrs | None = None
    atime_ns: int | None = None

    def __post_init__(self) -> None:
        values = (self.mode, self.uid, self.gid, self.mtime_ns, self.xattrs, self.atime_ns)
        if all(value is None for value in values):
            raise FormatError("a setattr that changes nothing")
        check_attributes(
            self.mode or 0, self.uid or 0, self.gid or 0, self.mtime_ns or 0, self.xattrs or (),
            atime_ns=self.atime_ns,
        )  # fmt: skip

    @classmethod
    def between(cls, old: FileEntry, new: FileEntry) -> AttrChanges | None:
        """The changes that turn ``old``'s attributes into ``new``'s; ``None`` if none."""
        fields = {
            name: None if getattr(old, name) == getattr(new, name) else getattr(new, name)
            for name in ("mode", "uid", "gid", "mtime_ns", "xattrs")
        }
        if old.accessed_ns != new.accessed_ns:
            fields["atime_ns"] = new.accessed_ns
        if all(value is None for value in fields.values()):
            return None
        return cls(**fields)

    def applied_to(self, entry: FileEntry) -> FileEntry:
        return dataclasses.replace(
            entry,
            mode=entry.mode if self.mode is None else self.mode,
            uid=entry.uid if self.uid is None else self.uid,
            gid=entry.gid if self.gid is None else self.gid,
            mtime_ns=entry.mtime_ns if self.mtime_ns is None else self.mtime_ns,
            xattrs=entry.xattrs if self.xattrs is None else self.xattrs,
            atime_ns=entry.atime_ns if self.atime_ns is None else self.atime_ns,
        )


@dataclass(frozen=True, slots=True)
class Put:
    path: DrivePath
    entry: FileEntry
    base: ContentHash | None = None

    def __post_init__(self) -> None:
        if self.entry.name != self.path.name:
            raise FormatError(f"put {bytes(self.path)!r}: the entry is named {self.entry.name!r}")


@dataclass(frozen=True, slots=True)
class Mkdir:
    path: DrivePath
    attrs: Attrs

    def entry(self) -> FileEntry:
        """The new, empty directory's entry."""
        attrs = self.attrs
        return FileEntry(
            name=self.path.name, kind=EntryKind.DIR, mode=attrs.mode, uid=attrs.uid,
            gid=attrs.gid, size=0, mtime_ns=attrs.mtime_ns, xattrs=attrs.xattrs,
            tree_id=EMPTY_TREE.id, atime_ns=attrs.atime_ns,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Move:
    """rename(2) of ``src`` to ``dst``. ``replaces``: the content of the file at ``dst``
    the mover last saw (``None``: it saw no file there). A file at ``dst`` whose content is
    not that is never replaced silently: the server treats the move as a put of the moved
    file there, based on ``replaces`` (merged, or kept as a conflicted copy)."""

    src: DrivePath
    dst: DrivePath
    replaces: ContentHash | None = None

    def __post_init__(self) -> None:
        if self.dst.is_within(self.src):
            raise FormatError("cannot move a path onto or into itself")


@dataclass(frozen=True, slots=True)
class Delete:
    path: DrivePath
    base: ContentHash | None = None


@dataclass(frozen=True, slots=True)
class SetAttr:
    path: DrivePath
    changes: AttrChanges


Op: TypeAlias = Put | Mkdir | Move | Delete | SetAttr
OpKind: TypeAlias = Literal["put", "mkdir", "move", "delete", "setattr"]


def path_of(op: Op) -> DrivePath:
    """The path an op names (a move's source)."""
    return op.src if isinstance(op, Move) else op.path
