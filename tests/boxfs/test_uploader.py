"""The uploader's pure parts: a staged file is cut exactly as the store's chunker cuts it
(small files included), chunk groups stay within the protocol's bounds, and every journal
op becomes the protocol op it stands for."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from boxfs import uploader
from boxfs.chunk_sender import UPLOAD_GROUP_BYTES, groups_of
from boxfs.journal import StagedPut
from boxfs.staging import Staging
from store import protocol
from store.chunking import CHUNK_MIN_BYTES, chunk_file
from store.frames import decode_frame
from store.ids import ChunkId, content_hash_of
from store.objects import EntryKind
from store.ops import AttrChanges, Attrs, Delete, Mkdir, Move, SetAttr
from store.protocol import DrivePath

ATTRS = Attrs(mode=0o640, uid=7, gid=8, mtime_ns=123, xattrs=((b"user.a", b"1"),))


def stage(staging: Staging, data: bytes) -> str:
    with staging.new() as staged:
        staged.write_at(0, data)
        return staged.name


@pytest.mark.parametrize(
    "size",
    [0, 1, 1000, CHUNK_MIN_BYTES - 1, CHUNK_MIN_BYTES, CHUNK_MIN_BYTES + 1, 5 * 1024 * 1024],
)
def test_a_staged_file_is_cut_as_the_store_cuts_it(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    staging = Staging(tmp_path)
    scanned = uploader._scan(staging, stage(staging, data))
    expected = chunk_file(io.BytesIO(data))
    assert scanned.chunks == expected.chunks
    assert scanned.content_hash == expected.content_hash == content_hash_of(data)
    assert scanned.size == size
    assert (
        b"".join(
            data[o : o + r.length] for o, r in zip(scanned.offsets, scanned.chunks, strict=True)
        )
        == data
    )


def test_missing_chunks_are_framed_once_in_bounded_groups(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    rng = random.Random(1)
    big = rng.randbytes(40 * 1024 * 1024)
    names = [stage(staging, big), stage(staging, big), stage(staging, b"small")]
    files = [uploader._scan(staging, name) for name in names]
    missing = {ref.chunk_id for scanned in files for ref in scanned.chunks}
    jobs = uploader._jobs_for(files, missing)
    assert len(jobs) == len(missing)  # the copy adds no job
    groups = groups_of(jobs, lambda job: job.length)
    assert len(groups) > 1
    for group in groups:
        assert sum(job.length for job in group) <= UPLOAD_GROUP_BYTES or len(group) == 1
    framed: dict[ChunkId, bytes] = {}
    for group in groups:
        for chunk_id, frame in uploader._frame_group(staging, group):
            framed[chunk_id] = decode_frame(frame, chunk_id)
    assert set(framed) == missing


def test_a_staged_file_changed_between_cut_and_frame_is_caught(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    name = stage(staging, b"original content")
    [scanned] = [uploader._scan(staging, name)]
    with staging.open(name) as staged:
        staged.write_at(0, b"ORIGINAL")
    jobs = uploader._jobs_for([scanned], {scanned.chunks[0].chunk_id})
    with pytest.raises(uploader.StagedFileChangedError):
        uploader._frame_group(staging, jobs)


def test_every_journal_op_becomes_its_protocol_op(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    name = stage(staging, b"hello")
    scanned = uploader._scan(staging, name)
    base = content_hash_of(b"before")
    path = DrivePath.from_bytes(b"dir/file")

    put = uploader.build_op(StagedPut(path, ATTRS, staged=name), scanned, base)
    assert isinstance(put, protocol.PutOp)
    assert put.base == base and put.path == path
    entry = protocol.entry_from_model(b"file", put.entry)
    assert entry.kind is EntryKind.FILE and entry.size == 5
    assert entry.content_hash == content_hash_of(b"hello")
    assert (entry.mode, entry.uid, entry.gid, entry.mtime_ns) == (0o640, 7, 8, 123)
    assert entry.xattrs == ((b"user.a", b"1"),)

    link = uploader.build_op(
        StagedPut(path, ATTRS, kind=EntryKind.SYMLINK, target=b"../t"), None, None
    )
    assert isinstance(link, protocol.PutOp)
    assert link.entry.kind == "symlink" and link.entry.target == b"../t" and link.entry.size == 4

    mkdir = uploader.build_op(Mkdir(path, ATTRS), None, None)
    assert isinstance(mkdir, protocol.MkdirOp) and mkdir.attrs.mode == 0o640

    move = uploader.build_op(Move(path, DrivePath.from_bytes(b"other")), None, None)
    assert isinstance(move, protocol.MoveOp) and bytes(move.dst) == b"other"

    delete = uploader.build_op(Delete(path), None, base)
    assert isinstance(delete, protocol.DeleteOp) and delete.base == base

    setattr_op = uploader.build_op(SetAttr(path, AttrChanges(mode=0o600)), None, None)
    assert isinstance(setattr_op, protocol.SetattrOp)
    assert setattr_op.attrs.mode == 0o600 and setattr_op.attrs.uid is None


def test_idempotency_keys_follow_the_protocol_pattern() -> None:
    keys = {uploader.new_idempotency_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        protocol.OpsBatch(
            idempotency_key=key,
            ops=(protocol.DeleteOp(path=DrivePath.from_bytes(b"x")),),
        )
