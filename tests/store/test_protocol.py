"""The wire protocol: paths, models and their bounds, record streams, SSE, routes, errors."""

from __future__ import annotations

import itertools
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from store import protocol as p
from store.errors import (
    ConflictError,
    CryptoError,
    FormatError,
    IntegrityError,
    NotFoundError,
    StoreError,
    TransientError,
)
from store.ids import ChunkId, CommitId, ContentHash, NamespaceId, TreeId, content_hash_of
from store.objects import MAX_NAME_BYTES, ChunkRef, Commit, EntryKind, FileEntry

DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

NS = NamespaceId(bytes(range(16)))
CHUNK = ChunkId(bytes(range(32)))
TREE = TreeId(bytes(range(1, 33)))
COMMIT = CommitId(bytes(range(2, 34)))
KEY = "batch-0123456789abcdef"

names = st.binary(min_size=1, max_size=MAX_NAME_BYTES).filter(
    lambda name: b"/" not in name and b"\0" not in name and name not in (b".", b"..")
)


def path(raw: bytes) -> p.DrivePath:
    return p.DrivePath.from_bytes(raw)


def error_types(exc: ValidationError) -> set[str]:
    return {error["type"] for error in exc.errors()}


def code_of_refusal(model: type[p.WireModel], payload: Any) -> str:
    """The error code a server would answer for this JSON body."""
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(payload))
    status, body = p.validation_error_body(info.value.errors())
    assert status == p.status_for(body.code)
    return body.code


# --- paths and byte strings -------------------------------------------------------------------


@given(st.lists(names, min_size=1, max_size=12))
def test_path_round_trips_arbitrary_byte_names_through_json(components: list[bytes]) -> None:
    original = p.DrivePath(components)
    op = p.DeleteOp(path=original)
    decoded = p.DeleteOp.model_validate_json(op.model_dump_json())
    assert decoded.path == original
    assert decoded.path.components == tuple(components)
    assert p.DrivePath.from_wire(json.loads(json.dumps(original.to_wire()))) == original


@given(st.binary(max_size=300))
def test_wire_bytes_round_trip_any_bytes(raw: bytes) -> None:
    wire = p.encode_wire_bytes(raw)
    assert p.decode_wire_bytes(json.loads(json.dumps(wire))) == raw


def test_utf8_travels_as_a_string_and_other_bytes_as_base64() -> None:
    assert path("Fotos/Été 2026/ok.jpg".encode()).to_wire() == "Fotos/Été 2026/ok.jpg"
    assert path(b"a/\xff\xfe").to_wire() == {"b64": "YS///g=="}
    # Receivers accept base64 even where a string would do.
    assert p.DrivePath.from_wire({"b64": "YS9i"}) == path(b"a/b")


@pytest.mark.parametrize(
    "wire",
    [
        {"b64": "YS9i\n"},  # not strict base64
        {"b64": "YS9j="},  # bad padding
        {"b64": "YR=="},  # non-canonical trailing bits
        {"b64": "YS9i", "extra": "x"},
        {"text": "a"},
        ["a", "b"],
        42,
        "\udc80",  # a lone surrogate is not UTF-8
    ],
)
def test_malformed_wire_bytes_are_refused(wire: object) -> None:
    with pytest.raises(p.BadRequestError):
        p.decode_wire_bytes(wire)


@pytest.mark.parametrize(
    "raw",
    [
        b"..",
        b".",
        b"a/../b",
        b"a/./b",
        b"a/b\0c",
        b"",
        b"/a",
        b"a/",
        b"a//b",
        b"x" * 256,
        b"a/" + b"y" * 256,
        b"/".join([b"d"] * (p.MAX_PATH_DEPTH + 1)),
    ],
)
def test_bad_paths_are_refused(raw: bytes) -> None:
    with pytest.raises(p.InvalidNameError):
        path(raw)
    wire = p.encode_wire_bytes(raw)
    assert code_of_refusal(p.DeleteOp, {"op": "delete", "path": wire}) == "invalid_name"


def test_a_slash_inside_a_component_is_refused() -> None:
    with pytest.raises(p.InvalidNameError):
        p.DrivePath([b"a/b"])
    with pytest.raises(p.InvalidNameError):
        p.DrivePath([])


def test_the_longest_name_and_the_deepest_path_are_allowed() -> None:
    assert path(b"n" * 255).name == b"n" * 255
    deep = path(b"/".join([b"d"] * p.MAX_PATH_DEPTH))
    assert len(deep.components) == p.MAX_PATH_DEPTH


