"""The metadata database: the schema (SQLAlchemy Core), how an engine is opened, the one
statement whose SQL differs by backend (``upsert``), and how a long list of ids is cut
into ``IN (...)`` lists (``in_batches``, ``select_in``).

One schema serves SQLite (the embedded default, WAL mode) and PostgreSQL (scale-out), so
every query elsewhere is written once in SQLAlchemy Core; ``upsert`` is the one place that
picks a dialect. Blocking: callers run queries in a worker thread
(``anyio.to_thread.run_sync``), one connection per call.

Invariants, next to the tables they govern:
- ``namespaces.head`` moves only by compare-and-swap (``UPDATE … WHERE head IS old``),
  after the commit row and every tree it references are written in the same transaction,
  and every chunk it references is durable in the blob store.
- ``namespace_objects`` lists, for each namespace, every chunk and tree a retained commit
  references: it is what authorizes a download. GC rebuilds it from the retained commits.
- A chunk is referenced by a namespace only after a member uploaded it there in full (or
  a commit of that namespace already referenced it): the server never tells anyone
  whether other users hold some content, and never lets them reference it unseen.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")

# Values per ``IN (...)`` list: far below the bound on variables in one statement (SQLite
# 999 before 3.32 and 32766 since, PostgreSQL 65535), leaving room for the other ones.
IN_CLAUSE_IDS: Final = 500

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(32), nullable=False, unique=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("home_namespace", sa.LargeBinary(16), nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
)

# Failed logins by the username tried, whether or not such an account exists, so that the
# growing delay says nothing about which usernames are taken. A success clears the row.
login_throttle = sa.Table(
    "login_throttle",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("locked_until_ns", sa.BigInteger, nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # public, hex; not the token
    # BLAKE3 of the 256-bit bearer token: a stolen database yields no usable token.
    sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("device_name", sa.String(64), nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_ns", sa.BigInteger, nullable=False),
    sa.Column("last_seen_ns", sa.BigInteger, nullable=False),
    sa.Column("revoked_ns", sa.BigInteger, nullable=True),
)

namespaces = sa.Table(
    "namespaces",
    metadata,
    sa.Column("id", sa.LargeBinary(16), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("head", sa.LargeBinary(32), nullable=True),  # None: no commit yet
    sa.Column("sequence", sa.BigInteger, nullable=False, default=0),  # commits so far
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("namespace_id", sa.LargeBinary(16), sa.ForeignKey("namespaces.id"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True, index=True),
    sa.Column("role", sa.String(8), nullable=False),  # owner | editor | viewer
)

# An invitation to a shared folder, until the invitee accepts (it becomes a membership
# and a mount point in their home) or declines, or the owner withdraws it. One per
# (namespace, user); an invitation gives no access at all.
invitations = sa.Table(
    "invitations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # public, hex
    sa.Column("namespace_id", sa.LargeBinary(16), sa.ForeignKey("namespaces.id"), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("role", sa.String(8), nullable=False),  # editor | viewer
    sa.Column("invited_by", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("namespace_id", "user_id"),
)

# Who is editing: each row a file one session reported open for writing in a namespace,
# since ``since_ns``, last reported at ``seen_ns``. A report replaces the session's rows of
# that namespace; rows not reported within ``protocol.EDITING_TTL_S`` are not shown (and
# the next report of the namespace deletes them).
editing = sa.Table(
    "editing",
    metadata,
    sa.Column("namespace_id", sa.LargeBinary(16), primary_key=True),
    sa.Column("session_id", sa.String(32), primary_key=True),
    sa.Column("path", sa.LargeBinary, primary_key=True),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("since_ns", sa.BigInteger, nullable=False),
    sa.Column("seen_ns", sa.BigInteger, nullable=False),
)

trees = sa.Table(
    "trees",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

commits = sa.Table(
    "commits",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("namespace_id", sa.LargeBinary(16), nullable=False),
    # Position in the namespace's history, 1 for the first commit: pages and resumes.
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("time_ns", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("retained", sa.Boolean, nullable=False, default=True),
    sa.UniqueConstraint("namespace_id", "sequence"),
)

# Which chunks and trees each namespace references: a retained commit's trees and the
# chunks their files list, and chunks uploaded into the namespace (``added_ns``) whose
# commit may still be on its way. A user may download an object only through a namespace
# they can read that has a row for it; GC rebuilds the rows from the retained commits,
# keeping uploads younger than the grace period.
namespace_objects = sa.Table(
    "namespace_objects",
    metadata,
    sa.Column("namespace_id", sa.LargeBinary(16), primary_key=True),
    sa.Column("object_id", sa.LargeBinary(32), primary_key=True, index=True),
    sa.Column("kind", sa.String(1), nullable=False),  # "c" chunk, "t" tree
    sa.Column("added_ns", sa.BigInteger, nullable=False),
)

chunks = sa.Table(
    "chunks",
    metadata,
    sa.Column("id", sa.LargeBinary(32), primary_key=True),
    sa.Column("stored_bytes", sa.BigInteger, nullable=False),
    sa.Column("plain_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
)

idempotency = sa.Table(
    "idempotency",
    metadata,
    sa.Column("namespace_id", sa.LargeBinary(16), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("sequence", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("namespace_id", sa.LargeBinary(16), nullable=False, index=True),
    sa.Column("head", sa.LargeBinary(32), nullable=False),
    sa.Column("time_ns", sa.BigInteger, nullable=False),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time_ns", sa.BigInteger, nullable=False),
    sa.Column("user_id", sa.Integer, nullable=True, index=True),
    sa.Column("device", sa.String(64), nullable=True),
    sa.Column("address", sa.String(64), nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)

# Share links (``server.links``): a public URL ``/l/TOKEN`` onto (namespace, path).
# - The token (128 random bits) is never stored: ``token_hash`` is its BLAKE3, so a copy of
#   the database opens no link. ``id`` is public (listing, revoking) and is not the token.
# - ``path`` is the path's bytes (``b""``: the namespace's root); it is resolved against the
#   namespace's head at each request, so a link serves what is there now (or 404s).
#   ``kind`` is what the path was when the link was made ("file" | "folder"), for listings.
# - ``password_hash`` is argon2id (``server.accounts.hash_password``) or NULL (no password).
#   ``grant_key`` (32 random bytes) signs the cookie a right password earns, so the cookie
#   opens this link only, and only until it expires.
# - A link is usable while ``revoked_ns`` is NULL and ``expires_ns`` is NULL or in the
#   future; otherwise its pages answer 410. Rows are never deleted (the audit log names
#   them); ``uses`` counts the downloads, listings, zips and uploads it served.
# - Uploads through a link are commits by the link's creator, authored ``link:<id>``: they
#   need the creator to be an editor of the namespace still.
links = sa.Table(
    "links",
    metadata,
    sa.Column("id", sa.LargeBinary(16), primary_key=True),
    sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("namespace_id", sa.LargeBinary(16), sa.ForeignKey("namespaces.id"), nullable=False),
    sa.Column("path", sa.LargeBinary, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # file | folder
    sa.Column("creator_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_ns", sa.BigInteger, nullable=True),  # None: until revoked
    sa.Column("revoked_ns", sa.BigInteger, nullable=True),
    sa.Column("upload_only", sa.Boolean, nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("grant_key", sa.LargeBinary(32), nullable=False),
    sa.Column("uses", sa.Integer, nullable=False, default=0),
)

# Failed link passwords, per link ("link:<id hex>") and per client address ("addr:<ip>"):
# the same growing delay as ``login_throttle`` (``server.links``). A right password clears
# both rows.
link_throttle = sa.Table(
    "link_throttle",
    metadata,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("locked_until_ns", sa.BigInteger, nullable=False),
)

data_keys = sa.Table(
    "data_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (the driver's implicit
    # transactions cannot be made IMMEDIATE).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit that returned survives a power loss, not only a killed process.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin(connection: sa.Connection) -> None:
    # A writer takes the write lock at BEGIN, so it waits (busy_timeout) instead of
    # failing when another writer committed between its first read and its first write.
    immediate = connection.get_execution_options().get("immediate", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """The engine and the two ways to use it: ``read()`` and ``write()`` transactions.

    Each is a context manager yielding a connection inside one transaction, committed on
    normal exit and rolled back on an exception. Blocking: call from a worker thread.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = sa.create_engine(url, connect_args={"check_same_thread": False})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        metadata.create_all(self.engine)

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as plain:
            connection = plain.execution_options(immediate=True)
            with connection.begin():
                yield connection

    def close(self) -> None:
        self.engine.dispose()


