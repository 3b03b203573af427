"""Share links: making, listing and revoking them, and letting a request in through one
(its token, its expiry, its password, the password throttle and the cookie a right password
earns), with the audit record of each use.

Owns the ``links`` and ``link_throttle`` tables (their invariants are in ``server.db``).
A token is 128 random bits; only its BLAKE3 is stored, and it is shown once, in the reply
that made the link. An unknown token and a token of no link are the same thing: one indexed
lookup, then ``NotFoundError``. An expired or revoked link is ``GoneError`` (410).

Passwords are argon2id (``server.accounts``' hasher, in a worker thread). Every attempt is
counted before the password is checked, per link and per client address, in one
transaction with the lock test (as login does): after ``FREE_FAILURES`` failures in a row
each further one locks for a delay doubling up to ``MAX_DELAY_NS``, and a locked attempt
is ``RateLimitedError`` (429 with ``Retry-After``). A right password clears both counters
and earns a cookie: ``EXPIRY.MAC``, the MAC a BLAKE3 keyed hash under the link's own
``grant_key``, so it opens this link only and only until it expires (never past the link).

What is served through a link (files, listings, zips, uploads) is ``server.link_content``.
Blocking (SQL, argon2): the routes of ``server.routes.links`` call these in worker threads.
"""

from __future__ import annotations

import hmac
import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import blake3
import sqlalchemy as sa

from server import audit
from server import db as tables
from server.accounts import PasswordCheck, count_attempt
from server.commits import DbTrees, read_head
from server.db import Database
from server.namespaces import require_role
from server.sessions import Caller
from store import protocol
from store.errors import NotFoundError
from store.ids import LinkId, NamespaceId
from store.merkle import lookup
from store.objects import EntryKind
from store.paths import DrivePath

_SECOND_NS: Final = 10**9
LINK_DEVICE_NAME: Final = "share link"


def hash_link_token(token: str) -> bytes:
    return blake3.blake3(token.encode()).digest()


def _datetime(time_ns: int) -> datetime:
    seconds, rest_ns = divmod(time_ns, _SECOND_NS)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest_ns // 1000)


def _path_of(raw: bytes) -> DrivePath | None:
    return DrivePath.from_bytes(raw) if raw else None


@dataclass(frozen=True, slots=True)
class Link:
    """A usable link, as a request through it needs it."""

    link_id: LinkId
    namespace_id: NamespaceId
    path: DrivePath | None  # None: the namespace's root
    upload_only: bool
    creator_id: int
    expires_ns: int | None
    password_hash: str | None = field(repr=False)
    grant_key: bytes = field(repr=False)

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None

    def caller(self, address: str | None) -> Caller:
        """Who an upload through the link commits as: the creator's account (whose role
        the commit path checks), authored ``link:<id>``; the link id stands in for the
        session in audit records."""
        return Caller(
            user_id=self.creator_id,
            username=f"link:{self.link_id.hex()}",
            session_id=self.link_id.hex(),
            device_name=LINK_DEVICE_NAME,
            address=address,
        )


# --- making, listing, revoking ---------------------------------------------------------------


def create_link(
    database: Database,
    who: Caller,
    namespace_id: NamespaceId,
    request: protocol.LinkCreateRequest,
    *,
    password_hash: str | None,
    now: int,
) -> protocol.LinkCreated:
    """A new link onto ``request.path`` (which must exist at the head: a file or a folder;
    an upload-only link needs a folder). Needs the editor role."""
    with database.write() as connection:
        require_role(connection, namespace_id, who.user_id, "editor")
        kind = _kind_at_head(connection, namespace_id, request.path)
        if request.upload_only and kind != "folder":
            raise protocol.BadRequestError(
                "an upload-only link needs a folder", {"field": "upload_only"}
            )
        token = secrets.token_urlsafe(protocol.LINK_TOKEN_BYTES)
        link_id = LinkId(secrets.token_bytes(16))
        expires_ns = (
            now + request.expires_in_s * _SECOND_NS if request.expires_in_s is not None else None
        )
        connection.execute(
            tables.links.insert().values(
                id=bytes(link_id),
                token_hash=hash_link_token(token),
                namespace_id=bytes(namespace_id),
                path=bytes(request.path) if request.path is not None else b"",
                kind=kind,
                creator_id=who.user_id,
                created_ns=now,
                expires_ns=expires_ns,
                revoked_ns=None,
                upload_only=request.upload_only,
                password_hash=password_hash,
                grant_key=secrets.token_bytes(32),
                uses=0,
            )
        )
        audit.append(
            connection,
            action="link_created",
            caller=who,
            namespace_id=namespace_id,
            detail={
                "link_id": link_id.hex(),
                "path": _shown(request.path),
                "kind": kind,
                "upload_only": str(request.upload_only).lower(),
                "password": str(password_hash is not None).lower(),
                "expires_in_s": str(request.expires_in_s or ""),
            },
            time_ns=now,
        )
        row = connection.execute(_listing_query().where(tables.links.c.id == bytes(link_id))).one()
    return protocol.LinkCreated(
        link=_info(row), url_path=protocol.LINK_PAGE.fill(token=token), token=token
    )


