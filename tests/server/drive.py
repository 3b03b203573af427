"""A drive in-process for the server tests: users registered and logged in through the
API, chunks uploaded through UPLOAD_CHUNKS, ops applied through APPLY_OPS, and trees and
file contents read back from the database and the blob store as the server would.
Shared by ``test_commits``, ``test_history`` and ``test_retention`` (fixtures in
``conftest.py``)."""

from __future__ import annotations

import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi.testclient import TestClient
from httpx import Response

from server import commits
from server import db as tables
from server.sessions import Caller
from server.state import ServerState
from store import protocol
from store.chunking import ChunkStream
from store.frames import decode_frame, encode_frame
from store.ids import ChunkId, CommitId, ContentHash, NamespaceId, content_hash_of
from store.merkle import lookup, walk
from store.objects import EntryKind, FileEntry

PASSWORD = "correct horse battery"  # noqa: S105  (a test account)
MTIME_NS = 1_700_000_000_000_000_000


# --- the shared harness ---------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    username: str
    user_id: int
    token: str
    device: str
    session_id: str
    home: NamespaceId

    @property
    def headers(self) -> dict[str, str]:
        return protocol.request_headers(self.token)

    def caller(self) -> Caller:
        return Caller(self.user_id, self.username, self.session_id, self.device, "127.0.0.1")


def new_key() -> str:
    return secrets.token_urlsafe(24)