def upsert(
    connection: sa.Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    refresh: Sequence[str] = (),
) -> None:
    """Insert ``rows``; a row whose primary key is taken already is left as it is, or, with
    ``refresh``, has those columns set from the new row (``upsert_statement``). Nothing is
    executed for no rows."""
    if rows:
        statement = upsert_statement(connection.dialect.name, table, refresh=refresh)
        connection.execute(statement, list(rows))


def upsert_statement(
    dialect: str, table: sa.Table, *, refresh: Sequence[str] = ()
) -> postgresql.Insert | sqlite.Insert:
    """``INSERT … ON CONFLICT (primary key) DO NOTHING``, or ``DO UPDATE SET column =
    excluded.column`` for each of ``refresh``: the same statement on SQLite and PostgreSQL,
    built with each one's dialect."""
    if dialect == "postgresql":
        statement: postgresql.Insert | sqlite.Insert = postgresql.insert(table)
    elif dialect == "sqlite":
        statement = sqlite.insert(table)
    else:
        raise NotImplementedError(f"no upsert for the {dialect} dialect")
    keys = list(table.primary_key.columns)
    if not refresh:
        return statement.on_conflict_do_nothing(index_elements=keys)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=keys, set_={name: excluded[name] for name in refresh}
    )


def in_batches(values: Iterable[T], size: int = IN_CLAUSE_IDS) -> Iterator[list[T]]:
    """``values`` in order, in lists of ``size`` (the last one shorter): one ``IN (...)``
    list each, for a statement or a transaction per batch."""
    remaining = iter(values)
    while batch := list(itertools.islice(remaining, size)):
        yield batch


def select_in(
    connection: sa.Connection,
    query: sa.Select[Any],
    column: sa.ColumnElement[Any],
    values: Iterable[Any],
    size: int = IN_CLAUSE_IDS,
) -> Iterator[sa.Row[Any]]:
    """The rows of ``query`` where ``column`` is one of ``values``, one statement per batch
    of them. Each value is asked once, so a unique ``column`` gives each row once (an
    aggregate ``query`` gives one row per batch)."""
    for batch in in_batches(dict.fromkeys(values), size):
        yield from connection.execute(query.where(column.in_(batch)))


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'meta.sqlite3'}"
