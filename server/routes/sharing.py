"""The shared-folder routes: share and unshare a folder, its members, one's invitations,
and who is editing in it.

The HTTP side of ``server.sharing`` and ``server.presence``: parse the path ids, run the
service in a worker thread, and, after sharing changes, wake the event streams (they may
move heads or change who reads what; events are hints, so waking for nothing is
harmless). Registered by
``server.app``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

from fastapi import APIRouter, Request, Response

from server import presence, sharing
from server.routes.auth import CallerDep, server_state
from server.routes.endpoint import endpoint, namespace_id_param
from server.state import ServerState
from store import protocol

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

router = APIRouter()


async def _run_and_publish(
    state: ServerState, function: Callable[[Unpack[Ts]], T], *args: *Ts
) -> T:
    result = await state.run(function, *args)
    state.events.publish()
    return result


def _no_content(route: protocol.Route) -> Response:
    return Response(status_code=route.status_code)


@endpoint(router, protocol.SHARE)
async def share(
    request: Request, namespace_id: str, body: protocol.ShareRequest, who: CallerDep
) -> protocol.ShareInfo:
    state = server_state(request)
    home = namespace_id_param(namespace_id)
    return await _run_and_publish(state, sharing.share_folder, state, who, home, body.path)


@endpoint(router, protocol.UNSHARE)
async def unshare(request: Request, namespace_id: str, who: CallerDep) -> Response:
    state = server_state(request)
    await _run_and_publish(state, sharing.unshare, state, who, namespace_id_param(namespace_id))
    return _no_content(protocol.UNSHARE)


@endpoint(router, protocol.MEMBERS)
async def members(request: Request, namespace_id: str, who: CallerDep) -> protocol.MemberList:
    state = server_state(request)
    namespace = namespace_id_param(namespace_id)
    return await state.run(sharing.list_members, state, who, namespace)


@endpoint(router, protocol.SET_MEMBER)
async def set_member(
    request: Request, namespace_id: str, body: protocol.MemberRequest, who: CallerDep
) -> protocol.MemberInfo:
    state = server_state(request)
    namespace = namespace_id_param(namespace_id)
    return await _run_and_publish(state, sharing.set_member, state, who, namespace, body)


@endpoint(router, protocol.REMOVE_MEMBER)
async def remove_member(
    request: Request, namespace_id: str, username: str, who: CallerDep
) -> Response:
    state = server_state(request)
    namespace = namespace_id_param(namespace_id)
    name = protocol.parse_username(username)
    await _run_and_publish(state, sharing.remove_member, state, who, namespace, name)
    return _no_content(protocol.REMOVE_MEMBER)


@endpoint(router, protocol.INVITATIONS)
async def invitations(request: Request, who: CallerDep) -> protocol.InvitationList:
    state = server_state(request)
    return await state.run(sharing.list_invitations, state, who)


@endpoint(router, protocol.ACCEPT_INVITATION)
async def accept(
    request: Request, invitation_id: str, body: protocol.AcceptRequest, who: CallerDep
) -> protocol.AcceptResponse:
    state = server_state(request)
    invitation = protocol.parse_invitation_id(invitation_id)
    return await _run_and_publish(
        state, sharing.accept_invitation, state, who, invitation, body.path
    )


@endpoint(router, protocol.DECLINE_INVITATION)
async def decline(request: Request, invitation_id: str, who: CallerDep) -> Response:
    state = server_state(request)
    invitation = protocol.parse_invitation_id(invitation_id)
    await state.run(sharing.decline_invitation, state, who, invitation)
    return _no_content(protocol.DECLINE_INVITATION)


@endpoint(router, protocol.EDITING)
async def editing(
    request: Request, namespace_id: str, body: protocol.EditingRequest, who: CallerDep
) -> protocol.EditorList:
    state = server_state(request)
    namespace = namespace_id_param(namespace_id)
    return await state.run(presence.report, state, who, namespace, body.paths)


@endpoint(router, protocol.EDITORS)
async def editors(request: Request, namespace_id: str, who: CallerDep) -> protocol.EditorList:
    state = server_state(request)
    namespace = namespace_id_param(namespace_id)
    return await state.run(presence.editors, state, who, namespace)
