"""The wire protocol between the boxfs client and server: the one place that knows it.

Owns the protocol version and its header, every route (method, path template, bodies,
success status), the JSON request and response models with their bounds, the JSON form of
paths and byte strings, the binary record streams that carry chunks, trees and commits in
batches, the Server-Sent Events format, and the error table (code → HTTP status →
exception class, both ways). ``docs/protocol.md`` describes the same, for people.

It builds and parses; it never sends. No HTTP client or server, no event loop: the server
(``server/app.py``) registers its handlers from ``ROUTES`` and turns exceptions into
responses with ``body_for``; the client (``boxfs/remote.py``) fills routes with
``Route.fill`` and turns error responses back into exceptions with ``error_for_response``.
No route string or HTTP status number is needed anywhere else.

Pure values and functions; the incremental parsers are objects owned by one task at a time.
Any thread may call the rest.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import string
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import (
    Annotated,
    Any,
    ClassVar,
    Final,
    Generic,
    Literal,
    TypeAlias,
    TypeVar,
)

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    GetCoreSchemaHandler,
    JsonValue,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from store.chunking import CHUNK_MAX_BYTES, CHUNK_MIN_BYTES
from store.errors import (
    ConflictError,
    CryptoError,
    FormatError,
    IntegrityError,
    NotFoundError,
    StoreError,
    TransientError,
)
from store.ids import DIGEST_BYTES, ChunkId, CommitId, ContentHash, NamespaceId, TreeId
from store.objects import (
    MAX_COMMIT_TEXT_BYTES,
    MAX_FILE_BYTES,
    MAX_ID_NUMBER,
    MAX_XATTRS_TOTAL_BYTES,
    MODE_BITS,
    ChunkRef,
    Commit,
    EntryKind,
    FileEntry,
)
from store.objects import validate_name as _validate_format_name

_KIB: Final = 1024
_MIB: Final = 1024 * 1024

# --- version, headers, media types -------------------------------------------------------

# Any change to a route, a model, a byte layout or the error table is a new version.
PROTOCOL_VERSION: Final = 1
PROTOCOL_HEADER: Final = "Boxfs-Protocol"
AUTHORIZATION_HEADER: Final = "Authorization"
AUTH_SCHEME: Final = "Bearer"
RETRY_AFTER_HEADER: Final = "Retry-After"

JSON_MEDIA_TYPE: Final = "application/json"
RECORD_STREAM_MEDIA_TYPE: Final = "application/vnd.boxfs.records"
FRAME_MEDIA_TYPE: Final = "application/vnd.boxfs.frame"
EVENT_STREAM_MEDIA_TYPE: Final = "text/event-stream"

# --- bounds ---------------------------------------------------------------------------------
# Every list, string and body on the wire has a bound, so a hostile peer cannot make the
# other side allocate without limit. The server checks them all before touching data.

MAX_IDS_PER_REQUEST: Final = 1024  # chunk, tree and commit ids in one request
MAX_OPS_PER_BATCH: Final = 1000
MAX_PAGE_SIZE: Final = 1000  # log, history and audit pages
DEFAULT_PAGE_SIZE: Final = 100
MAX_NAMESPACES_PER_USER: Final = 1000
MAX_SESSIONS_LISTED: Final = 1000
# A record-stream body (chunk upload): about 16 maximal frames, 64 average ones.
MAX_BATCH_BODY_BYTES: Final = 64 * _MIB
# A JSON body. Large because a put carries a file's whole chunk list (about 90 bytes of
# JSON per chunk: a 1 TiB file at the 1 MiB average needs roughly 95 MiB).
MAX_JSON_BODY_BYTES: Final = 128 * _MIB
# A frame is at most a 4 MiB chunk behind a small header. The wire bound is a little looser
# than store.frames' exact one; the frame decoder enforces that one on receipt.
MAX_FRAME_BYTES: Final = CHUNK_MAX_BYTES + 64
MAX_TREE_RECORD_BYTES: Final = 64 * _MIB  # one tree's canonical encoding
MAX_COMMIT_RECORD_BYTES: Final = 64 * _KIB  # one commit's canonical encoding
MAX_CHUNKS_PER_ENTRY: Final = MAX_FILE_BYTES // CHUNK_MIN_BYTES  # the format's worst case
MAX_PATH_DEPTH: Final = 256
USERNAME_MIN_CHARS: Final = 3
USERNAME_MAX_CHARS: Final = 32
PASSWORD_MIN_CHARS: Final = 10
PASSWORD_MAX_CHARS: Final = 1024
# Device names go into conflicted-copy file names, so they are short and contain no '/'.
MAX_DEVICE_NAME_BYTES: Final = 64
MAX_NAMESPACE_NAME_CHARS: Final = 255
MAX_CURSOR_CHARS: Final = 256
MAX_ERROR_MESSAGE_CHARS: Final = 4096
MAX_OP_MESSAGE_CHARS: Final = 1024
MAX_AUDIT_DETAIL_ITEMS: Final = 32
# Event stream: the server sends a heartbeat at least this often; a client that hears
# nothing for the idle timeout drops the connection and reconnects.
HEARTBEAT_INTERVAL_S: Final = 15.0
EVENT_IDLE_TIMEOUT_S: Final = 45.0
MAX_SSE_LINE_CHARS: Final = 64 * _KIB

TOKEN_BYTES: Final = 32  # session tokens: 256 random bits, base64url without padding
_TOKEN_PATTERN: Final = r"^[A-Za-z0-9_-]{32,128}$"  # noqa: S105  (a pattern, not a secret)
_SESSION_ID_PATTERN: Final = r"^[0-9a-f]{32}$"
_USERNAME_PATTERN: Final = r"^[a-z0-9._-]+$"
_IDEMPOTENCY_KEY_PATTERN: Final = r"^[A-Za-z0-9_-]{16,64}$"
_CURSOR_PATTERN: Final = r"^[A-Za-z0-9_.~-]+$"
_CODE_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
_AUDIT_ACTION_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"


# --- errors -------------------------------------------------------------------------------


class ProtocolError(StoreError):
    """An error that travels as an error code. ``code``, ``message`` and ``detail`` are the
    JSON error body (``ErrorBody``); each subclass stands for one code (``CODE``). A plain
    ``ProtocolError`` carries a code this build does not know (a newer peer)."""

    CODE: ClassVar[str] = "internal"

    def __init__(
        self,
        message: str,
        detail: Mapping[str, JsonValue] | None = None,
        *,
        code: str | None = None,
    ) -> None:
        self.code = code if code is not None else type(self).CODE
        self.message = message
        self.detail: dict[str, JsonValue] = dict(detail or {})
        super().__init__(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequestError(ProtocolError):
    """The request does not follow the protocol: a bug in the sender, never retried."""

    CODE = "bad_request"


class InvalidIdError(BadRequestError):
    """An id that is not the right number of lowercase hex digits for its kind."""

    CODE = "invalid_id"


class InvalidNameError(BadRequestError):
    """A file name or path the format does not allow (empty, ``.``, ``..``, NUL, ``/``,
    over 255 bytes, too deep)."""

    CODE = "invalid_name"


class BodyTooLargeError(BadRequestError):
    """A request body over its byte bound."""

    CODE = "body_too_large"


class BatchTooLargeError(BadRequestError):
    """A list over its length bound (ids, ops, records): split it and send again."""

    CODE = "batch_too_large"


class UnsupportedProtocolError(ProtocolError):
    """The peer speaks another protocol version (``detail``: ``supported``, ``got``)."""

    CODE = "unsupported_protocol"


class UnauthorizedError(ProtocolError):
    """No valid session: missing, unknown or revoked token, or wrong credentials."""

    CODE = "unauthorized"


class TokenExpiredError(UnauthorizedError):
    """The session token was valid but has expired: log in again."""

    CODE = "token_expired"


class ForbiddenError(ProtocolError):
    """Authenticated, but the role does not allow this (a viewer writing, ...)."""

    CODE = "forbidden"


class UsernameTakenError(ProtocolError):
    """Registration with a username that already exists."""

    CODE = "username_taken"


class RateLimitedError(ProtocolError, TransientError):
    """Too many requests; retry after ``retry_after_s`` seconds."""

    CODE = "rate_limited"

    @property
    def retry_after_s(self) -> float | None:
        value = self.detail.get("retry_after_s")
        return float(value) if isinstance(value, int | float) else None


class UnavailableError(ProtocolError, TransientError):
    """The server cannot serve now (starting, stopping, a backend down): retry later."""

    CODE = "unavailable"


class InternalError(ProtocolError):
    """A bug or an unexpected failure in the server. The message never carries internals."""

    CODE = "internal"


class StaleBaseError(ConflictError):
    """A request names a base (a content hash or a head) that is no longer current, and the
    server cannot resolve the difference itself: fetch the head and try again."""


# --- ids on the wire ----------------------------------------------------------------------

IdT = TypeVar("IdT", ChunkId, TreeId, CommitId)
_AnyIdT = TypeVar("_AnyIdT", ChunkId, TreeId, CommitId, ContentHash, NamespaceId)


def parse_id(id_type: type[_AnyIdT], text: str) -> _AnyIdT:
    """An id from its hex form (a path parameter, a JSON field); ``InvalidIdError`` if not."""
    try:
        return id_type.from_hex(text)
    except FormatError as exc:
        raise InvalidIdError(str(exc), {"kind": id_type.KIND}) from exc


def _pydantic_error(exc: ProtocolError) -> PydanticCustomError:
    # Inside a model, a protocol error becomes a pydantic error whose type is the code, so
    # ``validation_error_body`` can give it back its code.
    return PydanticCustomError(exc.code, "{message}", {"message": exc.message})


class _HexId:
    """Annotation marker: a typed id that is 64 (namespace: 32) lowercase hex digits in JSON."""

    def __init__(self, id_type: Any) -> None:
        self.id_type: Any = id_type  # one of the store.ids classes

    def _validate(self, value: object) -> object:
        if isinstance(value, self.id_type):
            return value
        if isinstance(value, str):
            try:
                return parse_id(self.id_type, value)
            except InvalidIdError as exc:
                raise _pydantic_error(exc) from exc
        raise PydanticCustomError(
            InvalidIdError.CODE, "{kind} must be a hex string", {"kind": self.id_type.KIND}
        )

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        digits = 2 * self.id_type.SIZE
        text = core_schema.str_schema(
            pattern=f"^[0-9a-f]{{{digits}}}$", min_length=digits, max_length=digits
        )
        return core_schema.no_info_plain_validator_function(
            self._validate,
            json_schema_input_schema=text,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _hex, when_used="json", return_schema=text
            ),
        )


def _hex(value: bytes) -> str:
    return value.hex()


HexChunkId: TypeAlias = Annotated[ChunkId, _HexId(ChunkId)]
HexTreeId: TypeAlias = Annotated[TreeId, _HexId(TreeId)]
HexCommitId: TypeAlias = Annotated[CommitId, _HexId(CommitId)]
HexContentHash: TypeAlias = Annotated[ContentHash, _HexId(ContentHash)]
HexNamespaceId: TypeAlias = Annotated[NamespaceId, _HexId(NamespaceId)]


# --- byte strings and paths on the wire -------------------------------------------------
#
# A byte string (a name, a symlink target, an xattr name or value, a whole path) travels
# as a JSON string when it is valid UTF-8, which is nearly always, and otherwise as
# {"b64": "<standard base64, padded>"}. Senders use the string form whenever they can;
# receivers accept either. Every byte sequence round-trips exactly.

WireBytesJson: TypeAlias = str | dict[str, str]


def encode_wire_bytes(raw: bytes) -> WireBytesJson:
    """The JSON form of a byte string."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode("ascii")}


