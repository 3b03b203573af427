"""Three users, four devices on real mounts, one real server process: alice shares ``Team``
with bob (editor) and carol (viewer).

Covered: the shared folder keeps its content on alice's mounts and appears on bob's and
carol's; a change by any member shows on every mount; carol's writes, creates, renames and
deletes in it fail at once (EACCES) and nothing is journaled or reaches the server; alice
and bob editing one text file in different places (the server down meanwhile, so the two
edits are truly concurrent) are merged on every mount, in the same place they leave a
conflicted copy named after bob's device on every mount; removing bob takes ``Team`` off
his mount within a second. Sharing itself goes through the protocol here (the CLI has its
own tests)."""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from store import protocol
from tests.fuse.conftest import (
    PASSWORD,
    Account,
    MountProcess,
    cli_ok,
    fuse_missing_reason,
)
from tests.integration.server_process import ServerProcess

pytestmark = pytest.mark.fuse

SYNC_TIMEOUT_S = 15.0
REMOVAL_LIMIT_S = 1.0  # the bound on a removed member's mount dropping the folder
BASE_TEXT = "".join(f"line {number}\n" for number in range(1, 21))


class Api:
    """One user's session on the server's protocol, for the sharing calls."""

    def __init__(self, server: ServerProcess, username: str) -> None:
        self.client = httpx.Client(base_url=server.url, timeout=30)
        self.username = username
        body = {"username": username, "password": PASSWORD, "device_name": "test-api"}
        reply = self.client.post("/v1/accounts/login", json=body, headers=self._headers(None))
        reply.raise_for_status()
        self.token = reply.json()["token"]
        listed = self.call("GET", "/v1/namespaces")["namespaces"]
        self.home = next(info["namespace_id"] for info in listed if info["home"])

    @staticmethod
    def _headers(token: str | None) -> dict[str, str]:
        return protocol.request_headers(token)

    def call(self, method: str, path: str, body: object = None, expect: int = 200) -> Any:
        reply = self.client.request(method, path, json=body, headers=self._headers(self.token))
        assert reply.status_code == expect, (method, path, reply.text)
        return reply.json() if reply.content else None

    def accept_all(self) -> None:
        for invitation in self.call("GET", "/v1/invitations")["invitations"]:
            self.call("POST", f"/v1/invitations/{invitation['invitation_id']}/accept", {})

    def close(self) -> None:
        self.client.close()


@dataclass
class People:
    server: ServerProcess
    alice_laptop: MountProcess
    alice_phone: MountProcess
    bob: MountProcess
    carol: MountProcess
    alice: Api
    team: str  # the shared folder's namespace id

    @property
    def mounts(self) -> list[MountProcess]:
        return [self.alice_laptop, self.alice_phone, self.bob, self.carol]


def eventually(check: Callable[[], object], what: str, timeout_s: float = SYNC_TIMEOUT_S) -> float:
    """Poll ``check`` until true (an OSError counts as not yet); the seconds it took."""
    start = time.monotonic()
    last_error: OSError | None = None
    while time.monotonic() - start < timeout_s:
        try:
            if check():
                return time.monotonic() - start
        except OSError as exc:
            last_error = exc
        time.sleep(0.01)
    raise AssertionError(f"not after {timeout_s} s: {what} (last error: {last_error})")


