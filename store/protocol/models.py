"""The JSON bodies of the protocol, apart from files: the ``WireModel`` base, the field
types bodies share (usernames, device names, tokens, cursors, page limits, ...), and the
bodies of accounts and sessions, namespaces and heads, chunks, trees, commits and the log,
head events, and the audit log.

Declares shapes and bounds; pydantic validates them, and a refusal keeps its error code
(``error_bodies.validation_error_body``). Names no route and no status: ``routes`` pairs
each body with its endpoint. File entries, operations and history are in ``ops``; the error
body is in ``error_bodies``. Models are frozen: any thread.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)

from store.ids import CommitId
from store.objects import MAX_COMMIT_TEXT_BYTES, Commit
from store.protocol.bounds import (
    AUDIT_ACTION_PATTERN,
    CURSOR_PATTERN,
    DEFAULT_PAGE_SIZE,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_AUDIT_DETAIL_ITEMS,
    MAX_CURSOR_CHARS,
    MAX_DEVICE_NAME_BYTES,
    MAX_IDS_PER_REQUEST,
    MAX_NAMESPACE_NAME_CHARS,
    MAX_NAMESPACES_PER_USER,
    MAX_PAGE_SIZE,
    MAX_SESSIONS_LISTED,
    PASSWORD_MAX_CHARS,
    PASSWORD_MIN_CHARS,
    PROTOCOL_VERSION,
    SESSION_ID_PATTERN,
    TOKEN_PATTERN,
    USERNAME_MAX_CHARS,
    USERNAME_MIN_CHARS,
    USERNAME_PATTERN,
)
from store.protocol.wire import HexChunkId, HexCommitId, HexNamespaceId, HexTreeId

# --- models: common ------------------------------------------------------------------------


class WireModel(BaseModel):
    """Base of every body: immutable, and any field this version does not define is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_device_name(name: str) -> str:
    if len(name.encode("utf-8", "surrogatepass")) > MAX_DEVICE_NAME_BYTES:
        raise ValueError(f"device name over {MAX_DEVICE_NAME_BYTES} bytes")
    if name != name.strip():
        raise ValueError("device name has leading or trailing space")
    return name


Username: TypeAlias = Annotated[
    str,
    StringConstraints(
        min_length=USERNAME_MIN_CHARS, max_length=USERNAME_MAX_CHARS, pattern=USERNAME_PATTERN
    ),
]
Password: TypeAlias = Annotated[
    str, StringConstraints(min_length=PASSWORD_MIN_CHARS, max_length=PASSWORD_MAX_CHARS)
]
Email: TypeAlias = EmailStr  # email-validator bounds the length (254 characters)
DeviceName: TypeAlias = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_DEVICE_NAME_BYTES, pattern=r"^[^/\\\x00-\x1f\x7f]+$"
    ),
    AfterValidator(_check_device_name),
]
Token: TypeAlias = Annotated[str, StringConstraints(pattern=TOKEN_PATTERN)]
SessionId: TypeAlias = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
Cursor: TypeAlias = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_CURSOR_CHARS, pattern=CURSOR_PATTERN)
]
PageLimit: TypeAlias = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]
IdempotencyKey: TypeAlias = Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY_PATTERN)]
HeadSequence: TypeAlias = Annotated[int, Field(ge=0, lt=2**63)]
TimeNs: TypeAlias = Annotated[int, Field(ge=-(2**63), lt=2**63)]
CommitText: TypeAlias = Annotated[str, StringConstraints(max_length=MAX_COMMIT_TEXT_BYTES)]
Role: TypeAlias = Literal["owner", "editor", "viewer"]


class Health(WireModel):
    status: Literal["ok"] = "ok"
    protocol_version: int = PROTOCOL_VERSION
    server_version: Annotated[str, StringConstraints(max_length=64)] = ""


# --- models: accounts and sessions ---------------------------------------------------------


class RegisterRequest(WireModel):
    username: Username
    email: Email
    password: Password = Field(repr=False)


class AccountInfo(WireModel):
    username: Username
    email: Email
    created_at: AwareDatetime


class LoginRequest(WireModel):
    username: Username
    password: Password = Field(repr=False)
    device_name: DeviceName


class LoginResponse(WireModel):
    token: Token = Field(repr=False)
    session_id: SessionId
    username: Username
    device_name: DeviceName
    expires_at: AwareDatetime | None = None  # None: valid until logout or revocation


class WhoAmI(WireModel):
    username: Username
    email: Email
    session_id: SessionId
    device_name: DeviceName


class SessionInfo(WireModel):
    session_id: SessionId
    device_name: DeviceName
    created_at: AwareDatetime
    last_used_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    current: bool = False  # the session making this request


