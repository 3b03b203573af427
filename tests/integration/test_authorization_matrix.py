"""Every route of ``store.protocol.ROUTES`` against every kind of caller, over a real server
process: the status each one gets is the one in ``EXPECTED``.

The callers of a shared folder ``Team`` (alice's): its owner, an editor, a viewer, a user
who is no member, a member who was removed (and who still knows every id he read while he
was one), a session that logged out, and someone holding nothing but a share link (no
session at all; each builder hands every caller the same kind of link, so on the public
``/l/`` pages the token is what counts). Each route has a request builder that makes, for
each caller, a request that would succeed if that caller were allowed: destructive routes
get a fresh target per caller (a folder to unshare, a session to end, an invitation to
answer, a link to revoke), so one caller's answer never depends on another's. A route
added to ``ROUTES`` without an entry here fails ``test_every_route_has_an_entry``.
"""

from __future__ import annotations

import io
import itertools
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from store import protocol
from store.chunking import ChunkStream
from store.frames import encode_frame
from store.ids import ChunkId, CommitId, LinkId, NamespaceId, TreeId, content_hash_of
from tests.integration.server_process import ServerProcess

PASSWORD: Final = "matrix test password"  # noqa: S105  (a test account)
LINK_PASSWORD: Final = "matrix link password"  # noqa: S105  (a test link)
CALLERS: Final = ("owner", "editor", "viewer", "non_member", "removed", "logged_out", "link_holder")
MEMBERS: Final = ("owner", "editor", "viewer")
ANYONE_SIGNED_IN: Final = ("owner", "editor", "viewer", "non_member", "removed")
_names = (f"user{number}" for number in itertools.count())


@dataclass
class Request:
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    data: dict[str, str] | None = None  # a form
    files: dict[str, tuple[str, bytes]] | None = None  # a multipart upload


@dataclass
class Account:
    username: str
    token: str
    session_id: str
    home: NamespaceId


