"""Accounts and sessions: register, login (throttled), logout, whoami, sessions, audit page
(the routes are ``server.routes.accounts``).

Owns the ``users``, ``sessions`` and ``login_throttle`` tables (``server.sessions`` reads
sessions to authenticate a token; it never writes them beyond ``last_seen_ns``). Passwords
are hashed with argon2id (argon2-cffi's ``PasswordHasher``) in a worker thread; no
password, hash or token ever reaches a log, an audit record or a reply (the token once,
in the login reply).

Login never tells whether a username exists: a wrong username and a wrong password give
the same ``unauthorized`` reply, both cost one argon2 verification (an unknown username is
checked against a dummy hash), and failed attempts are counted per username *tried*, so the
growing delay (``rate_limited`` with ``retry_after_s``) falls on any username alike. The
attempt is counted before the password is checked, in one transaction with the lock test,
so a burst of parallel guesses cannot slip past the lock.

Blocking (SQL, argon2): the handlers run these functions through ``state.run``; they take
the database (or a connection) so tests can call them directly.
"""

from __future__ import annotations

import functools
import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

from server import audit, namespaces
from server import db as tables
from server.db import Database
from server.sessions import Caller, hash_token, new_token
from store import protocol
from store.errors import NotFoundError

_SECOND_NS = 10**9
# Throttle: this many failures in a row cost nothing; each further one locks the username
# for a delay doubling from FIRST_DELAY up to MAX_DELAY. A username whose last lock ended
# FORGET_AFTER ago starts from zero again, so an old attack does not lock its owner out
# on a single typo months later.
FREE_FAILURES = 3
FIRST_DELAY_NS = 1 * _SECOND_NS
MAX_DELAY_NS = 300 * _SECOND_NS
FORGET_AFTER_NS = 3600 * _SECOND_NS

HOME_NAMESPACE_NAME = "home"
_WRONG_CREDENTIALS = "wrong username or password"
# Stands in for the home namespace id between inserting a user and its namespace (the
# membership row needs the user's id first); never committed.
_NO_NAMESPACE_YET = bytes(16)

_hasher = PasswordHasher()  # argon2id, argon2-cffi's current recommended parameters


# --- passwords ------------------------------------------------------------------------------


