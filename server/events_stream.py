"""The event stream (Server-Sent Events): one per device, telling it which heads moved.

On connect the stream sends the current head of every namespace the caller can read
(skipping, for the namespace named by ``Last-Event-ID``, what the client already saw),
then an event each time a head moves or the caller's role in a namespace changes, and a
heartbeat comment when nothing happened for
``heartbeat_s``. Events are hints that coalesce: a device that was slow sees the newest
head of each namespace and diffs trees from what it had (the commit chain is the record).

Each wake-up re-checks the session, so a stream ends soon after its token is revoked,
and re-reads the memberships, so a namespace the caller lost stops reporting at once.
Runs on the event loop, under the route of ``server.routes.events``; its database reads go
through worker threads.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import sqlalchemy as sa

from server import db as tables
from server.db import Database
from server.sessions import Caller, authenticate
from server.state import ServerState
from store import protocol
from store.errors import StoreError
from store.ids import CommitId, NamespaceId

_log = logging.getLogger(__name__)


def readable_heads(database: Database, user_id: int) -> list[protocol.Event]:
    """The head of every namespace the user is a member of and that has a commit."""
    with database.read() as connection:
        rows = connection.execute(
            sa.select(
                tables.namespaces.c.id,
                tables.namespaces.c.head,
                tables.namespaces.c.sequence,
                tables.memberships.c.role,
            )
            .join(tables.memberships, tables.memberships.c.namespace_id == tables.namespaces.c.id)
            .where(tables.memberships.c.user_id == user_id, tables.namespaces.c.head.is_not(None))
        ).all()
    return [
        protocol.Event(
            namespace_id=NamespaceId(bytes(row.id)),
            head=CommitId(bytes(row.head)),
            sequence=row.sequence,
            role=row.role,
        )
        for row in rows
    ]


def parse_last_event_id(value: str | None) -> tuple[NamespaceId, int] | None:
    """``<namespace hex>.<sequence>`` as the stream writes it; anything else is ignored
    (the client then gets every current head, which is always safe)."""
    if not value:
        return None
    namespace_hex, _, sequence = value.partition(".")
    try:
        return NamespaceId.from_hex(namespace_hex), int(sequence)
    except (StoreError, ValueError):
        return None


async def event_stream(
    state: ServerState, who: Caller, token: str, last_event_id: str | None
) -> AsyncIterator[bytes]:
    sent: dict[NamespaceId, tuple[int, str | None]] = {}  # the sequence and role sent
    resume = parse_last_event_id(last_event_id)
    skip: tuple[NamespaceId, int] | None = resume  # what the client said it saw
    while not state.events.closed:
        try:
            await state.run(authenticate, state.db, token, who.address)
        except StoreError:
            return  # logged out, revoked or expired: the stream ends with the session
        for event in await state.run(readable_heads, state.db, who.user_id):
            seen = (event.sequence, event.role)
            if sent.get(event.namespace_id) == seen:
                continue
            sent[event.namespace_id] = seen
            if skip is not None and skip == (event.namespace_id, event.sequence):
                continue  # the client saw this one before it reconnected
            yield protocol.encode_event(event)
        skip = None
        if not await state.events.wait(state.settings.heartbeat_s):
            yield protocol.encode_heartbeat()