def test_drive_path_navigation_and_immutability() -> None:
    here = path(b"a/b")
    assert here.child(b"c") == path(b"a/b/c")
    assert here.parent == path(b"a")
    assert path(b"a").parent is None
    assert path(b"a/b/c").is_within(here) and not path(b"a/bc").is_within(here)
    assert bytes(here) == b"a/b" and len({here, path(b"a/b")}) == 1
    with pytest.raises(AttributeError):
        here.components = (b"x",)


# --- models ---------------------------------------------------------------------------------


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
        {"colour": "red"},
    ],
)
def test_entries_the_format_refuses_are_refused_on_the_wire(changes: dict[str, Any]) -> None:
    assert code_of_refusal(p.EntryModel, entry_json(**changes)) == "bad_request"


def test_entry_error_messages_do_not_mention_the_probe_name() -> None:
    with pytest.raises(ValidationError) as info:
        p.EntryModel.model_validate_json(json.dumps(entry_json(content_hash=None)))
    assert "entry'" not in str(info.value)


REQUEST_SAMPLES: list[tuple[type[p.WireModel], dict[str, Any]]] = [
    (p.RegisterRequest, {"username": "ada", "email": "ada@example.org", "password": "x" * 10}),
    (p.LoginRequest, {"username": "ada", "password": "x" * 10, "device_name": "laptop"}),
    (p.MissingChunksRequest, {"ids": [CHUNK.hex()]}),
    (p.ChunksRequest, {"ids": [CHUNK.hex()]}),
    (p.TreesRequest, {"ids": [TREE.hex()]}),
    (p.CommitsRequest, {"ids": [COMMIT.hex()]}),
    (p.LogQuery, {"limit": 10}),
    (p.AuditQuery, {}),
    (p.VersionsRequest, {"path": "a/b"}),
    (p.RestoreRequest, {"path": "a", "commit_id": COMMIT.hex(), "idempotency_key": KEY}),
    (p.OpsBatch, {"idempotency_key": KEY, "ops": [{"op": "delete", "path": "a"}]}),
    (p.Event, {"namespace_id": NS.hex(), "head": COMMIT.hex(), "sequence": 3}),
    (p.ErrorBody, {"code": "not_found", "message": "gone"}),
]


@pytest.mark.parametrize(
    "model, payload", REQUEST_SAMPLES, ids=lambda x: getattr(x, "__name__", "")
)
def test_models_accept_their_samples_and_refuse_extra_fields(
    model: type[p.WireModel], payload: dict[str, Any]
) -> None:
    parsed = model.model_validate_json(json.dumps(payload))
    assert model.model_validate_json(parsed.model_dump_json()) == parsed
    assert code_of_refusal(model, {**payload, "surprise": 1}) == "bad_request"


def test_models_are_frozen() -> None:
    event = p.Event(namespace_id=NS, head=COMMIT, sequence=1)
    with pytest.raises(ValidationError):
        event.sequence = 2


@pytest.mark.parametrize(
    "username", ["ab", "a" * 33, "Ada", "ada lovelace", "ada/x", "adä", "ada\n"]
)
def test_usernames_outside_the_alphabet_or_length_are_refused(username: str) -> None:
    payload = {"username": username, "email": "ada@example.org", "password": "x" * 10}
    assert code_of_refusal(p.RegisterRequest, payload) == "bad_request"


def test_usernames_at_the_bounds_are_accepted() -> None:
    for username in ("a.b", "a" * 32, "x_y-z.0"):
        p.RegisterRequest(username=username, email="ada@example.org", password="x" * 10)


@pytest.mark.parametrize("password", ["x" * 9, "x" * (p.PASSWORD_MAX_CHARS + 1)])
def test_passwords_outside_the_bounds_are_refused(password: str) -> None:
    payload = {"username": "ada", "email": "ada@example.org", "password": password}
    assert code_of_refusal(p.RegisterRequest, payload) == "bad_request"


def test_a_bad_email_is_refused() -> None:
    payload = {"username": "ada", "email": "not an address", "password": "x" * 10}
    assert code_of_refusal(p.RegisterRequest, payload) == "bad_request"


