"""The baseline of ``scripts/bench server``: the same uvicorn and HTTP stack as the server,
doing nothing with the bytes. ``POST /sink`` reads and drops a body; ``GET /source?bytes=N``
streams N bytes in 1 MiB pieces. Run as ``uvicorn bench_raw_http:app``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Message = MutableMapping[str, Any]

PIECE = bytes(1 << 20)


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/sink":
        received = 0
        while True:
            message = await receive()
            received += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = str(received).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    total = int(parse_qs(scope["query_string"].decode()).get("bytes", ["0"])[0])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while total > 0:
        piece = PIECE[: min(total, len(PIECE))]
        total -= len(piece)
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