class World:
    """The server, alice's shared folder and its callers, and what each caller learned."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.alice = self.account("alice")
        self.home = self.alice.home
        self.olga = self.account("olga")  # who invites every caller to a folder of hers
        self.team = self.shared_folder(self.alice, "Team")
        head = self.get(self.alice, protocol.HEAD.fill(namespace_id=self.team)).json()
        self.commit = CommitId.from_hex(head["head"])
        tree_page = self.get(self.alice, protocol.LOG.fill(namespace_id=self.team)).json()
        self.root = TreeId.from_hex(tree_page["commits"][0]["root"])
        self.chunk = self.chunk_of_team_file()
        self.accounts: dict[str, Account | None] = {"owner": self.alice, "link_holder": None}
        for caller, role in (("editor", "editor"), ("viewer", "viewer"), ("removed", "editor")):
            account = self.account(next(_names))
            self.invite_and_accept(self.alice, self.team, account, role)
            self.accounts[caller] = account
        self.accounts["non_member"] = self.account(next(_names))
        removed = self.accounts["removed"]
        assert removed is not None
        reply = self.client.delete(
            protocol.REMOVE_MEMBER.fill(namespace_id=self.team, username=removed.username),
            headers=self.headers(self.alice),
        )
        assert reply.status_code == 204, reply.text
        gone = self.account(next(_names))
        assert (
            self.client.post(protocol.LOGOUT.fill(), headers=self.headers(gone)).status_code == 204
        )
        self.accounts["logged_out"] = gone

    def link(self, path: str | None, **options: object) -> str:
        """A fresh link of alice's to ``path`` in Team (``None``: all of it); its token."""
        reply = self.client.post(
            protocol.CREATE_LINK.fill(namespace_id=self.team), json={"path": path, **options},
            headers=self.headers(self.alice),
        )  # fmt: skip
        assert reply.status_code == 201, reply.text
        return str(reply.json()["token"])

    # --- helpers ---------------------------------------------------------------------------

    def headers(self, account: Account | None) -> dict[str, str]:
        return protocol.request_headers(account.token if account else None)

    def get(self, account: Account, path: str) -> httpx.Response:
        reply = self.client.get(path, headers=self.headers(account))
        assert reply.status_code == 200, reply.text
        return reply

    def account(self, username: str, device: str = "laptop") -> Account:
        body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
        reply = self.client.post(protocol.REGISTER.fill(), json=body, headers=self.headers(None))
        assert reply.status_code == 201, reply.text
        return self.login(username, device)

    def login(self, username: str, device: str = "phone") -> Account:
        body = {"username": username, "password": PASSWORD, "device_name": device}
        reply = self.client.post(protocol.LOGIN.fill(), json=body, headers=self.headers(None))
        assert reply.status_code == 200, reply.text
        login = protocol.LoginResponse.model_validate_json(reply.content)
        token_headers = protocol.request_headers(login.token)
        listed = self.client.get(protocol.NAMESPACES.fill(), headers=token_headers).json()
        home = next(ns for ns in listed["namespaces"] if ns["home"])["namespace_id"]
        return Account(username, login.token, login.session_id, NamespaceId.from_hex(home))

    def upload(self, account: Account, ns: NamespaceId, data: bytes) -> list[ChunkId]:
        records = [
            protocol.Record(piece.chunk_id, encode_frame(piece.data))
            for piece in ChunkStream(io.BytesIO(data))
        ]
        body = b"".join(protocol.encode_record_stream(ChunkId, records))
        reply = self.client.post(
            protocol.UPLOAD_CHUNKS.fill(namespace_id=ns), content=body,
            headers={**self.headers(account), "Content-Type": protocol.RECORD_STREAM_MEDIA_TYPE},
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        return [record.object_id for record in records]

    def put_op(self, account: Account, ns: NamespaceId, path: str, data: bytes) -> dict[str, Any]:
        ids = self.upload(account, ns, data)
        chunks = [{"chunk_id": ids[0].hex(), "length": len(data)}]
        entry = {
            "kind": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": len(data), "mtime_ns": 1,
            "chunks": chunks, "content_hash": content_hash_of(data).hex(),
        }  # fmt: skip
        return {"op": "put", "path": path, "entry": entry, "base": None}

    def apply(self, account: Account, ns: NamespaceId, *ops: dict[str, Any]) -> None:
        body = {"idempotency_key": secrets.token_hex(16), "ops": list(ops)}
        reply = self.client.post(
            protocol.APPLY_OPS.fill(namespace_id=ns), json=body, headers=self.headers(account)
        )
        assert reply.status_code == 200, reply.text

    def shared_folder(self, owner: Account, name: str) -> NamespaceId:
        attrs = {"mode": 0o755, "uid": 0, "gid": 0, "mtime_ns": 1}
        self.apply(
            owner, owner.home, {"op": "mkdir", "path": name, "attrs": attrs},
            self.put_op(owner, owner.home, f"{name}/notes.txt", f"{name} notes\n".encode()),
        )  # fmt: skip
        reply = self.client.post(
            protocol.SHARE.fill(namespace_id=owner.home), json={"path": name},
            headers=self.headers(owner),
        )  # fmt: skip
        assert reply.status_code == 201, reply.text
        return NamespaceId.from_hex(reply.json()["namespace_id"])

    def invite(self, owner: Account, ns: NamespaceId, account: Account, role: str) -> str:
        reply = self.client.post(
            protocol.SET_MEMBER.fill(namespace_id=ns),
            json={"username": account.username, "role": role}, headers=self.headers(owner),
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        listed = self.get(account, protocol.INVITATIONS.fill()).json()["invitations"]
        return str(next(i["invitation_id"] for i in listed if i["namespace_id"] == ns.hex()))

    def invite_and_accept(
        self, owner: Account, ns: NamespaceId, account: Account, role: str
    ) -> None:
        invitation = self.invite(owner, ns, account, role)
        reply = self.client.post(
            protocol.ACCEPT_INVITATION.fill(invitation_id=invitation),
            json={"path": None}, headers=self.headers(account),
        )  # fmt: skip
        assert reply.status_code == 200, reply.text

    def chunk_of_team_file(self) -> ChunkId:
        data = b"Team notes\n"
        return ChunkId(next(iter(ChunkStream(io.BytesIO(data)))).chunk_id)


# --- the requests ------------------------------------------------------------------------------

Builder = Callable[[World, str, Account | None], Request]


def _json(route: protocol.Route, body: Any, **params: object) -> Builder:
    def build(_world: World, _caller: str, _account: Account | None) -> Request:
        return Request(route.method, route.fill(**params), json=body)

    return build


def on_team(route: protocol.Route, body: Callable[[World], Any] | None = None) -> Builder:
    def build(world: World, _caller: str, _account: Account | None) -> Request:
        return Request(
            route.method, route.fill(namespace_id=world.team),
            json=body(world) if body else None,
        )  # fmt: skip

    return build


def _upload(world: World, _caller: str, _account: Account | None) -> Request:
    data = secrets.token_bytes(64)
    piece = next(iter(ChunkStream(io.BytesIO(data))))
    record = protocol.Record(piece.chunk_id, encode_frame(piece.data))
    return Request(
        "POST", protocol.UPLOAD_CHUNKS.fill(namespace_id=world.team),
        content=b"".join(protocol.encode_record_stream(ChunkId, [record])),
        headers={"Content-Type": protocol.RECORD_STREAM_MEDIA_TYPE},
    )  # fmt: skip


def _ops(world: World, _caller: str, _account: Account | None) -> Request:
    attrs = {"mode": 0o755, "uid": 0, "gid": 0, "mtime_ns": 1}
    body = {
        "idempotency_key": secrets.token_hex(16),
        "ops": [{"op": "mkdir", "path": f"dir-{secrets.token_hex(4)}", "attrs": attrs}],
    }
    return Request("POST", protocol.APPLY_OPS.fill(namespace_id=world.team), json=body)


def _restore(world: World, _caller: str, _account: Account | None) -> Request:
    body = {
        "path": "notes.txt", "commit_id": world.commit.hex(),
        "idempotency_key": secrets.token_hex(16),
    }  # fmt: skip
    return Request("POST", protocol.RESTORE.fill(namespace_id=world.team), json=body)


def _share(world: World, _caller: str, _account: Account | None) -> Request:
    # A folder of alice's home: hers to share, nobody else's.
    name = f"Share-{secrets.token_hex(4)}"
    attrs = {"mode": 0o755, "uid": 0, "gid": 0, "mtime_ns": 1}
    world.apply(world.alice, world.home, {"op": "mkdir", "path": name, "attrs": attrs})
    return Request("POST", protocol.SHARE.fill(namespace_id=world.home), json={"path": name})


def _unshare(world: World, _caller: str, account: Account | None) -> Request:
    # A fresh folder of alice's, with this caller in it as ``_caller`` is in Team.
    ns = _like_team(world, _caller, account)
    return Request("POST", protocol.UNSHARE.fill(namespace_id=ns))


def _like_team(world: World, caller: str, account: Account | None) -> NamespaceId:
    ns = world.shared_folder(world.alice, f"Fresh-{secrets.token_hex(4)}")
    if account is not None and caller in ("editor", "viewer", "removed"):
        world.invite_and_accept(
            world.alice, ns, account, "editor" if caller != "viewer" else "viewer"
        )
        if caller == "removed":
            reply = world.client.delete(
                protocol.REMOVE_MEMBER.fill(namespace_id=ns, username=account.username),
                headers=world.headers(world.alice),
            )
            assert reply.status_code == 204
    return ns


def _remove_member(world: World, _caller: str, _account: Account | None) -> Request:
    someone = world.account(next(_names))
    world.invite(world.alice, world.team, someone, "viewer")
    return Request(
        "DELETE", protocol.REMOVE_MEMBER.fill(namespace_id=world.team, username=someone.username)
    )


def _set_member(world: World, _caller: str, _account: Account | None) -> Request:
    someone = world.account(next(_names))
    body = {"username": someone.username, "role": "viewer"}
    return Request("POST", protocol.SET_MEMBER.fill(namespace_id=world.team), json=body)


def _own_invitation(route: protocol.Route, body: Any) -> Builder:
    """Answering an invitation addressed to this caller (to a fresh folder of olga's)."""

    def build(world: World, _caller: str, account: Account | None) -> Request:
        if account is None or _caller == "logged_out":
            invitation = secrets.token_hex(16)  # nothing to answer without a session
        else:
            ns = world.shared_folder(world.olga, f"Invite-{secrets.token_hex(4)}")
            invitation = world.invite(world.olga, ns, account, "viewer")
        return Request(route.method, route.fill(invitation_id=invitation), json=body)

    return build


def _logout(world: World, caller: str, account: Account | None) -> Request:
    fresh = world.login(account.username) if account and caller != "logged_out" else account
    return Request("POST", protocol.LOGOUT.fill(), headers=world.headers(fresh))


def _revoke_session(world: World, caller: str, account: Account | None) -> Request:
    if account is None or caller == "logged_out":
        session_id = "0" * 32
    else:
        session_id = world.login(account.username).session_id  # another device of one's own
    return Request("DELETE", protocol.REVOKE_SESSION.fill(session_id=session_id))


def _register(_world: World, _caller: str, _account: Account | None) -> Request:
    name = next(_names)
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    return Request("POST", protocol.REGISTER.fill(), json=body)


def _login(world: World, _caller: str, account: Account | None) -> Request:
    username = account.username if account else world.alice.username
    body = {"username": username, "password": PASSWORD, "device_name": "matrix"}
    return Request("POST", protocol.LOGIN.fill(), json=body)


def _create_link(world: World, _caller: str, _account: Account | None) -> Request:
    body = {"path": "notes.txt"}
    return Request("POST", protocol.CREATE_LINK.fill(namespace_id=world.team), json=body)


def _revoke_link(world: World, _caller: str, _account: Account | None) -> Request:
    world.link("notes.txt")
    listed = world.client.get(protocol.LINKS.fill(), headers=world.headers(world.alice)).json()
    link_id = LinkId.from_hex(
        next(link["link_id"] for link in listed["links"] if not link.get("revoked_at"))
    )
    return Request("DELETE", protocol.REVOKE_LINK.fill(link_id=link_id))


def _link_page(world: World, _caller: str, _account: Account | None) -> Request:
    return Request("GET", protocol.LINK_PAGE.fill(token=world.link("notes.txt")))


def _link_subpage(world: World, _caller: str, _account: Account | None) -> Request:
    token = world.link(None)  # the whole folder
    subpath = protocol.DrivePath([b"notes.txt"])
    return Request("GET", protocol.LINK_SUBPAGE.fill(token=token, subpath=subpath))


def _link_unlock(world: World, _caller: str, _account: Account | None) -> Request:
    token = world.link("notes.txt", password=LINK_PASSWORD)
    return Request("POST", protocol.LINK_UNLOCK.fill(token=token), data={"password": LINK_PASSWORD})


def _link_upload(world: World, _caller: str, _account: Account | None) -> Request:
    token = world.link(None, upload_only=True)
    name = f"dropped-{secrets.token_hex(4)}.txt"
    return Request(
        "POST", protocol.LINK_UPLOAD.fill(token=token), files={"file": (name, b"dropped\n")}
    )


def _chunk_ids(world: World) -> dict[str, list[str]]:
    return {"ids": [world.chunk.hex()]}


def _statuses(
    allowed: int, members: tuple[str, ...], *, others: int = 404, **extra: int
) -> dict[str, int]:
    """``allowed`` for ``members``; ``others`` (404, as if the namespace did not exist) for
    signed-in callers who are not; 401 without a session; ``extra`` overrides."""
    statuses = {caller: allowed if caller in members else others for caller in ANYONE_SIGNED_IN}
    statuses |= {"logged_out": 401, "link_holder": 401}
    statuses.update(extra)
    return statuses


READ = _statuses(200, MEMBERS)
WRITE = _statuses(200, ("owner", "editor"), viewer=403)
OWNER_ONLY = _statuses(200, ("owner",), editor=403, viewer=403)
SIGNED_IN = _statuses(200, ANYONE_SIGNED_IN)
PUBLIC = dict.fromkeys(CALLERS, 200)

EXPECTED: Final[dict[str, tuple[Builder, dict[str, int]]]] = {
    "register": (_register, dict.fromkeys(CALLERS, 201)),
    "login": (_login, PUBLIC),
    "logout": (_logout, _statuses(204, ANYONE_SIGNED_IN)),
    "whoami": (_json(protocol.WHOAMI, None), SIGNED_IN),
    "sessions": (_json(protocol.SESSIONS, None), SIGNED_IN),
    "revoke_session": (_revoke_session, _statuses(204, ANYONE_SIGNED_IN)),
    "audit_log": (_json(protocol.AUDIT_LOG, None), SIGNED_IN),
    "namespaces": (_json(protocol.NAMESPACES, None), SIGNED_IN),
    "head": (on_team(protocol.HEAD), READ),
    "missing_chunks": (on_team(protocol.MISSING_CHUNKS, _chunk_ids), WRITE),
    "upload_chunks": (_upload, WRITE),
    "download_chunks": (on_team(protocol.DOWNLOAD_CHUNKS, _chunk_ids), READ),
    "chunk": (
        lambda world, _c, _a: Request(
            "GET", protocol.CHUNK.fill(namespace_id=world.team, chunk_id=world.chunk)
        ),
        READ,
    ),
    "trees": (on_team(protocol.TREES, lambda world: {"ids": [world.root.hex()]}), READ),
    "commits": (on_team(protocol.COMMITS, lambda world: {"ids": [world.commit.hex()]}), READ),
    "log": (on_team(protocol.LOG), READ),
    "apply_ops": (_ops, WRITE),
    "versions": (on_team(protocol.VERSIONS, lambda _world: {"path": "notes.txt"}), READ),
    "restore": (_restore, WRITE),
    "share": (_share, _statuses(201, ("owner",))),
    "unshare": (_unshare, _statuses(204, ("owner",), editor=403, viewer=403)),
    "members": (on_team(protocol.MEMBERS), READ),
    "set_member": (_set_member, OWNER_ONLY),
    "remove_member": (_remove_member, _statuses(204, ("owner",), editor=403, viewer=403)),
    "invitations": (_json(protocol.INVITATIONS, None), SIGNED_IN),
    "accept_invitation": (_own_invitation(protocol.ACCEPT_INVITATION, {"path": None}), SIGNED_IN),
    "decline_invitation": (
        _own_invitation(protocol.DECLINE_INVITATION, None),
        _statuses(204, ANYONE_SIGNED_IN),
    ),
    "editing": (on_team(protocol.EDITING, lambda _world: {"paths": ["notes.txt"]}), WRITE),
    "editors": (on_team(protocol.EDITORS), READ),
    "create_link": (_create_link, _statuses(201, ("owner", "editor"), viewer=403)),
    "links": (_json(protocol.LINKS, None), SIGNED_IN),
    # A link's creator (alice, the owner) may revoke it; to anyone else it does not exist.
    "revoke_link": (_revoke_link, _statuses(204, ("owner",))),
    # The public pages: a session neither helps nor hinders; the token is what counts.
    "link_page": (_link_page, PUBLIC),
    "link_subpage": (_link_subpage, PUBLIC),
    "link_unlock": (_link_unlock, dict.fromkeys(CALLERS, 303)),
    "link_upload": (_link_upload, PUBLIC),
    "events": (_json(protocol.EVENTS, None), SIGNED_IN),
    "health": (_json(protocol.HEALTH, None), PUBLIC),
}


def test_every_route_has_an_entry() -> None:
    assert set(EXPECTED) == {route.name for route in protocol.ROUTES}
    for _builder, statuses in EXPECTED.values():
        assert set(statuses) == set(CALLERS)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data: Path = tmp_path_factory.mktemp("matrix") / "server-data"
    server = ServerProcess(data).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield World(client)
    finally:
        server.stop()


def _send(world: World, request: Request, account: Account | None) -> int:
    headers = {**world.headers(account), **request.headers}
    if request.path == protocol.EVENTS.fill():
        with world.client.stream("GET", request.path, headers=headers) as reply:
            return reply.status_code  # the stream is closed unread
    if request.path.startswith("/l/"):  # a browser's or curl's request: no protocol header
        headers = {key: value for key, value in headers.items() if key != protocol.PROTOCOL_HEADER}
    reply = world.client.request(
        request.method, request.path, json=request.json, content=request.content,
        headers=headers, params=request.params, data=request.data, files=request.files,
    )  # fmt: skip
    return reply.status_code


@pytest.mark.parametrize("route", [route.name for route in protocol.ROUTES])
def test_each_caller_gets_the_expected_answer(world: World, route: str) -> None:
    builder, expected = EXPECTED[route]
    answers = {}
    for caller in CALLERS:
        account = world.accounts[caller]
        answers[caller] = _send(world, builder(world, caller, account), account)
    assert answers == expected
