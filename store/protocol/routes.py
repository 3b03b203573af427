"""Every route of the protocol in ``ROUTES`` (``Route``: method, path template, bodies,
success status, whether a session is needed), and the request headers around them: the
version header, the bearer token, session ids in paths.

The server registers one handler per ``Route`` (``server/routing.py``) and checks headers
with ``check_protocol_version`` and ``parse_bearer``; the client fills paths with
``Route.fill`` and sends ``request_headers``. No route string or success status is spelled
anywhere else. Builds and parses; never sends. Immutable values: any thread.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from store.ids import ChunkId, LinkId, NamespaceId
from store.paths import DrivePath
from store.protocol.bounds import (
    AUTH_SCHEME,
    AUTHORIZATION_HEADER,
    EVENT_STREAM_MEDIA_TYPE,
    FRAME_MEDIA_TYPE,
    INVITATION_ID_PATTERN,
    JSON_MEDIA_TYPE,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    RECORD_STREAM_MEDIA_TYPE,
    SESSION_ID_PATTERN,
    TOKEN_PATTERN,
    USERNAME_MAX_CHARS,
    USERNAME_MIN_CHARS,
    USERNAME_PATTERN,
)
from store.protocol.errors import InvalidIdError, UnauthorizedError, UnsupportedProtocolError
from store.protocol.links import (
    HTML_MEDIA_TYPE,
    LINK_TOKEN_PATTERN,
    LinkCreated,
    LinkCreateRequest,
    LinkList,
    LinkPageQuery,
    link_subpath_url,
)
from store.protocol.models import (
    AccountInfo,
    AuditPage,
    AuditQuery,
    ChunksRequest,
    ChunkUploadResponse,
    CommitsRequest,
    HeadInfo,
    Health,
    LoginRequest,
    LoginResponse,
    LogPage,
    LogQuery,
    MissingChunksRequest,
    MissingChunksResponse,
    NamespaceList,
    RegisterRequest,
    SessionList,
    TreesRequest,
    WhoAmI,
    WireModel,
)
from store.protocol.ops import (
    OpsBatch,
    OpsBatchResponse,
    RestoreRequest,
    VersionsPage,
    VersionsRequest,
)
from store.protocol.sharing import (
    AcceptRequest,
    AcceptResponse,
    EditingRequest,
    EditorList,
    InvitationList,
    MemberInfo,
    MemberList,
    MemberRequest,
    ShareInfo,
    ShareRequest,
)

# --- routes ---------------------------------------------------------------------------------

Method: TypeAlias = Literal["GET", "POST", "DELETE"]

# What each placeholder accepts: a typed id (rendered as hex), a string of its pattern (a
# session id, an invitation id, a username, a link token), or a drive path (its names
# percent-encoded: ``{subpath:path}``, whose ``:path`` tells the server's router that it
# spans several segments).
_PLACEHOLDER_TYPES: Final[dict[str, type]] = {
    "namespace_id": NamespaceId,
    "chunk_id": ChunkId,
    "session_id": str,
    "invitation_id": str,
    "username": str,
    "link_id": LinkId,
    "token": str,
    "subpath": DrivePath,
}
_STRING_PATTERNS: Final[dict[str, str]] = {
    "session_id": SESSION_ID_PATTERN,
    "invitation_id": INVITATION_ID_PATTERN,
    "username": USERNAME_PATTERN,
    "token": LINK_TOKEN_PATTERN,
}
_FORMATTER: Final = string.Formatter()
_FIELD: Final = re.compile(r"\{(\w+)(?::\w+)?\}")


def _placeholders(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in _FORMATTER.parse(template) if name is not None)


def _render(name: str, value: object) -> str:
    expected = _PLACEHOLDER_TYPES[name]
    if type(value) is not expected:
        raise TypeError(f"{name} must be a {expected.__name__}, not {type(value).__name__}")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, DrivePath):
        return link_subpath_url(value)
    if isinstance(value, str) and re.fullmatch(_STRING_PATTERNS[name], value):
        return value
    raise ValueError(f"{name} is not a valid {name.replace('_', ' ')}: {value!r}")


def fill_template(template: str, **params: object) -> str:
    """``template`` with each ``{placeholder}`` filled: ids as hex, strings checked against
    their pattern, drive paths percent-encoded. A missing, extra or wrongly typed parameter
    is a bug: ``ValueError`` / ``TypeError``."""
    names = _placeholders(template)
    if set(names) != set(params):
        raise ValueError(
            f"{template}: expects {sorted(names)}, got {sorted(params)}",
        )
    rendered = {name: _render(name, params[name]) for name in names}
    return _FIELD.sub(lambda match: rendered[match.group(1)], template)


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: method, path template, bodies and the status of success.

    ``request_model`` is the JSON body (``None``: no JSON body; a record stream when
    ``request_media_type`` says so); ``query_model`` the query parameters;
    ``response_model`` the JSON reply (``None``: no body, or the ``response_media_type``
    stream). ``auth`` says whether a session token is required.
    """

    name: str
    method: Method
    template: str
    request_model: type[WireModel] | None = None
    query_model: type[WireModel] | None = None
    request_media_type: str | None = None  # JSON_MEDIA_TYPE when request_model is set
    response_model: type[WireModel] | None = None
    response_media_type: str | None = JSON_MEDIA_TYPE
    status_code: int = 200
    auth: bool = True
    placeholders: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = _placeholders(self.template)
        assert set(names) <= set(_PLACEHOLDER_TYPES), f"unknown placeholder in {self.template}"
        object.__setattr__(self, "placeholders", names)
        if self.request_model is not None:
            assert self.request_media_type in (None, JSON_MEDIA_TYPE)
            object.__setattr__(self, "request_media_type", JSON_MEDIA_TYPE)

    def fill(self, **params: object) -> str:
        """The concrete path: ``COMMITS.fill(namespace_id=ns)``."""
        return fill_template(self.template, **params)

    @property
    def plain_template(self) -> str:
        """The template without router converters (``{subpath:path}`` → ``{subpath}``), as
        OpenAPI writes it."""
        return _FIELD.sub(lambda match: "{" + match.group(1) + "}", self.template)


