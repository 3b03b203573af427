"""Shared folders: sharing a folder of one's home, members and roles, invitations.

A shared folder is a namespace of its own (DESIGN.md §2). Sharing turns a folder of the
owner's home into one: the new namespace's first commit has the folder's tree as its root
(no chunk moves or is sent again: the new namespace is given rows for the objects that tree
reaches), and the owner's home gets, in the same transaction, a mount entry
(``EntryKind.MOUNT``) in the folder's place. A member sees the folder through a mount entry
in their own home, which accepting an invitation places (at a path they chose, or the
folder's name at the top); they may move it in their home like any folder. Only the
server writes mount entries; a client's ops cannot make, replace or delete one.

Rules, next to what they govern:
- The owner does everything: invite, change roles, remove, unshare. An editor reads and
  writes content, a viewer reads. Everyone may leave, but the owner (who unshares).
- Removing a member, or a member leaving, deletes the membership and every mount entry of
  that namespace in their home, in one transaction: from its commit on, every route
  refuses them the namespace (``require_role``), and their mounts drop the folder when
  their home's head event arrives.
- Unsharing puts the shared folder's current tree back in the owner's home where its
  mount entry was (as a folder again, no chunk sent), removes everyone else as above, and
  drops the owner's membership too: the namespace then has no member, and nobody reads it.
- A home namespace is never shared whole, a shared folder holds no mount entry (mount
  entries live in homes only), and a folder holding one is not shared (``conflict``), so
  shared folders never nest.
- An invitation gives no access. Naming an unknown username is ``not_found``: usernames
  are public already (registration says which are taken).

Blocking: every function runs in a worker thread (``ServerState.run``) and writes in one
transaction (``commits.retrying_write``); the route publishes the event afterwards.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Final, Literal

import sqlalchemy as sa

from server import audit
from server import db as tables
from server.commits import (
    DbTrees,
    commit_root,
    read_head,
    retrying_write,
    touch_objects,
)
from server.namespaces import create_namespace, require_role
from server.sessions import Caller
from server.state import ServerState, now_ns
from store import protocol
from store.errors import ConflictError, NotFoundError
from store.ids import NamespaceId, TreeId
from store.merkle import EMPTY_TREE_ID, lookup, walk
from store.objects import EntryKind, FileEntry
from store.ops import Delete, Op, Put
from store.paths import DrivePath

MemberState = Literal["member", "invited"]
# Names tried for a shared folder accepted without a path: "Team", "Team (2)", …
MAX_ACCEPT_NAMES: Final = 100


def _show(path: DrivePath) -> str:
    return bytes(path).decode("utf-8", "backslashreplace")


def _home_of(connection: sa.Connection, user_id: int) -> NamespaceId:
    home = connection.execute(
        sa.select(tables.users.c.home_namespace).where(tables.users.c.id == user_id)
    ).scalar_one()
    return NamespaceId(bytes(home))


def _is_home(connection: sa.Connection, namespace_id: NamespaceId) -> bool:
    found = connection.execute(
        sa.select(tables.users.c.id).where(tables.users.c.home_namespace == bytes(namespace_id))
    ).first()
    return found is not None


def _user_id(connection: sa.Connection, username: str) -> int:
    user_id = connection.execute(
        sa.select(tables.users.c.id).where(tables.users.c.username == username)
    ).scalar_one_or_none()
    if user_id is None:
        raise NotFoundError("user", username)
    return int(user_id)


def _require_shared_folder(
    connection: sa.Connection, namespace_id: NamespaceId, caller: Caller, at_least: protocol.Role
) -> protocol.Role:
    role = require_role(connection, namespace_id, caller.user_id, at_least)
    if _is_home(connection, namespace_id):
        raise protocol.BadRequestError(
            "a home drive is not a shared folder: share a folder in it",
            {"namespace_id": namespace_id.hex()},
        )
    return role


def _reachable_objects(
    trees: DbTrees, root: TreeId, *, folder: DrivePath | None = None
) -> list[tuple[bytes, str]]:
    """Every tree and chunk below ``root``, as ``namespace_objects`` rows (id, kind). With
    ``folder`` (a folder about to be shared), a shared folder inside it is a conflict:
    shared folders do not nest."""
    rows: list[tuple[bytes, str]] = [(bytes(root), "t")]
    for path, entry in walk(trees, root):
        if entry.kind is EntryKind.MOUNT and folder is not None:
            inner = _show(folder) + "/" + path.decode("utf-8", "backslashreplace")
            raise ConflictError(_show(folder), f"holds a shared folder ({inner}): they do not nest")
        if entry.kind is EntryKind.DIR:
            assert entry.tree_id is not None
            rows.append((bytes(entry.tree_id), "t"))
        elif entry.kind is EntryKind.FILE:
            rows.extend((bytes(ref.chunk_id), "c") for ref in entry.chunks)
    return rows


def _mount_paths(
    trees: DbTrees, root: TreeId, namespace_id: NamespaceId
) -> list[tuple[DrivePath, FileEntry]]:
    """Where ``namespace_id`` is mounted in the home at ``root`` (a walk of its folders)."""
    return [
        (DrivePath.from_bytes(path), entry)
        for path, entry in walk(trees, root)
        if entry.kind is EntryKind.MOUNT and entry.namespace_id == namespace_id
    ]


def _drop_member(
    state: ServerState,
    connection: sa.Connection,
    caller: Caller,
    namespace_id: NamespaceId,
    *,
    user_id: int,
    time_ns: int,
) -> None:
    """Delete ``user_id``'s membership and every mount entry of the namespace in their home."""
    connection.execute(
        tables.memberships.delete().where(
            tables.memberships.c.namespace_id == bytes(namespace_id),
            tables.memberships.c.user_id == user_id,
        )
    )
    home = _home_of(connection, user_id)
    head = read_head(connection, home)
    mounted = _mount_paths(DbTrees(connection), head.root, namespace_id)
    if mounted:
        edits = [Delete(path, None) for path, _entry in mounted]
        summary = "remove shared folder " + ", ".join(_show(path) for path, _ in mounted)
        commit_root(
            state, connection, caller, home, change=edits, summary=summary[:200], time_ns=time_ns
        )