def decode_wire_bytes(value: object) -> bytes:
    """A byte string from its JSON form (or from bytes, in Python); ``BadRequestError``."""
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequestError("a string holds a lone surrogate") from exc
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        text = value["b64"]
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequestError(f"not base64: {text[:40]!r}") from exc
        if base64.b64encode(raw).decode("ascii") != text:
            raise BadRequestError(f"not canonical base64: {text[:40]!r}")
        return raw
    raise BadRequestError('a byte string is a JSON string or {"b64": "..."}')


def _wire_bytes_json_schema() -> core_schema.CoreSchema:
    b64 = core_schema.typed_dict_field(core_schema.str_schema())
    return core_schema.union_schema(
        [
            core_schema.str_schema(),
            core_schema.typed_dict_schema({"b64": b64}, extra_behavior="forbid"),
        ]
    )


class _WireBytes:
    """Annotation marker: ``bytes`` in Python, ``encode_wire_bytes`` form in JSON."""

    @staticmethod
    def _validate(value: object) -> bytes:
        try:
            return decode_wire_bytes(value)
        except ProtocolError as exc:
            raise _pydantic_error(exc) from exc

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        wire = _wire_bytes_json_schema()
        return core_schema.no_info_plain_validator_function(
            self._validate,
            json_schema_input_schema=wire,
            serialization=core_schema.plain_serializer_function_ser_schema(
                encode_wire_bytes, when_used="json", return_schema=wire
            ),
        )