def _shown(path: DrivePath | None) -> str:
    return "/" if path is None else bytes(path).decode("utf-8", "backslashreplace")


def _kind_at_head(
    connection: sa.Connection, namespace_id: NamespaceId, path: DrivePath | None
) -> protocol.LinkKind:
    if path is None:
        return "folder"
    head = read_head(connection, namespace_id)
    entry = lookup(DbTrees(connection), head.root, bytes(path))
    if entry is None:
        raise NotFoundError("path", _shown(path))
    if entry.kind is EntryKind.DIR:
        return "folder"
    if entry.kind is EntryKind.FILE:
        return "file"
    raise protocol.BadRequestError(
        f"{_shown(path)} is a {entry.kind.name.lower()}: a link serves files and folders",
        {"field": "path"},
    )


def _listing_query() -> sa.Select[tuple[object, ...]]:
    links, users = tables.links, tables.users
    return sa.select(links, users.c.username.label("creator")).join(
        users, users.c.id == links.c.creator_id
    )


def _info(row: sa.Row[tuple[object, ...]]) -> protocol.LinkInfo:
    mapping = row._mapping
    expires_ns, revoked_ns = mapping["expires_ns"], mapping["revoked_ns"]
    return protocol.LinkInfo(
        link_id=LinkId(bytes(mapping["id"])),
        namespace_id=NamespaceId(bytes(mapping["namespace_id"])),
        path=_path_of(bytes(mapping["path"])),
        kind=mapping["kind"],
        created_at=_datetime(int(mapping["created_ns"])),
        expires_at=_datetime(int(expires_ns)) if expires_ns is not None else None,
        revoked_at=_datetime(int(revoked_ns)) if revoked_ns is not None else None,
        upload_only=bool(mapping["upload_only"]),
        has_password=mapping["password_hash"] is not None,
        uses=int(mapping["uses"]),
        creator=str(mapping["creator"]),
    )


def _owned_namespaces(user_id: int) -> sa.Select[tuple[bytes]]:
    memberships = tables.memberships
    return sa.select(memberships.c.namespace_id).where(
        memberships.c.user_id == user_id, memberships.c.role == "owner"
    )


def list_links(database: Database, who: Caller) -> protocol.LinkList:
    """The links the caller made, and every link on a namespace the caller owns, newest
    first (revoked and expired ones too: they say so)."""
    links = tables.links
    query = (
        _listing_query()
        .where(
            sa.or_(
                links.c.creator_id == who.user_id,
                links.c.namespace_id.in_(_owned_namespaces(who.user_id)),
            )
        )
        .order_by(links.c.created_ns.desc())
        .limit(protocol.MAX_LINKS_LISTED)
    )
    with database.read() as connection:
        rows = connection.execute(query).all()
    return protocol.LinkList(links=tuple(_info(row) for row in rows))


def revoke_link(database: Database, who: Caller, link_id: LinkId, now: int) -> None:
    """Revoke a link at once (its next request answers 410). Only its creator or the
    namespace's owner may; to anyone else it does not exist (``NotFoundError``). Revoking
    a revoked link again changes nothing."""
    links = tables.links
    with database.write() as connection:
        row = connection.execute(
            sa.select(links.c.namespace_id, links.c.creator_id, links.c.revoked_ns, links.c.path)
            .where(links.c.id == bytes(link_id))
            .where(
                sa.or_(
                    links.c.creator_id == who.user_id,
                    links.c.namespace_id.in_(_owned_namespaces(who.user_id)),
                )
            )
        ).one_or_none()
        if row is None:
            raise NotFoundError("link", link_id.hex())
        if row.revoked_ns is not None:
            return
        connection.execute(
            links.update().where(links.c.id == bytes(link_id)).values(revoked_ns=now)
        )
        audit.append(
            connection,
            action="link_revoked",
            caller=who,
            namespace_id=NamespaceId(bytes(row.namespace_id)),
            detail={"link_id": link_id.hex(), "path": _shown(_path_of(bytes(row.path)))},
            time_ns=now,
        )


# --- a request through a link ------------------------------------------------------------------