_NS: Final = "/v1/namespaces/{namespace_id}"
_RECORDS: Final = RECORD_STREAM_MEDIA_TYPE

# Accounts and sessions.
REGISTER: Final = Route(
    "register", "POST", "/v1/accounts/register",
    request_model=RegisterRequest, response_model=AccountInfo, status_code=201, auth=False,
)  # fmt: skip
LOGIN: Final = Route(
    "login", "POST", "/v1/accounts/login",
    request_model=LoginRequest, response_model=LoginResponse, auth=False,
)  # fmt: skip
LOGOUT: Final = Route(
    "logout", "POST", "/v1/accounts/logout", response_media_type=None, status_code=204
)
WHOAMI: Final = Route("whoami", "GET", "/v1/accounts/me", response_model=WhoAmI)
SESSIONS: Final = Route("sessions", "GET", "/v1/accounts/me/sessions", response_model=SessionList)
REVOKE_SESSION: Final = Route(
    "revoke_session", "DELETE", "/v1/accounts/me/sessions/{session_id}",
    response_media_type=None, status_code=204,
)  # fmt: skip
AUDIT_LOG: Final = Route(
    "audit_log", "GET", "/v1/accounts/me/audit", query_model=AuditQuery, response_model=AuditPage
)

# Namespaces.
NAMESPACES: Final = Route("namespaces", "GET", "/v1/namespaces", response_model=NamespaceList)
HEAD: Final = Route("head", "GET", f"{_NS}/head", response_model=HeadInfo)

# Chunks.
MISSING_CHUNKS: Final = Route(
    "missing_chunks", "POST", f"{_NS}/chunks/missing",
    request_model=MissingChunksRequest, response_model=MissingChunksResponse,
)  # fmt: skip
UPLOAD_CHUNKS: Final = Route(
    "upload_chunks", "POST", f"{_NS}/chunks/upload",
    request_media_type=_RECORDS, response_model=ChunkUploadResponse,
)  # fmt: skip
DOWNLOAD_CHUNKS: Final = Route(
    "download_chunks", "POST", f"{_NS}/chunks/download",
    request_model=ChunksRequest, response_media_type=_RECORDS,
)  # fmt: skip
CHUNK: Final = Route(
    "chunk", "GET", f"{_NS}/chunks/{{chunk_id}}", response_media_type=FRAME_MEDIA_TYPE
)