def register(server: ServerProcess, base: Path, username: str) -> Account:
    cli_ok(
        base / f"registrar-{username}", "register", "--server", server.url, username,
        "--email", f"{username}@example.com", "--password-stdin", stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    return Account(server, username)


def mount_for(account: Account, base: Path, device: str) -> MountProcess:
    name = f"{account.username}-{device}"
    home = account.device_home(base / f"{name}-home", device)
    return MountProcess(home, base / f"{name}-mnt", base / f"{name}-mount.log").start()


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[People]:
    if fuse_missing_reason() is not None:
        pytest.skip(fuse_missing_reason() or "")
    base = tmp_path_factory.mktemp("sharing")
    server = ServerProcess(base / "data").start()
    mounts: list[MountProcess] = []
    apis: list[Api] = []
    try:
        alice, bob, carol = (register(server, base, name) for name in ("alice", "bob", "carol"))
        for account, device in (
            (alice, "laptop"),
            (alice, "phone"),
            (bob, "laptop"),
            (carol, "laptop"),
        ):
            mounts.append(mount_for(account, base, device))
        alice_laptop = mounts[0]
        team = alice_laptop.mountpoint / "Team"
        team.mkdir()
        (team / "notes.txt").write_text(BASE_TEXT)
        eventually(
            lambda: (mounts[1].mountpoint / "Team" / "notes.txt").read_text() == BASE_TEXT,
            "Team/notes.txt on alice's phone",
        )
        alice_api, bob_api, carol_api = (
            Api(server, "alice"),
            Api(server, "bob"),
            Api(server, "carol"),
        )
        apis += [alice_api, bob_api, carol_api]
        shared = alice_api.call(
            "POST", f"/v1/namespaces/{alice_api.home}/share", {"path": "Team"}, 201
        )
        namespace = shared["namespace_id"]
        for who, role in (("bob", "editor"), ("carol", "viewer")):
            alice_api.call(
                "POST", f"/v1/namespaces/{namespace}/members", {"username": who, "role": role}
            )
        bob_api.accept_all()
        carol_api.accept_all()
        yield People(
            server, mounts[0], mounts[1], mounts[2], mounts[3], alice=alice_api, team=namespace
        )
    finally:
        for mount in mounts:
            mount.stop()
        for api in apis:
            api.close()
        server.stop()


def team_of(mount: MountProcess) -> Path:
    return mount.mountpoint / "Team"


def reads(path: Path, text: str) -> Callable[[], bool]:
    return lambda: path.read_text() == text


def test_the_shared_folder_keeps_its_content_and_appears_for_the_members(people: People) -> None:
    for mount in people.mounts:
        notes = team_of(mount) / "notes.txt"
        eventually(reads(notes, BASE_TEXT), f"Team/notes.txt on {mount.mountpoint.name}")


def test_a_change_by_any_member_shows_on_every_mount(people: People) -> None:
    eventually(team_of(people.bob).is_dir, "Team on bob's mount")
    (team_of(people.bob) / "from-bob.txt").write_text("bob was here\n")
    for mount in (people.alice_laptop, people.alice_phone, people.carol):
        theirs = team_of(mount) / "from-bob.txt"
        eventually(reads(theirs, "bob was here\n"), f"bob's file on {mount.mountpoint.name}")
    (team_of(people.alice_phone) / "from-alice.txt").write_text("and alice\n")
    eventually((team_of(people.bob) / "from-alice.txt").exists, "alice's file on bob's")
    # The folder's own history, at its root, on every member's mount.
    for mount in (people.bob, people.carol):
        snapshots = sorted(os.listdir(team_of(mount) / ".versions"))
        assert snapshots, mount.mountpoint.name
        newest = team_of(mount) / ".versions" / snapshots[-1]
        assert "from-alice.txt" in os.listdir(newest), (mount.mountpoint.name, snapshots)


def _refused(call: Callable[[], object]) -> int:
    try:
        call()
    except OSError as exc:
        return exc.errno or 0
    return 0


def test_a_viewer_can_read_but_every_write_fails_and_nothing_is_sent(people: People) -> None:
    team = team_of(people.carol)
    eventually((team / "notes.txt").exists, "Team/notes.txt on carol's")
    assert (team / "notes.txt").read_text() == BASE_TEXT
    refused = {
        "create": _refused(lambda: (team / "new.txt").write_text("x")),
        "write": _refused(lambda: os.close(os.open(team / "notes.txt", os.O_WRONLY))),
        "mkdir": _refused((team / "dir").mkdir),
        "rename": _refused(lambda: (team / "notes.txt").rename(team / "moved.txt")),
        "delete": _refused((team / "notes.txt").unlink),
        "chmod": _refused(lambda: os.chmod(team / "notes.txt", 0o600)),
    }
    assert set(refused.values()) <= {errno.EACCES, errno.EROFS, errno.EPERM}, refused
    assert all(refused.values()), refused
    status = cli_ok(people.carol.home, "status")
    assert re.search(r"\b0 (operations|pending)", status), status
    time.sleep(0.5)
    for mount in (people.alice_laptop, people.bob):
        assert not (team_of(mount) / "new.txt").exists()
        assert (team_of(mount) / "notes.txt").exists()


def offline_edits(
    people: People,
    alice: Path,
    bob: Path,
    alices: tuple[str, str],
    bobs: tuple[str, str],
    *,
    by_rename: bool = False,
) -> None:
    """alice and bob each replace a line of their copy of one file while the server is
    down (so neither edit is based on the other), then the server comes back. With
    ``by_rename``, each saves as many editors do: a temporary file renamed over it."""
    people.server.stop()
    try:
        for path, (old, new) in ((alice, alices), (bob, bobs)):
            text = path.read_text().replace(old, new)
            if by_rename:
                temporary = path.with_name(f".{path.name}.swp")
                temporary.write_text(text)
                os.replace(temporary, path)
            else:
                path.write_text(text)
    finally:
        people.server.start()


def test_edits_by_two_people_merge_or_leave_a_conflicted_copy_on_every_mount(
    people: People,
) -> None:
    alice_notes = team_of(people.alice_laptop) / "notes.txt"
    bob_notes = team_of(people.bob) / "notes.txt"
    eventually(lambda: bob_notes.read_text() == alice_notes.read_text(), "the same notes")
    start = alice_notes.read_text()
    offline_edits(
        people,
        alice_notes,
        bob_notes,
        ("line 2\n", "line 2 by alice\n"),
        ("line 18\n", "line 18 by bob\n"),
    )
    merged = start.replace("line 2\n", "line 2 by alice\n").replace("line 18\n", "line 18 by bob\n")
    for mount in people.mounts:
        notes = team_of(mount) / "notes.txt"
        eventually(reads(notes, merged), f"the merged notes on {mount.mountpoint.name}", 60)
    # Saved by rename (a temporary file moved over the old one), in different places too.
    offline_edits(
        people, alice_notes, bob_notes, ("line 4\n", "line 4 renamed in by alice\n"),
        ("line 16\n", "line 16 renamed in by bob\n"), by_rename=True,
    )  # fmt: skip
    merged = merged.replace("line 4\n", "line 4 renamed in by alice\n")
    merged = merged.replace("line 16\n", "line 16 renamed in by bob\n")
    for mount in people.mounts:
        notes = team_of(mount) / "notes.txt"
        eventually(reads(notes, merged), f"the renamed-in edits on {mount.mountpoint.name}", 60)
    offline_edits(
        people,
        alice_notes,
        bob_notes,
        ("line 10\n", "line 10, alice's way\n"),
        ("line 10\n", "line 10, bob's way\n"),
    )

    def copies(mount: MountProcess) -> list[str]:
        return [name for name in os.listdir(team_of(mount)) if "conflicted copy" in name]

    for mount in people.mounts:
        eventually(partial(copies, mount), f"a conflicted copy on {mount.mountpoint.name}", 60)
    (copy,) = copies(people.alice_laptop)
    texts = {(team_of(people.alice_laptop) / name).read_text() for name in ("notes.txt", copy)}
    assert {"line 10, alice's way" in text for text in texts} == {True, False}
    assert any("line 10, bob's way" in text for text in texts)
    assert "bob's laptop" in copy or "alice's laptop" in copy, copy


def editors_on(path: Path) -> str:
    try:
        return os.getxattr(path, "user.boxfs.editors").decode()
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return ""
        raise


def test_the_others_see_who_has_a_file_open_for_writing(people: People) -> None:
    alice_file = team_of(people.alice_laptop) / "from-bob.txt"
    on_bob, on_carol = team_of(people.bob) / "from-bob.txt", team_of(people.carol) / "from-bob.txt"
    assert editors_on(on_bob) == ""
    descriptor = os.open(alice_file, os.O_WRONLY | os.O_APPEND)
    try:
        eventually(lambda: "alice (laptop) since " in editors_on(on_bob), "alice on bob's")
        eventually(lambda: "alice (laptop) since " in editors_on(on_carol), "alice on carol's")
        assert "user.boxfs.editors" in os.listxattr(on_bob)
        assert editors_on(alice_file) == ""  # not oneself
    finally:
        os.close(descriptor)
    eventually(lambda: editors_on(on_bob) == "", "alice gone from bob's", timeout_s=10)


def test_a_removed_member_loses_the_folder_within_a_second(people: People) -> None:
    bob_team = team_of(people.bob)
    eventually(bob_team.is_dir, "Team on bob's mount")
    listed = os.listdir(bob_team)
    assert listed
    start = time.monotonic()
    people.alice.call("DELETE", f"/v1/namespaces/{people.team}/members/bob", expect=204)
    took = eventually(lambda: not bob_team.exists(), "Team gone from bob's mount", timeout_s=5)
    assert time.monotonic() - start < 5
    assert took < REMOVAL_LIMIT_S, f"Team left bob's mount after {took:.2f} s"
    assert "Team" not in os.listdir(people.bob.mountpoint)
    # Still there for everyone else.
    assert (team_of(people.alice_laptop) / "notes.txt").exists()
    assert (team_of(people.carol) / "notes.txt").exists()
