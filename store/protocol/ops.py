"""The JSON bodies about files: a file entry on the wire (``EntryModel``, converted to and
from ``store.objects.FileEntry``), the operations of a batch (put, mkdir, move, delete,
setattr: the JSON form of ``store.ops``, converted by ``op_to_wire`` and ``op_from_wire``)
and their results, and a path's history (versions, restore).

``store.objects`` owns the rules of a valid entry; the models here call them, so the wire
accepts no entry the format refuses. Names no route and no status: ``routes`` pairs each
body with its endpoint. Models are frozen: any thread.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeAlias

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from store import ops
from store.chunking import CHUNK_MAX_BYTES
from store.errors import FormatError
from store.objects import (
    MAX_FILE_BYTES,
    MAX_ID_NUMBER,
    MAX_RDEV,
    MAX_XATTRS_TOTAL_BYTES,
    MODE_BITS,
    ChunkRef,
    EntryKind,
    FileEntry,
)
from store.protocol.bounds import (
    CODE_PATTERN,
    DEFAULT_PAGE_SIZE,
    MAX_CHUNKS_PER_ENTRY,
    MAX_OP_MESSAGE_CHARS,
    MAX_OPS_PER_BATCH,
    MAX_PAGE_SIZE,
)
from store.protocol.models import (
    CommitText,
    Cursor,
    HeadSequence,
    IdempotencyKey,
    PageLimit,
    TimeNs,
    WireModel,
)
from store.protocol.wire import (
    HexChunkId,
    HexCommitId,
    HexContentHash,
    HexNamespaceId,
    HexTreeId,
    WireBytes,
    WirePath,
    validate_name,
)

# --- models: file entries ------------------------------------------------------------------

EntryKindName: TypeAlias = Literal[
    "file", "dir", "symlink", "fifo", "socket", "mount", "block_device", "char_device"
]
_NAME_OF_KIND: Final[dict[EntryKind, EntryKindName]] = {
    EntryKind.FILE: "file",
    EntryKind.DIR: "dir",
    EntryKind.SYMLINK: "symlink",
    EntryKind.FIFO: "fifo",
    EntryKind.SOCKET: "socket",
    EntryKind.MOUNT: "mount",
    EntryKind.BLOCK_DEVICE: "block_device",
    EntryKind.CHAR_DEVICE: "char_device",
}
_KIND_BY_NAME: Final[dict[str, EntryKind]] = {name: kind for kind, name in _NAME_OF_KIND.items()}
# A throwaway name under which the format's own rules check a nameless model.
_PROBE_NAME: Final = b"entry"
_PROBE_PREFIX: Final = f"{_PROBE_NAME!r}: "


class XattrModel(WireModel):
    name: WireBytes
    value: WireBytes


def _check_xattrs(xattrs: tuple[XattrModel, ...]) -> tuple[XattrModel, ...]:
    # store.objects owns the rules (sorted, unique, sizes); a FIFO entry applies them alone.
    try:
        FileEntry(
            name=_PROBE_NAME,
            kind=EntryKind.FIFO,
            mode=0,
            uid=0,
            gid=0,
            size=0,
            mtime_ns=0,
            xattrs=tuple((item.name, item.value) for item in xattrs),
        )
    except FormatError as exc:
        raise ValueError(str(exc)) from exc
    return xattrs


Xattrs: TypeAlias = Annotated[
    tuple[XattrModel, ...],
    Field(max_length=MAX_XATTRS_TOTAL_BYTES),  # each takes at least one byte of the total
    AfterValidator(_check_xattrs),
]
Mode: TypeAlias = Annotated[int, Field(ge=0, le=MODE_BITS)]
OwnerId: TypeAlias = Annotated[int, Field(ge=0, le=MAX_ID_NUMBER)]


class ChunkRefModel(WireModel):
    chunk_id: HexChunkId
    length: Annotated[int, Field(ge=1, le=CHUNK_MAX_BYTES)]


class EntryModel(WireModel):
    """A ``store.objects.FileEntry`` without its name (the name is the path's last one).

    Which content fields are set depends on ``kind``, exactly as in the format: a file has
    ``chunks`` and ``content_hash``, a dir ``tree_id``, a symlink ``target``, a mount (a
    shared folder's mount point, shown in history; only the server makes one) its
    ``namespace_id``, a block or character device its ``rdev``.
    """

    kind: EntryKindName
    mode: Mode
    uid: OwnerId
    gid: OwnerId
    size: Annotated[int, Field(ge=0, le=MAX_FILE_BYTES)]
    mtime_ns: TimeNs
    xattrs: Xattrs = ()
    chunks: tuple[ChunkRefModel, ...] = Field(default=(), max_length=MAX_CHUNKS_PER_ENTRY)
    content_hash: HexContentHash | None = None
    tree_id: HexTreeId | None = None
    target: WireBytes = b""  # at most MAX_SYMLINK_TARGET_BYTES, as the format says
    namespace_id: HexNamespaceId | None = None
    rdev: Annotated[int, Field(ge=0, le=MAX_RDEV)] = 0  # a device node's
    atime_ns: TimeNs | None = None  # the access time, when it is not mtime_ns

    @model_validator(mode="after")
    def _follows_format(self) -> EntryModel:
        try:
            entry_from_model(_PROBE_NAME, self)
        except FormatError as exc:
            raise ValueError(str(exc).removeprefix(_PROBE_PREFIX)) from exc
        return self


def entry_to_model(entry: FileEntry) -> EntryModel:
    """The wire form of an entry (its name travels in the path)."""
    return EntryModel(
        kind=_NAME_OF_KIND[entry.kind],
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        size=entry.size,
        mtime_ns=entry.mtime_ns,
        xattrs=tuple(XattrModel(name=name, value=value) for name, value in entry.xattrs),
        chunks=tuple(ChunkRefModel(chunk_id=r.chunk_id, length=r.length) for r in entry.chunks),
        content_hash=entry.content_hash,
        tree_id=entry.tree_id,
        target=entry.target,
        namespace_id=entry.namespace_id,
        rdev=entry.rdev,
        atime_ns=entry.atime_ns,
    )


def entry_from_model(name: bytes, model: EntryModel) -> FileEntry:
    """The entry named ``name``; ``InvalidNameError`` for a bad name, ``FormatError`` for an
    entry the format refuses."""
    validate_name(name)
    return FileEntry(
        name=name,
        kind=_KIND_BY_NAME[model.kind],
        mode=model.mode,
        uid=model.uid,
        gid=model.gid,
        size=model.size,
        mtime_ns=model.mtime_ns,
        xattrs=tuple((item.name, item.value) for item in model.xattrs),
        chunks=tuple(ChunkRef(ref.chunk_id, ref.length) for ref in model.chunks),
        content_hash=model.content_hash,
        tree_id=model.tree_id,
        target=model.target,
        namespace_id=model.namespace_id,
        rdev=model.rdev,
        atime_ns=model.atime_ns,
    )


# --- models: operations --------------------------------------------------------------------


class AttrsModel(WireModel):
    """The attributes of a new directory."""

    mode: Mode
    uid: OwnerId
    gid: OwnerId
    mtime_ns: TimeNs
    xattrs: Xattrs = ()
    atime_ns: TimeNs | None = None


class SetattrModel(WireModel):
    """Attribute changes: a field left ``None`` stays as it is; at least one is set.
    ``xattrs``, when set, replaces the whole list. Size and content change through put."""

    mode: Mode | None = None
    uid: OwnerId | None = None
    gid: OwnerId | None = None
    mtime_ns: TimeNs | None = None
    xattrs: Xattrs | None = None
    atime_ns: TimeNs | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> SetattrModel:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError("setattr changes nothing")
        return self


class PutOp(WireModel):
    """Create or replace a non-directory at ``path``. ``base`` is the content hash the
    client last saw there (``None``: it believes the name is new). If the server holds
    other content, the op is merged or kept as a conflicted copy, never overwriting."""

    op: Literal["put"] = "put"
    path: WirePath
    entry: EntryModel
    base: HexContentHash | None = None

    @model_validator(mode="after")
    def _not_a_directory(self) -> PutOp:
        if self.entry.kind == "dir":
            raise ValueError("put cannot create a directory: use mkdir")
        return self


class MkdirOp(WireModel):
    """Create an empty directory at ``path`` (its parent must exist)."""

    op: Literal["mkdir"] = "mkdir"
    path: WirePath
    attrs: AttrsModel


class MoveOp(WireModel):
    """Rename ``src`` to ``dst`` with rename(2) semantics, carrying a subtree along."""

    op: Literal["move"] = "move"
    src: WirePath
    dst: WirePath
    replaces: HexContentHash | None = None  # the file at dst the mover last saw

    @model_validator(mode="after")
    def _not_into_itself(self) -> MoveOp:
        if self.dst.is_within(self.src):
            raise ValueError("cannot move a path onto or into itself")
        return self


class DeleteOp(WireModel):
    """Remove ``path``: a non-directory, or a directory that is empty at the head.
    With ``base``, the delete applies only if the file still has that content; otherwise
    it is rejected (``stale_base``) and the newer version stays."""

    op: Literal["delete"] = "delete"
    path: WirePath
    base: HexContentHash | None = None


class SetattrOp(WireModel):
    op: Literal["setattr"] = "setattr"
    path: WirePath
    attrs: SetattrModel


Op: TypeAlias = Annotated[
    PutOp | MkdirOp | MoveOp | DeleteOp | SetattrOp, Field(discriminator="op")
]


class OpsBatch(WireModel):
    """Operations on one namespace, applied in order as one commit. The server remembers
    the reply under ``idempotency_key`` (per user, across their sessions), so a batch
    resent after a lost reply is applied once."""

    idempotency_key: IdempotencyKey
    ops: tuple[Op, ...] = Field(min_length=1, max_length=MAX_OPS_PER_BATCH)


OpStatus: TypeAlias = Literal["applied", "merged", "conflicted_copy", "rejected"]


class OpResult(WireModel):
    """What happened to one op. ``applied``: as sent. ``merged``: a 3-way merge with the
    newer content was written at ``path``. ``conflicted_copy``: the other version stays at
    ``path`` and the incoming one was written at ``conflict_path``. ``rejected``: nothing
    changed; ``code`` (an error code) and ``message`` say why."""

    status: OpStatus
    path: WirePath
    conflict_path: WirePath | None = None
    code: Annotated[str, StringConstraints(pattern=CODE_PATTERN)] | None = None
    message: Annotated[str, StringConstraints(max_length=MAX_OP_MESSAGE_CHARS)] = ""

    @model_validator(mode="after")
    def _fields_match_status(self) -> OpResult:
        if (self.status == "conflicted_copy") != (self.conflict_path is not None):
            raise ValueError("conflict_path is set exactly for conflicted_copy")
        if (self.status == "rejected") != (self.code is not None):
            raise ValueError("code is set exactly for rejected")
        return self


class OpsBatchResponse(WireModel):
    """One result per op, in order. ``commit_id`` is the new commit, or ``None`` when the
    batch changed nothing; ``head`` and ``sequence`` are the namespace's head afterwards."""

    commit_id: HexCommitId | None
    head: HexCommitId | None
    sequence: HeadSequence
    results: tuple[OpResult, ...] = Field(max_length=MAX_OPS_PER_BATCH)


WireOp: TypeAlias = PutOp | MkdirOp | MoveOp | DeleteOp | SetattrOp


# --- conversions: store.ops <-> the wire -----------------------------------------------------


def _xattr_models(xattrs: ops.Xattrs) -> tuple[XattrModel, ...]:
    return tuple(XattrModel(name=name, value=value) for name, value in xattrs)


def _xattrs_of(models: tuple[XattrModel, ...]) -> ops.Xattrs:
    return tuple((item.name, item.value) for item in models)


def op_to_wire(op: ops.Op) -> WireOp:
    """The JSON model of ``op``. Raises pydantic's ``ValidationError`` for an op the wire
    refuses although the store has it (a put of a directory)."""
    match op:
        case ops.Put():
            return PutOp(path=op.path, entry=entry_to_model(op.entry), base=op.base)
        case ops.Mkdir():
            attrs = op.attrs
            model = AttrsModel(
                mode=attrs.mode, uid=attrs.uid, gid=attrs.gid, mtime_ns=attrs.mtime_ns,
                xattrs=_xattr_models(attrs.xattrs), atime_ns=attrs.atime_ns,
            )  # fmt: skip
            return MkdirOp(path=op.path, attrs=model)
        case ops.Move():
            return MoveOp(src=op.src, dst=op.dst, replaces=op.replaces)
        case ops.Delete():
            return DeleteOp(path=op.path, base=op.base)
        case ops.SetAttr():
            changes = op.changes
            xattrs = None if changes.xattrs is None else _xattr_models(changes.xattrs)
            setattr_model = SetattrModel(
                mode=changes.mode, uid=changes.uid, gid=changes.gid, mtime_ns=changes.mtime_ns,
                xattrs=xattrs, atime_ns=changes.atime_ns,
            )  # fmt: skip
            return SetattrOp(path=op.path, attrs=setattr_model)


def op_from_wire(op: WireOp) -> ops.Op:
    """The store op a JSON model carries. Raises ``InvalidNameError`` or ``FormatError``
    for one the format refuses (the models check the same rules, so a model that parsed
    converts)."""
    match op:
        case PutOp():
            return ops.Put(op.path, entry_from_model(op.path.name, op.entry), op.base)
        case MkdirOp():
            attrs = op.attrs
            return ops.Mkdir(
                op.path,
                ops.Attrs(
                    attrs.mode,
                    attrs.uid,
                    attrs.gid,
                    attrs.mtime_ns,
                    _xattrs_of(attrs.xattrs),
                    attrs.atime_ns,
                ),
            )
        case MoveOp():
            return ops.Move(op.src, op.dst, op.replaces)
        case DeleteOp():
            return ops.Delete(op.path, op.base)
        case SetattrOp():
            changes = op.attrs
            xattrs = None if changes.xattrs is None else _xattrs_of(changes.xattrs)
            return ops.SetAttr(
                op.path,
                ops.AttrChanges(
                    changes.mode,
                    changes.uid,
                    changes.gid,
                    changes.mtime_ns,
                    xattrs,
                    changes.atime_ns,
                ),
            )


# --- models: history ---------------------------------------------------------------------------


class VersionsRequest(WireModel):
    path: WirePath
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class FileVersion(WireModel):
    """The path as one commit left it; ``entry`` is ``None`` where the commit deleted it."""

    commit_id: HexCommitId
    time_ns: TimeNs
    author: CommitText
    device: CommitText
    entry: EntryModel | None


class VersionsPage(WireModel):
    path: WirePath
    versions: tuple[FileVersion, ...] = Field(max_length=MAX_PAGE_SIZE)  # newest first
    next_cursor: Cursor | None = None


class RestoreRequest(WireModel):
    """Bring back ``path`` as it was at ``commit_id``, as a new version (a new commit)."""

    path: WirePath
    commit_id: HexCommitId
    idempotency_key: IdempotencyKey
