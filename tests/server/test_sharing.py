"""Shared folders on an in-process server: sharing a folder without sending a chunk again,
invitations, roles, removal, leaving and unsharing, and the rules on mount entries."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from httpx import Response

from server import db as tables
from store import protocol
from store.ids import ChunkId, NamespaceId
from store.objects import EntryKind
from tests.server.drive import Drive, User

Path = protocol.DrivePath


def _path(text: str) -> protocol.DrivePath:
    return Path.from_bytes(text.encode())


def _post(
    drive: Drive, user: User, route: protocol.Route, body: object = None, **params: object
) -> Response:
    reply: Response = drive.client.request(
        route.method, route.fill(**params), json=body, headers=user.headers
    )
    return reply


def share(drive: Drive, user: User, path: str) -> protocol.ShareInfo:
    reply = _post(drive, user, protocol.SHARE, {"path": path}, namespace_id=user.home)
    assert reply.status_code == 201, reply.text
    return protocol.ShareInfo.model_validate_json(reply.content)


def invite(drive: Drive, owner: User, ns: NamespaceId, who: User, role: str) -> Response:
    body = {"username": who.username, "role": role}
    return _post(drive, owner, protocol.SET_MEMBER, body, namespace_id=ns)


def accept(drive: Drive, user: User, path: str | None = None) -> protocol.AcceptResponse:
    reply = _post(drive, user, protocol.INVITATIONS)
    invitations = protocol.InvitationList.model_validate_json(reply.content).invitations
    assert len(invitations) == 1, invitations
    reply = _post(
        drive, user, protocol.ACCEPT_INVITATION, {"path": path},
        invitation_id=invitations[0].invitation_id,
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    return protocol.AcceptResponse.model_validate_json(reply.content)


def member(drive: Drive, owner: User, ns: NamespaceId, name: str, role: str) -> User:
    """A new user, invited to ``ns`` with ``role``, who accepted."""
    user = drive.register(name)
    invite(drive, owner, ns, user, role)
    accept(drive, user)
    return user


def chunk_rows(drive: Drive) -> int:
    with drive.state.db.read() as connection:
        return int(
            connection.execute(sa.select(sa.func.count()).select_from(tables.chunks)).scalar_one()
        )


def make_team(drive: Drive, alice: User) -> None:
    drive.apply(alice, alice.home, [
        protocol.MkdirOp(
            path=_path("Team"), attrs=protocol.AttrsModel(mode=0o750, uid=1, gid=2, mtime_ns=9)
        ),
        drive.put(alice, alice.home, "Team/notes.txt", b"line one\nline two\n"),
        drive.put(alice, alice.home, "Team/big.bin", bytes(range(256)) * 8192),
    ])  # fmt: skip


def team_of(drive: Drive, alice: User) -> NamespaceId:
    make_team(drive, alice)
    return share(drive, alice, "Team").namespace_id


def test_sharing_a_folder_makes_a_namespace_of_it_without_sending_a_chunk(
    drive: Drive, alice: User
) -> None:
    drive.apply(alice, alice.home, [drive.put(alice, alice.home, "keep.txt", b"mine")])
    make_team(drive, alice)
    chunks_before = chunk_rows(drive)
    team = share(drive, alice, "Team").namespace_id
    assert chunk_rows(drive) == chunks_before
    mount = drive.entry(alice.home, "Team")
    assert mount is not None and mount.kind is EntryKind.MOUNT and mount.namespace_id == team
    assert (mount.mode, mount.uid, mount.gid, mount.mtime_ns) == (0o750, 1, 2, 9)
    assert set(drive.listing(team)) == {"notes.txt", "big.bin"}
    assert drive.read(team, "notes.txt") == b"line one\nline two\n"
    assert drive.entry(alice.home, "keep.txt") is not None
    # Sharing it again answers the same namespace.
    assert share(drive, alice, "Team").namespace_id == team
    # Alice reads the big file's chunks through the new namespace.
    entry = drive.entry(team, "big.bin")
    assert entry is not None
    reply = drive.client.get(
        protocol.CHUNK.fill(namespace_id=team, chunk_id=entry.chunks[0].chunk_id),
        headers=alice.headers,
    )
    assert reply.status_code == 200


def test_share_refuses_what_is_not_a_folder_of_ones_home(drive: Drive, alice: User) -> None:
    drive.apply(alice, alice.home, [drive.put(alice, alice.home, "a.txt", b"x")])
    bob = drive.register("bob")
    assert (
        _post(drive, alice, protocol.SHARE, {"path": "a.txt"}, namespace_id=alice.home).status_code
        == 409
    )
    assert (
        _post(drive, alice, protocol.SHARE, {"path": "nope"}, namespace_id=alice.home).status_code
        == 404
    )
    assert (
        _post(drive, bob, protocol.SHARE, {"path": "a.txt"}, namespace_id=alice.home).status_code
        == 404
    )
    assert (
        _post(drive, alice, protocol.SHARE, {"path": "../x"}, namespace_id=alice.home).status_code
        == 400
    )


def test_an_invitation_gives_nothing_until_accepted(drive: Drive, alice: User) -> None:
    team = team_of(drive, alice)
    bob = drive.register("bob")
    assert invite(drive, alice, team, bob, "editor").status_code == 200
    head = drive.head(team)
    reply = drive.client.post(
        protocol.TREES.fill(namespace_id=team), json={"ids": [head.root.hex()]}, headers=bob.headers
    )
    assert reply.status_code == 404
    accepted = accept(drive, bob)
    assert accepted.namespace_id == team and accepted.path == _path("Team")
    mount = drive.entry(bob.home, "Team")
    assert mount is not None and mount.kind is EntryKind.MOUNT and mount.namespace_id == team
    reply = drive.client.post(
        protocol.TREES.fill(namespace_id=team), json={"ids": [head.root.hex()]}, headers=bob.headers
    )
    assert reply.status_code == 200
    members = _post(drive, alice, protocol.MEMBERS, namespace_id=team)
    listed = protocol.MemberList.model_validate_json(members.content).members
    assert [(m.username, m.role, m.state) for m in listed] == [
        ("alice", "owner", "member"), ("bob", "editor", "member"),
    ]  # fmt: skip


def test_accepting_beside_a_taken_name_picks_the_next_free_one(drive: Drive, alice: User) -> None:
    team = team_of(drive, alice)
    bob = drive.register("bob")
    attrs = protocol.AttrsModel(mode=0o755, uid=0, gid=0, mtime_ns=0)
    drive.apply(bob, bob.home, [protocol.MkdirOp(path=_path("Team"), attrs=attrs)])
    invite(drive, alice, team, bob, "viewer")
    assert accept(drive, bob).path == _path("Team (2)")


def test_accepting_at_a_taken_path_is_a_conflict(drive: Drive, alice: User) -> None:
    team = team_of(drive, alice)
    bob = drive.register("bob")
    drive.apply(bob, bob.home, [drive.put(bob, bob.home, "x", b"x")])
    invite(drive, alice, team, bob, "viewer")
    invitations = protocol.InvitationList.model_validate_json(
        _post(drive, bob, protocol.INVITATIONS).content
    ).invitations
    reply = _post(
        drive, bob, protocol.ACCEPT_INVITATION, {"path": "x"},
        invitation_id=invitations[0].invitation_id,
    )  # fmt: skip
    assert reply.status_code == 409
    # Another user's invitation id answers as if it did not exist.
    carol = drive.register("carol")
    reply = _post(
        drive, carol, protocol.ACCEPT_INVITATION, {"path": None},
        invitation_id=invitations[0].invitation_id,
    )  # fmt: skip
    assert reply.status_code == 404


def test_a_viewer_reads_but_every_write_is_forbidden(drive: Drive, alice: User) -> None:
    team = team_of(drive, alice)
    carol = member(drive, alice, team, "carol", "viewer")
    assert (
        drive.post_ops(carol, team, [protocol.DeleteOp(path=_path("notes.txt"))]).status_code == 403
    )
    reply = drive.client.post(
        protocol.MISSING_CHUNKS.fill(namespace_id=team),
        json={"ids": [ChunkId(bytes(32)).hex()]}, headers=carol.headers,
    )  # fmt: skip
    assert reply.status_code == 403
    assert invite(drive, carol, team, drive.register("dave"), "viewer").status_code == 403
    assert drive.entry(team, "notes.txt") is not None


def test_a_role_change_takes_effect_at_once(drive: Drive, alice: User) -> None:
    team = team_of(drive, alice)
    bob = member(drive, alice, team, "bob", "viewer")
    assert (
        drive.post_ops(bob, team, [protocol.DeleteOp(path=_path("notes.txt"))]).status_code == 403
    )
    reply = invite(drive, alice, team, bob, "editor")
    assert protocol.MemberInfo.model_validate_json(reply.content).state == "member"
    assert (
        drive.post_ops(bob, team, [protocol.DeleteOp(path=_path("notes.txt"))]).status_code == 200
    )


def test_a_removed_member_loses_the_folder_and_every_route_to_it(drive: Drive, alice: User) -> None:
    team = team_of(drive, alice)
    bob = drive.register("bob")
    invite(drive, alice, team, bob, "editor")
    accept(drive, bob, "Work")
    entry = drive.entry(team, "big.bin")
    assert entry is not None
    head = drive.head(team)
    reply = _post(drive, alice, protocol.REMOVE_MEMBER, namespace_id=team, username="bob")
    assert reply.status_code == 204, reply.text
    assert drive.entry(bob.home, "Work") is None
    chunk = entry.chunks[0].chunk_id
    assert (
        drive.client.get(
            protocol.CHUNK.fill(namespace_id=team, chunk_id=chunk), headers=bob.headers
        ).status_code
        == 404
    )
    for route, ids in (
        (protocol.TREES, [head.root.hex()]),
        (protocol.COMMITS, [head.commit_id.hex() if head.commit_id else ""]),
        (protocol.DOWNLOAD_CHUNKS, [chunk.hex()]),
    ):
        reply = drive.client.post(
            route.fill(namespace_id=team), json={"ids": ids}, headers=bob.headers
        )
        assert reply.status_code == 404, route.name
    assert (
        drive.post_ops(bob, team, [protocol.DeleteOp(path=_path("notes.txt"))]).status_code == 404
    )
    # Nor through his own home: the chunk was never his.
    assert (
        drive.client.get(
            protocol.CHUNK.fill(namespace_id=bob.home, chunk_id=chunk), headers=bob.headers
        ).status_code
        == 404
    )


def test_a_member_leaves_and_the_owner_cannot(drive: Drive, alice: User) -> None:
    team = team_of(drive, alice)
    carol = member(drive, alice, team, "carol", "viewer")
    assert (
        _post(drive, carol, protocol.REMOVE_MEMBER, namespace_id=team, username="carol").status_code
        == 204
    )
    assert drive.entry(carol.home, "Team") is None
    assert (
        _post(drive, alice, protocol.REMOVE_MEMBER, namespace_id=team, username="alice").status_code
        == 400
    )


def test_unshare_puts_the_folder_back_and_removes_everyone(drive: Drive, alice: User) -> None:
    team = team_of(drive, alice)
    bob = member(drive, alice, team, "bob", "editor")
    drive.apply(bob, team, [drive.put(bob, team, "from-bob.txt", b"hello")])
    assert _post(drive, alice, protocol.UNSHARE, namespace_id=team).status_code == 204
    folder = drive.entry(alice.home, "Team")
    assert folder is not None and folder.kind is EntryKind.DIR
    assert (folder.mode, folder.uid, folder.gid) == (0o750, 1, 2)
    assert drive.read(alice.home, "Team/from-bob.txt") == b"hello"
    assert drive.entry(bob.home, "Team") is None
    assert (
        drive.post_ops(bob, team, [protocol.DeleteOp(path=_path("notes.txt"))]).status_code == 404
    )
    assert (
        drive.post_ops(alice, team, [protocol.DeleteOp(path=_path("notes.txt"))]).status_code == 404
    )


def test_client_ops_cannot_make_replace_or_delete_a_mount_but_may_move_it(
    drive: Drive, alice: User
) -> None:
    team = team_of(drive, alice)
    mount_model = protocol.EntryModel(
        kind="mount", mode=0o755, uid=0, gid=0, size=0, mtime_ns=0, namespace_id=team
    )
    response = drive.apply(alice, alice.home, [
        protocol.PutOp(path=_path("Fake"), entry=mount_model),
        drive.put(alice, alice.home, "Team", b"over it"),
        protocol.DeleteOp(path=_path("Team")),
        drive.put(alice, alice.home, "Team/inside.txt", b"through it"),
        protocol.MoveOp(src=_path("Team"), dst=_path("Renamed")),
    ])  # fmt: skip
    assert [(r.status, r.code) for r in response.results] == [
        ("rejected", "forbidden"), ("rejected", "conflict"), ("rejected", "conflict"),
        ("rejected", "conflict"), ("applied", None),
    ]  # fmt: skip
    moved = drive.entry(alice.home, "Renamed")
    assert moved is not None and moved.namespace_id == team
    drive.apply(alice, alice.home, [drive.put(alice, alice.home, "x.txt", b"x")])
    clash = drive.apply(
        alice, alice.home, [protocol.MoveOp(src=_path("x.txt"), dst=_path("Renamed"))]
    )
    assert clash.results[0].status == "rejected"


def test_sharing_is_in_the_audit_log(drive: Drive, alice: User) -> None:
    team = team_of(drive, alice)
    bob = drive.register("bob")
    invite(drive, alice, team, bob, "viewer")
    invite(drive, alice, team, bob, "editor")
    accept(drive, bob)
    _post(drive, alice, protocol.REMOVE_MEMBER, namespace_id=team, username="bob")
    with drive.state.db.read() as connection:
        actions = [
            row.action
            for row in connection.execute(
                sa.select(tables.audit.c.action).order_by(tables.audit.c.id)
            )
        ]
    sharing = [
        a for a in actions if a in {"share", "invite", "accept", "member_removed", "role_change"}
    ]
    assert sharing == ["share", "invite", "invite", "accept", "member_removed"]


def test_a_conflicted_copy_in_a_shared_folder_names_the_user_and_the_device(
    drive: Drive, alice: User
) -> None:
    team = team_of(drive, alice)
    bob = member(drive, alice, team, "bob", "editor")
    drive.apply(alice, team, [drive.put(alice, team, "plan.txt", b"alice's plan\n\x00")])
    response = drive.apply(bob, team, [drive.put(bob, team, "plan.txt", b"bob's plan\n\x00")])
    (result,) = response.results
    assert result.status == "conflicted_copy" and result.conflict_path is not None
    assert result.conflict_path.name.startswith(b"plan (conflicted copy from bob's laptop ")
    assert drive.read(team, "plan.txt") == b"alice's plan\n\x00"


def test_who_is_editing_follows_each_devices_reports_and_expires(
    drive: Drive, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = team_of(drive, alice)
    bob = member(drive, alice, team, "bob", "editor")
    carol = member(drive, alice, team, "carol", "viewer")

    def editors(user: User) -> list[tuple[str, str, str]]:
        reply = _post(drive, user, protocol.EDITORS, namespace_id=team)
        listed = protocol.EditorList.model_validate_json(reply.content).editors
        return [(bytes(e.path).decode(), e.username, e.device_name) for e in listed]

    reply = _post(drive, bob, protocol.EDITING, {"paths": ["notes.txt"]}, namespace_id=team)
    assert protocol.EditorList.model_validate_json(reply.content).editors == ()
    assert editors(alice) == editors(carol) == [("notes.txt", "bob", "laptop")]
    assert editors(bob) == []  # not oneself
    # A viewer has nothing open for writing to report, and may not claim so.
    assert (
        _post(drive, carol, protocol.EDITING, {"paths": ["x"]}, namespace_id=team).status_code
        == 403
    )
    assert (
        _post(drive, carol, protocol.EDITING, {"paths": []}, namespace_id=team).status_code == 200
    )
    # The next report replaces the last one.
    _post(drive, bob, protocol.EDITING, {"paths": ["big.bin"]}, namespace_id=team)
    assert editors(alice) == [("big.bin", "bob", "laptop")]
    # A device that stops reporting is forgotten after the time to live.
    ahead = time.time_ns() + int((protocol.EDITING_TTL_S + 1) * 1e9)
    monkeypatch.setattr("server.presence.now_ns", lambda: ahead)
    assert editors(alice) == []
    # Nobody outside the folder learns anything.
    dave = drive.register("dave")
    assert _post(drive, dave, protocol.EDITORS, namespace_id=team).status_code == 404


def test_a_folder_holding_a_shared_folder_is_not_shared(drive: Drive, alice: User) -> None:
    team = team_of(drive, alice)
    bob = member(drive, alice, team, "bob", "editor")
    attrs = protocol.AttrsModel(mode=0o755, uid=0, gid=0, mtime_ns=0)
    drive.apply(bob, bob.home, [protocol.MkdirOp(path=_path("Projects"), attrs=attrs)])
    drive.apply(bob, bob.home, [protocol.MoveOp(src=_path("Team"), dst=_path("Projects/Team"))])
    reply = _post(drive, bob, protocol.SHARE, {"path": "Projects"}, namespace_id=bob.home)
    assert reply.status_code == 409
    assert "do not nest" in reply.json()["message"]
    moved = drive.entry(bob.home, "Projects/Team")
    assert moved is not None and moved.kind is EntryKind.MOUNT
