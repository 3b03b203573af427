"""The FastAPI application: lifespan, the protocol guard, error translation, routers.

``create_app(settings)`` builds the app; uvicorn runs it (``server.cli``). Errors are
translated once, here: a ``StoreError`` raised anywhere below becomes the status and
``{code, message, detail}`` body of ``store.protocol``'s table; a request that fails
validation becomes a 4xx naming the field; anything else is logged with its traceback and
answered with a generic 500, never with internals.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from server import retention
from server.routes import accounts, content, events, history, links, ops, sharing
from server.routes.endpoint import endpoint
from server.settings import Settings
from server.state import ServerState
from store import protocol
from store.errors import StoreError

_log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The largest body any route accepts; routes bound their own bodies more tightly.
MAX_BODY_BYTES = max(protocol.MAX_JSON_BODY_BYTES, protocol.MAX_BATCH_BODY_BYTES)


def error_response(exc: StoreError) -> JSONResponse:
    status, body = protocol.body_for(exc)
    headers = {}
    if isinstance(exc, protocol.RateLimitedError) and exc.retry_after_s is not None:
        headers[protocol.RETRY_AFTER_HEADER] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


class ProtocolGuard:
    """Pure ASGI middleware in front of every ``/v1`` route: refuses another protocol
    version, and any body over ``MAX_BODY_BYTES`` (by Content-Length at once, or while
    it streams), before a handler sees it. The public share-link pages (``/l/...``) are
    for browsers and curl, which send no protocol header: it lets them through, and their
    upload route bounds its own body (``server.routes.links``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value for key, value in scope["headers"]}
        try:
            raw_version = headers.get(protocol.PROTOCOL_HEADER.lower())
            protocol.check_protocol_version(
                raw_version.decode("latin-1") if raw_version is not None else None
            )
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                raise protocol.BodyTooLargeError(
                    f"request body over {MAX_BODY_BYTES} bytes", {"limit": MAX_BODY_BYTES}
                )
        except StoreError as exc:
            await error_response(exc)(scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if response_started:
                raise
            too_large = protocol.BodyTooLargeError(
                f"request body over {MAX_BODY_BYTES} bytes", {"limit": MAX_BODY_BYTES}
            )
            await error_response(too_large)(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await anyio.to_thread.run_sync(ServerState.open, settings)
        app.state.server = state
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(
                    retention.retention_loop, state, settings.retention_interval_s
                )
                yield
                background.cancel_scope.cancel()
        finally:
            state.close()

    app = FastAPI(
        title="boxfs",
        version=version("boxfs"),
        summary="Accounts, content-addressed storage, Merkle history and live events.",
        lifespan=lifespan,
    )

    @app.exception_handler(StoreError)
    async def store_error(_request: Request, exc: StoreError) -> JSONResponse:
        if isinstance(exc, protocol.InternalError):
            _log.error("internal error: %s", exc, exc_info=exc)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, body = protocol.validation_error_body(exc.errors())
        return JSONResponse(body.model_dump(mode="json"), status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own errors: an unknown route (404), a wrong method (405).
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        _, body = protocol.body_for(protocol.BadRequestError(message, {"status": exc.status_code}))
        return JSONResponse(body.model_dump(mode="json"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        _log.error("unhandled exception", exc_info=exc)
        return error_response(protocol.InternalError("internal server error"))

    @endpoint(app.router, protocol.HEALTH)
    async def health() -> protocol.Health:
        return protocol.Health(server_version=version("boxfs"))

    for module in (accounts, content, ops, history, events, sharing, links):
        app.include_router(module.router)
    app.add_middleware(ProtocolGuard)
    return app


def dump_openapi(settings: Settings) -> str:
    return json.dumps(create_app(settings).openapi(), indent=2)
