"""Share-link routes: making, listing and revoking links (with a session), and the public
pages under ``/l/TOKEN`` (no account): a file's download (``Range``, ``ETag``), a folder's
listing and zip, the password form, and the file-request form and its uploads.

The HTTP side of ``server.links`` (who gets in) and ``server.link_content`` (what they
get). Every page answers in HTML, errors included: a ``StoreError`` becomes the page of its
code at the status of ``store.protocol``'s table (``_page_for_error``), never the JSON body
the API routes answer with. A password travels as the form's post (which earns a cookie
scoped to ``/l/TOKEN``, HttpOnly, SameSite=Strict), as that cookie, or as HTTP Basic
credentials on any request (``curl -u :PASSWORD``). A sub-path is parsed from the raw
request path (``protocol.parse_link_subpath``), so an encoded slash is never a separator.
Downloads and zips stream a step at a time, each step in a worker thread.

The ``/l/`` pages are outside ``/v1``: ``server.app``'s ``ProtocolGuard`` neither asks them
for the protocol header nor bounds their bodies, so the upload bounds its own
(``Settings.link_upload_max_bytes``, 413). Registered by ``server.app``.
"""

from __future__ import annotations

import functools
import mimetypes
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Final

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from server.accounts import check_password, hash_password
from server.link_content import (
    Upload,
    file_pieces,
    folder_entries,
    resolve,
    store_uploads,
    zip_pieces,
)
from server.links import (
    Link,
    begin_password_attempt,
    create_link,
    finish_password_attempt,
    grant_cookie,
    grant_is_valid,
    list_links,
    open_link,
    record_use,
    revoke_link,
)
from server.routes.auth import CallerDep, client_address, server_state
from server.routes.endpoint import endpoint, namespace_id_param, pump
from server.routes.link_pages import error_page, listing_page, password_page, upload_page
from server.state import ServerState, now_ns
from store import protocol
from store.errors import ConflictError, NotFoundError, StoreError
from store.ids import LinkId
from store.objects import FileEntry
from store.paths import DrivePath

router = APIRouter()

# A streamed reply is produced in a worker thread in steps of about this many bytes.
PUMP_BYTES: Final = 1024 * 1024
# The password form's body is tiny; anything larger is not one.
MAX_UNLOCK_BODY_BYTES: Final = 8 * 1024
_OCTET_STREAM: Final = "application/octet-stream"


# --- replies -----------------------------------------------------------------------------------


def _html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    merged = {**protocol.PAGE_HEADERS, "Content-Security-Policy": protocol.PAGE_CSP}
    merged.update(headers or {})
    return HTMLResponse(text, status_code=status, headers=merged)


def _page_for_error(token: str, exc: StoreError) -> HTMLResponse:
    status, body = protocol.body_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, protocol.UnauthorizedError):
        wrong = exc.detail.get("reason") == "wrong"
        return _html(password_page(token, wrong=wrong), status)
    if isinstance(exc, protocol.RateLimitedError) and exc.retry_after_s is not None:
        headers[protocol.RETRY_AFTER_HEADER] = str(max(1, round(exc.retry_after_s)))
    if isinstance(exc, protocol.RangeNotSatisfiableError):
        size = exc.detail.get("size")
        if isinstance(size, int):
            headers["Content-Range"] = protocol.unsatisfiable_content_range(size)
    return _html(error_page(body.code, body.message), status, headers)


async def _guarded(token: str, work: Callable[[], Awaitable[Response]]) -> Response:
    """The reply of ``work``, or the HTML page of the error it raised. A path segment that
    cannot be a token is a link that does not exist, before anything else is looked at."""
    try:
        if not protocol.is_link_token(token):
            raise NotFoundError("link", "")
        return await work()
    except StoreError as exc:
        return _page_for_error(token, exc)


# --- who gets in -------------------------------------------------------------------------------


async def _check_password(
    state: ServerState, link: Link, password: str, address: str | None
) -> None:
    """Counted first (``RateLimitedError`` while locked), then checked with argon2id;
    ``UnauthorizedError`` if wrong."""
    await state.run(begin_password_attempt, state.db, link, address, now_ns())
    if len(password) > protocol.LINK_PASSWORD_MAX_CHARS:
        password = ""  # verified anyway (and fails), at the cost of a right one
    check = await state.run(check_password, link.password_hash, password)
    await state.run(finish_password_attempt, state.db, link, check, address, now_ns())