# Trees and commits.
TREES: Final = Route(
    "trees", "POST", f"{_NS}/trees", request_model=TreesRequest, response_media_type=_RECORDS
)
COMMITS: Final = Route(
    "commits", "POST", f"{_NS}/commits", request_model=CommitsRequest, response_media_type=_RECORDS
)
LOG: Final = Route("log", "GET", f"{_NS}/log", query_model=LogQuery, response_model=LogPage)

# Operations and history.
APPLY_OPS: Final = Route(
    "apply_ops", "POST", f"{_NS}/ops", request_model=OpsBatch, response_model=OpsBatchResponse
)
VERSIONS: Final = Route(
    "versions", "POST", f"{_NS}/history/versions",
    request_model=VersionsRequest, response_model=VersionsPage,
)  # fmt: skip
RESTORE: Final = Route(
    "restore", "POST", f"{_NS}/history/restore",
    request_model=RestoreRequest, response_model=OpsBatchResponse,
)  # fmt: skip

# Shared folders: sharing one's folder, its members, and one's invitations.
SHARE: Final = Route(
    "share", "POST", f"{_NS}/share",
    request_model=ShareRequest, response_model=ShareInfo, status_code=201,
)  # fmt: skip
UNSHARE: Final = Route(
    "unshare", "POST", f"{_NS}/unshare", response_media_type=None, status_code=204
)
MEMBERS: Final = Route("members", "GET", f"{_NS}/members", response_model=MemberList)
SET_MEMBER: Final = Route(
    "set_member", "POST", f"{_NS}/members", request_model=MemberRequest, response_model=MemberInfo
)
REMOVE_MEMBER: Final = Route(
    "remove_member", "DELETE", f"{_NS}/members/{{username}}",
    response_media_type=None, status_code=204,
)  # fmt: skip
INVITATIONS: Final = Route("invitations", "GET", "/v1/invitations", response_model=InvitationList)
ACCEPT_INVITATION: Final = Route(
    "accept_invitation", "POST", "/v1/invitations/{invitation_id}/accept",
    request_model=AcceptRequest, response_model=AcceptResponse,
)  # fmt: skip
DECLINE_INVITATION: Final = Route(
    "decline_invitation", "DELETE", "/v1/invitations/{invitation_id}",
    response_media_type=None, status_code=204,
)  # fmt: skip

# Who is editing: a device's heartbeat of the files it has open for writing, and the list.
EDITING: Final = Route(
    "editing", "POST", f"{_NS}/editing", request_model=EditingRequest, response_model=EditorList
)
EDITORS: Final = Route("editors", "GET", f"{_NS}/editing", response_model=EditorList)

# Share links: made, listed and revoked with a session; the pages under /l/TOKEN are public
# (a password, if the link has one, travels as a form post, a cookie or HTTP Basic).
_LINK: Final = "/l/{token}"
CREATE_LINK: Final = Route(
    "create_link", "POST", f"{_NS}/links",
    request_model=LinkCreateRequest, response_model=LinkCreated, status_code=201,
)  # fmt: skip
LINKS: Final = Route("links", "GET", "/v1/links", response_model=LinkList)
REVOKE_LINK: Final = Route(
    "revoke_link", "DELETE", "/v1/links/{link_id}", response_media_type=None, status_code=204
)
LINK_PAGE: Final = Route(
    "link_page", "GET", _LINK, query_model=LinkPageQuery, response_media_type=None, auth=False
)
LINK_SUBPAGE: Final = Route(
    "link_subpage", "GET", f"{_LINK}/{{subpath:path}}",
    query_model=LinkPageQuery, response_media_type=None, auth=False,
)  # fmt: skip
LINK_UNLOCK: Final = Route(
    "link_unlock", "POST", f"{_LINK}/unlock",
    request_media_type="application/x-www-form-urlencoded", response_media_type=HTML_MEDIA_TYPE,
    status_code=303, auth=False,
)  # fmt: skip
LINK_UPLOAD: Final = Route(
    "link_upload", "POST", f"{_LINK}/upload",
    request_media_type="multipart/form-data", response_media_type=HTML_MEDIA_TYPE, auth=False,
)  # fmt: skip

