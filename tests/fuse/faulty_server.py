"""A fault-injecting HTTP proxy in front of a real ``boxfs-server``, for real-mount tests.

``FaultyServer(upstream_url)`` listens on a free loopback port (a socket it binds itself,
so no port race) and serves a small ASGI app with uvicorn, on an asyncio loop in a thread
of its own. The app forwards every request to the upstream server with httpx and streams
both ways: request bodies (chunk uploads) as they arrive, response bodies as the upstream
sends them, including the long-lived Server-Sent Events stream, which is closed when
either side goes away. Status, headers (less the hop-by-hop ones) and body lengths pass
through unchanged.

The one fault: chunk downloads (``store.protocol.DOWNLOAD_CHUNKS`` record streams, and the
single-frame ``CHUNK`` route) of the chunks whose ids are in ``corrupt_ids`` get two bytes
of their frame's payload flipped (past the frame header, so the codec and size still
parse). The record-stream framing (stream header, record heads and lengths, end marker)
is passed through byte for byte, so the client parses a well-formed stream and then finds
that the frame does not hash to its id: an integrity error, never a protocol error.
``corrupted`` lists each chunk id corrupted so far (a test checks the fault fired) and
``downloaded`` each chunk id that came through a download, corrupted or not.

Who calls it: a test (or fixture) thread, through ``start``/``stop`` or ``with``. ``stop``
asks uvicorn to shut down (open streams are cancelled after ``SHUTDOWN_GRACE_S``) and
joins the thread. Stop the mounts that use the proxy first.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from types import TracebackType
from typing import Any, Final, Self

import anyio
import httpx
import uvicorn

from store import protocol
from store.frames import HEADER_BYTES as FRAME_HEADER_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

START_TIMEOUT_S: Final = 10.0
SHUTDOWN_GRACE_S: Final = 1
STOP_TIMEOUT_S: Final = 15.0
UPSTREAM_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=None, write=30.0, pool=None)

# RFC 9110 section 7.6.1: these describe one connection, not the message; never forwarded.
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Record-stream layout (docs/format.md, "Record streams"; store/protocol/records.py): a
# header, then records of a head (tag u8 | id 32 bytes | length u32 BE) and a payload, then
# an end (tag 0 | u32).
_STREAM_HEADER_BYTES: Final = 8
_RECORD_HEAD_BYTES: Final = 1 + 32 + 4
_END_BYTES: Final = 5
_TAG_END: Final = 0x00
_TAG_DATA: Final = 0x01


def _route_pattern(route: protocol.Route) -> re.Pattern[str]:
    pattern = re.escape(route.template)
    for name in route.placeholders:
        pattern = pattern.replace(re.escape(f"{{{name}}}"), f"(?P<{name}>[^/]+)")
    return re.compile(f"^{pattern}$")


_DOWNLOAD_CHUNKS: Final = _route_pattern(protocol.DOWNLOAD_CHUNKS)
_CHUNK: Final = _route_pattern(protocol.CHUNK)


def flip_offsets(frame_bytes: int) -> tuple[int, ...]:
    """Where a frame of ``frame_bytes`` gets a byte flipped: the middle and the last byte
    of its payload (never the frame header)."""
    if frame_bytes <= FRAME_HEADER_BYTES:
        return ()
    middle = FRAME_HEADER_BYTES + (frame_bytes - FRAME_HEADER_BYTES) // 2
    return tuple(sorted({middle, frame_bytes - 1}))


class _Payload:
    """The frame being passed through: how much of it has gone, and what to flip."""

    __slots__ = ("done", "flips", "left")

    def __init__(self, length: int, flips: tuple[int, ...]) -> None:
        self.left = length
        self.done = 0
        self.flips = flips

    def take(self, data: memoryview) -> bytes:
        piece = bytearray(data[: self.left])
        for offset in self.flips:
            if self.done <= offset < self.done + len(piece):
                piece[offset - self.done] ^= 0xFF
        self.done += len(piece)
        self.left -= len(piece)
        return bytes(piece)


class RecordStreamCorrupter:
    """Passes a chunk record stream through piece by piece, flipping bytes in the frames
    of ``corrupt_ids``; everything else (framing included) is copied unchanged. Holds at
    most one record head between pieces."""

    def __init__(
        self, corrupt_ids: frozenset[bytes], on_record: Callable[[bytes, bool], None]
    ) -> None:
        self._corrupt_ids = corrupt_ids
        self._on_record = on_record
        self._head = bytearray()
        self._header_seen = False
        self._ended = False
        self._payload: _Payload | None = None

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        view = memoryview(data)
        while view:
            if self._ended:
                out += view
                break
            if self._payload is not None:
                taken = self._payload.take(view)
                out += taken
                view = view[len(taken) :]
                if not self._payload.left:
                    self._payload = None
                continue
            need = self._head_bytes_needed(view)
            take = min(need - len(self._head), len(view))
            self._head += view[:take]
            view = view[take:]
            if len(self._head) == need:
                out += self._head
                self._end_head()
        return bytes(out)

    def _head_bytes_needed(self, view: memoryview) -> int:
        if not self._header_seen:
            return _STREAM_HEADER_BYTES
        tag = self._head[0] if self._head else view[0]
        return _END_BYTES if tag == _TAG_END else _RECORD_HEAD_BYTES

    def _end_head(self) -> None:
        head, self._head = bytes(self._head), bytearray()
        if not self._header_seen:
            self._header_seen = True
            return
        if head[0] == _TAG_END:
            self._ended = True
            return
        chunk_id = head[1:33]
        length = int.from_bytes(head[33:37], "big")
        if head[0] != _TAG_DATA:
            return  # a missing record: no payload
        corrupt = chunk_id in self._corrupt_ids
        self._on_record(chunk_id, corrupt)
        if length:
            self._payload = _Payload(length, flip_offsets(length) if corrupt else ())


class _ClientGoneError(Exception):
    """The client hung up while sending its request body."""


class _ProxyApp:
    """The ASGI app: forward to ``upstream``, corrupting chunk downloads as told."""

    def __init__(self, owner: FaultyServer) -> None:
        self._owner = owner
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = httpx.AsyncClient(
                    base_url=self._owner.upstream_url,
                    timeout=UPSTREAM_TIMEOUT,
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._client is not None, "the lifespan starts the client"
        path: str = scope["path"]
        raw_path: bytes = scope.get("raw_path") or path.encode()
        target = raw_path.decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name.lower() not in _HOP_BY_HOP and name.lower() != b"host"
        ]
        framing = {name.lower() for name, _ in scope["headers"]}
        has_body = bool(framing & {b"content-length", b"transfer-encoding"})

        async def request_body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGoneError
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        request = self._client.build_request(
            scope["method"], target, headers=headers, content=request_body() if has_body else None
        )
        try:
            response = await self._client.send(request, stream=True)
        except _ClientGoneError:
            return
        except httpx.TransportError as exc:
            body = f"proxy: upstream unreachable: {exc}".encode()
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 502, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            rewrite = self._rewriter(scope["method"], path, response.status_code)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (name, value)
                        for name, value in response.headers.raw
                        if name.lower() not in _HOP_BY_HOP
                    ],
                }
            )
            async with anyio.create_task_group() as tasks:

                async def watch_disconnect() -> None:
                    # Ends a stream (the SSE one) whose client went away.
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tasks.cancel_scope.cancel()

                tasks.start_soon(watch_disconnect)
                async for piece in response.aiter_raw():
                    await send(
                        {"type": "http.response.body", "body": rewrite(piece), "more_body": True}
                    )
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                tasks.cancel_scope.cancel()
        finally:
            await response.aclose()

    def _rewriter(self, method: str, path: str, status: int) -> Callable[[bytes], bytes]:
        corrupt_ids = self._owner.corrupt_ids
        if status != 200:
            return _unchanged
        if method == protocol.DOWNLOAD_CHUNKS.method and _DOWNLOAD_CHUNKS.match(path):
            return RecordStreamCorrupter(corrupt_ids, self._owner.note_download).feed
        single = _CHUNK.match(path)
        if method == protocol.CHUNK.method and single:
            try:
                chunk_id = bytes.fromhex(single["chunk_id"])
            except ValueError:
                return _unchanged
            corrupt = chunk_id in corrupt_ids
            self._owner.note_download(chunk_id, corrupt)
            if corrupt:
                return _FrameCorrupter().feed
        return _unchanged


def _unchanged(piece: bytes) -> bytes:
    return piece


class _FrameCorrupter:
    """A single-frame body (the ``CHUNK`` route): flips bytes 1 and 2 past the header (its
    total length is not known up front, so not the middle)."""

    def __init__(self) -> None:
        self._payload = _Payload(2**62, (FRAME_HEADER_BYTES + 1, FRAME_HEADER_BYTES + 2))

    def feed(self, piece: bytes) -> bytes:
        return self._payload.take(memoryview(piece))


class FaultyServer:
    """The proxy: ``url`` to log in against; ``corrupt_ids`` the chunks it damages."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # Replaced whole (never mutated), so the proxy thread reads a consistent set.
        self.corrupt_ids: frozenset[bytes] = frozenset()
        self._lock = threading.Lock()
        self._corrupted: list[bytes] = []
        self._downloaded: list[bytes] = []
        self._server = uvicorn.Server(
            uvicorn.Config(
                _ProxyApp(self),
                loop="asyncio",
                http="h11",
                lifespan="on",
                log_level="warning",
                access_log=False,
                server_header=False,
                date_header=False,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            )
        )
        self._thread: threading.Thread | None = None

    def corrupt(self, chunk_ids: Iterable[bytes]) -> None:
        """From now on, damage the frames of these chunks (an empty set: none)."""
        self.corrupt_ids = frozenset(bytes(chunk_id) for chunk_id in chunk_ids)

    def note_download(self, chunk_id: bytes, corrupted: bool) -> None:
        with self._lock:
            self._downloaded.append(chunk_id)
            if corrupted:
                self._corrupted.append(chunk_id)

    @property
    def corrupted(self) -> list[bytes]:
        with self._lock:
            return list(self._corrupted)

    @property
    def downloaded(self) -> list[bytes]:
        with self._lock:
            return list(self._downloaded)

    def start(self) -> Self:
        assert self._thread is None, "already started"
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"faulty-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the faulty proxy did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Shut down (streams still open are cancelled after the grace period) and join."""
        thread, self._thread = self._thread, None
        try:
            if thread is not None:
                self._server.should_exit = True
                thread.join(STOP_TIMEOUT_S)
                if thread.is_alive():
                    self._server.force_exit = True
                    thread.join(STOP_TIMEOUT_S)
                assert not thread.is_alive(), "the faulty proxy did not stop"
        finally:
            self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