async def _admit(request: Request, state: ServerState, token: str) -> Link:
    """The usable link of ``token``, once its password (if any) is shown: the cookie, or
    HTTP Basic credentials. ``UnauthorizedError`` without either."""
    link = await state.run(open_link, state.db, token, now_ns())
    if not link.has_password:
        return link
    if grant_is_valid(link, request.cookies.get(protocol.LINK_COOKIE_NAME), now_ns()):
        return link
    password = protocol.parse_basic_password(request.headers.get("authorization"))
    if password is None:
        raise protocol.UnauthorizedError("this link needs a password", {"reason": "needed"})
    await _check_password(state, link, password, client_address(request))
    return link


def _page_query(request: Request) -> protocol.LinkPageQuery:
    try:
        return protocol.LinkPageQuery.model_validate(dict(request.query_params))
    except pydantic.ValidationError as exc:
        raise protocol.BadRequestError("this page takes no such query") from exc


def _raw_subpath(request: Request, token: str) -> bytes:
    """The rest of the raw request path after ``/l/TOKEN/``, still percent-encoded."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    prefix = protocol.LINK_PAGE.fill(token=token).encode() + b"/"
    if not raw.startswith(prefix):  # the token itself was percent-encoded: not a token
        raise NotFoundError("link", "")
    return bytes(raw[len(prefix) :])


# --- the pages -----------------------------------------------------------------------------------


async def _serve(request: Request, token: str, below: DrivePath | None, *, sub: bool) -> Response:
    state = server_state(request)
    address = client_address(request)
    query = _page_query(request)
    link = await _admit(request, state, token)
    if link.upload_only:
        # A file-request page reveals nothing: every other path under it is "not found".
        if sub or query.format is not None:
            raise NotFoundError("path", "")
        return _html(upload_page(token, limit_bytes=state.settings.link_upload_max_bytes))
    target = await state.run(resolve, state, link, below)
    if target.tree_id is None:
        assert target.entry is not None
        if query.format is not None:
            raise NotFoundError("path", "")
        return await _download(request, state, link, target.entry)
    if query.format == "zip":
        await state.run(record_use, state.db, link, "zip", address)
        name = (target.name or b"shared") + b".zip"
        return StreamingResponse(
            pump(state, zip_pieces(state, target.tree_id), PUMP_BYTES),
            media_type=protocol.ZIP_MEDIA_TYPE,
            headers={
                **protocol.PAGE_HEADERS,
                "Content-Disposition": protocol.content_disposition(name),
            },
        )
    entries = await state.run(folder_entries, state, target.tree_id)
    await state.run(record_use, state.db, link, "listing", address)
    return _html(listing_page(token, target.name, below, entries))


async def _download(request: Request, state: ServerState, link: Link, entry: FileEntry) -> Response:
    assert entry.content_hash is not None
    tag = protocol.entity_tag(entry.content_hash)
    headers = {
        **protocol.PAGE_HEADERS,
        "Content-Security-Policy": protocol.DOWNLOAD_CSP,
        "Content-Disposition": protocol.content_disposition(entry.name),
        "Accept-Ranges": "bytes",
        "ETag": tag,
    }
    if protocol.matches_entity_tag(request.headers.get("if-none-match"), tag):
        return Response(status_code=protocol.NOT_MODIFIED_STATUS, headers=headers)
    byte_range = protocol.parse_range(request.headers.get(protocol.RANGE_HEADER), entry.size)
    media_type = mimetypes.guess_type(protocol.show_name(entry.name))[0] or _OCTET_STREAM
    status = protocol.LINK_PAGE.status_code
    if byte_range is not None:
        status = protocol.PARTIAL_CONTENT_STATUS
        headers["Content-Range"] = byte_range.content_range
        headers["Content-Length"] = str(byte_range.length)
        detail = {"range": byte_range.content_range}
    else:
        headers["Content-Length"] = str(entry.size)
        detail = {"bytes": str(entry.size)}
    await state.run(record_use, state.db, link, "download", client_address(request), detail)
    return StreamingResponse(
        pump(state, file_pieces(state, entry, byte_range), PUMP_BYTES),
        status_code=status,
        media_type=media_type,
        headers=headers,
    )


@endpoint(router, protocol.LINK_PAGE)
async def link_page(token: str, request: Request) -> Response:
    return await _guarded(token, lambda: _serve(request, token, None, sub=False))


@endpoint(router, protocol.LINK_UNLOCK)
async def link_unlock(token: str, request: Request) -> Response:
    async def work() -> Response:
        state = server_state(request)
        link = await state.run(open_link, state.db, token, now_ns())
        if link.has_password:
            form = await _small_form(request)
            password = form.get(protocol.PASSWORD_FIELD, [""])[0]
            await _check_password(state, link, password, client_address(request))
        reply = RedirectResponse(
            protocol.LINK_PAGE.fill(token=token), status_code=protocol.LINK_UNLOCK.status_code
        )
        if link.has_password:
            value, lifetime_s = grant_cookie(link, now_ns())
            reply.set_cookie(
                protocol.LINK_COOKIE_NAME,
                value,
                max_age=lifetime_s,
                path=protocol.LINK_PAGE.fill(token=token),
                secure=request.url.scheme == "https",
                httponly=True,
                samesite="strict",
            )
        return reply

    return await _guarded(token, work)


async def _small_form(request: Request) -> dict[str, list[str]]:
    body = bytearray()
    try:
        async for piece in request.stream():
            body.extend(piece)
            if len(body) > MAX_UNLOCK_BODY_BYTES:
                raise protocol.BodyTooLargeError(
                    "the password form is too large", {"limit": MAX_UNLOCK_BODY_BYTES}
                )
    except ClientDisconnect as exc:
        raise protocol.BadRequestError("the client went away in the middle of the form") from exc
    try:
        return urllib.parse.parse_qs(bytes(body).decode("utf-8"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError) as exc:
        raise protocol.BadRequestError("the password form is not a form") from exc


async def _bounded(request: Request, limit_bytes: int) -> AsyncGenerator[bytes, None]:
    received = 0
    try:
        async for piece in request.stream():
            received += len(piece)
            if received > limit_bytes:
                raise protocol.BodyTooLargeError(
                    f"uploads through this link are limited to {limit_bytes} bytes",
                    {"limit": limit_bytes},
                )
            yield piece
    except ClientDisconnect as exc:
        raise protocol.BadRequestError("the client went away in the middle of the upload") from exc


@endpoint(router, protocol.LINK_UPLOAD)
async def link_upload(token: str, request: Request) -> Response:
    async def work() -> Response:
        state = server_state(request)
        address = client_address(request)
        link = await _admit(request, state, token)
        if not link.upload_only:
            raise NotFoundError("path", "")  # only a file-request page takes files
        limit = state.settings.link_upload_max_bytes
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise protocol.BodyTooLargeError(
                f"uploads through this link are limited to {limit} bytes", {"limit": limit}
            )
        parser = MultiPartParser(
            request.headers,
            _bounded(request, limit),
            max_files=protocol.MAX_LINK_UPLOAD_FILES,
            max_fields=8,
        )
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise protocol.BadRequestError(f"the upload is not a form: {exc.message}") from exc
        try:
            files = [
                item for item in form.getlist(protocol.UPLOAD_FIELD) if isinstance(item, UploadFile)
            ]
            if not files:
                raise protocol.BadRequestError(f"no file in the form's {protocol.UPLOAD_FIELD!r}")
            uploads = [Upload(protocol.upload_name(item.filename), item.file) for item in files]
            reply = await state.run(store_uploads, state, link, uploads, address)
        finally:
            await form.close()
        if reply.commit_id is not None:
            state.events.publish()
        stored = [result for result in reply.results if result.status != "rejected"]
        detail = {"files": str(len(stored)), "rejected": str(len(files) - len(stored))}
        await state.run(record_use, state.db, link, "upload", address, detail)
        if not stored:  # the link's folder is gone, or is a file now
            raise ConflictError("upload", "this page can take no files now")
        return _html(
            upload_page(
                token, limit_bytes=state.settings.link_upload_max_bytes, received=len(stored)
            )
        )

    return await _guarded(token, work)


@endpoint(router, protocol.LINK_SUBPAGE)
async def link_subpage(token: str, subpath: str, request: Request) -> Response:
    async def work() -> Response:
        below = protocol.parse_link_subpath(_raw_subpath(request, token))
        return await _serve(request, token, below, sub=True)

    return await _guarded(token, work)


# --- management (with a session) -----------------------------------------------------------------


@endpoint(router, protocol.CREATE_LINK)
async def create_link_route(
    namespace_id: str, body: protocol.LinkCreateRequest, request: Request, who: CallerDep
) -> protocol.LinkCreated:
    namespace = namespace_id_param(namespace_id)
    state = server_state(request)
    password_hash = None
    if body.password is not None:
        password_hash = await state.run(hash_password, body.password)
    make = functools.partial(
        create_link,
        state.db,
        who,
        namespace,
        body,
        password_hash=password_hash,
        now=now_ns(),
    )
    return await state.run(make)


@endpoint(router, protocol.LINKS)
async def links_route(request: Request, who: CallerDep) -> protocol.LinkList:
    state = server_state(request)
    return await state.run(list_links, state.db, who)


@endpoint(router, protocol.REVOKE_LINK)
async def revoke_link_route(link_id: str, request: Request, who: CallerDep) -> None:
    state = server_state(request)
    await state.run(revoke_link, state.db, who, protocol.parse_id(LinkId, link_id), now_ns())