WireBytes: TypeAlias = Annotated[bytes, _WireBytes()]


def validate_name(name: bytes) -> bytes:
    """A file name as the format allows it, or ``InvalidNameError``; returns the name."""
    try:
        _validate_format_name(name)
    except FormatError as exc:
        raise InvalidNameError(str(exc)) from exc
    return name


class DrivePath:
    """A path inside a namespace, relative to its root: 1 to ``MAX_PATH_DEPTH`` names.

    Its bytes form joins the names with ``/`` (no leading or trailing slash); on the wire
    that byte string travels as any other (``encode_wire_bytes``). The root itself is not
    a ``DrivePath``: no operation names it.
    """

    __slots__ = ("components",)
    components: tuple[bytes, ...]

    def __init__(self, components: Iterable[bytes]) -> None:
        parts = tuple(components)
        if not parts:
            raise InvalidNameError("a path needs at least one name")
        if len(parts) > MAX_PATH_DEPTH:
            raise InvalidNameError(f"path is {len(parts)} names deep, over {MAX_PATH_DEPTH}")
        for part in parts:
            validate_name(part)
        object.__setattr__(self, "components", parts)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("DrivePath is immutable")

    def __reduce__(self) -> tuple[type[DrivePath], tuple[tuple[bytes, ...]]]:
        return (DrivePath, (self.components,))

    @classmethod
    def from_bytes(cls, raw: bytes) -> DrivePath:
        """``b"a/b/c"`` → the path of three names; any empty name is refused."""
        if raw.count(b"/") >= MAX_PATH_DEPTH:  # refuse before splitting a huge input
            raise InvalidNameError(f"path is over {MAX_PATH_DEPTH} names deep")
        return cls(raw.split(b"/"))

    @classmethod
    def from_wire(cls, value: object) -> DrivePath:
        if isinstance(value, DrivePath):
            return value
        try:
            raw = decode_wire_bytes(value)
        except BadRequestError as exc:
            raise InvalidNameError(f"bad path: {exc.message}") from exc
        return cls.from_bytes(raw)

    def to_wire(self) -> WireBytesJson:
        return encode_wire_bytes(bytes(self))

    def __bytes__(self) -> bytes:
        return b"/".join(self.components)

    @property
    def name(self) -> bytes:
        return self.components[-1]

    @property
    def parent(self) -> DrivePath | None:
        """The parent directory, or ``None`` for a name directly under the root."""
        return DrivePath(self.components[:-1]) if len(self.components) > 1 else None

    def child(self, name: bytes) -> DrivePath:
        return DrivePath((*self.components, name))

    def is_within(self, other: DrivePath) -> bool:
        """True if this path is ``other`` or lies beneath it."""
        return self.components[: len(other.components)] == other.components

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DrivePath) and self.components == other.components

    def __hash__(self) -> int:
        return hash(self.components)

    def __repr__(self) -> str:
        return f"DrivePath({bytes(self)!r})"

    @classmethod
    def _validate(cls, value: object) -> DrivePath:
        try:
            return cls.from_wire(value)
        except ProtocolError as exc:
            raise _pydantic_error(exc) from exc

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        wire = _wire_bytes_json_schema()
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            json_schema_input_schema=wire,
            serialization=core_schema.plain_serializer_function_ser_schema(
                DrivePath.to_wire, when_used="json", return_schema=wire
            ),
        )


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
        min_length=USERNAME_MIN_CHARS, max_length=USERNAME_MAX_CHARS, pattern=_USERNAME_PATTERN
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
Token: TypeAlias = Annotated[str, StringConstraints(pattern=_TOKEN_PATTERN)]
SessionId: TypeAlias = Annotated[str, StringConstraints(pattern=_SESSION_ID_PATTERN)]
Cursor: TypeAlias = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_CURSOR_CHARS, pattern=_CURSOR_PATTERN)
]
PageLimit: TypeAlias = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]
IdempotencyKey: TypeAlias = Annotated[str, StringConstraints(pattern=_IDEMPOTENCY_KEY_PATTERN)]
HeadSequence: TypeAlias = Annotated[int, Field(ge=0, lt=2**63)]
TimeNs: TypeAlias = Annotated[int, Field(ge=-(2**63), lt=2**63)]
CommitText: TypeAlias = Annotated[str, StringConstraints(max_length=MAX_COMMIT_TEXT_BYTES)]
Role: TypeAlias = Literal["owner", "editor", "viewer"]


class ErrorBody(WireModel):
    """The body of every error response (any 4xx or 5xx)."""

    code: Annotated[str, StringConstraints(pattern=_CODE_PATTERN)]
    message: Annotated[str, StringConstraints(max_length=MAX_ERROR_MESSAGE_CHARS)]
    detail: dict[str, JsonValue] = Field(default_factory=dict)


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


# --- models: file entries ------------------------------------------------------------------

EntryKindName: TypeAlias = Literal["file", "dir", "symlink", "fifo", "socket"]
_NAME_OF_KIND: Final[dict[EntryKind, EntryKindName]] = {
    EntryKind.FILE: "file",
    EntryKind.DIR: "dir",
    EntryKind.SYMLINK: "symlink",
    EntryKind.FIFO: "fifo",
    EntryKind.SOCKET: "socket",
}
_KIND_BY_NAME: Final[dict[str, EntryKind]] = {name: kind for kind, name in _NAME_OF_KIND.items()}
# A throwaway name under which the format's own rules check a nameless model.
_PROBE_NAME: Final = b"entry"
_PROBE_PREFIX: Final = f"{_PROBE_NAME!r}: "


class XattrModel(WireModel):
    name: WireBytes
    value: WireBytes


def _check_xattrs(xattrs: tuple[XattrModel, ...]) -> tuple[XattrModel, ...]:
    # store.objects owns the rules (sorted, unique, sizes); a FIFO entry applies them alone.
    try:
        FileEntry(
            name=_PROBE_NAME,
            kind=EntryKind.FIFO,
            mode=0,
            uid=0,
            gid=0,
            size=0,
            mtime_ns=0,
            xattrs=tuple((item.name, item.value) for item in xattrs),
        )
    except FormatError as exc:
        raise ValueError(str(exc)) from exc
    return xattrs