@functools.cache
def _dummy_hash() -> str:
    # A hash of a password nobody knows, with the same parameters as real ones: verifying
    # an unknown username against it costs what a real account costs.
    return _hasher.hash(secrets.token_urlsafe(32))


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (CPU- and memory-heavy: a worker thread)."""
    return _hasher.hash(password)


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    ok: bool
    new_hash: str | None = None  # set when the stored hash used outdated parameters


def check_password(password_hash: str | None, password: str) -> PasswordCheck:
    """Verify ``password``; ``password_hash`` ``None`` (no such account) verifies against
    the dummy hash, at the same cost, and fails. Blocking: a worker thread."""
    dummy = _dummy_hash()  # first, on every path, so building it is no tell either
    try:
        _hasher.verify(password_hash if password_hash is not None else dummy, password)
    except VerifyMismatchError:
        return PasswordCheck(ok=False)
    if password_hash is None:  # pragma: no cover - nobody knows the dummy's password
        return PasswordCheck(ok=False)
    if _hasher.check_needs_rehash(password_hash):
        return PasswordCheck(ok=True, new_hash=_hasher.hash(password))
    return PasswordCheck(ok=True)


# --- the login throttle ---------------------------------------------------------------------


def lock_delay_ns(failures: int) -> int:
    """How long the ``failures``-th failure in a row locks its username."""
    beyond = failures - FREE_FAILURES
    if beyond <= 0:
        return 0
    return min(FIRST_DELAY_NS << min(beyond - 1, 32), MAX_DELAY_NS)


def count_attempt(
    connection: sa.Connection, username: str, now: int, *, table: sa.Table = tables.login_throttle
) -> int:
    """Count one login attempt for ``username`` as a failure (a success clears it later).

    Returns 0, or, if the username is locked, the nanoseconds until the lock ends (the
    attempt is then not counted). The row is created if absent and locked for update, so
    concurrent attempts are counted one after the other on PostgreSQL as on SQLite.
    ``table``: another throttle of the same shape (its key first, then ``failures`` and
    ``locked_until_ns``), such as a share link's password page.
    """
    key = next(iter(table.primary_key.columns))
    tables.upsert(connection, table, [{key.name: username, "failures": 0, "locked_until_ns": 0}])
    row = connection.execute(
        sa.select(table.c.failures, table.c.locked_until_ns)
        .where(key == username)
        .with_for_update()
    ).one()
    if row.locked_until_ns > now:
        return int(row.locked_until_ns - now)
    # locked_until_ns is the end of the last lock, or the time of the last free failure.
    failures = 0 if now - row.locked_until_ns > FORGET_AFTER_NS else row.failures
    failures += 1
    connection.execute(
        table.update()
        .where(key == username)
        .values(failures=failures, locked_until_ns=now + lock_delay_ns(failures))
    )
    return 0


def clear_attempts(connection: sa.Connection, username: str) -> None:
    table = tables.login_throttle
    connection.execute(table.delete().where(table.c.username == username))


# --- register -------------------------------------------------------------------------------


def _datetime(time_ns: int) -> datetime:
    seconds, rest_ns = divmod(time_ns, _SECOND_NS)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest_ns // 1000)


def register_account(
    database: Database,
    request: protocol.RegisterRequest,
    password_hash: str,
    address: str | None,
    now: int,
) -> protocol.AccountInfo:
    """Create the user and its home namespace in one transaction; ``UsernameTakenError``."""
    taken = protocol.UsernameTakenError(
        f"the username {request.username!r} is taken", {"field": "username"}
    )
    try:
        with database.write() as connection:
            exists = connection.execute(
                sa.select(tables.users.c.id).where(tables.users.c.username == request.username)
            ).first()
            if exists is not None:
                raise taken
            inserted = connection.execute(
                tables.users.insert().values(
                    username=request.username,
                    email=request.email,
                    password_hash=password_hash,
                    home_namespace=_NO_NAMESPACE_YET,
                    created_ns=now,
                )
            ).inserted_primary_key
            assert inserted is not None
            user_id = int(inserted[0])
            home = namespaces.create_namespace(connection, HOME_NAMESPACE_NAME, user_id, now)
            connection.execute(
                tables.users.update()
                .where(tables.users.c.id == user_id)
                .values(home_namespace=bytes(home))
            )
            audit.append(
                connection,
                action="register",
                user_id=user_id,
                username=request.username,
                address=address,
                namespace_id=home,
                time_ns=now,
            )
    except sa.exc.IntegrityError as exc:  # a concurrent registration won the race
        raise taken from exc
    return protocol.AccountInfo(
        username=request.username, email=request.email, created_at=_datetime(now)
    )


# --- login ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A counted attempt, between ``begin_login`` and ``finish_login``."""

    request: protocol.LoginRequest = field(repr=False)
    address: str | None
    user_id: int | None  # None: no such username
    password_hash: str | None = field(default=None, repr=False)


def begin_login(
    database: Database, request: protocol.LoginRequest, address: str | None, now: int
) -> LoginAttempt:
    """Count the attempt and find the account. ``RateLimitedError`` while the username is
    locked (the refused attempt is audited, for the account's owner if there is one)."""
    with database.write() as connection:
        wait_ns = count_attempt(connection, request.username, now)
        row = connection.execute(
            sa.select(tables.users.c.id, tables.users.c.password_hash).where(
                tables.users.c.username == request.username
            )
        ).one_or_none()
        if wait_ns:
            audit.append(
                connection,
                action="login_failed",
                outcome="failure",
                user_id=row.id if row is not None else None,
                username=request.username,
                device_name=request.device_name,
                address=address,
                detail={"reason": "rate_limited"},
                time_ns=now,
            )
    if wait_ns:
        retry_after_s = max(1, math.ceil(wait_ns / _SECOND_NS))
        raise protocol.RateLimitedError(
            f"too many failed logins: try again in {retry_after_s} s",
            {"retry_after_s": retry_after_s},
        )
    if row is None:
        return LoginAttempt(request, address, None)
    return LoginAttempt(request, address, row.id, row.password_hash)


