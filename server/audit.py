"""The audit log: an append-only record of every security-relevant action, and its pages.

Owns the ``audit`` table's use: ``append`` writes one record inside the caller's own
transaction (so a record exists exactly when the action it describes was committed), and
``read_page`` reads a user's own records, newest first. It never decides anything: the
services (accounts, content, commits for ops and restores) call ``append`` with what they
did; nothing ever updates or deletes a record.

Storage: the table has columns for time, user, device, address and action; the rest of a
record (outcome, username, session, namespace and the free-form detail) is one JSON object
in the ``detail`` text column, so adding a field needs no schema change::

    {"outcome": "success", "username": "ana", "session_id": "…", "namespace_id": "…",
     "detail": {"chunks": "12"}}

Blocking (SQL): call from a worker thread, with a connection from ``Database.write()``
(``append``) or ``Database.read()`` (``read_page``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from server import db as tables
from server.paging import parse_cursor
from server.sessions import Caller
from server.state import now_ns
from store import protocol
from store.ids import NamespaceId

Outcome = Literal["success", "failure"]

# Bounds of a record, as the wire's AuditRecord has them; longer values are cut, never
# refused: an audit record must not make the action it records fail.
_MAX_DETAIL_KEY_CHARS = 64
_MAX_DETAIL_VALUE_CHARS = 1024
_MAX_ADDRESS_CHARS = 64


def append(
    connection: sa.Connection,
    *,
    action: str,
    caller: Caller | None = None,
    outcome: Outcome = "success",
    user_id: int | None = None,
    username: str | None = None,
    session_id: str | None = None,
    device_name: str | None = None,
    namespace_id: NamespaceId | None = None,
    address: str | None = None,
    detail: Mapping[str, str] | None = None,
    time_ns: int | None = None,
) -> None:
    """Append one audit record, inside the transaction of ``connection``.

    ``action`` is one of ``protocol.AUDIT_ACTIONS`` (anything else is a bug:
    ``ValueError``). ``caller`` fills ``user_id``, ``username``, ``session_id``,
    ``device_name`` and ``address`` from the authenticated caller; an explicit keyword
    wins over it. ``user_id`` decides whose audit page shows the record (``None``: only
    operators see it, as for a failed login on a username that does not exist).
    ``detail`` holds at most ``protocol.MAX_AUDIT_DETAIL_ITEMS`` short strings (keys cut
    to 64 characters, values to 1024); never put a password or a token in it.
    ``time_ns`` defaults to now. Typical use from a handler's blocking function::

        audit.append(connection, action="upload", caller=caller, namespace_id=ns,
                     detail={"chunks": str(len(stored))})
    """
    if action not in protocol.AUDIT_ACTIONS:
        raise ValueError(f"unknown audit action {action!r}: add it to protocol.AUDIT_ACTIONS")
    items = dict(detail or {})
    if len(items) > protocol.MAX_AUDIT_DETAIL_ITEMS:
        raise ValueError(
            f"audit detail has {len(items)} items, over {protocol.MAX_AUDIT_DETAIL_ITEMS}"
        )
    if caller is not None:
        user_id = caller.user_id if user_id is None else user_id
        username = caller.username if username is None else username
        session_id = caller.session_id if session_id is None else session_id
        device_name = caller.device_name if device_name is None else device_name
        address = caller.address if address is None else address
    fields: dict[str, Any] = {"outcome": outcome}
    if username is not None:
        fields["username"] = username[: protocol.USERNAME_MAX_CHARS]
    if session_id is not None:
        fields["session_id"] = session_id
    if namespace_id is not None:
        fields["namespace_id"] = namespace_id.hex()
    if items:
        fields["detail"] = {
            str(key)[:_MAX_DETAIL_KEY_CHARS]: str(value)[:_MAX_DETAIL_VALUE_CHARS]
            for key, value in items.items()
        }
    connection.execute(
        tables.audit.insert().values(
            time_ns=now_ns() if time_ns is None else time_ns,
            user_id=user_id,
            device=device_name,
            address=address[:_MAX_ADDRESS_CHARS] if address is not None else None,
            action=action,
            detail=json.dumps(fields, separators=(",", ":"), sort_keys=True),
        )
    )


def read_page(
    connection: sa.Connection, user_id: int, cursor: str | None, limit: int
) -> protocol.AuditPage:
    """One page of the user's own audit records, newest first, starting after ``cursor``
    (``None``: the newest). ``BadRequestError`` for a cursor this server did not make."""
    table = tables.audit
    query = sa.select(table).where(table.c.user_id == user_id)
    if cursor is not None:
        query = query.where(table.c.id < parse_cursor(cursor, "an audit page cursor"))
    rows = list(connection.execute(query.order_by(table.c.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return protocol.AuditPage(
        records=tuple(_record(row) for row in rows),
        next_cursor=str(rows[-1].id) if more else None,
    )


def _record(row: sa.Row[Any]) -> protocol.AuditRecord:
    fields = json.loads(row.detail)
    namespace_hex = fields.get("namespace_id")
    return protocol.AuditRecord(
        sequence=row.id,
        time=_datetime(row.time_ns),
        action=row.action,
        outcome=fields.get("outcome", "success"),
        username=fields.get("username"),
        device_name=row.device,
        session_id=fields.get("session_id"),
        namespace_id=NamespaceId.from_hex(namespace_hex) if namespace_hex else None,
        remote_address=row.address,
        detail=fields.get("detail", {}),
    )


def _datetime(time_ns: int) -> datetime:
    seconds, rest_ns = divmod(time_ns, 10**9)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest_ns // 1000)
