"""The JSON bodies of shared folders: sharing a folder, members and roles, invitations.

A shared folder is a namespace of its own (DESIGN.md §2), placed in each member's home by a
mount entry (``store.objects.EntryKind.MOUNT``) that only the server writes. Declares shapes
and bounds; names no route and no status (``routes`` pairs each body with its endpoint).
Models are frozen: any thread.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import AwareDatetime, Field, StringConstraints

from store.protocol.bounds import (
    INVITATION_ID_PATTERN,
    MAX_EDITING_PATHS,
    MAX_MEMBERS_PER_NAMESPACE,
    MAX_NAMESPACE_NAME_CHARS,
    MAX_NAMESPACES_PER_USER,
)
from store.protocol.models import DeviceName, Role, Username, WireModel
from store.protocol.wire import HexNamespaceId, WirePath

# What an owner may give: there is one owner, the one who shared.
MemberRole: TypeAlias = Literal["editor", "viewer"]
InvitationId: TypeAlias = Annotated[str, StringConstraints(pattern=INVITATION_ID_PATTERN)]
NamespaceName: TypeAlias = Annotated[str, StringConstraints(max_length=MAX_NAMESPACE_NAME_CHARS)]


class ShareRequest(WireModel):
    """Share the folder at ``path`` of the caller's home: it becomes a namespace of its own,
    its history starting from the folder's current content (no chunk is sent again)."""

    path: WirePath


class ShareInfo(WireModel):
    """A shared folder: its namespace, its name, and where it sits in the caller's home."""

    namespace_id: HexNamespaceId
    name: NamespaceName
    path: WirePath


class MemberRequest(WireModel):
    """Invite ``username`` with ``role``, or change the role of a member or invitee."""

    username: Username
    role: MemberRole


class MemberInfo(WireModel):
    """One person of a shared folder: a member, or invited and not yet answered."""

    username: Username
    role: Role
    state: Literal["member", "invited"]


class MemberList(WireModel):
    members: tuple[MemberInfo, ...] = Field(max_length=MAX_MEMBERS_PER_NAMESPACE)


class InvitationInfo(WireModel):
    """An invitation waiting for the caller's answer."""

    invitation_id: InvitationId
    namespace_id: HexNamespaceId
    name: NamespaceName
    owner: Username
    invited_by: Username
    role: MemberRole
    time: AwareDatetime


class InvitationList(WireModel):
    invitations: tuple[InvitationInfo, ...] = Field(max_length=MAX_NAMESPACES_PER_USER)


class AcceptRequest(WireModel):
    """Where the shared folder goes in the caller's home: ``path`` (its parent must exist
    and the name be free), or, with none, the folder's own name at the home's top, with
    `` (2)``, `` (3)``… when that name is taken."""

    path: WirePath | None = None


class AcceptResponse(WireModel):
    namespace_id: HexNamespaceId
    path: WirePath


class EditingRequest(WireModel):
    """The paths this device has open for writing in the namespace now (a heartbeat: the
    server forgets a path this device stops naming at once, and every path of a device
    that stops sending within ``EDITING_TTL_S``)."""

    paths: tuple[WirePath, ...] = Field(max_length=MAX_EDITING_PATHS)


class EditorInfo(WireModel):
    """Someone else who has ``path`` open for writing, on ``device_name``, since ``since``."""

    path: WirePath
    username: Username
    device_name: DeviceName
    since: AwareDatetime


class EditorList(WireModel):
    editors: tuple[EditorInfo, ...] = Field(max_length=MAX_EDITING_PATHS * 8)
