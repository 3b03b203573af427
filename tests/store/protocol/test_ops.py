"""File entries, operations and their results on the wire (``store/protocol/ops.py``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from store import ops
from store import protocol as p
from store.ids import ChunkId, ContentHash, content_hash_of
from store.objects import ChunkRef, EntryKind, FileEntry
from tests.store.protocol.samples import CHUNK, COMMIT, KEY, TREE, code_of_refusal, path


def file_entry(name: bytes = b"notes.txt", data: bytes = b"hello world") -> FileEntry:
    chunks = (ChunkRef(CHUNK, 5), ChunkRef(ChunkId(bytes(32)), len(data) - 5)) if data else ()
    return FileEntry(
        name=name,
        kind=EntryKind.FILE,
        mode=0o644,
        uid=1000,
        gid=1000,
        size=len(data),
        mtime_ns=1_700_000_000_123_456_789,
        xattrs=((b"user.bin", b"\x00\xff"), (b"user.tag", b"blue")),
        chunks=chunks,
        content_hash=content_hash_of(data),
    )


ENTRIES = [
    file_entry(),
    file_entry(name=b"\xff\xfe-latin1.txt", data=b""),
    FileEntry(name=b"d", kind=EntryKind.DIR, mode=0o755, uid=0, gid=0, size=0, mtime_ns=-5,
              tree_id=TREE),
    FileEntry(name=b"l", kind=EntryKind.SYMLINK, mode=0o777, uid=1, gid=2, size=4, mtime_ns=0,
              target=b"..\xff/"),
    FileEntry(name=b"f", kind=EntryKind.FIFO, mode=0o600, uid=1, gid=2, size=0, mtime_ns=0),
    FileEntry(name=b"s", kind=EntryKind.SOCKET, mode=0o600, uid=1, gid=2, size=0, mtime_ns=0),
    FileEntry(name=b"b", kind=EntryKind.BLOCK_DEVICE, mode=0o640, uid=0, gid=6, size=0,
              mtime_ns=7, rdev=2**64 - 1, atime_ns=-3),
    FileEntry(name=b"c", kind=EntryKind.CHAR_DEVICE, mode=0o620, uid=0, gid=5, size=0,
              mtime_ns=7, rdev=(4 << 8) | 1),
]  # fmt: skip


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.kind.name)
def test_entries_round_trip_through_the_wire(entry: FileEntry) -> None:
    model = p.entry_to_model(entry)
    decoded = p.EntryModel.model_validate_json(model.model_dump_json())
    assert decoded == model
    assert p.entry_from_model(entry.name, decoded) == entry


def test_entry_from_model_refuses_a_bad_name() -> None:
    with pytest.raises(p.InvalidNameError):
        p.entry_from_model(b"a/b", p.entry_to_model(file_entry()))


def entry_json(**changes: Any) -> dict[str, Any]:
    wire: dict[str, Any] = json.loads(p.entry_to_model(file_entry()).model_dump_json())
    wire.update(changes)
    return wire


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "block_device"},
        {"mode": 0o10000},
        {"uid": 2**32},
        {"size": 12},  # chunk lengths no longer add up
        {"content_hash": None},  # a file needs one
        {"tree_id": TREE.hex()},  # only directories have one
        {"target": "x"},  # only symlinks have one
        {"chunks": [{"chunk_id": CHUNK.hex(), "length": 0}]},
        {"chunks": [{"chunk_id": CHUNK.hex(), "length": 4 * 1024 * 1024 + 1}]},
        {"xattrs": [{"name": "user.b", "value": ""}, {"name": "user.a", "value": ""}]},
        {"xattrs": [{"name": "", "value": "x"}]},
        {"mtime_ns": 2**63},
        {"atime_ns": 2**63},
        {"rdev": 5},  # only device nodes have one
        {"colour": "red"},
    ],
)
def test_entries_the_format_refuses_are_refused_on_the_wire(changes: dict[str, Any]) -> None:
    assert code_of_refusal(p.EntryModel, entry_json(**changes)) == "bad_request"


def test_entry_error_messages_do_not_mention_the_probe_name() -> None:
    with pytest.raises(ValidationError) as info:
        p.EntryModel.model_validate_json(json.dumps(entry_json(content_hash=None)))
    assert "entry'" not in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [
        {"idempotency_key": KEY, "ops": []},
        {"idempotency_key": "short", "ops": [{"op": "delete", "path": "a"}]},
        {"idempotency_key": KEY, "ops": [{"op": "chmod", "path": "a"}]},
        {"idempotency_key": KEY, "ops": [{"path": "a"}]},
        {"idempotency_key": KEY, "ops": [{"op": "move", "src": "a", "dst": "a/b"}]},
        {"idempotency_key": KEY, "ops": [{"op": "move", "src": "a", "dst": "a"}]},
        {"idempotency_key": KEY, "ops": [{"op": "setattr", "path": "a", "attrs": {}}]},
        {
            "idempotency_key": KEY,
            "ops": [
                {
                    "op": "put",
                    "path": "d",
                    "entry": json.loads(p.entry_to_model(ENTRIES[2]).model_dump_json()),
                }
            ],
        },
    ],
)
def test_malformed_op_batches_are_refused(payload: dict[str, Any]) -> None:
    assert code_of_refusal(p.OpsBatch, payload) == "bad_request"


def test_every_op_kind_round_trips() -> None:
    attrs = p.AttrsModel(mode=0o755, uid=1, gid=1, mtime_ns=5)
    batch = p.OpsBatch(
        idempotency_key=KEY,
        ops=(
            p.PutOp(path=path(b"a/notes.txt"), entry=p.entry_to_model(file_entry()),
                    base=ContentHash(bytes(32))),
            p.MkdirOp(path=path(b"a/\xffdir"), attrs=attrs),
            p.MoveOp(src=path(b"a/x"), dst=path(b"b/x")),
            p.DeleteOp(path=path(b"a/y"), base=None),
            p.SetattrOp(path=path(b"a"), attrs=p.SetattrModel(mode=0o700)),
        ),
    )  # fmt: skip
    wire = json.loads(batch.model_dump_json())
    assert [op["op"] for op in wire["ops"]] == ["put", "mkdir", "move", "delete", "setattr"]
    assert p.OpsBatch.model_validate(wire) == batch


STORE_OPS: list[ops.Op] = [
    ops.Put(path(b"a/notes.txt"), file_entry(), ContentHash(bytes(32))),
    ops.Put(path(b"l"), ENTRIES[3]),
    ops.Mkdir(path(b"a/\xffdir"), ops.Attrs(0o755, 1, 1, 5, ((b"user.k", b"\x00"),))),
    ops.Move(path(b"a/x"), path(b"b/x")),
    ops.Delete(path(b"a/y")),
    ops.Delete(path(b"a/z"), ContentHash(bytes(range(32)))),
    ops.SetAttr(path(b"a"), ops.AttrChanges(mode=0o700)),
    ops.SetAttr(path(b"b"), ops.AttrChanges(uid=3, gid=4, mtime_ns=-1, xattrs=())),
]


@pytest.mark.parametrize("op", STORE_OPS, ids=lambda op: type(op).__name__)
def test_each_store_op_survives_the_wire_unchanged(op: ops.Op) -> None:
    model = p.op_to_wire(op)
    sent = p.OpsBatch(idempotency_key=KEY, ops=(model,)).model_dump_json()
    (received,) = p.OpsBatch.model_validate_json(sent).ops
    assert p.op_from_wire(received) == op


def test_a_store_put_of_a_directory_does_not_go_on_the_wire() -> None:
    restore = ops.Put(path(b"d"), ENTRIES[2])  # the server's history may place a whole folder
    with pytest.raises(ValidationError, match="use mkdir"):
        p.op_to_wire(restore)


def test_op_results_carry_exactly_the_fields_their_status_needs() -> None:
    p.OpResult(status="applied", path=path(b"a"))
    p.OpResult(status="conflicted_copy", path=path(b"a"), conflict_path=path(b"a (copy)"))
    p.OpResult(status="rejected", path=path(b"a"), code="stale_base", message="changed")
    with pytest.raises(ValidationError):
        p.OpResult(status="conflicted_copy", path=path(b"a"))
    with pytest.raises(ValidationError):
        p.OpResult(status="rejected", path=path(b"a"))
    with pytest.raises(ValidationError):
        p.OpResult(status="applied", path=path(b"a"), code="conflict")
    response = p.OpsBatchResponse(
        commit_id=COMMIT,
        head=COMMIT,
        sequence=4,
        results=(p.OpResult(status="merged", path=path(b"\xff")),),
    )
    assert p.OpsBatchResponse.model_validate_json(response.model_dump_json()) == response