# Events and health.
EVENTS: Final = Route("events", "GET", "/v1/events", response_media_type=EVENT_STREAM_MEDIA_TYPE)
HEALTH: Final = Route("health", "GET", "/healthz", response_model=Health, auth=False)

ACCOUNT_ROUTES: Final = (REGISTER, LOGIN, LOGOUT, WHOAMI, SESSIONS, REVOKE_SESSION, AUDIT_LOG)
NAMESPACE_ROUTES: Final = (NAMESPACES, HEAD)
CHUNK_ROUTES: Final = (MISSING_CHUNKS, UPLOAD_CHUNKS, DOWNLOAD_CHUNKS, CHUNK)
OBJECT_ROUTES: Final = (TREES, COMMITS, LOG)
OPS_ROUTES: Final = (APPLY_OPS, VERSIONS, RESTORE)
SHARING_ROUTES: Final = (
    SHARE, UNSHARE, MEMBERS, SET_MEMBER, REMOVE_MEMBER,
    INVITATIONS, ACCEPT_INVITATION, DECLINE_INVITATION, EDITING, EDITORS,
)  # fmt: skip
LINK_MANAGEMENT_ROUTES: Final = (CREATE_LINK, LINKS, REVOKE_LINK)
# The public pages. The unlock and upload posts come before the sub-page: a router that
# tries routes in order must not take ``/l/TOKEN/upload`` for a path in the folder.
LINK_ROUTES: Final = (LINK_PAGE, LINK_UNLOCK, LINK_UPLOAD, LINK_SUBPAGE)
ROUTES: Final[tuple[Route, ...]] = (
    *ACCOUNT_ROUTES,
    *NAMESPACE_ROUTES,
    *CHUNK_ROUTES,
    *OBJECT_ROUTES,
    *OPS_ROUTES,
    *SHARING_ROUTES,
    *LINK_MANAGEMENT_ROUTES,
    *LINK_ROUTES,
    EVENTS,
    HEALTH,
)


# --- headers ---------------------------------------------------------------------------------


def request_headers(token: str | None = None) -> dict[str, str]:
    """Headers every client request carries: the protocol version, and the session token."""
    headers = {PROTOCOL_HEADER: str(PROTOCOL_VERSION)}
    if token is not None:
        headers[AUTHORIZATION_HEADER] = f"{AUTH_SCHEME} {token}"
    return headers


def check_protocol_version(value: str | None) -> None:
    """Server side: refuse a request whose ``Boxfs-Protocol`` header is not this version."""
    if value is None or value.strip() != str(PROTOCOL_VERSION):
        raise UnsupportedProtocolError(
            f"this server speaks protocol {PROTOCOL_VERSION}, the client sent {value!r}",
            {"supported": [PROTOCOL_VERSION], "got": value},
        )


def parse_bearer(value: str | None) -> str:
    """Server side: the token in an ``Authorization`` header, or ``UnauthorizedError``."""
    scheme, _, token = (value or "").partition(" ")
    if scheme.lower() != AUTH_SCHEME.lower() or not re.fullmatch(TOKEN_PATTERN, token):
        raise UnauthorizedError("missing or malformed bearer token")
    return token


def parse_session_id(text: str) -> str:
    if not re.fullmatch(SESSION_ID_PATTERN, text):
        raise InvalidIdError(f"session id must be 32 lowercase hex digits: {text[:40]!r}")
    return text


def parse_invitation_id(text: str) -> str:
    if not re.fullmatch(INVITATION_ID_PATTERN, text):
        raise InvalidIdError(f"invitation id must be 32 lowercase hex digits: {text[:40]!r}")
    return text


def parse_username(text: str) -> str:
    """A username in a path: what registration allows, else ``InvalidIdError``."""
    if not (
        USERNAME_MIN_CHARS <= len(text) <= USERNAME_MAX_CHARS
        and re.fullmatch(USERNAME_PATTERN, text)
    ):
        raise InvalidIdError(f"not a valid username: {text[:40]!r}")
    return text


def _check_routes() -> None:
    assert len({(route.method, route.template) for route in ROUTES}) == len(ROUTES)
    assert len({route.name for route in ROUTES}) == len(ROUTES)


_check_routes()