def test_passwords_and_tokens_stay_out_of_reprs_and_error_bodies() -> None:
    secret = "correct horse battery staple"  # noqa: S105
    login = p.LoginRequest(username="ada", password=secret, device_name="laptop")
    assert secret not in repr(login)
    with pytest.raises(ValidationError) as info:
        p.LoginRequest.model_validate_json(
            json.dumps({"username": "A", "password": secret, "device_name": "x"})
        )
    _, body = p.validation_error_body(info.value.errors())
    assert secret not in body.model_dump_json()
    token = "t" * 43
    response = p.LoginResponse(
        token=token, session_id="0" * 32, username="ada", device_name="laptop"
    )
    assert token not in repr(response)


@pytest.mark.parametrize(
    "device_name", ["", "a/b", "tab\there", "nul\0", " padded", "padded ", "é" * 33, "x" * 65]
)
def test_device_names_that_would_break_a_file_name_are_refused(device_name: str) -> None:
    payload = {"username": "ada", "password": "x" * 10, "device_name": device_name}
    assert code_of_refusal(p.LoginRequest, payload) == "bad_request"


def test_device_names_may_be_unicode_within_64_bytes() -> None:
    p.LoginRequest(username="ada", password="x" * 10, device_name="Adas Büro-Laptop (2)")
    p.LoginRequest(username="ada", password="x" * 10, device_name="é" * 32)


@pytest.mark.parametrize(
    "model, payload",
    [
        (p.MissingChunksRequest, {"ids": [CHUNK.hex()] * (p.MAX_IDS_PER_REQUEST + 1)}),
        (p.TreesRequest, {"ids": [TREE.hex()] * (p.MAX_IDS_PER_REQUEST + 1)}),
        (
            p.OpsBatch,
            {
                "idempotency_key": KEY,
                "ops": [{"op": "delete", "path": "a"}] * (p.MAX_OPS_PER_BATCH + 1),
            },
        ),
    ],
)
def test_over_long_batches_are_batch_too_large(
    model: type[p.WireModel], payload: dict[str, Any]
) -> None:
    assert code_of_refusal(model, payload) == "batch_too_large"


@pytest.mark.parametrize(
    "ids", [["zz"], [CHUNK.hex().upper()], [CHUNK.hex()[:-2]], [CHUNK.hex() + "00"], [5]]
)
def test_malformed_ids_are_invalid_id(ids: list[object]) -> None:
    assert code_of_refusal(p.MissingChunksRequest, {"ids": ids}) == "invalid_id"


def test_an_id_of_the_wrong_kind_is_refused_in_python() -> None:
    with pytest.raises(ValidationError) as info:
        p.MissingChunksRequest(ids=(TREE,))  # type: ignore[arg-type]
    assert "invalid_id" in error_types(info.value)
    request = p.MissingChunksRequest(ids=(CHUNK,))
    assert type(request.ids[0]) is ChunkId
    assert request.model_dump(mode="json") == {"ids": [CHUNK.hex()]}


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


@pytest.mark.parametrize("limit", [0, p.MAX_PAGE_SIZE + 1])
def test_page_limits_are_bounded(limit: int) -> None:
    with pytest.raises(ValidationError):
        p.LogQuery(limit=limit)


def test_query_params_are_strings_without_unset_fields() -> None:
    assert p.query_params(p.LogQuery(limit=7)) == {"limit": "7"}
    assert p.query_params(p.AuditQuery(cursor="abc.1")) == {"cursor": "abc.1", "limit": "100"}
    assert p.LogQuery.model_validate({"cursor": "abc.1", "limit": "7"}).limit == 7


def test_commit_info_mirrors_a_commit() -> None:
    commit = Commit(NS, TREE, (COMMIT,), "ada", "laptop", 1_700_000_000, "2 files changed")
    info = p.commit_info(COMMIT, commit)
    assert (info.root, info.parents, info.summary) == (TREE, (COMMIT,), "2 files changed")
    assert p.CommitInfo.model_validate_json(info.model_dump_json()) == info


def test_every_model_has_a_json_schema() -> None:
    for route in p.ROUTES:
        for model in (route.request_model, route.query_model, route.response_model):
            if model is not None:
                model.model_json_schema()
                model.model_json_schema(mode="serialization")


# --- record streams ---------------------------------------------------------------------------

records = st.lists(
    st.builds(
        p.Record,
        st.binary(min_size=32, max_size=32).map(ChunkId),
        st.one_of(st.none(), st.binary(max_size=3000)),
    ),
    max_size=12,
)