class Drive:
    """One in-process server and what tests do with it."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    @property
    def state(self) -> ServerState:
        state = self.client.app.state.server  # type: ignore[attr-defined]
        assert isinstance(state, ServerState)
        return state

    # accounts and memberships

    def register(self, username: str, device: str = "laptop") -> User:
        body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
        reply = self.client.post(
            protocol.REGISTER.fill(), json=body, headers=protocol.request_headers()
        )
        assert reply.status_code == 201, reply.text
        return self.login(username, device)

    def login(self, username: str, device: str) -> User:
        body = {"username": username, "password": PASSWORD, "device_name": device}
        reply = self.client.post(
            protocol.LOGIN.fill(), json=body, headers=protocol.request_headers()
        )
        assert reply.status_code == 200, reply.text
        login = protocol.LoginResponse.model_validate_json(reply.content)
        with self.state.db.read() as connection:
            row = connection.execute(
                sa.select(tables.users.c.id, tables.users.c.home_namespace).where(
                    tables.users.c.username == username
                )
            ).one()
        return User(
            username, row.id, login.token, device, login.session_id,
            NamespaceId(bytes(row.home_namespace)),
        )  # fmt: skip

    def add_member(self, ns: NamespaceId, user: User, role: str) -> None:
        with self.state.db.write() as connection:
            connection.execute(
                tables.memberships.insert().values(
                    namespace_id=bytes(ns), user_id=user.user_id, role=role
                )
            )

    # content

    def upload(self, user: User, ns: NamespaceId, data: bytes) -> list[ChunkId]:
        """Upload the chunks of ``data`` into ``ns`` through UPLOAD_CHUNKS."""
        records = [
            protocol.Record(piece.chunk_id, encode_frame(piece.data))
            for piece in ChunkStream(io.BytesIO(data))
        ]
        if not records:
            return []
        body = b"".join(protocol.encode_record_stream(ChunkId, records))
        reply = self.client.post(
            protocol.UPLOAD_CHUNKS.fill(namespace_id=ns),
            content=body,
            headers={**user.headers, "Content-Type": protocol.RECORD_STREAM_MEDIA_TYPE},
        )
        assert reply.status_code == 200, reply.text
        return [record.object_id for record in records]

    def file_entry(
        self, user: User, ns: NamespaceId, data: bytes, *, upload: bool = True, mode: int = 0o644
    ) -> protocol.EntryModel:
        """The entry of a file holding ``data``, its chunks uploaded first."""
        if upload:
            self.upload(user, ns, data)
        pieces = ChunkStream(io.BytesIO(data))
        chunks = tuple(
            protocol.ChunkRefModel(chunk_id=piece.chunk_id, length=piece.length) for piece in pieces
        )
        return protocol.EntryModel(
            kind="file", mode=mode, uid=1000, gid=1000, size=len(data), mtime_ns=MTIME_NS,
            chunks=chunks, content_hash=content_hash_of(data),
        )  # fmt: skip

    def put(
        self,
        user: User,
        ns: NamespaceId,
        path: str,
        data: bytes,
        base: ContentHash | None = None,
    ) -> protocol.PutOp:
        entry = self.file_entry(user, ns, data)
        return protocol.PutOp(
            path=protocol.DrivePath.from_bytes(path.encode()), entry=entry, base=base
        )

    # operations

    def post_ops(
        self, user: User, ns: NamespaceId, ops: Sequence[protocol.Op], key: str | None = None
    ) -> Response:
        batch = protocol.OpsBatch(idempotency_key=key or new_key(), ops=tuple(ops))
        reply: Response = self.client.post(
            protocol.APPLY_OPS.fill(namespace_id=ns),
            json=batch.model_dump(mode="json"),
            headers=user.headers,
        )
        return reply

    def apply(
        self, user: User, ns: NamespaceId, ops: Sequence[protocol.Op], key: str | None = None
    ) -> protocol.OpsBatchResponse:
        reply = self.post_ops(user, ns, ops, key)
        assert reply.status_code == 200, reply.text
        return protocol.OpsBatchResponse.model_validate_json(reply.content)

    # reading back

    def head(self, ns: NamespaceId) -> commits.Head:
        with self.state.db.read() as connection:
            return commits.read_head(connection, ns)

    def entry(self, ns: NamespaceId, path: str, at: CommitId | None = None) -> FileEntry | None:
        with self.state.db.read() as connection:
            if at is None:
                root = commits.read_head(connection, ns).root
            else:
                stored = commits.retained_commit(connection, ns, at)
                assert stored is not None
                root = stored.commit.root
            return lookup(commits.DbTrees(connection), root, path.encode())

    def listing(self, ns: NamespaceId) -> dict[str, FileEntry]:
        with self.state.db.read() as connection:
            root = commits.read_head(connection, ns).root
            return {path.decode(): entry for path, entry in walk(commits.DbTrees(connection), root)}

    def read(self, ns: NamespaceId, path: str, at: CommitId | None = None) -> bytes:
        """A file's content, each chunk read back from the blob store and opened with the
        keyring, then verified against the file's content hash."""
        entry = self.entry(ns, path, at)
        assert entry is not None and entry.kind is EntryKind.FILE, path
        pieces = []
        for ref in entry.chunks:
            sealed = self.state.blobs.get(ref.chunk_id)
            pieces.append(decode_frame(self.state.keyring.open(ref.chunk_id, sealed), ref.chunk_id))
        content = b"".join(pieces)
        assert content_hash_of(content) == entry.content_hash
        return content

    def commit_count(self, ns: NamespaceId) -> int:
        with self.state.db.read() as connection:
            return connection.execute(
                sa.select(sa.func.count())
                .select_from(tables.commits)
                .where(tables.commits.c.namespace_id == bytes(ns))
            ).scalar_one()


def drive_path(text: str) -> protocol.DrivePath:
    return protocol.DrivePath.from_bytes(text.encode())


def mkdir(path: str, mode: int = 0o755) -> protocol.MkdirOp:
    attrs = protocol.AttrsModel(mode=mode, uid=1000, gid=1000, mtime_ns=MTIME_NS)
    return protocol.MkdirOp(path=drive_path(path), attrs=attrs)


def delete(path: str, base: ContentHash | None = None) -> protocol.DeleteOp:
    return protocol.DeleteOp(path=drive_path(path), base=base)


def move(src: str, dst: str) -> protocol.MoveOp:
    return protocol.MoveOp(src=drive_path(src), dst=drive_path(dst))


def setattr_op(path: str, *, mode: int) -> protocol.SetattrOp:
    return protocol.SetattrOp(path=drive_path(path), attrs=protocol.SetattrModel(mode=mode))


def statuses(response: protocol.OpsBatchResponse) -> list[str]:
    return [result.status for result in response.results]


def lines(count: int) -> list[bytes]:
    return [f"line {number}\n".encode() for number in range(1, count + 1)]