Xattrs: TypeAlias = Annotated[
    tuple[XattrModel, ...],
    Field(max_length=MAX_XATTRS_TOTAL_BYTES),  # each takes at least one byte of the total
    AfterValidator(_check_xattrs),
]
Mode: TypeAlias = Annotated[int, Field(ge=0, le=MODE_BITS)]
OwnerId: TypeAlias = Annotated[int, Field(ge=0, le=MAX_ID_NUMBER)]


class ChunkRefModel(WireModel):
    chunk_id: HexChunkId
    length: Annotated[int, Field(ge=1, le=CHUNK_MAX_BYTES)]


class EntryModel(WireModel):
    """A ``store.objects.FileEntry`` without its name (the name is the path's last one).

    Which content fields are set depends on ``kind``, exactly as in the format: a file has
    ``chunks`` and ``content_hash``, a dir ``tree_id``, a symlink ``target``.
    """

    kind: EntryKindName
    mode: Mode
    uid: OwnerId
    gid: OwnerId
    size: Annotated[int, Field(ge=0, le=MAX_FILE_BYTES)]
    mtime_ns: TimeNs
    xattrs: Xattrs = ()
    chunks: tuple[ChunkRefModel, ...] = Field(default=(), max_length=MAX_CHUNKS_PER_ENTRY)
    content_hash: HexContentHash | None = None
    tree_id: HexTreeId | None = None
    target: WireBytes = b""  # at most MAX_SYMLINK_TARGET_BYTES, as the format says

    @model_validator(mode="after")
    def _follows_format(self) -> EntryModel:
        try:
            entry_from_model(_PROBE_NAME, self)
        except FormatError as exc:
            raise ValueError(str(exc).removeprefix(_PROBE_PREFIX)) from exc
        return self


def entry_to_model(entry: FileEntry) -> EntryModel:
    """The wire form of an entry (its name travels in the path)."""
    return EntryModel(
        kind=_NAME_OF_KIND[entry.kind],
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        size=entry.size,
        mtime_ns=entry.mtime_ns,
        xattrs=tuple(XattrModel(name=name, value=value) for name, value in entry.xattrs),
        chunks=tuple(ChunkRefModel(chunk_id=r.chunk_id, length=r.length) for r in entry.chunks),
        content_hash=entry.content_hash,
        tree_id=entry.tree_id,
        target=entry.target,
    )


def entry_from_model(name: bytes, model: EntryModel) -> FileEntry:
    """The entry named ``name``; ``InvalidNameError`` for a bad name, ``FormatError`` for an
    entry the format refuses."""
    validate_name(name)
    return FileEntry(
        name=name,
        kind=_KIND_BY_NAME[model.kind],
        mode=model.mode,
        uid=model.uid,
        gid=model.gid,
        size=model.size,
        mtime_ns=model.mtime_ns,
        xattrs=tuple((item.name, item.value) for item in model.xattrs),
        chunks=tuple(ChunkRef(ref.chunk_id, ref.length) for ref in model.chunks),
        content_hash=model.content_hash,
        tree_id=model.tree_id,
        target=model.target,
    )


# --- models: operations --------------------------------------------------------------------


class AttrsModel(WireModel):
    """The attributes of a new directory."""

    mode: Mode
    uid: OwnerId
    gid: OwnerId
    mtime_ns: TimeNs
    xattrs: Xattrs = ()


class SetattrModel(WireModel):
    """Attribute changes: a field left ``None`` stays as it is; at least one is set.
    ``xattrs``, when set, replaces the whole list. Size and content change through put."""

    mode: Mode | None = None
    uid: OwnerId | None = None
    gid: OwnerId | None = None
    mtime_ns: TimeNs | None = None
    xattrs: Xattrs | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> SetattrModel:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError("setattr changes nothing")
        return self


class PutOp(WireModel):
    """Create or replace a non-directory at ``path``. ``base`` is the content hash the
    client last saw there (``None``: it believes the name is new). If the server holds
    other content, the op is merged or kept as a conflicted copy, never overwriting."""

    op: Literal["put"] = "put"
    path: DrivePath
    entry: EntryModel
    base: HexContentHash | None = None

    @model_validator(mode="after")
    def _not_a_directory(self) -> PutOp:
        if self.entry.kind == "dir":
            raise ValueError("put cannot create a directory: use mkdir")
        return self


class MkdirOp(WireModel):
    """Create an empty directory at ``path`` (its parent must exist)."""

    op: Literal["mkdir"] = "mkdir"
    path: DrivePath
    attrs: AttrsModel


class MoveOp(WireModel):
    """Rename ``src`` to ``dst`` with rename(2) semantics, carrying a subtree along."""

    op: Literal["move"] = "move"
    src: DrivePath
    dst: DrivePath

    @model_validator(mode="after")
    def _not_into_itself(self) -> MoveOp:
        if self.dst.is_within(self.src):
            raise ValueError("cannot move a path onto or into itself")
        return self


class DeleteOp(WireModel):
    """Remove ``path``: a non-directory, or a directory that is empty at the head.
    With ``base``, the delete applies only if the file still has that content; otherwise
    it is rejected (``stale_base``) and the newer version stays."""

    op: Literal["delete"] = "delete"
    path: DrivePath
    base: HexContentHash | None = None


class SetattrOp(WireModel):
    op: Literal["setattr"] = "setattr"
    path: DrivePath
    attrs: SetattrModel


Op: TypeAlias = Annotated[
    PutOp | MkdirOp | MoveOp | DeleteOp | SetattrOp, Field(discriminator="op")
]


class OpsBatch(WireModel):
    """Operations on one namespace, applied in order as one commit. The server remembers
    the reply under ``idempotency_key`` (per user, across their sessions), so a batch
    resent after a lost reply is applied once."""

    idempotency_key: IdempotencyKey
    ops: tuple[Op, ...] = Field(min_length=1, max_length=MAX_OPS_PER_BATCH)


OpStatus: TypeAlias = Literal["applied", "merged", "conflicted_copy", "rejected"]