def _namespace_name(connection: sa.Connection, namespace_id: NamespaceId) -> str:
    name = connection.execute(
        sa.select(tables.namespaces.c.name).where(tables.namespaces.c.id == bytes(namespace_id))
    ).scalar_one()
    return str(name)


# --- sharing and unsharing ------------------------------------------------------------------


def share_folder(
    state: ServerState, caller: Caller, home_id: NamespaceId, path: DrivePath
) -> protocol.ShareInfo:
    """Make the folder at ``path`` of the caller's home a shared folder (see the module
    docstring); a path that is already a shared folder the caller owns answers as if it
    had just been shared."""

    def run(connection: sa.Connection) -> protocol.ShareInfo:
        require_role(connection, home_id, caller.user_id, "owner")
        if _home_of(connection, caller.user_id) != home_id:
            raise protocol.BadRequestError(
                "only a folder of your own home drive can be shared", {"path": _show(path)}
            )
        trees = DbTrees(connection)
        entry = lookup(trees, read_head(connection, home_id).root, bytes(path))
        if entry is None:
            raise NotFoundError("folder", _show(path))
        if entry.kind is EntryKind.MOUNT:
            assert entry.namespace_id is not None
            require_role(connection, entry.namespace_id, caller.user_id, "owner")
            name = _namespace_name(connection, entry.namespace_id)
            return protocol.ShareInfo(namespace_id=entry.namespace_id, name=name, path=path)
        if entry.kind is not EntryKind.DIR:
            raise ConflictError(_show(path), f"is a {entry.kind.name.lower()}, not a folder")
        assert entry.tree_id is not None
        now = now_ns()
        name = path.name.decode("utf-8", "replace")
        held = _reachable_objects(trees, entry.tree_id, folder=path)
        shared = create_namespace(connection, name, caller.user_id, now)
        touch_objects(connection, shared, held, now)
        summary = f"shared from {_show(path)}"
        commit_root(
            state, connection, caller, shared, change=entry.tree_id, summary=summary, time_ns=now
        )
        mount = _mount_entry(entry, shared)
        edits: list[Op] = [Delete(path, None), Put(path, mount, None)]
        commit_root(
            state, connection, caller, home_id,
            change=edits, summary=f"share {_show(path)}", time_ns=now,
        )  # fmt: skip
        audit.append(
            connection, action="share", caller=caller, namespace_id=shared,
            detail={"path": _show(path)}, time_ns=now,
        )  # fmt: skip
        return protocol.ShareInfo(namespace_id=shared, name=name, path=path)

    return retrying_write(state, run)


