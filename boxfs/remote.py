"""The client side of the protocol: one ``Remote`` per server, httpx under trio.

Built from ``store.protocol``: every route, model, header and error code comes from there.
Every request goes through ``_exchange``: error replies become the exception class the
server raised (``protocol.error_for_response``), and a server that cannot be reached, or a
transfer that breaks off, becomes ``protocol.UnavailableError`` (a ``TransientError``) in
one place (``_reaching``), so callers retry on one type. A reply that the session is no
longer valid asks ``renew`` (if given) for the token the device holds now: after a new
``boxfs login`` the request goes again, once, with that token. Chunk batches travel as
streamed record streams in both directions, split so no request exceeds the protocol's
bounds; frames are returned as they came, and whoever uses one verifies it
(``store.frames.decode_frame``).

Used from trio tasks (the mount's uploader and syncer, the CLI, tests and benchmarks).
One ``Remote`` may serve many concurrent tasks: httpx pools its connections.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from store import protocol
from store.ids import ChunkId, CommitId, LinkId, NamespaceId, TreeId
from store.protocol import DrivePath, Record

log = logging.getLogger(__name__)

M = TypeVar("M", bound=protocol.WireModel)
IdT = TypeVar("IdT", ChunkId, TreeId, CommitId)

DEFAULT_TIMEOUT_S = 60.0
# Records from a download are handed on in pieces of this size at most.
_READ_PIECE_BYTES = 1 << 20


class Remote:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        renew: Callable[[], str | None] | None = None,
    ) -> None:
        """``renew``: the token the device holds now (its session file), asked when the
        server says the session is no longer valid; ``None`` if it holds none."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._renew = renew
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=transport,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- plumbing ------------------------------------------------------------------------

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = protocol.request_headers(self.token)
        if extra:
            headers.update(extra)
        return headers

    @contextmanager
    def _reaching(self, what: str) -> Iterator[None]:
        """The one translation of transport failures: ``UnavailableError`` saying ``what``."""
        try:
            yield
        except httpx.TransportError as exc:
            raise protocol.UnavailableError(f"{what}: {exc.__class__.__name__}: {exc}") from exc

    def _renewed(self) -> bool:
        """Whether the device now holds another token than the one just refused (taken)."""
        token = self._renew() if self._renew is not None else None
        if token is None or token == self.token:
            return False
        log.info("the session was renewed on this device: using the new one")
        self.token = token
        return True

    async def _exchange(
        self, build: Callable[[], httpx.Request], *, stream: bool = False
    ) -> httpx.Response:
        """Send the request ``build`` makes; an error reply raises its exception. A refused
        session is retried once if ``renew`` gives another token (``build`` is called
        again: its headers then carry that token). With ``stream``, the caller closes the
        response it gets."""
        retried = False
        while True:
            request = build()
            with self._reaching(f"cannot reach {self.base_url}"):
                response = await self._client.send(request, stream=stream)
            if not response.is_error:
                return response
            try:
                with self._reaching(f"cannot reach {self.base_url}"):
                    await response.aread()
            finally:
                await response.aclose()
            error = protocol.error_for_response(response.status_code, response.content)
            if isinstance(error, protocol.UnauthorizedError) and not retried and self._renewed():
                retried = True
                continue
            raise error

    async def _send(
        self,
        route: protocol.Route,
        *,
        path_params: dict[str, object] | None = None,
        body: protocol.WireModel | None = None,
        content: Any = None,
        query: protocol.WireModel | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """``content`` may be bytes or an async iterable that starts over each time it is
        iterated (a retry sends it again)."""
        extra = dict(headers or {})
        if body is not None:
            content = body.model_dump_json(exclude_none=False).encode()
            extra["Content-Type"] = protocol.JSON_MEDIA_TYPE
        elif content is not None and route.request_media_type:
            extra["Content-Type"] = route.request_media_type

        def build() -> httpx.Request:
            return self._client.build_request(
                route.method,
                route.fill(**(path_params or {})),
                content=content,
                params=protocol.query_params(query) if query is not None else None,
                headers=self._headers(extra),
            )

        return await self._exchange(build)

    async def _json(self, route: protocol.Route, model: type[M], **kwargs: Any) -> M:
        response = await self._send(route, **kwargs)
        return model.model_validate_json(response.content)

    # --- accounts ------------------------------------------------------------------------

    async def health(self) -> protocol.Health:
        return await self._json(protocol.HEALTH, protocol.Health)

    async def register(self, username: str, email: str, password: str) -> protocol.AccountInfo:
        request = protocol.RegisterRequest(username=username, email=email, password=password)
        return await self._json(protocol.REGISTER, protocol.AccountInfo, body=request)

    async def login(self, username: str, password: str, device_name: str) -> protocol.LoginResponse:
        request = protocol.LoginRequest(
            username=username, password=password, device_name=device_name
        )
        reply = await self._json(protocol.LOGIN, protocol.LoginResponse, body=request)
        self.token = reply.token
        return reply

    async def logout(self) -> None:
        await self._send(protocol.LOGOUT)
        self.token = None

    async def whoami(self) -> protocol.WhoAmI:
        return await self._json(protocol.WHOAMI, protocol.WhoAmI)

    async def sessions(self) -> protocol.SessionList:
        return await self._json(protocol.SESSIONS, protocol.SessionList)

    async def revoke_session(self, session_id: str) -> None:
        await self._send(protocol.REVOKE_SESSION, path_params={"session_id": session_id})

    async def audit(self, cursor: str | None = None, limit: int = 100) -> protocol.AuditPage:
        query = protocol.AuditQuery(cursor=cursor, limit=limit)
        return await self._json(protocol.AUDIT_LOG, protocol.AuditPage, query=query)

    # --- namespaces and history ----------------------------------------------------------

    async def namespaces(self) -> list[protocol.NamespaceInfo]:
        return list((await self._json(protocol.NAMESPACES, protocol.NamespaceList)).namespaces)

    async def home(self) -> protocol.NamespaceInfo:
        return next(info for info in await self.namespaces() if info.home)

    async def head(self, namespace_id: NamespaceId) -> protocol.HeadInfo:
        params = {"namespace_id": namespace_id}
        return await self._json(protocol.HEAD, protocol.HeadInfo, path_params=params)

    async def log(
        self, namespace_id: NamespaceId, cursor: str | None = None, limit: int = 100
    ) -> protocol.LogPage:
        return await self._json(
            protocol.LOG,
            protocol.LogPage,
            path_params={"namespace_id": namespace_id},
            query=protocol.LogQuery(cursor=cursor, limit=limit),
        )

    async def apply_ops(
        self, namespace_id: NamespaceId, batch: protocol.OpsBatch
    ) -> protocol.OpsBatchResponse:
        return await self._json(
            protocol.APPLY_OPS,
            protocol.OpsBatchResponse,
            path_params={"namespace_id": namespace_id},
            body=batch,
        )

    async def versions(
        self, namespace_id: NamespaceId, request: protocol.VersionsRequest
    ) -> protocol.VersionsPage:
        return await self._json(
            protocol.VERSIONS,
            protocol.VersionsPage,
            path_params={"namespace_id": namespace_id},
            body=request,
        )

    async def restore(
        self, namespace_id: NamespaceId, request: protocol.RestoreRequest
    ) -> protocol.OpsBatchResponse:
        return await self._json(
            protocol.RESTORE,
            protocol.OpsBatchResponse,
            path_params={"namespace_id": namespace_id},
            body=request,
        )

    # --- share links ---------------------------------------------------------------------

    async def create_link(
        self, namespace_id: NamespaceId, request: protocol.LinkCreateRequest
    ) -> protocol.LinkCreated:
        return await self._json(
            protocol.CREATE_LINK,
            protocol.LinkCreated,
            path_params={"namespace_id": namespace_id},
            body=request,
        )

    async def links(self) -> protocol.LinkList:
        return await self._json(protocol.LINKS, protocol.LinkList)

    async def revoke_link(self, link_id: LinkId) -> None:
        await self._send(protocol.REVOKE_LINK, path_params={"link_id": link_id})

    # --- shared folders ------------------------------------------------------------------

    async def share(self, home_id: NamespaceId, path: protocol.DrivePath) -> protocol.ShareInfo:
        """Share the folder at ``path`` of the home ``home_id``: its ``ShareInfo`` (the same
        again for a folder the caller shared before)."""
        return await self._json(
            protocol.SHARE,
            protocol.ShareInfo,
            path_params={"namespace_id": home_id},
            body=protocol.ShareRequest(path=path),
        )

    async def unshare(self, namespace_id: NamespaceId) -> None:
        await self._send(protocol.UNSHARE, path_params={"namespace_id": namespace_id})

    async def members(self, namespace_id: NamespaceId) -> list[protocol.MemberInfo]:
        """The owner, members and invitees of a shared folder."""
        params = {"namespace_id": namespace_id}
        reply = await self._json(protocol.MEMBERS, protocol.MemberList, path_params=params)
        return list(reply.members)

    async def set_member(
        self, namespace_id: NamespaceId, username: str, role: protocol.MemberRole
    ) -> protocol.MemberInfo:
        """Invite ``username`` as ``role``, or change the role of a member or invitee."""
        return await self._json(
            protocol.SET_MEMBER,
            protocol.MemberInfo,
            path_params={"namespace_id": namespace_id},
            body=protocol.MemberRequest(username=username, role=role),
        )

    async def remove_member(self, namespace_id: NamespaceId, username: str) -> None:
        """Remove a member, withdraw an invitation, or (one's own name) leave."""
        await self._send(
            protocol.REMOVE_MEMBER,
            path_params={"namespace_id": namespace_id, "username": username},
        )

    async def invitations(self) -> list[protocol.InvitationInfo]:
        reply = await self._json(protocol.INVITATIONS, protocol.InvitationList)
        return list(reply.invitations)

    async def accept_invitation(
        self, invitation_id: str, path: protocol.DrivePath | None = None
    ) -> protocol.AcceptResponse:
        """Join the shared folder at ``path`` of the home (``None``: the server picks)."""
        return await self._json(
            protocol.ACCEPT_INVITATION,
            protocol.AcceptResponse,
            path_params={"invitation_id": invitation_id},
            body=protocol.AcceptRequest(path=path),
        )

    async def decline_invitation(self, invitation_id: str) -> None:
        await self._send(protocol.DECLINE_INVITATION, path_params={"invitation_id": invitation_id})

    # --- content -------------------------------------------------------------------------

    async def missing_chunks(
        self, namespace_id: NamespaceId, ids: Sequence[ChunkId]
    ) -> list[ChunkId]:
        """The ids of ``ids`` this namespace does not hold yet, in order."""
        missing: list[ChunkId] = []
        for start in range(0, len(ids), protocol.MAX_IDS_PER_REQUEST):
            request = protocol.MissingChunksRequest(
                ids=tuple(ids[start : start + protocol.MAX_IDS_PER_REQUEST])
            )
            reply = await self._json(
                protocol.MISSING_CHUNKS,
                protocol.MissingChunksResponse,
                path_params={"namespace_id": namespace_id},
                body=request,
            )
            missing.extend(reply.missing)
        return missing

    async def upload_chunks(
        self, namespace_id: NamespaceId, frames: Iterable[tuple[ChunkId, bytes]]
    ) -> list[ChunkId]:
        """Send frames in as few streamed requests as the bounds allow; the ids stored."""
        stored: list[ChunkId] = []
        batch: list[Record[ChunkId]] = []
        batch_bytes = 0
        for chunk_id, frame in frames:
            record_bytes = len(frame) + 64
            if batch and (
                batch_bytes + record_bytes > protocol.MAX_BATCH_BODY_BYTES
                or len(batch) >= protocol.MAX_IDS_PER_REQUEST
            ):
                stored.extend(await self._upload_batch(namespace_id, batch))
                batch, batch_bytes = [], 0
            batch.append(Record(chunk_id, frame))
            batch_bytes += record_bytes
        if batch:
            stored.extend(await self._upload_batch(namespace_id, batch))
        return stored

    async def _upload_batch(
        self, namespace_id: NamespaceId, records: list[Record[ChunkId]]
    ) -> list[ChunkId]:
        reply = await self._json(
            protocol.UPLOAD_CHUNKS,
            protocol.ChunkUploadResponse,
            path_params={"namespace_id": namespace_id},
            content=_RecordBody(records),
        )
        return list(reply.stored)

    async def download_chunks(
        self, namespace_id: NamespaceId, ids: Sequence[ChunkId]
    ) -> AsyncIterator[Record[ChunkId]]:
        """Frames of ``ids`` as they arrive (a missing record where the namespace has none)."""
        for start in range(0, len(ids), protocol.MAX_IDS_PER_REQUEST):
            request = protocol.ChunksRequest(
                ids=tuple(ids[start : start + protocol.MAX_IDS_PER_REQUEST])
            )
            async for record in self._stream_records(
                protocol.DOWNLOAD_CHUNKS, ChunkId, namespace_id, request
            ):
                yield record

    async def chunk(self, namespace_id: NamespaceId, chunk_id: ChunkId) -> bytes:
        response = await self._send(
            protocol.CHUNK, path_params={"namespace_id": namespace_id, "chunk_id": chunk_id}
        )
        return response.content

    async def trees(
        self, namespace_id: NamespaceId, ids: Sequence[TreeId]
    ) -> dict[TreeId, bytes | None]:
        found: dict[TreeId, bytes | None] = {}
        for start in range(0, len(ids), protocol.MAX_IDS_PER_REQUEST):
            request = protocol.TreesRequest(
                ids=tuple(ids[start : start + protocol.MAX_IDS_PER_REQUEST])
            )
            async for record in self._stream_records(protocol.TREES, TreeId, namespace_id, request):
                found[record.object_id] = record.payload
        return found

    async def commits(
        self, namespace_id: NamespaceId, ids: Sequence[CommitId]
    ) -> dict[CommitId, bytes | None]:
        found: dict[CommitId, bytes | None] = {}
        for start in range(0, len(ids), protocol.MAX_IDS_PER_REQUEST):
            request = protocol.CommitsRequest(
                ids=tuple(ids[start : start + protocol.MAX_IDS_PER_REQUEST])
            )
            async for record in self._stream_records(
                protocol.COMMITS, CommitId, namespace_id, request
            ):
                found[record.object_id] = record.payload
        return found

    async def _stream_records(
        self,
        route: protocol.Route,
        id_type: type[IdT],
        namespace_id: NamespaceId,
        request: protocol.WireModel,
    ) -> AsyncIterator[Record[IdT]]:
        content = request.model_dump_json().encode()

        def build() -> httpx.Request:
            return self._client.build_request(
                route.method,
                route.fill(namespace_id=namespace_id),
                content=content,
                headers=self._headers({"Content-Type": protocol.JSON_MEDIA_TYPE}),
            )

        response = await self._exchange(build, stream=True)
        try:
            parser = protocol.RecordStreamParser(id_type)
            with self._reaching(f"download from {self.base_url} broke off"):
                async for piece in response.aiter_raw(_READ_PIECE_BYTES):
                    for record in parser.feed(piece):
                        yield record
            parser.close()
        finally:
            await response.aclose()

    # --- who is editing -------------------------------------------------------------------

    async def report_editing(
        self, namespace_id: NamespaceId, paths: Sequence[DrivePath]
    ) -> protocol.EditorList:
        """Say which files this device has open for writing in the namespace (all of
        them: the report replaces the last one); who else is editing there."""
        return await self._json(
            protocol.EDITING, protocol.EditorList,
            path_params={"namespace_id": namespace_id},
            body=protocol.EditingRequest(paths=tuple(paths)),
        )  # fmt: skip

    async def editors(self, namespace_id: NamespaceId) -> protocol.EditorList:
        return await self._json(
            protocol.EDITORS, protocol.EditorList, path_params={"namespace_id": namespace_id}
        )

    # --- events --------------------------------------------------------------------------

    async def events(
        self,
        last_event_id: str | None = None,
        *,
        on_connected: Callable[[], None] | None = None,
    ) -> AsyncIterator[protocol.Event]:
        """Head events as they come, until the server ends the stream. Heartbeats are
        consumed here; a broken connection raises ``UnavailableError`` (reconnect with the
        ``last_event_id`` of the parser to resume). ``on_connected`` is called once the
        server has accepted the stream: every later head move arrives as an event."""
        extra = {"Accept": protocol.EVENT_STREAM_MEDIA_TYPE}
        if last_event_id:
            extra["Last-Event-ID"] = last_event_id

        def build() -> httpx.Request:
            return self._client.build_request(
                protocol.EVENTS.method,
                protocol.EVENTS.fill(),
                headers=self._headers(extra),
                timeout=httpx.Timeout(
                    connect=10.0, read=protocol.EVENT_IDLE_TIMEOUT_S, write=10.0, pool=10.0
                ),
            )

        response = await self._exchange(build, stream=True)
        try:
            if on_connected is not None:
                on_connected()
            parser = protocol.EventStreamParser()
            with self._reaching("the event stream broke off"):
                async for piece in response.aiter_raw():
                    for item in parser.feed(piece):
                        if isinstance(item, protocol.Event):
                            yield item
        finally:
            await response.aclose()


class _RecordBody:
    """A chunk upload's body: the record stream of ``records``, encoded anew each time it
    is iterated, so a request sent again (a renewed session) sends it whole again."""

    def __init__(self, records: list[Record[ChunkId]]) -> None:
        self._records = records

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in protocol.encode_record_stream(ChunkId, self._records, allow_missing=False):
            yield piece