class OpResult(WireModel):
    """What happened to one op. ``applied``: as sent. ``merged``: a 3-way merge with the
    newer content was written at ``path``. ``conflicted_copy``: the other version stays at
    ``path`` and the incoming one was written at ``conflict_path``. ``rejected``: nothing
    changed; ``code`` (an error code) and ``message`` say why."""

    status: OpStatus
    path: DrivePath
    conflict_path: DrivePath | None = None
    code: Annotated[str, StringConstraints(pattern=_CODE_PATTERN)] | None = None
    message: Annotated[str, StringConstraints(max_length=MAX_OP_MESSAGE_CHARS)] = ""

    @model_validator(mode="after")
    def _fields_match_status(self) -> OpResult:
        if (self.status == "conflicted_copy") != (self.conflict_path is not None):
            raise ValueError("conflict_path is set exactly for conflicted_copy")
        if (self.status == "rejected") != (self.code is not None):
            raise ValueError("code is set exactly for rejected")
        return self


class OpsBatchResponse(WireModel):
    """One result per op, in order. ``commit_id`` is the new commit, or ``None`` when the
    batch changed nothing; ``head`` and ``sequence`` are the namespace's head afterwards."""

    commit_id: HexCommitId | None
    head: HexCommitId | None
    sequence: HeadSequence
    results: tuple[OpResult, ...] = Field(max_length=MAX_OPS_PER_BATCH)


# --- models: history ---------------------------------------------------------------------------


class VersionsRequest(WireModel):
    path: DrivePath
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class FileVersion(WireModel):
    """The path as one commit left it; ``entry`` is ``None`` where the commit deleted it."""

    commit_id: HexCommitId
    time_ns: TimeNs
    author: CommitText
    device: CommitText
    entry: EntryModel | None


class VersionsPage(WireModel):
    path: DrivePath
    versions: tuple[FileVersion, ...] = Field(max_length=MAX_PAGE_SIZE)  # newest first
    next_cursor: Cursor | None = None


class RestoreRequest(WireModel):
    """Bring back ``path`` as it was at ``commit_id``, as a new version (a new commit)."""

    path: DrivePath
    commit_id: HexCommitId
    idempotency_key: IdempotencyKey


# --- models: events and audit ------------------------------------------------------------------


class Event(WireModel):
    """A hint that a namespace's head moved. ``sequence`` grows by one per move, so a client
    drops an event whose sequence it has already seen; the commit chain is the record."""

    namespace_id: HexNamespaceId
    head: HexCommitId
    sequence: HeadSequence


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
    "restore",
    "commit",
)


class AuditQuery(WireModel):
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class AuditRecord(WireModel):
    sequence: HeadSequence
    time: AwareDatetime
    action: Annotated[str, StringConstraints(pattern=_AUDIT_ACTION_PATTERN)]
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


# --- routes ---------------------------------------------------------------------------------

Method: TypeAlias = Literal["GET", "POST", "DELETE"]

# What each placeholder accepts: a typed id (rendered as hex) or a session id string.
_PLACEHOLDER_TYPES: Final[dict[str, type]] = {
    "namespace_id": NamespaceId,
    "chunk_id": ChunkId,
    "session_id": str,
}
_FORMATTER: Final = string.Formatter()


def _placeholders(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in _FORMATTER.parse(template) if name is not None)


def fill_template(template: str, **params: object) -> str:
    """``template`` with each ``{placeholder}`` filled: ids as hex, session ids checked.
    A missing, extra or wrongly typed parameter is a bug: ``ValueError`` / ``TypeError``."""
    names = _placeholders(template)
    if set(names) != set(params):
        raise ValueError(
            f"{template}: expects {sorted(names)}, got {sorted(params)}",
        )
    rendered: dict[str, str] = {}
    for name in names:
        value = params[name]
        expected = _PLACEHOLDER_TYPES[name]
        if type(value) is not expected:
            raise TypeError(f"{name} must be a {expected.__name__}, not {type(value).__name__}")
        if isinstance(value, bytes):
            rendered[name] = value.hex()
        elif isinstance(value, str) and re.fullmatch(_SESSION_ID_PATTERN, value):
            rendered[name] = value
        else:
            raise ValueError(f"{name} is not a valid {name.replace('_', ' ')}: {value!r}")
    return template.format_map(rendered)


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

# Events and health.
EVENTS: Final = Route("events", "GET", "/v1/events", response_media_type=EVENT_STREAM_MEDIA_TYPE)
HEALTH: Final = Route("health", "GET", "/healthz", response_model=Health, auth=False)