def _mount_entry(folder: FileEntry, namespace_id: NamespaceId) -> FileEntry:
    """The mount entry that stands where ``folder`` was (its name and attributes)."""
    return FileEntry(
        name=folder.name, kind=EntryKind.MOUNT, mode=folder.mode, uid=folder.uid,
        gid=folder.gid, size=0, mtime_ns=folder.mtime_ns, xattrs=folder.xattrs,
        namespace_id=namespace_id,
    )  # fmt: skip


def unshare(state: ServerState, caller: Caller, namespace_id: NamespaceId) -> None:
    """End the sharing of a folder the caller owns (see the module docstring)."""

    def run(connection: sa.Connection) -> None:
        _require_shared_folder(connection, namespace_id, caller, "owner")
        now = now_ns()
        members = connection.execute(
            sa.select(tables.memberships.c.user_id).where(
                tables.memberships.c.namespace_id == bytes(namespace_id),
                tables.memberships.c.user_id != caller.user_id,
            )
        ).scalars()
        for user_id in list(members):
            _drop_member(state, connection, caller, namespace_id, user_id=user_id, time_ns=now)
        connection.execute(
            tables.invitations.delete().where(
                tables.invitations.c.namespace_id == bytes(namespace_id)
            )
        )
        home = _home_of(connection, caller.user_id)
        trees = DbTrees(connection)
        folder_root = read_head(connection, namespace_id).root
        mounted = _mount_paths(trees, read_head(connection, home).root, namespace_id)
        if mounted:
            touch_objects(connection, home, _reachable_objects(trees, folder_root), now)
            edits: list[Op] = []
            for path, entry in mounted:
                folder = FileEntry(
                    name=entry.name, kind=EntryKind.DIR, mode=entry.mode, uid=entry.uid,
                    gid=entry.gid, size=0, mtime_ns=entry.mtime_ns, xattrs=entry.xattrs,
                    tree_id=folder_root,
                )  # fmt: skip
                edits += [Delete(path, None), Put(path, folder, None)]
            summary = "unshare " + ", ".join(_show(path) for path, _ in mounted)
            commit_root(
                state, connection, caller, home, change=edits, summary=summary[:200], time_ns=now
            )
        connection.execute(
            tables.memberships.delete().where(
                tables.memberships.c.namespace_id == bytes(namespace_id)
            )
        )
        audit.append(
            connection, action="unshare", caller=caller, namespace_id=namespace_id, time_ns=now
        )

    retrying_write(state, run)


# --- members ------------------------------------------------------------------------------


def list_members(
    state: ServerState, caller: Caller, namespace_id: NamespaceId
) -> protocol.MemberList:
    """Members and open invitations of a shared folder; any member may look."""
    with state.db.read() as connection:
        _require_shared_folder(connection, namespace_id, caller, "viewer")
        users = tables.users
        members = connection.execute(
            sa.select(users.c.username, tables.memberships.c.role)
            .join(tables.memberships, tables.memberships.c.user_id == users.c.id)
            .where(tables.memberships.c.namespace_id == bytes(namespace_id))
        ).all()
        invited = connection.execute(
            sa.select(users.c.username, tables.invitations.c.role)
            .join(tables.invitations, tables.invitations.c.user_id == users.c.id)
            .where(tables.invitations.c.namespace_id == bytes(namespace_id))
        ).all()
    rank = {"owner": 0, "editor": 1, "viewer": 2}
    listed = [
        protocol.MemberInfo(username=row.username, role=row.role, state="member")
        for row in sorted(members, key=lambda row: (rank[row.role], row.username))
    ] + [
        protocol.MemberInfo(username=row.username, role=row.role, state="invited")
        for row in sorted(invited, key=lambda row: row.username)
    ]
    return protocol.MemberList(members=tuple(listed))


