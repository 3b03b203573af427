"""Who is editing: the files each member's devices have open for writing in a namespace.

A device reports, every ``protocol.EDITING_HEARTBEAT_S``, the paths it has open for
writing (``report``); the report replaces that session's rows for the namespace and answers
who else is editing there. A path a device stops naming is gone at once; a device that
stops reporting (closed, crashed, offline) is forgotten after ``protocol.EDITING_TTL_S``.
Reading the list (``editors``) needs the viewer role, reporting the editor role; a
session logged out or revoked is never listed. Rows live in the metadata database
(``server.db.editing``), so every server process answers the same.

Blocking: called through ``ServerState.run`` by ``server.routes.sharing``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa

from server import db as tables
from server.namespaces import require_role
from server.sessions import Caller
from server.state import ServerState, now_ns
from store import protocol
from store.ids import NamespaceId
from store.paths import DrivePath

_TTL_NS: Final = int(protocol.EDITING_TTL_S * 1e9)


def report(
    state: ServerState, caller: Caller, namespace_id: NamespaceId, paths: tuple[DrivePath, ...]
) -> protocol.EditorList:
    """Record the caller's session as editing ``paths`` (only those) in the namespace;
    everyone else editing there now."""
    table = tables.editing
    now = now_ns()
    wanted = {bytes(path) for path in paths}
    with state.db.write() as connection:
        require_role(connection, namespace_id, caller.user_id, "editor" if wanted else "viewer")
        mine = sa.and_(
            table.c.namespace_id == bytes(namespace_id), table.c.session_id == caller.session_id
        )
        known = {bytes(row.path) for row in connection.execute(sa.select(table.c.path).where(mine))}
        gone = known - wanted
        for batch in tables.in_batches(sorted(gone)):
            connection.execute(table.delete().where(mine, table.c.path.in_(batch)))
        for batch in tables.in_batches(sorted(known & wanted)):
            connection.execute(
                table.update().where(mine, table.c.path.in_(batch)).values(seen_ns=now)
            )
        tables.upsert(
            connection,
            table,
            [
                {"namespace_id": bytes(namespace_id), "session_id": caller.session_id,
                 "path": path, "user_id": caller.user_id, "since_ns": now, "seen_ns": now}
                for path in sorted(wanted - known)
            ],
        )  # fmt: skip
        connection.execute(
            table.delete().where(
                table.c.namespace_id == bytes(namespace_id), table.c.seen_ns < now - _TTL_NS
            )
        )
        return _list(connection, namespace_id, caller, now)


def editors(state: ServerState, caller: Caller, namespace_id: NamespaceId) -> protocol.EditorList:
    """Everyone else editing in the namespace now."""
    with state.db.read() as connection:
        require_role(connection, namespace_id, caller.user_id, "viewer")
        return _list(connection, namespace_id, caller, now_ns())


def _list(
    connection: sa.Connection, namespace_id: NamespaceId, caller: Caller, now: int
) -> protocol.EditorList:
    table, sessions, users = tables.editing, tables.sessions, tables.users
    rows = connection.execute(
        sa.select(table.c.path, table.c.since_ns, users.c.username, sessions.c.device_name)
        .join(sessions, sessions.c.id == table.c.session_id)
        .join(users, users.c.id == table.c.user_id)
        .where(
            table.c.namespace_id == bytes(namespace_id),
            table.c.session_id != caller.session_id,
            table.c.seen_ns >= now - _TTL_NS,
            sessions.c.revoked_ns.is_(None),
            sessions.c.expires_ns > now,
        )
        .order_by(table.c.path, table.c.since_ns)
        .limit(protocol.MAX_EDITING_PATHS * 8)
    ).all()
    return protocol.EditorList(
        editors=tuple(
            protocol.EditorInfo(
                path=DrivePath.from_bytes(bytes(row.path)),
                username=row.username,
                device_name=row.device_name,
                since=datetime.fromtimestamp(row.since_ns / 1e9, UTC),
            )
            for row in rows
        )
    )