def stream_bytes(id_type: Any, items: list[Any]) -> bytes:
    return b"".join(p.encode_record_stream(id_type, items))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=200)
@given(records, st.lists(st.integers(min_value=0), max_size=40))
def test_record_stream_reassembles_records_fed_in_random_pieces(
    items: list[p.Record[ChunkId]], cuts: list[int]
) -> None:
    data = stream_bytes(ChunkId, items)
    parser = p.RecordStreamParser(ChunkId)
    parsed: list[p.Record[ChunkId]] = []
    for piece in split(data, cuts):
        assert not parser.finished
        parsed.extend(parser.feed(piece))
    parser.close()
    assert parser.finished
    assert parsed == items
    assert all(type(record.object_id) is ChunkId for record in parsed)
    assert parser.record_count == len(items)


@given(records, st.data())
def test_a_truncated_record_stream_is_a_format_error(
    items: list[p.Record[ChunkId]], data: st.DataObject
) -> None:
    whole = stream_bytes(ChunkId, items)
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
    parser = p.RecordStreamParser(ChunkId)
    parser.feed(whole[:cut])
    with pytest.raises(FormatError, match="truncated"):
        parser.close()


def test_record_stream_layout_is_as_documented() -> None:
    data = stream_bytes(TreeId, [p.Record(TREE, b"abc"), p.Record(TREE, None)])
    assert data[:8] == b"BXRS\x01\x02\x00\x00"
    assert data[8:45] == b"\x01" + bytes(TREE) + b"\x00\x00\x00\x03"
    assert data[45:48] == b"abc"
    assert data[48:85] == b"\x02" + bytes(TREE) + bytes(4)
    assert data[85:] == b"\x00\x00\x00\x00\x02"
    assert list(p.parse_record_stream(TreeId, [data])) == [
        p.Record(TREE, b"abc"),
        p.Record(TREE, None),
    ]


def head(tag: int, object_id: bytes, length: int) -> bytes:
    return struct.pack(">B32sI", tag, object_id, length)


HEADER = b"BXRS\x01\x01\x00\x00"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"BXRT\x01\x01\x00\x00", "not a record stream"),
        (b"BXRS\x02\x01\x00\x00", "version"),
        (b"BXRS\x01\x02\x00\x00", "kind"),
        (b"BXRS\x01\x01\x00\x01", "reserved"),
        (HEADER + head(1, CHUNK, p.MAX_FRAME_BYTES + 1), "over"),
        (HEADER + head(9, CHUNK, 0), "unknown record tag"),
        (HEADER + head(2, CHUNK, 3), "missing record has a payload"),
        (HEADER + b"\x00\x00\x00\x00\x01", "end says 1 records"),
        (HEADER + b"\x00\x00\x00\x00\x00" + b"x", "after the end"),
    ],
)
def test_malformed_record_streams_are_format_errors(data: bytes, message: str) -> None:
    parser = p.RecordStreamParser(ChunkId)
    with pytest.raises(FormatError, match=message):
        for byte in range(len(data)):  # byte by byte: refused as soon as it can be known
            parser.feed(data[byte : byte + 1])


def test_an_oversized_record_is_refused_before_its_payload_arrives() -> None:
    parser = p.RecordStreamParser(ChunkId, max_record_bytes=100)
    with pytest.raises(FormatError, match="over 100"):
        parser.feed(HEADER + head(1, CHUNK, 101))
    with pytest.raises(FormatError):
        list(p.encode_record_stream(ChunkId, [p.Record(CHUNK, bytes(p.MAX_FRAME_BYTES + 1))]))


def test_a_maximal_frame_is_accepted() -> None:
    frame = bytes(p.MAX_FRAME_BYTES)
    data = stream_bytes(ChunkId, [p.Record(CHUNK, frame)])
    assert list(p.parse_record_stream(ChunkId, split(data, [5, 1000, 4_000_000]))) == [
        p.Record(CHUNK, frame)
    ]


def test_bytes_after_the_end_are_refused() -> None:
    parser = p.RecordStreamParser(ChunkId)
    parser.feed(stream_bytes(ChunkId, []))
    with pytest.raises(FormatError, match="after the end"):
        parser.feed(b"\x00")