def set_member(
    state: ServerState, caller: Caller, namespace_id: NamespaceId, request: protocol.MemberRequest
) -> protocol.MemberInfo:
    """Invite a user, or change the role of a member or of an open invitation (owner)."""

    def run(connection: sa.Connection) -> protocol.MemberInfo:
        _require_shared_folder(connection, namespace_id, caller, "owner")
        user_id = _user_id(connection, request.username)
        if user_id == caller.user_id:
            raise protocol.BadRequestError("the owner's role does not change", {})
        now = now_ns()
        member = tables.memberships
        current = connection.execute(
            sa.select(member.c.role).where(
                member.c.namespace_id == bytes(namespace_id), member.c.user_id == user_id
            )
        ).scalar_one_or_none()
        detail = {"username": request.username, "role": request.role}
        state_name: MemberState
        if current is not None:
            connection.execute(
                member.update()
                .where(member.c.namespace_id == bytes(namespace_id), member.c.user_id == user_id)
                .values(role=request.role)
            )
            action, state_name = "role_change", "member"
        else:
            invitation = tables.invitations
            updated = connection.execute(
                invitation.update()
                .where(
                    invitation.c.namespace_id == bytes(namespace_id),
                    invitation.c.user_id == user_id,
                )
                .values(role=request.role)
            )
            if updated.rowcount == 0:
                connection.execute(
                    invitation.insert().values(
                        id=secrets.token_hex(16), namespace_id=bytes(namespace_id),
                        user_id=user_id, role=request.role, invited_by=caller.user_id,
                        created_ns=now,
                    )
                )  # fmt: skip
            action, state_name = "invite", "invited"
        audit.append(
            connection, action=action, caller=caller, namespace_id=namespace_id,
            detail=detail, time_ns=now,
        )  # fmt: skip
        return protocol.MemberInfo(username=request.username, role=request.role, state=state_name)

    return retrying_write(state, run)


def remove_member(
    state: ServerState, caller: Caller, namespace_id: NamespaceId, username: str
) -> None:
    """Remove a member or withdraw an invitation (owner), or leave (oneself)."""

    def run(connection: sa.Connection) -> None:
        leaving = username == caller.username
        role = _require_shared_folder(
            connection, namespace_id, caller, "viewer" if leaving else "owner"
        )
        if leaving and role == "owner":
            raise protocol.BadRequestError(
                "the owner does not leave a shared folder: unshare it", {"username": username}
            )
        user_id = _user_id(connection, username)
        now = now_ns()
        withdrawn = connection.execute(
            tables.invitations.delete().where(
                tables.invitations.c.namespace_id == bytes(namespace_id),
                tables.invitations.c.user_id == user_id,
            )
        ).rowcount
        is_member = connection.execute(
            sa.select(tables.memberships.c.role).where(
                tables.memberships.c.namespace_id == bytes(namespace_id),
                tables.memberships.c.user_id == user_id,
            )
        ).scalar_one_or_none()
        if is_member is None and not withdrawn:
            raise NotFoundError("member", username)
        if is_member is not None:
            _drop_member(state, connection, caller, namespace_id, user_id=user_id, time_ns=now)
        audit.append(
            connection, action="leave" if leaving else "member_removed", caller=caller,
            namespace_id=namespace_id, detail={"username": username}, time_ns=now,
        )  # fmt: skip

    retrying_write(state, run)


# --- invitations ------------------------------------------------------------------------------


def list_invitations(state: ServerState, caller: Caller) -> protocol.InvitationList:
    invitation, users = tables.invitations, tables.users
    owner = users.alias("owner")
    inviter = users.alias("inviter")
    owner_membership = tables.memberships.alias("owner_membership")
    with state.db.read() as connection:
        rows = connection.execute(
            sa.select(
                invitation.c.id, invitation.c.namespace_id, invitation.c.role,
                invitation.c.created_ns, tables.namespaces.c.name,
                owner.c.username.label("owner"), inviter.c.username.label("inviter"),
            )
            .join(tables.namespaces, tables.namespaces.c.id == invitation.c.namespace_id)
            .join(
                owner_membership,
                sa.and_(
                    owner_membership.c.namespace_id == invitation.c.namespace_id,
                    owner_membership.c.role == "owner",
                ),
            )
            .join(owner, owner.c.id == owner_membership.c.user_id)
            .join(inviter, inviter.c.id == invitation.c.invited_by)
            .where(invitation.c.user_id == caller.user_id)
            .order_by(invitation.c.created_ns)
        ).all()  # fmt: skip
    return protocol.InvitationList(invitations=tuple(_invitation(row) for row in rows))