def finish_login(
    database: Database, attempt: LoginAttempt, check: PasswordCheck, lifetime_s: int, now: int
) -> protocol.LoginResponse:
    """Open the session after a good password, or audit the failure and refuse it with the
    same ``UnauthorizedError`` whether or not the account exists."""
    request, address, user_id = attempt.request, attempt.address, attempt.user_id
    with database.write() as connection:
        if user_id is None or not check.ok:
            audit.append(
                connection,
                action="login_failed",
                outcome="failure",
                user_id=user_id,
                username=request.username,
                device_name=request.device_name,
                address=address,
                detail={"reason": "wrong_credentials"},
                time_ns=now,
            )
            succeeded = None
        else:
            clear_attempts(connection, request.username)
            if check.new_hash is not None:
                connection.execute(
                    tables.users.update()
                    .where(tables.users.c.id == user_id)
                    .values(password_hash=check.new_hash)
                )
            token, session_id = new_token(), secrets.token_hex(16)
            expires_ns = now + lifetime_s * _SECOND_NS
            connection.execute(
                tables.sessions.insert().values(
                    id=session_id,
                    token_hash=hash_token(token),
                    user_id=user_id,
                    device_name=request.device_name,
                    created_ns=now,
                    expires_ns=expires_ns,
                    last_seen_ns=now,
                    revoked_ns=None,
                )
            )
            audit.append(
                connection,
                action="login",
                user_id=user_id,
                username=request.username,
                session_id=session_id,
                device_name=request.device_name,
                address=address,
                time_ns=now,
            )
            succeeded = protocol.LoginResponse(
                token=token,
                session_id=session_id,
                username=request.username,
                device_name=request.device_name,
                expires_at=_datetime(expires_ns),
            )
    if succeeded is None:
        raise protocol.UnauthorizedError(_WRONG_CREDENTIALS)
    return succeeded


# --- sessions -------------------------------------------------------------------------------


def revoke_session(database: Database, who: Caller, session_id: str, now: int) -> None:
    """Revoke one of the caller's own sessions (at once: its next request is refused).
    Another user's session, or none, is ``NotFoundError``; an already revoked one of the
    caller's is left as it is (the request is idempotent)."""
    table = tables.sessions
    with database.write() as connection:
        row = connection.execute(
            sa.select(table.c.device_name, table.c.revoked_ns).where(
                table.c.id == session_id, table.c.user_id == who.user_id
            )
        ).one_or_none()
        if row is None:
            revoked = False
        elif row.revoked_ns is None:
            connection.execute(
                table.update().where(table.c.id == session_id).values(revoked_ns=now)
            )
            is_own = session_id == who.session_id
            audit.append(
                connection,
                action="logout" if is_own else "session_revoked",
                caller=who,
                detail={} if is_own else {"session_id": session_id, "device": row.device_name},
                time_ns=now,
            )
            revoked = True
        else:
            revoked = True
    if not revoked:
        raise NotFoundError("session", session_id)


def whoami(database: Database, who: Caller) -> protocol.WhoAmI:
    with database.read() as connection:
        email = connection.execute(
            sa.select(tables.users.c.email).where(tables.users.c.id == who.user_id)
        ).scalar_one()
    return protocol.WhoAmI(
        username=who.username,
        email=email,
        session_id=who.session_id,
        device_name=who.device_name,
    )


def list_sessions(database: Database, who: Caller, now: int) -> protocol.SessionList:
    """The caller's live sessions (neither revoked nor expired), most recently used first."""
    table = tables.sessions
    with database.read() as connection:
        rows = connection.execute(
            sa.select(table)
            .where(
                table.c.user_id == who.user_id,
                table.c.revoked_ns.is_(None),
                table.c.expires_ns > now,
            )
            .order_by(table.c.last_seen_ns.desc(), table.c.created_ns.desc())
            .limit(protocol.MAX_SESSIONS_LISTED)
        ).all()
    return protocol.SessionList(
        sessions=tuple(
            protocol.SessionInfo(
                session_id=row.id,
                device_name=row.device_name,
                created_at=_datetime(row.created_ns),
                last_used_at=_datetime(row.last_seen_ns),
                expires_at=_datetime(row.expires_ns),
                current=row.id == who.session_id,
            )
            for row in rows
        )
    )


def audit_page(database: Database, who: Caller, query: protocol.AuditQuery) -> protocol.AuditPage:
    with database.read() as connection:
        return audit.read_page(connection, who.user_id, query.cursor, query.limit)