def test_upload_streams_bound_records_body_and_missing() -> None:
    items = [p.Record(CHUNK, b"x" * 10)] * 3
    data = stream_bytes(ChunkId, items)
    with pytest.raises(p.BatchTooLargeError):
        list(p.parse_record_stream(ChunkId, [data], max_records=2))
    with pytest.raises(p.BodyTooLargeError):
        list(p.parse_record_stream(ChunkId, [data], max_body_bytes=len(data) - 1))
    missing = stream_bytes(ChunkId, [p.Record(CHUNK, None)])
    with pytest.raises(FormatError, match="missing"):
        list(p.parse_record_stream(ChunkId, [missing], allow_missing=False))
    with pytest.raises(FormatError, match="missing"):
        list(p.encode_record_stream(ChunkId, [p.Record(CHUNK, None)], allow_missing=False))


def test_the_upload_parser_carries_the_upload_bounds() -> None:
    parser = p.chunk_upload_parser()
    with pytest.raises(FormatError, match="missing"):
        parser.feed(stream_bytes(ChunkId, [p.Record(CHUNK, None)]))
    too_many = [p.Record(CHUNK, b"f")] * (p.MAX_IDS_PER_REQUEST + 1)
    with pytest.raises(p.BatchTooLargeError):
        p.chunk_upload_parser().feed(stream_bytes(ChunkId, too_many))
    with pytest.raises(p.BodyTooLargeError):
        p.chunk_upload_parser().feed(bytes(p.MAX_BATCH_BODY_BYTES + 1))


def test_a_stream_holds_ids_of_its_own_kind_only() -> None:
    chunk_record: Any = p.Record(CHUNK, b"x")
    with pytest.raises(TypeError):
        list(p.encode_record_stream(TreeId, [chunk_record]))
    commits = stream_bytes(CommitId, [p.Record(COMMIT, b"c")])
    with pytest.raises(FormatError, match="kind"):
        list(p.parse_record_stream(TreeId, [commits]))


# --- server-sent events -----------------------------------------------------------------------

events = st.lists(
    st.one_of(
        st.just(p.HEARTBEAT),
        st.builds(
            p.Event,
            namespace_id=st.binary(min_size=16, max_size=16).map(NamespaceId),
            head=st.binary(min_size=32, max_size=32).map(CommitId),
            sequence=st.integers(min_value=0, max_value=2**63 - 1),
        ),
    ),
    max_size=10,
)


def encode(item: p.Event | p.Heartbeat) -> bytes:
    return p.encode_heartbeat() if isinstance(item, p.Heartbeat) else p.encode_event(item)


@settings(max_examples=200)
@given(
    events, st.lists(st.integers(min_value=0), max_size=30), st.sampled_from(["\n", "\r\n", "\r"])
)
def test_event_stream_round_trips_split_anywhere(
    items: list[p.Event | p.Heartbeat], cuts: list[int], line_end: str
) -> None:
    data = b"".join(encode(item) for item in items).replace(b"\n", line_end.encode())
    parser = p.EventStreamParser()
    parsed: list[p.Event | p.Heartbeat] = []
    for piece in split(data, cuts):
        parsed.extend(parser.feed(piece))
    assert parsed == items
    last_event = [item for item in items if isinstance(item, p.Event)][-1:]
    if last_event:
        assert (
            parser.last_event_id == f"{last_event[0].namespace_id.hex()}.{last_event[0].sequence}"
        )


def test_event_wire_form_is_as_documented() -> None:
    event = p.Event(namespace_id=NS, head=COMMIT, sequence=7)
    assert (
        p.encode_event(event)
        == (
            f"id: {NS.hex()}.7\nevent: head\n"
            f'data: {{"namespace_id":"{NS.hex()}","head":"{COMMIT.hex()}","sequence":7}}\n\n'
        ).encode()
    )
    assert p.encode_heartbeat() == b": heartbeat\n\n"


def test_event_parser_follows_the_sse_rules() -> None:
    event = p.Event(namespace_id=NS, head=COMMIT, sequence=1)
    body = event.model_dump_json()
    cut = body.index(",") + 1
    stream = (
        "\ufeffretry: 1000\n"  # a byte-order mark, then a field we ignore
        'event: shared\ndata: {"new": "kind"}\n\n'  # an unknown type is skipped
        "data: no type means 'message'\n\n"  # ... and so is a plain message
        "event: head\n\n"  # no data: nothing is dispatched
        f"event:head\ndata: {body[:cut]}\ndata:{body[cut:]}\n\n"  # data over two lines
        ": ping\n"
    ).encode()
    parser = p.EventStreamParser()
    out = parser.feed(stream[:2]) + parser.feed(stream[2:])  # split inside the BOM
    assert out == [event, p.HEARTBEAT]