def open_link(database: Database, token: str, now: int) -> Link:
    """The link a token opens: ``NotFoundError`` for a token of no link (or not a token at
    all), ``GoneError`` for an expired or revoked one."""
    if not protocol.is_link_token(token):
        raise NotFoundError("link", "")
    links = tables.links
    with database.read() as connection:
        row = connection.execute(
            sa.select(links).where(links.c.token_hash == hash_link_token(token))
        ).one_or_none()
    if row is None:
        raise NotFoundError("link", "")
    if row.revoked_ns is not None:
        raise protocol.GoneError("this link was revoked")
    if row.expires_ns is not None and row.expires_ns <= now:
        raise protocol.GoneError("this link has expired")
    return Link(
        link_id=LinkId(bytes(row.id)),
        namespace_id=NamespaceId(bytes(row.namespace_id)),
        path=_path_of(bytes(row.path)),
        upload_only=bool(row.upload_only),
        creator_id=int(row.creator_id),
        expires_ns=row.expires_ns,
        password_hash=row.password_hash,
        grant_key=bytes(row.grant_key),
    )


def record_use(
    database: Database,
    link: Link,
    what: str,
    address: str | None,
    detail: dict[str, str] | None = None,
) -> None:
    """Count one use of the link and audit it (for its creator): ``what`` is download,
    listing, zip or upload."""
    links = tables.links
    with database.write() as connection:
        connection.execute(
            links.update().where(links.c.id == bytes(link.link_id)).values(uses=links.c.uses + 1)
        )
        audit.append(
            connection,
            action="link_used",
            user_id=link.creator_id,
            namespace_id=link.namespace_id,
            address=address,
            detail={"link_id": link.link_id.hex(), "use": what, **(detail or {})},
        )


# --- passwords: the throttle, the check's outcome, the cookie ----------------------------------


def _throttle_keys(link: Link, address: str | None) -> tuple[str, str]:
    return f"link:{link.link_id.hex()}", f"addr:{(address or 'unknown')[:64]}"


def _count_attempt(connection: sa.Connection, key: str, now: int) -> int:
    """One wrong password under ``key``, counted as a failed login is (``accounts``)."""
    return count_attempt(connection, key, now, table=tables.link_throttle)


def begin_password_attempt(database: Database, link: Link, address: str | None, now: int) -> None:
    """Count an attempt for the link and for the address before the password is checked;
    ``RateLimitedError`` while either is locked (the refusal is audited)."""
    with database.write() as connection:
        wait_ns = max(_count_attempt(connection, key, now) for key in _throttle_keys(link, address))
        if wait_ns:
            _audit_failure(connection, link, address, "rate_limited", now)
    if wait_ns:
        retry_after_s = max(1, math.ceil(wait_ns / _SECOND_NS))
        raise protocol.RateLimitedError(
            f"too many wrong passwords: try again in {retry_after_s} s",
            {"retry_after_s": retry_after_s},
        )


def finish_password_attempt(
    database: Database, link: Link, check: PasswordCheck, address: str | None, now: int
) -> None:
    """After the check: clear both counters, or audit the failure and refuse it
    (``UnauthorizedError``)."""
    with database.write() as connection:
        if check.ok:
            table = tables.link_throttle
            connection.execute(table.delete().where(table.c.key.in_(_throttle_keys(link, address))))
            if check.new_hash is not None:
                connection.execute(
                    tables.links.update()
                    .where(tables.links.c.id == bytes(link.link_id))
                    .values(password_hash=check.new_hash)
                )
        else:
            _audit_failure(connection, link, address, "wrong_password", now)
    if not check.ok:
        raise protocol.UnauthorizedError("wrong password for this link", {"reason": "wrong"})


def _audit_failure(
    connection: sa.Connection, link: Link, address: str | None, reason: str, now: int
) -> None:
    audit.append(
        connection,
        action="link_password_failed",
        outcome="failure",
        user_id=link.creator_id,
        namespace_id=link.namespace_id,
        address=address,
        detail={"link_id": link.link_id.hex(), "reason": reason},
        time_ns=now,
    )


def _grant_mac(link: Link, expires_ns: int) -> str:
    text = f"boxfs link grant v1\0{link.link_id.hex()}\0{expires_ns}".encode()
    return blake3.blake3(text, key=link.grant_key).hexdigest()


def grant_cookie(link: Link, now: int) -> tuple[str, int]:
    """The cookie value a right password earns, and its lifetime in seconds."""
    expires_ns = now + protocol.LINK_COOKIE_LIFETIME_S * _SECOND_NS
    if link.expires_ns is not None:
        expires_ns = min(expires_ns, link.expires_ns)
    lifetime_s = max(1, (expires_ns - now) // _SECOND_NS)
    return f"{expires_ns}.{_grant_mac(link, expires_ns)}", lifetime_s


def grant_is_valid(link: Link, value: str | None, now: int) -> bool:
    if not value:
        return False
    expires_text, _, mac = value.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 20:
        return False
    expires_ns = int(expires_text)
    return expires_ns > now and hmac.compare_digest(mac, _grant_mac(link, expires_ns))
