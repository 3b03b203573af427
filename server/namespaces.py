"""Namespaces and memberships: who may read or write which namespace.

Every endpoint that touches a namespace calls ``require_role`` first. A namespace the
caller is not a member of answers exactly like one that does not exist (``not_found``),
so nobody learns which namespace ids exist. Blocking: call inside a DB transaction, from a
worker thread.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Literal

import sqlalchemy as sa

from server import db as tables
from store import protocol
from store.errors import NotFoundError
from store.ids import CommitId, NamespaceId

Role = Literal["owner", "editor", "viewer"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "editor": 2, "owner": 3}


def require_role(
    connection: sa.Connection, namespace_id: NamespaceId, user_id: int, at_least: Role
) -> Role:
    """The caller's role in the namespace, if it is at least ``at_least``."""
    role = connection.execute(
        sa.select(tables.memberships.c.role).where(
            tables.memberships.c.namespace_id == bytes(namespace_id),
            tables.memberships.c.user_id == user_id,
        )
    ).scalar_one_or_none()
    if role is None:
        raise NotFoundError("namespace", namespace_id.hex())
    if ROLE_RANK[role] < ROLE_RANK[at_least]:
        raise protocol.ForbiddenError(
            f"a {role} of this namespace cannot do this (needs {at_least})",
            {"role": role, "needs": at_least},
        )
    return role  # type: ignore[no-any-return]


def referenced_objects(
    connection: sa.Connection, namespace_id: NamespaceId, ids: Iterable[bytes], kind: str
) -> set[bytes]:
    """Those of ``ids`` the namespace references as ``kind`` (``"c"`` chunk, ``"t"`` tree):
    the rows of ``namespace_objects`` that authorize reading them through it."""
    table = tables.namespace_objects
    query = sa.select(table.c.object_id).where(
        table.c.namespace_id == bytes(namespace_id), table.c.kind == kind
    )
    rows = tables.select_in(connection, query, table.c.object_id, map(bytes, ids))
    return {bytes(row.object_id) for row in rows}


def create_namespace(
    connection: sa.Connection, name: str, owner_id: int, created_ns: int
) -> NamespaceId:
    namespace_id = NamespaceId(secrets.token_bytes(16))
    connection.execute(
        tables.namespaces.insert().values(
            id=bytes(namespace_id), name=name, created_ns=created_ns, head=None, sequence=0
        )
    )
    connection.execute(
        tables.memberships.insert().values(
            namespace_id=bytes(namespace_id), user_id=owner_id, role="owner"
        )
    )
    return namespace_id


def readable_namespaces(connection: sa.Connection, user_id: int) -> list[NamespaceId]:
    rows = connection.execute(
        sa.select(tables.memberships.c.namespace_id).where(tables.memberships.c.user_id == user_id)
    )
    return [NamespaceId(bytes(row.namespace_id)) for row in rows]


def list_namespaces(connection: sa.Connection, user_id: int) -> list[protocol.NamespaceInfo]:
    home = connection.execute(
        sa.select(tables.users.c.home_namespace).where(tables.users.c.id == user_id)
    ).scalar_one()
    rows = connection.execute(
        sa.select(
            tables.namespaces.c.id,
            tables.namespaces.c.name,
            tables.namespaces.c.head,
            tables.namespaces.c.sequence,
            tables.memberships.c.role,
        )
        .join(tables.memberships, tables.memberships.c.namespace_id == tables.namespaces.c.id)
        .where(tables.memberships.c.user_id == user_id)
        .order_by(tables.namespaces.c.created_ns)
    )
    return [
        protocol.NamespaceInfo(
            namespace_id=NamespaceId(bytes(row.id)),
            name=row.name,
            role=row.role,
            head=CommitId(bytes(row.head)) if row.head is not None else None,
            home=bytes(row.id) == bytes(home),
            sequence=row.sequence,
        )
        for row in rows
    ]


def head_of(connection: sa.Connection, namespace_id: NamespaceId) -> protocol.HeadInfo:
    row = connection.execute(
        sa.select(tables.namespaces.c.head, tables.namespaces.c.sequence).where(
            tables.namespaces.c.id == bytes(namespace_id)
        )
    ).one()
    return protocol.HeadInfo(
        namespace_id=namespace_id,
        head=CommitId(bytes(row.head)) if row.head is not None else None,
        sequence=row.sequence,
    )