class SessionList(WireModel):
    sessions: tuple[SessionInfo, ...] = Field(max_length=MAX_SESSIONS_LISTED)


# --- models: namespaces --------------------------------------------------------------------


class NamespaceInfo(WireModel):
    namespace_id: HexNamespaceId
    name: Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAMESPACE_NAME_CHARS)]
    role: Role
    head: HexCommitId | None  # None: no commit yet (an empty drive)
    home: bool = False  # the user's own drive, mounted at the root of the view
    sequence: HeadSequence = 0  # how many times the head has moved; events carry it


class NamespaceList(WireModel):
    namespaces: tuple[NamespaceInfo, ...] = Field(max_length=MAX_NAMESPACES_PER_USER)


class HeadInfo(WireModel):
    namespace_id: HexNamespaceId
    head: HexCommitId | None
    sequence: HeadSequence


# --- models: chunks, trees, commits --------------------------------------------------------


class MissingChunksRequest(WireModel):
    ids: tuple[HexChunkId, ...] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)


class MissingChunksResponse(WireModel):
    """The requested ids this namespace does not hold yet, in request order. A chunk the
    server holds only for other users' namespaces is reported missing (it must be sent)."""

    missing: tuple[HexChunkId, ...] = Field(max_length=MAX_IDS_PER_REQUEST)


class ChunkUploadResponse(WireModel):
    """The ids now durable and referenced by this namespace, in stream order."""

    stored: tuple[HexChunkId, ...] = Field(max_length=MAX_IDS_PER_REQUEST)


class ChunksRequest(WireModel):
    ids: tuple[HexChunkId, ...] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)


class TreesRequest(WireModel):
    ids: tuple[HexTreeId, ...] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)


class CommitsRequest(WireModel):
    ids: tuple[HexCommitId, ...] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)


class LogQuery(WireModel):
    """Query parameters of the log: newest first, from the head or from ``cursor``."""

    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class CommitInfo(WireModel):
    """A commit as the log shows it: the fields of ``store.objects.Commit`` and its id."""

    commit_id: HexCommitId
    root: HexTreeId
    parents: tuple[HexCommitId, ...] = Field(max_length=MAX_IDS_PER_REQUEST)
    author: CommitText
    device: CommitText
    time_ns: TimeNs
    summary: CommitText


class LogPage(WireModel):
    commits: tuple[CommitInfo, ...] = Field(max_length=MAX_PAGE_SIZE)
    next_cursor: Cursor | None = None  # None: this is the oldest page


def commit_info(commit_id: CommitId, commit: Commit) -> CommitInfo:
    return CommitInfo(
        commit_id=commit_id,
        root=commit.root,
        parents=commit.parents,
        author=commit.author,
        device=commit.device,
        time_ns=commit.time_ns,
        summary=commit.summary,
    )


# --- models: events and audit ------------------------------------------------------------------


class Event(WireModel):
    """A hint that a namespace's head moved, or that the caller's role in it changed.
    ``sequence`` grows by one per move, so a client drops an event whose sequence and role
    it has already seen; the commit chain is the record."""

    namespace_id: HexNamespaceId
    head: HexCommitId
    sequence: HeadSequence
    role: Role | None = None  # the caller's role in the namespace


# The actions the server records; the field is open text so a newer server can add some.
AUDIT_ACTIONS: Final = (
    "register",
    "login",
    "login_failed",
    "logout",
    "session_revoked",
    "upload",
    "download",
    "delete",
    "share",
    "unshare",
    "invite",
    "role_change",
    "member_removed",
    "leave",
    "accept",
    "decline",
    "restore",
    "commit",
    "link_created",
    "link_used",
    "link_revoked",
    "link_password_failed",
)


class AuditQuery(WireModel):
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class AuditRecord(WireModel):
    sequence: HeadSequence
    time: AwareDatetime
    action: Annotated[str, StringConstraints(pattern=AUDIT_ACTION_PATTERN)]
    outcome: Literal["success", "failure"]
    username: Annotated[str, StringConstraints(max_length=USERNAME_MAX_CHARS)] | None = None
    device_name: DeviceName | None = None
    session_id: SessionId | None = None
    namespace_id: HexNamespaceId | None = None
    remote_address: Annotated[str, StringConstraints(max_length=64)] | None = None
    detail: dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(max_length=1024)],
    ] = Field(default_factory=dict, max_length=MAX_AUDIT_DETAIL_ITEMS)


class AuditPage(WireModel):
    records: tuple[AuditRecord, ...] = Field(max_length=MAX_PAGE_SIZE)  # newest first
    next_cursor: Cursor | None = None


def query_params(query: WireModel) -> dict[str, str]:
    """A query model as URL query parameters (unset fields left out)."""
    return {
        key: str(value) for key, value in query.model_dump(mode="json", exclude_none=True).items()
    }