def _invitation(row: sa.Row[Any, Any, Any, Any, Any, Any, Any]) -> protocol.InvitationInfo:
    return protocol.InvitationInfo(
        invitation_id=row.id, namespace_id=NamespaceId(bytes(row.namespace_id)),
        name=row.name, owner=row.owner, invited_by=row.inviter, role=row.role,
        time=datetime.fromtimestamp(row.created_ns / 1e9, UTC),
    )  # fmt: skip


def _own_invitation(
    connection: sa.Connection, caller: Caller, invitation_id: str
) -> sa.Row[Any, Any]:
    row = connection.execute(
        sa.select(tables.invitations.c.namespace_id, tables.invitations.c.role).where(
            tables.invitations.c.id == invitation_id,
            tables.invitations.c.user_id == caller.user_id,
        )
    ).one_or_none()
    if row is None:  # someone else's answers the same: it says nothing of them
        raise NotFoundError("invitation", invitation_id)
    return row


def accept_invitation(
    state: ServerState, caller: Caller, invitation_id: str, path: DrivePath | None
) -> protocol.AcceptResponse:
    """Become a member, with the folder's mount entry at ``path`` of one's home (or its
    name at the top; see ``protocol.AcceptRequest``)."""

    def run(connection: sa.Connection) -> protocol.AcceptResponse:
        row = _own_invitation(connection, caller, invitation_id)
        namespace_id = NamespaceId(bytes(row.namespace_id))
        home = _home_of(connection, caller.user_id)
        trees = DbTrees(connection)
        root = read_head(connection, home).root
        target = path or _free_top_name(trees, root, _namespace_name(connection, namespace_id))
        if lookup(trees, root, bytes(target)) is not None:
            raise ConflictError(_show(target), "exists already: choose another path")
        now = now_ns()
        connection.execute(
            tables.invitations.delete().where(tables.invitations.c.id == invitation_id)
        )
        connection.execute(
            tables.memberships.insert().values(
                namespace_id=bytes(namespace_id), user_id=caller.user_id, role=row.role
            )
        )
        mount = FileEntry(
            name=target.name, kind=EntryKind.MOUNT, mode=0o755, uid=0, gid=0, size=0,
            mtime_ns=now, namespace_id=namespace_id,
        )  # fmt: skip
        commit_root(
            state, connection, caller, home, change=[Put(target, mount, None)],
            summary=f"accept shared folder at {_show(target)}", time_ns=now,
        )  # fmt: skip
        audit.append(
            connection, action="accept", caller=caller, namespace_id=namespace_id,
            detail={"path": _show(target), "role": row.role}, time_ns=now,
        )  # fmt: skip
        return protocol.AcceptResponse(namespace_id=namespace_id, path=target)

    return retrying_write(state, run)


def _free_top_name(trees: DbTrees, root: TreeId, name: str) -> DrivePath:
    base = name.encode()[:200] or b"Shared folder"
    for number in range(1, MAX_ACCEPT_NAMES + 1):
        candidate = DrivePath([base if number == 1 else base + f" ({number})".encode()])
        if root == EMPTY_TREE_ID or lookup(trees, root, bytes(candidate)) is None:
            return candidate
    raise ConflictError(name, "no free name for the shared folder: accept it at a path")


def decline_invitation(state: ServerState, caller: Caller, invitation_id: str) -> None:
    def run(connection: sa.Connection) -> None:
        row = _own_invitation(connection, caller, invitation_id)
        connection.execute(
            tables.invitations.delete().where(tables.invitations.c.id == invitation_id)
        )
        audit.append(
            connection, action="decline", caller=caller,
            namespace_id=NamespaceId(bytes(row.namespace_id)), time_ns=now_ns(),
        )  # fmt: skip

    retrying_write(state, run)
