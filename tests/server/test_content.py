"""The content routes (server/content.py): namespaces and heads, chunk upload and download,
trees, commits and the log, their authorization rule, their bounds, and encryption at rest.

In-process, through ``TestClient`` (so the lifespan runs). Users register and log in
through the API; trees, commits and heads are written straight into the database by a small
helper here (the commit path is tested on its own), and a viewer membership likewise.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from httpx import Response

from server import content
from server import db as tables
from server.app import create_app
from server.settings import Settings
from server.state import ServerState, now_ns
from store import protocol
from store.errors import FormatError
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId, CommitId, NamespaceId, TreeId, chunk_id_of, content_hash_of
from store.merkle import EMPTY_TREE_ID, MemoryTrees, apply_edits
from store.objects import (
    EMPTY_TREE,
    ChunkRef,
    Commit,
    EntryKind,
    FileEntry,
    decode_commit,
    decode_tree,
)
from store.ops import Put

PASSWORD = "correct horse battery"  # noqa: S105  (a test account)


# --- fixtures and helpers -----------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    username: str
    user_id: int
    token: str
    home: NamespaceId

    @property
    def headers(self) -> dict[str, str]:
        return protocol.request_headers(self.token)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as test_client:
        yield test_client


def server(client: TestClient) -> ServerState:
    state = client.app.state.server  # type: ignore[attr-defined]
    assert isinstance(state, ServerState)
    return state


def register(client: TestClient, username: str) -> User:
    headers = protocol.request_headers()
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    reply = client.post(protocol.REGISTER.fill(), json=body, headers=headers)
    assert reply.status_code == 201, reply.text
    login = {"username": username, "password": PASSWORD, "device_name": "laptop"}
    reply = client.post(protocol.LOGIN.fill(), json=login, headers=headers)
    assert reply.status_code == 200, reply.text
    token = protocol.LoginResponse.model_validate_json(reply.content).token
    listing = client.get(protocol.NAMESPACES.fill(), headers=protocol.request_headers(token))
    home = next(info for info in listing.json()["namespaces"] if info["home"])
    with server(client).db.read() as connection:
        user_id = connection.execute(
            sa.select(tables.users.c.id).where(tables.users.c.username == username)
        ).scalar_one()
    return User(username, user_id, token, NamespaceId.from_hex(home["namespace_id"]))


@pytest.fixture
def alice(client: TestClient) -> User:
    return register(client, "alice")


@pytest.fixture
def bob(client: TestClient) -> User:
    return register(client, "bob")


def make_chunk(size: int = 4096) -> tuple[ChunkId, bytes, bytes]:
    """(id, frame, plaintext) of random, incompressible content: the frame is raw."""
    plaintext = os.urandom(size)
    return chunk_id_of(plaintext), encode_frame(plaintext), plaintext


def record_stream(records: Sequence[tuple[ChunkId, bytes]]) -> bytes:
    pieces = protocol.encode_record_stream(
        ChunkId, [protocol.Record(chunk_id, frame) for chunk_id, frame in records]
    )
    return b"".join(pieces)


def upload(
    client: TestClient, user: User, records: Sequence[tuple[ChunkId, bytes]], ns: NamespaceId
) -> Response:
    reply: Response = client.post(
        protocol.UPLOAD_CHUNKS.fill(namespace_id=ns),
        content=record_stream(records),
        headers={**user.headers, "Content-Type": protocol.RECORD_STREAM_MEDIA_TYPE},
    )
    return reply


def missing(client: TestClient, user: User, ids: Sequence[bytes], ns: NamespaceId) -> Response:
    reply: Response = client.post(
        protocol.MISSING_CHUNKS.fill(namespace_id=ns),
        json={"ids": [object_id.hex() for object_id in ids]},
        headers=user.headers,
    )
    return reply


def download(client: TestClient, user: User, ids: Sequence[bytes], ns: NamespaceId) -> Response:
    reply: Response = client.post(
        protocol.DOWNLOAD_CHUNKS.fill(namespace_id=ns),
        json={"ids": [object_id.hex() for object_id in ids]},
        headers=user.headers,
    )
    return reply


def records_of(reply: Response, id_type: type[protocol.IdT]) -> list[protocol.Record[protocol.IdT]]:
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == protocol.RECORD_STREAM_MEDIA_TYPE
    return list(protocol.parse_record_stream(id_type, [reply.content]))


def blob_path(client: TestClient, chunk_id: ChunkId) -> Path:
    text = chunk_id.hex()
    return server(client).settings.blob_dir / text[:2] / text[2:4] / text


def add_viewer(client: TestClient, ns: NamespaceId, user: User, role: str = "viewer") -> None:
    with server(client).db.write() as connection:
        connection.execute(
            tables.memberships.insert().values(
                namespace_id=bytes(ns), user_id=user.user_id, role=role
            )
        )


def add_commit(
    client: TestClient,
    ns: NamespaceId,
    name: bytes,
    data: bytes,
    *,
    retained: bool = True,
) -> tuple[CommitId, TreeId]:
    """A commit of a drive holding one file ``name`` with ``data``, written straight into
    the database as the commit path would: trees, their namespace_objects rows, the commit,
    and the head moved on."""
    chunks = (ChunkRef(chunk_id_of(data), len(data)),) if data else ()
    entry = FileEntry(
        name=name,
        kind=EntryKind.FILE,
        mode=0o644,
        uid=1000,
        gid=1000,
        size=len(data),
        mtime_ns=1_700_000_000_000_000_000,
        chunks=chunks,
        content_hash=content_hash_of(data),
    )
    result = apply_edits(
        MemoryTrees(), EMPTY_TREE_ID, [Put(protocol.DrivePath.from_bytes(name), entry)]
    )
    added = now_ns()
    with server(client).db.write() as connection:
        row = connection.execute(
            sa.select(tables.namespaces.c.head, tables.namespaces.c.sequence).where(
                tables.namespaces.c.id == bytes(ns)
            )
        ).one()
        parents = (CommitId(bytes(row.head)),) if row.head is not None else ()
        sequence = row.sequence + 1
        commit = Commit(ns, result.root, parents, "alice", "laptop", added, f"commit {sequence}")
        for tree_id, encoding in result.new_trees.items():
            exists = connection.execute(
                sa.select(tables.trees.c.id).where(tables.trees.c.id == bytes(tree_id))
            ).first()
            if exists is None:
                connection.execute(tables.trees.insert().values(id=bytes(tree_id), data=encoding))
            connection.execute(
                tables.namespace_objects.insert().values(
                    namespace_id=bytes(ns), object_id=bytes(tree_id), kind="t", added_ns=added
                )
            )
        connection.execute(
            tables.commits.insert().values(
                id=bytes(commit.id),
                namespace_id=bytes(ns),
                sequence=sequence,
                time_ns=added,
                data=commit.encode(),
                retained=retained,
            )
        )
        connection.execute(
            tables.namespaces.update()
            .where(tables.namespaces.c.id == bytes(ns))
            .values(head=bytes(commit.id), sequence=sequence)
        )
    return commit.id, result.root


def assert_error(reply: Response, status: int, code: str) -> dict[str, object]:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["code"] == code, body
    assert isinstance(body, dict)
    return body


# --- namespaces and heads ------------------------------------------------------------------------


def test_namespaces_lists_the_home_drive_with_role_head_and_sequence(
    client: TestClient, alice: User
) -> None:
    reply = client.get(protocol.NAMESPACES.fill(), headers=alice.headers)
    listing = protocol.NamespaceList.model_validate_json(reply.content)
    assert len(listing.namespaces) == 1
    home = listing.namespaces[0]
    assert (home.namespace_id, home.role, home.head, home.home, home.sequence) == (
        alice.home,
        "owner",
        None,
        True,
        0,
    )


def test_head_follows_the_newest_commit(client: TestClient, alice: User) -> None:
    url = protocol.HEAD.fill(namespace_id=alice.home)
    empty = protocol.HeadInfo.model_validate_json(client.get(url, headers=alice.headers).content)
    assert (empty.head, empty.sequence) == (None, 0)
    add_commit(client, alice.home, b"a.txt", b"one")
    second, _ = add_commit(client, alice.home, b"a.txt", b"two")
    head = protocol.HeadInfo.model_validate_json(client.get(url, headers=alice.headers).content)
    assert (head.namespace_id, head.head, head.sequence) == (alice.home, second, 2)


# --- upload, missing, download -------------------------------------------------------------------


def test_upload_then_nothing_is_missing_and_download_gives_back_the_exact_frames(
    client: TestClient, alice: User
) -> None:
    chunks = [make_chunk(size) for size in (1, 5000, 300_000)]
    ids = [chunk_id for chunk_id, _, _ in chunks]
    reply = missing(client, alice, ids, alice.home)
    assert protocol.MissingChunksResponse.model_validate_json(reply.content).missing == tuple(ids)

    reply = upload(client, alice, [(chunk_id, frame) for chunk_id, frame, _ in chunks], alice.home)
    assert reply.status_code == 200, reply.text
    assert protocol.ChunkUploadResponse.model_validate_json(reply.content).stored == tuple(ids)

    reply = missing(client, alice, ids, alice.home)
    assert protocol.MissingChunksResponse.model_validate_json(reply.content).missing == ()

    wanted = [ids[2], ids[0], ids[2], ids[1]]  # any order, repeats allowed
    records = records_of(download(client, alice, wanted, alice.home), ChunkId)
    assert [record.object_id for record in records] == wanted
    by_id = {chunk_id: (frame, plaintext) for chunk_id, frame, plaintext in chunks}
    for record in records:
        frame, plaintext = by_id[record.object_id]
        assert record.payload == frame
        assert decode_frame(record.payload, record.object_id) == plaintext


def test_one_chunk_is_served_as_a_frame(client: TestClient, alice: User) -> None:
    chunk_id, frame, _ = make_chunk()
    assert upload(client, alice, [(chunk_id, frame)], alice.home).status_code == 200
    url = protocol.CHUNK.fill(namespace_id=alice.home, chunk_id=chunk_id)
    reply = client.get(url, headers=alice.headers)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == protocol.FRAME_MEDIA_TYPE
    assert reply.content == frame


def test_missing_reports_each_absent_id_once_in_request_order(
    client: TestClient, alice: User
) -> None:
    first, second = make_chunk(), make_chunk()
    held = make_chunk()
    assert upload(client, alice, [held[:2]], alice.home).status_code == 200
    ids = [second[0], held[0], first[0], second[0]]
    reply = missing(client, alice, ids, alice.home)
    assert protocol.MissingChunksResponse.model_validate_json(reply.content).missing == (
        second[0],
        first[0],
    )


def test_chunks_rest_encrypted_and_the_blob_holds_no_plaintext(
    client: TestClient, alice: User
) -> None:
    chunk_id, frame, plaintext = make_chunk(64 * 1024)
    assert upload(client, alice, [(chunk_id, frame)], alice.home).status_code == 200
    blob = blob_path(client, chunk_id).read_bytes()
    assert plaintext[1000:1064] not in blob
    assert frame[100:164] not in blob
    assert server(client).keyring.open(chunk_id, blob) == frame


def test_uploading_a_chunk_another_user_holds_does_the_same_work_as_a_new_one(
    client: TestClient, alice: User, bob: User
) -> None:
    """No timing oracle: skipping the seal and the write of a blob the server holds would
    answer bob sooner, and tell him that someone else has this content."""
    chunk_id, frame, _ = make_chunk()
    assert upload(client, alice, [(chunk_id, frame)], alice.home).status_code == 200
    before = blob_path(client, chunk_id).stat()
    reply = upload(client, bob, [(chunk_id, frame)], bob.home)
    assert protocol.ChunkUploadResponse.model_validate_json(reply.content).stored == (chunk_id,)
    after = blob_path(client, chunk_id).stat()
    assert after.st_ino != before.st_ino  # sealed afresh and written (atomically) again
    assert server(client).keyring.open(chunk_id, blob_path(client, chunk_id).read_bytes()) == frame


def test_a_chunk_row_gone_since_it_was_seen_is_reported_for_rewriting(
    client: TestClient, alice: User
) -> None:
    chunk_id, frame, _ = make_chunk()
    state = server(client)
    reused = content.StoredChunk(chunk_id, len(decode_frame(frame, chunk_id)), None)
    vanished = content.record_chunks(state.db, alice.home, alice.user_id, [reused], now_ns())
    assert vanished == [chunk_id]
    reply = missing(client, alice, [chunk_id], alice.home)
    assert protocol.MissingChunksResponse.model_validate_json(reply.content).missing == (chunk_id,)


def test_upload_and_download_are_audited_once_per_batch(client: TestClient, alice: User) -> None:
    chunks = [make_chunk() for _ in range(3)]
    upload(client, alice, [(chunk_id, frame) for chunk_id, frame, _ in chunks], alice.home)
    records_of(download(client, alice, [chunks[0][0], make_chunk()[0]], alice.home), ChunkId)
    reply = client.get(protocol.AUDIT_LOG.fill(), headers=alice.headers)
    page = protocol.AuditPage.model_validate_json(reply.content)
    uploads = [record for record in page.records if record.action == "upload"]
    downloads = [record for record in page.records if record.action == "download"]
    assert len(uploads) == 1
    assert len(downloads) == 1
    assert uploads[0].outcome == "success"
    assert uploads[0].namespace_id == alice.home
    assert uploads[0].detail["chunks"] == "3"
    assert uploads[0].detail["frame_bytes"] == str(sum(len(c[1]) for c in chunks))
    assert downloads[0].detail["chunks"] == "1"
    assert downloads[0].detail["missing"] == "1"
    assert downloads[0].detail["plain_bytes"] == str(len(chunks[0][2]))


# --- integrity and malformed uploads -------------------------------------------------------------


def test_a_frame_that_does_not_hash_to_its_id_is_refused_naming_the_id(
    client: TestClient, alice: User
) -> None:
    chunk_id, _, _ = make_chunk()
    _, other_frame, _ = make_chunk()
    reply = upload(client, alice, [(chunk_id, other_frame)], alice.home)
    body = assert_error(reply, 422, "integrity")
    assert body["detail"]["expected"] == chunk_id.hex()  # type: ignore[index]
    assert chunk_id.hex() in str(body["message"])
    reply = missing(client, alice, [chunk_id], alice.home)
    assert protocol.MissingChunksResponse.model_validate_json(reply.content).missing == (chunk_id,)
    [record] = records_of(download(client, alice, [chunk_id], alice.home), ChunkId)
    assert record.missing
    assert not blob_path(client, chunk_id).exists()


def test_a_malformed_frame_is_an_integrity_error_naming_the_id(
    client: TestClient, alice: User
) -> None:
    chunk_id, frame, _ = make_chunk()
    garbage = b"\x07" + frame[1:]  # unknown frame version
    body = assert_error(upload(client, alice, [(chunk_id, garbage)], alice.home), 422, "integrity")
    assert body["detail"]["expected"] == chunk_id.hex()  # type: ignore[index]
    reply = missing(client, alice, [chunk_id], alice.home)
    assert protocol.MissingChunksResponse.model_validate_json(reply.content).missing == (chunk_id,)


def test_a_truncated_upload_stream_is_a_bad_request(client: TestClient, alice: User) -> None:
    chunk_id, frame, _ = make_chunk()
    body = record_stream([(chunk_id, frame)])
    for cut in (0, 3, 20, len(body) - 1):
        reply = client.post(
            protocol.UPLOAD_CHUNKS.fill(namespace_id=alice.home),
            content=body[:cut],
            headers=alice.headers,
        )
        assert_error(reply, 400, "bad_request")


def test_a_record_over_the_frame_bound_is_a_bad_request(client: TestClient, alice: User) -> None:
    chunk_id, _, _ = make_chunk()
    header = b"".join(protocol.encode_record_stream(ChunkId, []))[:8]
    head = struct.pack(">B32sI", 1, chunk_id, protocol.MAX_FRAME_BYTES + 1)
    reply = client.post(
        protocol.UPLOAD_CHUNKS.fill(namespace_id=alice.home),
        content=header + head + b"\0" * 1024,
        headers=alice.headers,
    )
    body = assert_error(reply, 400, "bad_request")
    assert str(protocol.MAX_FRAME_BYTES) in str(body["message"])


def test_a_record_over_the_frame_bound_is_refused_without_reading_the_rest(
    client: TestClient, alice: User
) -> None:
    chunk_id, _, _ = make_chunk()
    header = b"".join(protocol.encode_record_stream(ChunkId, []))[:8]
    head = struct.pack(">B32sI", 1, chunk_id, 2**31)
    pulled = 0

    async def endless_body() -> AsyncIterator[bytes]:
        nonlocal pulled
        pulled += 1
        yield header + head
        while True:  # a sender that would go on for 2 GiB
            pulled += 1
            yield b"\0" * 65536

    async def receive() -> None:
        await content.receive_chunks(server(client), alice.home, alice.user_id, endless_body())

    assert client.portal is not None
    with pytest.raises(FormatError, match="over"):
        client.portal.call(receive)
    assert pulled == 1


def test_more_than_the_record_bound_is_batch_too_large(client: TestClient, alice: User) -> None:
    chunk_id, frame, _ = make_chunk(16)
    records = [(chunk_id, frame)] * (protocol.MAX_IDS_PER_REQUEST + 1)
    assert_error(upload(client, alice, records, alice.home), 413, "batch_too_large")


def test_an_upload_is_stored_in_batches_and_a_bad_record_keeps_the_earlier_batches(
    client: TestClient, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(content, "FLUSH_RECORDS", 3)
    good = [make_chunk(100) for _ in range(7)]
    reply = upload(client, alice, [chunk[:2] for chunk in good], alice.home)
    stored = protocol.ChunkUploadResponse.model_validate_json(reply.content).stored
    assert stored == tuple(chunk[0] for chunk in good)

    fresh = [make_chunk(100) for _ in range(7)]
    bad_id = make_chunk(100)[0]
    stream = [chunk[:2] for chunk in fresh[:6]] + [(bad_id, fresh[6][1])]
    body = assert_error(upload(client, alice, stream, alice.home), 422, "integrity")
    assert body["detail"]["expected"] == bad_id.hex()  # type: ignore[index]
    ids = [chunk[0] for chunk in fresh[:6]] + [bad_id]
    reply = missing(client, alice, ids, alice.home)
    # The two batches before the bad record's batch stayed, each blob with its rows.
    assert protocol.MissingChunksResponse.model_validate_json(reply.content).missing == (bad_id,)
    for chunk_id, frame, _ in fresh[:6]:
        assert (
            server(client).keyring.open(chunk_id, blob_path(client, chunk_id).read_bytes()) == frame
        )


# --- ids and bounds ------------------------------------------------------------------------------


def test_malformed_ids_in_paths_are_invalid_id(client: TestClient, alice: User) -> None:
    chunk_id, _, _ = make_chunk()
    good_ns = alice.home.hex()
    for bad in ("xyz", good_ns.upper(), good_ns[:-1], good_ns + "0"):
        base = f"/v1/namespaces/{bad}"
        assert_error(client.get(f"{base}/head", headers=alice.headers), 400, "invalid_id")
        assert_error(client.get(f"{base}/log", headers=alice.headers), 400, "invalid_id")
        reply = client.post(f"{base}/chunks/upload", content=b"", headers=alice.headers)
        assert_error(reply, 400, "invalid_id")
        reply = client.get(f"{base}/chunks/{chunk_id.hex()}", headers=alice.headers)
        assert_error(reply, 400, "invalid_id")
    for bad in ("nothex" * 8, chunk_id.hex().upper(), chunk_id.hex()[:62]):
        reply = client.get(f"/v1/namespaces/{good_ns}/chunks/{bad}", headers=alice.headers)
        assert_error(reply, 400, "invalid_id")


@pytest.mark.parametrize(
    "route", [protocol.MISSING_CHUNKS, protocol.DOWNLOAD_CHUNKS, protocol.TREES, protocol.COMMITS]
)
def test_malformed_ids_in_bodies_are_invalid_id(
    client: TestClient, alice: User, route: protocol.Route
) -> None:
    url = route.fill(namespace_id=alice.home)
    for bad in ("zz" * 32, "ab" * 31, ("ab" * 32).upper(), 7):
        reply = client.post(url, json={"ids": [bad]}, headers=alice.headers)
        assert_error(reply, 400, "invalid_id")


@pytest.mark.parametrize(
    "route", [protocol.MISSING_CHUNKS, protocol.DOWNLOAD_CHUNKS, protocol.TREES, protocol.COMMITS]
)
def test_too_many_ids_are_batch_too_large(
    client: TestClient, alice: User, route: protocol.Route
) -> None:
    ids = [secrets.token_hex(32) for _ in range(protocol.MAX_IDS_PER_REQUEST + 1)]
    reply = client.post(
        route.fill(namespace_id=alice.home), json={"ids": ids}, headers=alice.headers
    )
    assert_error(reply, 413, "batch_too_large")


# --- authorization --------------------------------------------------------------------------------


def _namespace_requests(
    client: TestClient, user: User, ns: NamespaceId, chunk_id: ChunkId, frame: bytes
) -> dict[str, Response]:
    return {
        "head": client.get(protocol.HEAD.fill(namespace_id=ns), headers=user.headers),
        "log": client.get(protocol.LOG.fill(namespace_id=ns), headers=user.headers),
        "missing": missing(client, user, [chunk_id], ns),
        "upload": upload(client, user, [(chunk_id, frame)], ns),
        "download": download(client, user, [chunk_id], ns),
        "chunk": client.get(
            protocol.CHUNK.fill(namespace_id=ns, chunk_id=chunk_id), headers=user.headers
        ),
        "trees": client.post(
            protocol.TREES.fill(namespace_id=ns),
            json={"ids": [EMPTY_TREE_ID.hex()]},
            headers=user.headers,
        ),
        "commits": client.post(
            protocol.COMMITS.fill(namespace_id=ns),
            json={"ids": [secrets.token_hex(32)]},
            headers=user.headers,
        ),
    }


def test_another_users_namespace_answers_exactly_like_one_that_does_not_exist(
    client: TestClient, alice: User, bob: User
) -> None:
    chunk_id, frame, _ = make_chunk()
    assert upload(client, alice, [(chunk_id, frame)], alice.home).status_code == 200
    add_commit(client, alice.home, b"secret.txt", b"secret")
    nowhere = NamespaceId(secrets.token_bytes(16))
    foreign = _namespace_requests(client, bob, alice.home, chunk_id, frame)
    absent = _namespace_requests(client, bob, nowhere, chunk_id, frame)
    for name, reply in foreign.items():
        body = assert_error(reply, 404, "not_found")
        other = absent[name].json()
        assert (absent[name].status_code, other["code"]) == (404, "not_found"), name
        assert body["detail"] == {"what": "namespace", "name": alice.home.hex()}, name
        assert other["detail"] == {"what": "namespace", "name": nowhere.hex()}, name
    # Bob's failed upload attempt left nothing in Alice's namespace.
    listing = client.get(protocol.NAMESPACES.fill(), headers=bob.headers).json()["namespaces"]
    assert [info["namespace_id"] for info in listing] == [bob.home.hex()]


def test_a_chunk_held_only_for_another_user_is_missing_until_uploaded_in_full(
    client: TestClient, alice: User, bob: User
) -> None:
    chunk_id, frame, plaintext = make_chunk()
    assert upload(client, alice, [(chunk_id, frame)], alice.home).status_code == 200

    reply = missing(client, bob, [chunk_id], bob.home)
    assert protocol.MissingChunksResponse.model_validate_json(reply.content).missing == (chunk_id,)
    [record] = records_of(download(client, bob, [chunk_id], bob.home), ChunkId)
    assert record.missing
    chunk_url = protocol.CHUNK.fill(namespace_id=bob.home, chunk_id=chunk_id)
    body = assert_error(client.get(chunk_url, headers=bob.headers), 404, "not_found")
    assert body["detail"] == {"what": "chunk", "name": chunk_id.hex()}
    # Exactly what an id that exists nowhere gets.
    unknown = make_chunk()[0]
    [nothing] = records_of(download(client, bob, [unknown], bob.home), ChunkId)
    assert nothing.missing

    # A forged frame under the known id does not get Bob a reference.
    assert_error(upload(client, bob, [(chunk_id, make_chunk()[1])], bob.home), 422, "integrity")
    [record] = records_of(download(client, bob, [chunk_id], bob.home), ChunkId)
    assert record.missing

    assert upload(client, bob, [(chunk_id, frame)], bob.home).status_code == 200
    [record] = records_of(download(client, bob, [chunk_id], bob.home), ChunkId)
    assert record.payload is not None
    assert decode_frame(record.payload, chunk_id) == plaintext
    assert client.get(chunk_url, headers=bob.headers).content == frame


def test_a_viewer_reads_but_cannot_upload_or_ask_what_is_missing(
    client: TestClient, alice: User, bob: User
) -> None:
    chunk_id, frame, _ = make_chunk()
    assert upload(client, alice, [(chunk_id, frame)], alice.home).status_code == 200
    _, root = add_commit(client, alice.home, b"shared.txt", b"shared")
    add_viewer(client, alice.home, bob)

    body = assert_error(upload(client, bob, [make_chunk()[:2]], alice.home), 403, "forbidden")
    assert body["detail"] == {"role": "viewer", "needs": "editor"}
    assert_error(missing(client, bob, [chunk_id], alice.home), 403, "forbidden")

    [record] = records_of(download(client, bob, [chunk_id], alice.home), ChunkId)
    assert record.payload == frame
    reply = client.post(
        protocol.TREES.fill(namespace_id=alice.home),
        json={"ids": [root.hex()]},
        headers=bob.headers,
    )
    [tree] = records_of(reply, TreeId)
    assert tree.payload is not None
    log = client.get(protocol.LOG.fill(namespace_id=alice.home), headers=bob.headers)
    assert len(log.json()["commits"]) == 1


def test_an_editor_may_upload_into_a_shared_namespace(
    client: TestClient, alice: User, bob: User
) -> None:
    add_viewer(client, alice.home, bob, role="editor")
    chunk_id, frame, _ = make_chunk()
    assert upload(client, bob, [(chunk_id, frame)], alice.home).status_code == 200
    [record] = records_of(download(client, alice, [chunk_id], alice.home), ChunkId)
    assert record.payload == frame


# --- server-side damage ------------------------------------------------------------------------


def test_a_corrupt_stored_blob_is_missing_in_a_batch_and_internal_alone(
    client: TestClient, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    damaged, intact = make_chunk(), make_chunk()
    upload(client, alice, [damaged[:2], intact[:2]], alice.home)
    path = blob_path(client, damaged[0])
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))

    records = records_of(download(client, alice, [damaged[0], intact[0]], alice.home), ChunkId)
    assert records[0].missing
    assert records[1].payload == intact[1]
    assert damaged[0].hex() in caplog.text

    url = protocol.CHUNK.fill(namespace_id=alice.home, chunk_id=damaged[0])
    body = assert_error(client.get(url, headers=alice.headers), 500, "internal")
    assert body["detail"] == {}


# --- trees, commits, log -------------------------------------------------------------------------


def test_trees_are_served_only_when_the_namespace_references_them(
    client: TestClient, alice: User, bob: User
) -> None:
    _, root = add_commit(client, alice.home, b"notes.txt", b"hello")
    _, bobs_root = add_commit(client, bob.home, b"bob.txt", b"bob's")
    url = protocol.TREES.fill(namespace_id=alice.home)
    ids = [root, bobs_root, EMPTY_TREE_ID, TreeId(secrets.token_bytes(32)), root]
    reply = client.post(
        url, json={"ids": [tree_id.hex() for tree_id in ids]}, headers=alice.headers
    )
    records = records_of(reply, TreeId)
    assert [record.object_id for record in records] == ids
    assert records[0].payload is not None
    assert decode_tree(records[0].payload, root).get(b"notes.txt") is not None
    assert records[1].missing  # Bob's tree, though the server holds it
    assert records[2].payload == EMPTY_TREE.encode()
    assert records[3].missing
    assert records[4].payload == records[0].payload


def test_trees_are_fetched_in_groups_when_they_are_large(
    client: TestClient, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(content, "FETCH_BYTES", 1)
    roots = [add_commit(client, alice.home, b"f%d" % n, b"x" * n)[1] for n in range(5)]
    reply = client.post(
        protocol.TREES.fill(namespace_id=alice.home),
        json={"ids": [root.hex() for root in roots]},
        headers=alice.headers,
    )
    records = records_of(reply, TreeId)
    for root, record in zip(roots, records, strict=True):
        assert record.payload is not None
        decode_tree(record.payload, root)


def test_commits_are_served_only_from_their_own_namespace(
    client: TestClient, alice: User, bob: User
) -> None:
    first, root = add_commit(client, alice.home, b"a", b"1")
    second, _ = add_commit(client, alice.home, b"a", b"2")
    bobs, _ = add_commit(client, bob.home, b"b", b"3")
    ids = [second, bobs, first]
    reply = client.post(
        protocol.COMMITS.fill(namespace_id=alice.home),
        json={"ids": [commit_id.hex() for commit_id in ids]},
        headers=alice.headers,
    )
    records = records_of(reply, CommitId)
    assert [record.object_id for record in records] == ids
    assert records[1].missing
    assert records[0].payload is not None
    assert records[2].payload is not None
    assert decode_commit(records[0].payload, second).parents == (first,)
    assert decode_commit(records[2].payload, first).root == root


def test_the_log_pages_through_retained_commits_newest_first(
    client: TestClient, alice: User
) -> None:
    made = [add_commit(client, alice.home, b"f", b"v%d" % n)[0] for n in range(7)]
    thinned = add_commit(client, alice.home, b"f", b"thinned", retained=False)[0]
    newest = add_commit(client, alice.home, b"f", b"last")[0]
    expected = [newest, *reversed(made)]

    seen: list[CommitId] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = protocol.LogQuery(cursor=cursor, limit=3)
        reply = client.get(
            protocol.LOG.fill(namespace_id=alice.home),
            params=protocol.query_params(query),
            headers=alice.headers,
        )
        page = protocol.LogPage.model_validate_json(reply.content)
        seen += [info.commit_id for info in page.commits]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected
    assert thinned not in seen
    assert pages == 3
    default = client.get(protocol.LOG.fill(namespace_id=alice.home), headers=alice.headers)
    info = protocol.LogPage.model_validate_json(default.content).commits[0]
    assert (info.commit_id, info.author, info.summary) == (newest, "alice", "commit 9")


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "9" * 40])
def test_a_log_cursor_the_server_did_not_make_is_a_bad_request(
    client: TestClient, alice: User, cursor: str
) -> None:
    reply = client.get(
        protocol.LOG.fill(namespace_id=alice.home),
        params={"cursor": cursor},
        headers=alice.headers,
    )
    assert_error(reply, 400, "bad_request")


def test_an_empty_namespace_has_an_empty_log(client: TestClient, alice: User) -> None:
    reply = client.get(protocol.LOG.fill(namespace_id=alice.home), headers=alice.headers)
    page = protocol.LogPage.model_validate_json(reply.content)
    assert (page.commits, page.next_cursor) == ((), None)


def test_object_records_keep_request_order_across_fetch_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(content, "FETCH_BYTES", 10)
    stored = {bytes([n]) * 32: bytes([n]) * 6 for n in range(5)}
    fetches: list[list[bytes]] = []

    def fetch(ids: list[bytes]) -> dict[bytes, bytes]:
        fetches.append(ids)
        return {object_id: stored[object_id] for object_id in ids}

    ids = [TreeId(bytes([n]) * 32) for n in (3, 9, 0, 3, 1, 2, 4)]
    sizes = {object_id: len(data) for object_id, data in stored.items()}
    records = list(content.object_records(ids, sizes, fetch, {}))
    assert [record.object_id for record in records] == ids
    assert [record.payload for record in records] == [stored.get(bytes(i)) for i in ids]
    assert all(sum(sizes[i] for i in group) <= 10 or len(group) == 1 for group in fetches)
    assert len(fetches) >= 3
