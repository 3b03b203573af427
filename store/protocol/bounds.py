"""Protocol constants: the version and its header, header names, media types, the bound on
every list, string and body on the wire, and the pattern each string on the wire matches.

Names and numbers only: no models, no parsing, no errors. Every other module of
``store.protocol`` builds on these; code outside reads them through ``store.protocol``.
Immutable values: any thread.
"""

from __future__ import annotations

from typing import Final

from store.chunking import CHUNK_MAX_BYTES, CHUNK_MIN_BYTES
from store.objects import MAX_FILE_BYTES

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
MAX_MEMBERS_PER_NAMESPACE: Final = 1000
MAX_EDITING_PATHS: Final = 1000  # files one device reports open for writing at once
# Who is editing: a device reports every EDITING_HEARTBEAT_S; the server forgets it after
# EDITING_TTL_S without a report (a crashed device, a closed laptop).
EDITING_HEARTBEAT_S: Final = 2.0
EDITING_TTL_S: Final = 8.0
MAX_SESSIONS_LISTED: Final = 1000
# A record-stream body (chunk upload): about 16 maximal frames, 64 average ones.
MAX_BATCH_BODY_BYTES: Final = 64 * _MIB
# A JSON body. Large because a put carries a file's whole chunk list (about 90 bytes of
# JSON per chunk: the largest file, 256 GiB, at the 1 MiB average needs about 24 MiB; at
# the 256 KiB minimum, about 95 MiB).
MAX_JSON_BODY_BYTES: Final = 128 * _MIB
# A frame is at most a 4 MiB chunk behind a small header. The wire bound is a little looser
# than store.frames' exact one; the frame decoder enforces that one on receipt.
MAX_FRAME_BYTES: Final = CHUNK_MAX_BYTES + 64
MAX_TREE_RECORD_BYTES: Final = 64 * _MIB  # one tree's canonical encoding
MAX_COMMIT_RECORD_BYTES: Final = 64 * _KIB  # one commit's canonical encoding
MAX_CHUNKS_PER_ENTRY: Final = MAX_FILE_BYTES // CHUNK_MIN_BYTES  # the format's worst case
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
TOKEN_PATTERN: Final = r"^[A-Za-z0-9_-]{32,128}$"  # noqa: S105  (a pattern, not a secret)
SESSION_ID_PATTERN: Final = r"^[0-9a-f]{32}$"
INVITATION_ID_PATTERN: Final = r"^[0-9a-f]{32}$"
USERNAME_PATTERN: Final = r"^[a-z0-9._-]+$"
IDEMPOTENCY_KEY_PATTERN: Final = r"^[A-Za-z0-9_-]{16,64}$"
CURSOR_PATTERN: Final = r"^[A-Za-z0-9_.~-]+$"
CODE_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
AUDIT_ACTION_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"