ACCOUNT_ROUTES: Final = (REGISTER, LOGIN, LOGOUT, WHOAMI, SESSIONS, REVOKE_SESSION, AUDIT_LOG)
NAMESPACE_ROUTES: Final = (NAMESPACES, HEAD)
CHUNK_ROUTES: Final = (MISSING_CHUNKS, UPLOAD_CHUNKS, DOWNLOAD_CHUNKS, CHUNK)
OBJECT_ROUTES: Final = (TREES, COMMITS, LOG)
OPS_ROUTES: Final = (APPLY_OPS, VERSIONS, RESTORE)
ROUTES: Final[tuple[Route, ...]] = (
    *ACCOUNT_ROUTES,
    *NAMESPACE_ROUTES,
    *CHUNK_ROUTES,
    *OBJECT_ROUTES,
    *OPS_ROUTES,
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
    if scheme.lower() != AUTH_SCHEME.lower() or not re.fullmatch(_TOKEN_PATTERN, token):
        raise UnauthorizedError("missing or malformed bearer token")
    return token


def parse_session_id(text: str) -> str:
    if not re.fullmatch(_SESSION_ID_PATTERN, text):
        raise InvalidIdError(f"session id must be 32 lowercase hex digits: {text[:40]!r}")
    return text


# --- record streams --------------------------------------------------------------------------
#
# A batch of chunks (frames), trees or commits travels as one streamed body:
#
#   header   magic b"BXRS" | version u8 (1) | kind u8 | reserved u16 (0)        8 bytes
#   record   tag u8 | id (32 bytes) | length u32 BE | payload (length bytes)    37 + n
#   end      tag u8 (0x00) | number of records before it u32 BE                  5 bytes
#
# Tags: 0x01 data; 0x02 missing (the sender has no such object for this reader; length
# 0); 0x00 end. Nothing may follow the end. A stream without its end is truncated.

RECORD_STREAM_MAGIC: Final = b"BXRS"
RECORD_STREAM_VERSION: Final = 1
_STREAM_HEADER: Final = struct.Struct(">4sBBH")
_RECORD_HEAD: Final = struct.Struct(f">B{DIGEST_BYTES}sI")
_END: Final = struct.Struct(">BI")
_TAG_END: Final = 0x00
_TAG_DATA: Final = 0x01
_TAG_MISSING: Final = 0x02


class StreamKind(IntEnum):
    CHUNKS = 1  # payloads are frames (store.frames), ids are ChunkId
    TREES = 2  # payloads are canonical tree encodings, ids are TreeId
    COMMITS = 3  # payloads are canonical commit encodings, ids are CommitId


_KIND_OF: Final[dict[type, StreamKind]] = {
    ChunkId: StreamKind.CHUNKS,
    TreeId: StreamKind.TREES,
    CommitId: StreamKind.COMMITS,
}
MAX_RECORD_BYTES: Final[dict[StreamKind, int]] = {
    StreamKind.CHUNKS: MAX_FRAME_BYTES,
    StreamKind.TREES: MAX_TREE_RECORD_BYTES,
    StreamKind.COMMITS: MAX_COMMIT_RECORD_BYTES,
}


@dataclass(frozen=True, slots=True)
class Record(Generic[IdT]):
    """One object in a record stream; ``payload`` is ``None`` for a missing object.
    The receiver verifies the payload against the id (frames, trees, commits decoders)."""

    object_id: IdT
    payload: bytes | None

    @property
    def missing(self) -> bool:
        return self.payload is None


def encode_record_stream(
    id_type: type[IdT], records: Iterable[Record[IdT]], *, allow_missing: bool = True
) -> Iterator[bytes]:
    """The stream as pieces to send (a header, then a head and a payload per record, then
    the end). Lazy: records are pulled as the pieces are consumed."""
    kind = _KIND_OF[id_type]
    limit = MAX_RECORD_BYTES[kind]
    yield _STREAM_HEADER.pack(RECORD_STREAM_MAGIC, RECORD_STREAM_VERSION, kind, 0)
    count = 0
    for record in records:
        if type(record.object_id) is not id_type:
            raise TypeError(f"a {kind.name.lower()} stream holds {id_type.__name__}s")
        if record.payload is None:
            if not allow_missing:
                raise FormatError("this stream may not hold missing records")
            yield _RECORD_HEAD.pack(_TAG_MISSING, record.object_id, 0)
        else:
            if len(record.payload) > limit:
                raise FormatError(f"record of {len(record.payload)} bytes, over {limit}")
            yield _RECORD_HEAD.pack(_TAG_DATA, record.object_id, len(record.payload))
            if record.payload:
                yield record.payload
        count += 1
    yield _END.pack(_TAG_END, count)


class RecordStreamParser(Generic[IdT]):
    """Incremental parser of a record stream: feed it pieces of any size as they arrive.

    Bounds, each refused as soon as it is crossed: the record size (by kind, or
    ``max_record_bytes``) and a missing record where none may be (``FormatError``), the
    number of records (``BatchTooLargeError``) and the total size (``BodyTooLargeError``).
    Owned by one task; holds at most one record plus one piece in memory.
    """

    def __init__(
        self,
        id_type: type[IdT],
        *,
        max_record_bytes: int | None = None,
        max_records: int | None = None,
        max_body_bytes: int | None = None,
        allow_missing: bool = True,
    ) -> None:
        self._id_type: type[IdT] = id_type
        self._kind = _KIND_OF[id_type]
        kind_limit = MAX_RECORD_BYTES[self._kind]
        self._max_record_bytes = min(max_record_bytes or kind_limit, kind_limit)
        self._max_records = max_records
        self._max_body_bytes = max_body_bytes
        self._allow_missing = allow_missing
        self._buffer = bytearray()
        self._body_bytes = 0
        self._count = 0
        self._started = False
        self._ended = False

    @property
    def finished(self) -> bool:
        """True once the end marker has been read."""
        return self._ended

    @property
    def record_count(self) -> int:
        return self._count

    def feed(self, data: bytes | bytearray | memoryview) -> list[Record[IdT]]:
        """The records completed by ``data`` (possibly none)."""
        if not data:
            return []
        self._body_bytes += len(data)
        if self._max_body_bytes is not None and self._body_bytes > self._max_body_bytes:
            raise BodyTooLargeError(
                f"record stream over {self._max_body_bytes} bytes",
                {"limit_bytes": self._max_body_bytes},
            )
        if self._ended:
            raise FormatError("bytes after the end of a record stream")
        self._buffer += data
        records: list[Record[IdT]] = []
        offset = 0
        if not self._started:
            if len(self._buffer) < _STREAM_HEADER.size:
                return records
            self._check_header()
            offset = _STREAM_HEADER.size
            self._started = True
        buffer = self._buffer
        with memoryview(buffer) as view:  # payloads are copied once, out of this view
            offset = self._parse(buffer, view, offset, records)
        del buffer[:offset]  # cheap: CPython moves a bytearray's start, it does not copy
        return records

    def _parse(
        self, buffer: bytearray, view: memoryview, offset: int, records: list[Record[IdT]]
    ) -> int:
        """Parse whole records from ``offset``; the offset after the last one."""
        while offset < len(buffer):
            tag = buffer[offset]
            if tag == _TAG_END:
                if len(buffer) - offset < _END.size:
                    break
                _, count = _END.unpack_from(buffer, offset)
                if count != self._count:
                    raise FormatError(f"end says {count} records, the stream held {self._count}")
                offset += _END.size
                self._ended = True
                if offset != len(buffer):
                    raise FormatError("bytes after the end of a record stream")
                break
            if len(buffer) - offset < _RECORD_HEAD.size:
                break
            tag, raw_id, length = _RECORD_HEAD.unpack_from(buffer, offset)
            self._check_record_head(tag, length)
            end = offset + _RECORD_HEAD.size + length
            if end > len(buffer):
                break
            payload = bytes(view[offset + _RECORD_HEAD.size : end]) if tag == _TAG_DATA else None
            records.append(Record(self._id_type(raw_id), payload))
            self._count += 1
            offset = end
        return offset

    def _check_header(self) -> None:
        magic, version, kind, reserved = _STREAM_HEADER.unpack_from(self._buffer)
        if magic != RECORD_STREAM_MAGIC:
            raise FormatError(f"not a record stream (magic {bytes(magic)!r})")
        if version != RECORD_STREAM_VERSION:
            raise FormatError(f"record stream version {version}, this build reads 1")
        if kind != self._kind:
            raise FormatError(f"record stream of kind {kind}, expected {self._kind.name}")
        if reserved != 0:
            raise FormatError("record stream header: reserved bits set")

    def _check_record_head(self, tag: int, length: int) -> None:
        if tag == _TAG_DATA:
            if length > self._max_record_bytes:
                raise FormatError(f"record of {length} bytes, over {self._max_record_bytes}")
        elif tag == _TAG_MISSING:
            if not self._allow_missing:
                raise FormatError("this stream may not hold missing records")
            if length != 0:
                raise FormatError("a missing record has a payload")
        else:
            raise FormatError(f"unknown record tag {tag:#04x}")
        if self._max_records is not None and self._count >= self._max_records:
            raise BatchTooLargeError(
                f"record stream over {self._max_records} records",
                {"limit": self._max_records},
            )

    def close(self) -> None:
        """At the end of the input: ``FormatError`` unless the stream ended properly."""
        if not self._ended:
            what = "header" if not self._started else f"stream after {self._count} records"
            raise FormatError(f"record stream truncated: no end marker ({what} incomplete)")


def chunk_upload_parser() -> RecordStreamParser[ChunkId]:
    """Server side: a parser with every bound of the chunk-upload body (no missing records,
    at most ``MAX_IDS_PER_REQUEST`` records and ``MAX_BATCH_BODY_BYTES`` bytes)."""
    return RecordStreamParser(
        ChunkId,
        max_records=MAX_IDS_PER_REQUEST,
        max_body_bytes=MAX_BATCH_BODY_BYTES,
        allow_missing=False,
    )


def parse_record_stream(
    id_type: type[IdT],
    pieces: Iterable[bytes | bytearray | memoryview],
    *,
    max_record_bytes: int | None = None,
    max_records: int | None = None,
    max_body_bytes: int | None = None,
    allow_missing: bool = True,
) -> Iterator[Record[IdT]]:
    """Records from an iterable of pieces, checked to the end: a synchronous convenience
    over ``RecordStreamParser`` (same bounds)."""
    parser = RecordStreamParser(
        id_type,
        max_record_bytes=max_record_bytes,
        max_records=max_records,
        max_body_bytes=max_body_bytes,
        allow_missing=allow_missing,
    )
    for piece in pieces:
        yield from parser.feed(piece)
    parser.close()


# --- Server-Sent Events ------------------------------------------------------------------------
#
#   id: <namespace id hex>.<sequence>
#   event: head
#   data: {"namespace_id": "...", "head": "...", "sequence": 7}
#   <blank line>
#
# and, at least every HEARTBEAT_INTERVAL_S, a comment line ": heartbeat" and a blank line.
# Events of a type this build does not know are skipped (newer servers may add some).

EVENT_HEAD: Final = "head"
_LINE_END: Final = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A comment line on the event stream: the connection is alive."""


HEARTBEAT: Final = Heartbeat()


def encode_event(event: Event) -> bytes:
    return (
        f"id: {event.namespace_id.hex()}.{event.sequence}\n"
        f"event: {EVENT_HEAD}\n"
        f"data: {event.model_dump_json()}\n\n"
    ).encode()


def encode_heartbeat() -> bytes:
    return b": heartbeat\n\n"


class EventStreamParser:
    """Incremental SSE parser (the WHATWG rules: CR, LF or CRLF line ends, one optional
    space after the colon, multi-line data joined by LF). Feed it bytes as they arrive,
    split anywhere, even inside a UTF-8 character. Owned by one task."""

    def __init__(self, *, max_line_chars: int = MAX_SSE_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._max_line_chars = max_line_chars
        self._pending = ""
        self._after_cr = False
        self._at_start = True
        self._event_type = ""
        self._data: list[str] = []
        self._data_chars = 0
        self.last_event_id = ""

    def feed(self, data: bytes) -> list[Event | Heartbeat]:
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise FormatError(f"event stream is not UTF-8: {exc}") from exc
        if self._at_start and text:
            text = text.removeprefix("\ufeff")
            self._at_start = False
        if self._after_cr and text:
            text = text.removeprefix("\n")  # the LF of a CRLF split across pieces
            self._after_cr = False
        buffer = self._pending + text
        out: list[Event | Heartbeat] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            self._line(buffer[start : match.start()], out)
            start = match.end()
            if match.group() == "\r" and start == len(buffer):
                self._after_cr = True
        self._pending = buffer[start:]
        if len(self._pending) > self._max_line_chars:
            raise FormatError(f"event stream line over {self._max_line_chars} characters")
        return out

    def _line(self, line: str, out: list[Event | Heartbeat]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line.startswith(":"):
            out.append(HEARTBEAT)
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data_chars += len(value) + 1
            if self._data_chars > self._max_line_chars:
                raise FormatError(f"event data over {self._max_line_chars} characters")
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        # "retry" and unknown fields are ignored, as the standard says.

    def _dispatch(self, out: list[Event | Heartbeat]) -> None:
        event_type, data = self._event_type or "message", "\n".join(self._data)
        has_data = bool(self._data)
        self._event_type, self._data, self._data_chars = "", [], 0
        if not has_data or event_type != EVENT_HEAD:
            return
        try:
            out.append(Event.model_validate_json(data))
        except ValidationError as exc:
            raise FormatError(f"bad head event: {data[:200]!r}") from exc


# --- the error table -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    status: int
    exception: type[StoreError]
    meaning: str


ERROR_CODES: Final[tuple[ErrorCode, ...]] = (
    ErrorCode("bad_request", 400, BadRequestError, "the request does not follow the protocol"),
    ErrorCode("invalid_id", 400, InvalidIdError, "an id is not hex of the right length"),
    ErrorCode("invalid_name", 400, InvalidNameError, "a name or path the format refuses"),
    ErrorCode("body_too_large", 413, BodyTooLargeError, "a body over its byte bound"),
    ErrorCode("batch_too_large", 413, BatchTooLargeError, "a list over its length bound"),
    ErrorCode("unsupported_protocol", 400, UnsupportedProtocolError, "another version"),
    ErrorCode("unauthorized", 401, UnauthorizedError, "no valid session or credentials"),
    ErrorCode("token_expired", 401, TokenExpiredError, "the session has expired"),
    ErrorCode("forbidden", 403, ForbiddenError, "the role does not allow it"),
    ErrorCode("not_found", 404, NotFoundError, "no such object, path or namespace here"),
    ErrorCode("conflict", 409, ConflictError, "contradicts the current state"),
    ErrorCode("stale_base", 409, StaleBaseError, "the base named is no longer current"),
    ErrorCode("username_taken", 409, UsernameTakenError, "the username exists"),
    ErrorCode("integrity", 422, IntegrityError, "bytes do not hash to their id"),
    ErrorCode("rate_limited", 429, RateLimitedError, "too many requests; retry later"),
    ErrorCode("internal", 500, InternalError, "a server bug or unexpected failure"),
    ErrorCode("unavailable", 503, UnavailableError, "the server cannot serve now; retry"),
)
ERROR_TABLE: Final[Mapping[str, ErrorCode]] = {entry.code: entry for entry in ERROR_CODES}
_CODE_OF_CLASS: Final[dict[type[StoreError], str]] = {e.exception: e.code for e in ERROR_CODES}
# Store errors with no code of their own, as a server reports them.
_FALLBACK_CODES: Final[dict[type[StoreError], str]] = {
    FormatError: "bad_request",  # the server parsing what the client sent
    TransientError: "unavailable",
    CryptoError: "internal",
    StoreError: "internal",
}
# What a client assumes when an error response carries no ErrorBody (a proxy, a crash).
_CODE_OF_STATUS: Final[dict[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "body_too_large",
    429: "rate_limited",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}
_INTERNAL_MESSAGE: Final = "internal server error"


def status_for(code: str) -> int:
    entry = ERROR_TABLE.get(code)
    return entry.status if entry is not None else 500


def _detail_str(detail: Mapping[str, JsonValue], key: str, default: str) -> str:
    value = detail.get(key)
    return value if isinstance(value, str) else default


def error_for(body: ErrorBody) -> StoreError:
    """Client side: the exception an error body stands for (the same class the server
    raised, for the store's own kinds). An unknown code gives a plain ``ProtocolError``."""
    entry = ERROR_TABLE.get(body.code)
    detail, message = body.detail, body.message
    if entry is None:
        return ProtocolError(message, detail, code=body.code)
    cls = entry.exception
    if issubclass(cls, ProtocolError):
        return cls(message, detail)
    if issubclass(cls, ConflictError):  # ConflictError and StaleBaseError
        return cls(_detail_str(detail, "path", "(server)"), _detail_str(detail, "reason", message))
    if cls is NotFoundError:
        return NotFoundError(_detail_str(detail, "what", "object"), _detail_str(detail, "name", ""))
    if cls is IntegrityError:
        return IntegrityError(
            _detail_str(detail, "expected", "?"),
            _detail_str(detail, "actual", "?"),
            _detail_str(detail, "what", "object"),
        )
    raise AssertionError(f"error table entry {body.code} has no constructor")


def error_for_response(status: int, content: bytes) -> StoreError:
    """Client side: the exception for any error response, with or without an ErrorBody."""
    try:
        body = ErrorBody.model_validate_json(content)
    except ValidationError:
        code = _CODE_OF_STATUS.get(status, "internal" if status >= 500 else "bad_request")
        snippet = content[:200].decode("utf-8", "replace")
        body = ErrorBody(code=code, message=f"HTTP {status}: {snippet}", detail={})
    return error_for(body)


def body_for(exc: StoreError) -> tuple[int, ErrorBody]:
    """Server side: the status and body for an exception. Store errors without a code of
    their own map to ``bad_request`` (a ``FormatError`` in what the client sent),
    ``unavailable`` (transient) or ``internal``; an internal error's message is generic."""
    detail: dict[str, JsonValue] = {}
    if isinstance(exc, ProtocolError):
        code, message, detail = exc.code, exc.message, exc.detail
    else:
        code = next(
            _CODE_OF_CLASS.get(cls) or _FALLBACK_CODES[cls]
            for cls in type(exc).__mro__
            if cls in _CODE_OF_CLASS or cls in _FALLBACK_CODES
        )
        message = str(exc)
        if isinstance(exc, ConflictError):
            detail = {"path": exc.path, "reason": exc.reason}
        elif isinstance(exc, NotFoundError):
            detail = {"what": exc.what, "name": exc.name}
        elif isinstance(exc, IntegrityError):
            detail = {"what": exc.what, "expected": exc.expected, "actual": exc.actual}
    if code == InternalError.CODE:
        message, detail = _INTERNAL_MESSAGE, {}
    body = ErrorBody(code=code, message=message[:MAX_ERROR_MESSAGE_CHARS], detail=detail)
    return status_for(code), body


# How a validation failure is reported: the first matching kind wins.
_VALIDATION_CODES: Final = (
    (InvalidNameError.CODE, InvalidNameError.CODE),
    (InvalidIdError.CODE, InvalidIdError.CODE),
    ("too_long", BatchTooLargeError.CODE),  # pydantic's type for an over-long list
)
_MAX_REPORTED_ERRORS: Final = 20


def validation_error_body(errors: Iterable[Mapping[str, Any]]) -> tuple[int, ErrorBody]:
    """Server side: status and body for a refused request body or query (pydantic's
    ``errors()`` list, or FastAPI's). The input values are never echoed back: they may be
    large, or a password."""
    reported: list[JsonValue] = []
    types: set[str] = set()
    for error in errors:
        kind = str(error.get("type", ""))
        types.add(kind)
        if len(reported) < _MAX_REPORTED_ERRORS:
            loc = ".".join(str(part) for part in error.get("loc", ()))
            reported.append({"loc": loc, "type": kind, "message": str(error.get("msg", ""))})
    code = next((code for kind, code in _VALIDATION_CODES if kind in types), "bad_request")
    first = reported[0] if reported else {}
    summary = (
        f"{first['loc']}: {first['message']}"
        if isinstance(first, dict) and first.get("loc")
        else "request is not valid"
    )
    body = ErrorBody(
        code=code,
        message=f"invalid request: {summary}"[:MAX_ERROR_MESSAGE_CHARS],
        detail={"errors": reported},
    )
    return status_for(code), body


def _check_table() -> None:
    for entry in ERROR_CODES:
        assert re.fullmatch(_CODE_PATTERN, entry.code), entry.code
        if issubclass(entry.exception, ProtocolError):
            assert entry.code == entry.exception.CODE, entry.code
    assert len(ERROR_TABLE) == len(ERROR_CODES)
    assert len({(route.method, route.template) for route in ROUTES}) == len(ROUTES)
    assert len({route.name for route in ROUTES}) == len(ROUTES)


_check_table()