def test_event_parser_waits_for_the_blank_line() -> None:
    parser = p.EventStreamParser()
    data = p.encode_event(p.Event(namespace_id=NS, head=COMMIT, sequence=2))
    assert parser.feed(data[:-1]) == []
    assert len(parser.feed(data[-1:])) == 1


@pytest.mark.parametrize(
    "data, message",
    [
        (b"data: \xff\xfe\n\n", "UTF-8"),
        (b"event: head\ndata: {}\n\n", "bad head event"),
        (b"data: " + b"x" * (p.MAX_SSE_LINE_CHARS + 1), "over"),
    ],
)
def test_malformed_event_streams_are_format_errors(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        p.EventStreamParser().feed(data)


# --- routes and headers -----------------------------------------------------------------------


def test_routes_fill_ids_as_hex() -> None:
    assert p.COMMITS.fill(namespace_id=NS) == f"/v1/namespaces/{NS.hex()}/commits"
    assert p.CHUNK.fill(namespace_id=NS, chunk_id=CHUNK) == (
        f"/v1/namespaces/{NS.hex()}/chunks/{CHUNK.hex()}"
    )
    assert p.REVOKE_SESSION.fill(session_id="ab" * 16) == "/v1/accounts/me/sessions/" + "ab" * 16
    assert p.HEALTH.fill() == "/healthz"


@pytest.mark.parametrize(
    "route, params, error",
    [
        (p.COMMITS, {}, ValueError),
        (p.CHUNK, {"namespace_id": NS}, ValueError),
        (p.WHOAMI, {"namespace_id": NS}, ValueError),
        (p.COMMITS, {"namespace_id": NS.hex()}, TypeError),
        (p.COMMITS, {"namespace_id": bytes(NS)}, TypeError),
        (p.CHUNK, {"namespace_id": NS, "chunk_id": TREE}, TypeError),
        (p.REVOKE_SESSION, {"session_id": "../../admin"}, ValueError),
        (p.REVOKE_SESSION, {"session_id": "AB" * 16}, ValueError),
    ],
)
def test_routes_refuse_unfilled_extra_or_mistyped_placeholders(
    route: p.Route, params: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        route.fill(**params)


def test_route_table_is_consistent() -> None:
    assert len({(route.method, route.template) for route in p.ROUTES}) == len(p.ROUTES)
    for route in p.ROUTES:
        assert route.template.startswith(("/v1/", "/healthz"))
        assert "{" not in route.fill(**{name: sample(name) for name in route.placeholders})
        if route.request_model is not None:
            assert route.request_media_type == p.JSON_MEDIA_TYPE
        if route.response_model is not None:
            assert route.response_media_type == p.JSON_MEDIA_TYPE
        if route.method == "GET":
            assert route.request_model is None and route.request_media_type is None
    public = {route.name for route in p.ROUTES if not route.auth}
    assert public == {"register", "login", "health"}


def sample(name: str) -> object:
    return {"namespace_id": NS, "chunk_id": CHUNK, "session_id": "0" * 32}[name]


def test_headers_carry_the_version_and_the_token() -> None:
    token = "A" * 43
    headers = p.request_headers(token)
    assert headers == {"Boxfs-Protocol": "1", "Authorization": f"Bearer {token}"}
    p.check_protocol_version(headers[p.PROTOCOL_HEADER])
    assert p.parse_bearer(headers[p.AUTHORIZATION_HEADER]) == token
    with pytest.raises(p.UnsupportedProtocolError) as info:
        p.check_protocol_version("2")
    assert info.value.detail["supported"] == [1]
    with pytest.raises(p.UnsupportedProtocolError):
        p.check_protocol_version(None)
    for bad in (None, "", "Basic abc", "Bearer", "Bearer short", f"Bearer {token} x"):
        with pytest.raises(p.UnauthorizedError):
            p.parse_bearer(bad)


def test_path_parameters_parse_to_typed_ids() -> None:
    assert p.parse_id(NamespaceId, NS.hex()) == NS
    with pytest.raises(p.InvalidIdError):
        p.parse_id(ChunkId, "00")
    with pytest.raises(p.InvalidIdError):
        p.parse_session_id("x")


# --- errors -----------------------------------------------------------------------------------

DETAILS: dict[str, dict[str, Any]] = {
    "not_found": {"what": "chunk", "name": CHUNK.hex()},
    "conflict": {"path": "a/b", "reason": "exists already"},
    "stale_base": {"path": "a/b", "reason": "content changed"},
    "integrity": {"what": "chunk", "expected": "aa", "actual": "bb"},
    "rate_limited": {"retry_after_s": 2},
}


@pytest.mark.parametrize("entry", p.ERROR_CODES, ids=lambda entry: entry.code)
def test_error_table_round_trips_every_code(entry: p.ErrorCode) -> None:
    sent = p.ErrorBody(code=entry.code, message="", detail=DETAILS.get(entry.code, {"n": 1}))
    exc = p.error_for(p.ErrorBody.model_validate_json(sent.model_dump_json()))
    assert type(exc) is entry.exception
    status, body = p.body_for(exc)
    assert (status, body.code) == (entry.status, entry.code)
    if entry.code in DETAILS:
        assert body.detail == DETAILS[entry.code]
    # And once more: the body built from the client's exception means the same thing.
    assert type(p.error_for(body)) is entry.exception


@pytest.mark.parametrize(
    "exc, code",
    [
        (NotFoundError("namespace", NS.hex()), "not_found"),
        (ConflictError("a", "is a directory"), "conflict"),
        (p.StaleBaseError("a", "changed"), "stale_base"),
        (IntegrityError("aa", "bb"), "integrity"),
        (FormatError("truncated frame"), "bad_request"),
        (TransientError("map full"), "unavailable"),
        (CryptoError("bad key"), "internal"),
        (StoreError("???"), "internal"),
        (p.TokenExpiredError("expired"), "token_expired"),
    ],
)
def test_server_exceptions_map_to_their_codes(exc: StoreError, code: str) -> None:
    status, body = p.body_for(exc)
    assert body.code == code and status == p.ERROR_TABLE[code].status


def test_the_same_store_class_arrives_on_the_client() -> None:
    _, body = p.body_for(IntegrityError("aa", "bb", what="tree"))
    exc = p.error_for(body)
    assert isinstance(exc, IntegrityError)
    assert (exc.expected, exc.actual, exc.what) == ("aa", "bb", "tree")
    assert str(exc) == body.message
    assert isinstance(p.error_for(p.body_for(p.StaleBaseError("a", "b"))[1]), ConflictError)


def test_internal_errors_never_leak_their_message() -> None:
    _, body = p.body_for(p.InternalError("password=hunter2 in /srv/db", {"trace": "x"}))
    assert body.message == "internal server error" and body.detail == {}
    _, body = p.body_for(CryptoError("master key file /etc/boxfs/key unreadable"))
    assert "/etc" not in body.message


def test_transient_codes_are_transient_errors() -> None:
    exc = p.error_for(
        p.ErrorBody(code="rate_limited", message="slow down", detail={"retry_after_s": 3})
    )
    assert isinstance(exc, TransientError) and isinstance(exc, p.RateLimitedError)
    assert exc.retry_after_s == 3.0
    assert isinstance(p.error_for(p.ErrorBody(code="unavailable", message="")), TransientError)


def test_an_unknown_code_from_a_newer_server_is_kept() -> None:
    exc = p.error_for(p.ErrorBody(code="quota_exceeded", message="full", detail={}))
    assert type(exc) is p.ProtocolError
    assert isinstance(exc, p.ProtocolError) and exc.code == "quota_exceeded"
    assert p.body_for(exc)[1].code == "quota_exceeded"


@pytest.mark.parametrize(
    "status, content, kind",
    [
        (502, b"<html>Bad Gateway</html>", p.UnavailableError),
        (504, b"", p.UnavailableError),
        (500, b"oops", p.InternalError),
        (404, b"Not Found", NotFoundError),
        (401, b"", p.UnauthorizedError),
        (418, b"teapot", p.BadRequestError),
        (409, b'{"code": "stale_base", "message": "m", "detail": {}}', p.StaleBaseError),
    ],
)
def test_error_responses_without_a_body_map_by_status(
    status: int, content: bytes, kind: type[StoreError]
) -> None:
    assert type(p.error_for_response(status, content)) is kind


def test_error_codes_are_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for entry in p.ERROR_CODES:
        assert re.search(rf"`{entry.code}`\s*\|\s*{entry.status}\b", text), entry.code
    for route in p.ROUTES:
        assert f"`{route.method} {route.template}`" in text, route.name
