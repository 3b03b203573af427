"""Share links on the wire: the JSON bodies that create, list and revoke them, and what the
public pages under ``/l/TOKEN`` parse and build (the token, a sub-path below it, a ``Range``
header, a ``Content-Disposition``, HTTP Basic credentials, the cookie a right password earns).

A link's token is 128 random bits in base64url (22 characters): the only secret in its URL.
A sub-path is parsed from the *raw* request path, one percent-encoded name at a time, so an
encoded slash, a NUL, ``.``, ``..`` or an over-long name is refused (``InvalidNameError``)
before anything is looked up. Names no route: ``routes`` pairs these bodies with their
endpoints (``LINK_ROUTES`` for the pages, the management routes beside the others).

Called by the server's link routes and the CLI's ``link`` command. Pure values and
functions: any thread.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass
from typing import Annotated, Final, Literal, TypeAlias

from pydantic import AwareDatetime, Field, StringConstraints

from store.errors import InvalidPathError
from store.objects import MAX_NAME_BYTES
from store.paths import MAX_PATH_DEPTH, DrivePath
from store.protocol.errors import InvalidNameError, RangeNotSatisfiableError
from store.protocol.models import WireModel
from store.protocol.wire import HexLinkId, HexNamespaceId, WirePath, validate_name

_GIB: Final = 1024**3
_DAY_S: Final = 86_400

# --- tokens, limits, names ---------------------------------------------------------------------

LINK_TOKEN_BYTES: Final = 16  # 128 random bits
LINK_TOKEN_PATTERN: Final = r"^[A-Za-z0-9_-]{22}$"  # noqa: S105  (a pattern, not a secret)
LINK_PASSWORD_MIN_CHARS: Final = 8
LINK_PASSWORD_MAX_CHARS: Final = 1024
MAX_LINK_LIFETIME_S: Final = 10 * 365 * _DAY_S
MAX_LINKS_LISTED: Final = 1000
# The largest body a file-request upload may send (all its files together).
MAX_LINK_UPLOAD_BYTES: Final = 4 * _GIB
MAX_LINK_UPLOAD_FILES: Final = 100
# The cookie a right password earns: valid this long (never past the link's expiry).
LINK_COOKIE_NAME: Final = "boxfs_link"
LINK_COOKIE_LIFETIME_S: Final = 12 * 3600
# The form field the password page posts, and the query parameter that asks for a zip.
PASSWORD_FIELD: Final = "password"  # noqa: S105  (a field name, not a secret)
UPLOAD_FIELD: Final = "file"
HTML_MEDIA_TYPE: Final = "text/html; charset=utf-8"
ZIP_MEDIA_TYPE: Final = "application/zip"
# The statuses of a page that are not a route's own success status.
PARTIAL_CONTENT_STATUS: Final = 206
NOT_MODIFIED_STATUS: Final = 304
SEE_OTHER_STATUS: Final = 303
RANGE_HEADER: Final = "Range"
# Headers every link page carries: no framing, no sniffing, no referrer (the token is in
# the URL), and no caching by shared caches.
PAGE_HEADERS: Final[dict[str, str]] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "private, no-store",
}
# An HTML page runs no script and posts forms only to its own server.
PAGE_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
# A downloaded file, opened in the browser anyway, runs in a sandbox of its own.
DOWNLOAD_CSP: Final = "sandbox; default-src 'none'"

LinkKind: TypeAlias = Literal["file", "folder"]
LinkToken: TypeAlias = Annotated[str, StringConstraints(pattern=LINK_TOKEN_PATTERN)]
LinkPassword: TypeAlias = Annotated[
    str,
    StringConstraints(min_length=LINK_PASSWORD_MIN_CHARS, max_length=LINK_PASSWORD_MAX_CHARS),
]


def is_link_token(text: str) -> bool:
    return re.fullmatch(LINK_TOKEN_PATTERN, text) is not None


# --- bodies ------------------------------------------------------------------------------------


class LinkCreateRequest(WireModel):
    """A link to ``path`` in the namespace (``None``: its root). ``expires_in_s`` ``None``:
    until revoked. ``upload_only``: a file-request page (a folder only)."""

    path: WirePath | None = None
    password: LinkPassword | None = Field(default=None, repr=False)
    expires_in_s: Annotated[int, Field(ge=1, le=MAX_LINK_LIFETIME_S)] | None = None
    upload_only: bool = False


class LinkInfo(WireModel):
    """One link as its creator (or the namespace's owner) sees it; never its token."""

    link_id: HexLinkId
    namespace_id: HexNamespaceId
    path: WirePath | None  # None: the namespace's root
    kind: LinkKind  # what the path was when the link was made; each request looks again
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    revoked_at: AwareDatetime | None = None
    upload_only: bool = False
    has_password: bool = False
    uses: Annotated[int, Field(ge=0)] = 0
    creator: Annotated[str, StringConstraints(max_length=64)] = ""


class LinkCreated(WireModel):
    """The new link and its URL path (``/l/TOKEN``): the token is shown this once."""

    link: LinkInfo
    url_path: Annotated[str, StringConstraints(max_length=64)]
    token: LinkToken = Field(repr=False)


class LinkList(WireModel):
    links: tuple[LinkInfo, ...] = Field(max_length=MAX_LINKS_LISTED)


class LinkPageQuery(WireModel):
    """The query of a folder page: ``format=zip`` downloads the folder as one zip."""

    format: Literal["zip"] | None = None


# --- sub-paths under a token ---------------------------------------------------------------


def parse_link_subpath(raw: bytes) -> DrivePath | None:
    """The drive path below a link's root from the raw (still percent-encoded) rest of the
    request path, ``b"a%20b/c.txt"``; ``None`` for nothing (the link's root itself). One
    trailing ``/`` is allowed (a folder). ``InvalidNameError`` for an empty name (``//``),
    ``.``, ``..``, a NUL, an encoded ``/``, a name over 255 bytes or a path too deep."""
    if len(raw) > 3 * MAX_NAME_BYTES * MAX_PATH_DEPTH:
        raise InvalidNameError("the path under the link is too long")
    text = raw.removesuffix(b"/")
    if not text:
        return None
    names = []
    for part in text.split(b"/"):
        name = urllib.parse.unquote_to_bytes(part)
        validate_name(name)  # InvalidNameError: '', '.', '..', '/', NUL, over 255 bytes
        names.append(name)
    try:
        return DrivePath(names)
    except InvalidPathError as exc:
        raise InvalidNameError(str(exc)) from exc


def quote_name(name: bytes) -> str:
    """One name as a URL path segment (every byte but unreserved ones percent-encoded)."""
    return urllib.parse.quote(name, safe="")


def link_subpath_url(path: DrivePath) -> str:
    """``path`` as the rest of a link URL: its names percent-encoded, joined by ``/``."""
    return "/".join(quote_name(name) for name in path.components)


# --- ranges ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


_RANGE: Final = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def unsatisfiable_content_range(size: int) -> str:
    return f"bytes */{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range a ``Range`` header asks of a file of ``size`` bytes, or ``None`` for
    the whole file (no header, another unit, several ranges or a malformed one: RFC 9110
    lets a server ignore those). ``RangeNotSatisfiableError`` for a range that starts past
    the end (or a suffix of 0 bytes, or any range of an empty file)."""
    if header is None:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    unsatisfiable = RangeNotSatisfiableError(
        f"the range {header.strip()[:64]!r} is outside the file's {size} bytes", {"size": size}
    )
    if not first:  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    if last and int(last) < start:
        return None  # malformed: ignored
    if start >= size:
        raise unsatisfiable
    end = min(int(last), size - 1) if last else size - 1
    return ByteRange(start, end, size)


def chunk_span(lengths: tuple[int, ...], start: int, end: int) -> list[tuple[int, int, int]]:
    """Which chunks hold bytes ``start``..``end`` (inclusive) of a file cut in chunks of
    ``lengths``: ``(chunk index, offset in it, bytes from it)`` in order."""
    span: list[tuple[int, int, int]] = []
    position = 0
    for index, length in enumerate(lengths):
        chunk_end = position + length - 1
        if chunk_end >= start and position <= end:
            offset = max(start - position, 0)
            last = min(end, chunk_end) - position
            span.append((index, offset, last - offset + 1))
        if position > end:
            break
        position += length
    return span


# --- headers -----------------------------------------------------------------------------------


def show_name(name: bytes) -> str:
    """A drive name as text for a page (not valid UTF-8: replaced characters)."""
    return name.decode("utf-8", "replace")


def content_disposition(name: bytes) -> str:
    """``attachment`` with the name twice: an ASCII fallback and the exact UTF-8 form
    (RFC 6266), so no quote, backslash or control character can end the header early."""
    text = show_name(name)
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\%' else "_" for c in text)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote_name(name)}"


def entity_tag(content_hash: bytes) -> str:
    return f'"{content_hash.hex()}"'


def matches_entity_tag(if_none_match: str | None, tag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [item.strip().removeprefix("W/") for item in if_none_match.split(",")]
    return "*" in tags or tag in tags


def parse_basic_password(header: str | None) -> str | None:
    """The password of HTTP Basic credentials (``curl -u :PASSWORD``; the user name is
    ignored), or ``None`` when there are none or they are malformed."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or len(encoded) > 4 * LINK_PASSWORD_MAX_CHARS:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon and password else None


def upload_name(filename: str | None) -> bytes:
    """The name a file dropped on a file-request page gets: the last part of what the
    browser sent (some send a whole path), which must be a name the drive can store
    (``InvalidNameError`` otherwise)."""
    if not filename:
        raise InvalidNameError("an uploaded file has no name")
    last = re.split(r"[/\\]", filename)[-1]
    return validate_name(last.encode("utf-8", "surrogateescape"))
