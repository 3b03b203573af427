"""The event stream route: Server-Sent Events, one stream per device.

The HTTP side of ``server.events_stream``: authenticate, read the bearer token (each
wake-up of the stream re-checks it) and ``Last-Event-ID``, and stream the events as they
come. Registered by ``server.app``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from server.events_stream import event_stream
from server.routes.auth import CallerDep, server_state
from server.routes.endpoint import endpoint
from store import protocol

router = APIRouter()


@endpoint(router, protocol.EVENTS)
async def events(request: Request, who: CallerDep) -> StreamingResponse:
    state = server_state(request)
    token = protocol.parse_bearer(request.headers.get(protocol.AUTHORIZATION_HEADER))
    return StreamingResponse(
        event_stream(state, who, token, request.headers.get("last-event-id")),
        media_type=protocol.EVENT_STREAM_MEDIA_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
