"""Shared folders through the ``boxfs`` command line against a real server process: sharing,
invitations, roles, the path commands inside a shared folder, removal, leaving, unsharing,
the log, history inside a shared folder, and every user mistake as one line with its
documented exit code.

Three people, each on a device of their own (``BOXFS_HOME`` in a temp dir): alice owns
``Team``, bob joins it as an editor (at ``Work`` in his home), carol as a viewer.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import trio

from boxfs.cli import ExitCode
from boxfs.home import Home
from boxfs.remote import Remote
from store import protocol
from tests.integration.server_process import ServerProcess
from tests.integration.test_cli_live import (
    PASSWORD,
    Device,
    UploadRecorder,
    one_error_line,
    sign_up,
)

INVITATION_ID = re.compile(r"^([0-9a-f]{32})\s", re.MULTILINE)


@pytest.fixture
def people(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    server_process: ServerProcess,
) -> dict[str, Device]:
    devices = {}
    for name, device_name in (("alice", "alice-laptop"), ("bob", "bob-desk"), ("carol", "c-phone")):
        device = Device(tmp_path / f"home-{name}", monkeypatch, capsys)
        sign_up(device, server_process.url, name, device_name)
        devices[name] = device
    return devices


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def invitation_of(device: Device) -> str:
    """The one invitation ``boxfs invitations`` lists for ``device``."""
    found = INVITATION_ID.findall(device.ok("invitations"))
    assert len(found) == 1, found
    return str(found[0])


def team_shared(people: dict[str, Device], tmp_path: Path) -> None:
    """alice's ``Team`` (with ``x.txt``) shared with bob (editor, at ``Work``) and carol
    (viewer, at ``Team``)."""
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    alice.ok("put", str(write(tmp_path, "x.txt", b"from alice\n")), "Team/x.txt")
    out = alice.ok("share", "Team", "--with", "bob", "--role", "editor")
    assert out.splitlines() == ["shared Team", "invited bob to Team as editor"]
    out = alice.ok("share", "Team", "--with", "carol", "--role", "viewer")
    assert out.splitlines() == ["invited carol to Team as viewer"]
    assert "accepted: the shared folder is at Work" in bob.ok(
        "accept", invitation_of(bob), "--at", "Work"
    )
    assert "is at Team" in carol.ok("accept", invitation_of(carol))


def test_an_editor_reads_and_writes_a_shared_folder_through_its_own_path(
    people: dict[str, Device], tmp_path: Path
) -> None:
    alice, bob = people["alice"], people["bob"]
    alice.ok("put", str(write(tmp_path, "x.txt", b"from alice\n")), "Team/x.txt")
    alice.ok("share", "Team", "--with", "bob", "--role", "editor")

    out = bob.ok("invitations")
    invitation = invitation_of(bob)
    assert re.search(rf"^{invitation}\s+Team\s+alice\s+editor\s+\d{{4}}-", out, re.MULTILINE)
    bob.ok("accept", invitation, "--at", "Work")
    assert "no invitations" in bob.ok("invitations")

    assert bob.ok("ls").splitlines() == ["Work"]
    long_line = bob.ok("ls", "-l").strip()
    assert long_line.startswith("drwx") and " shared " in long_line and long_line.endswith("Work")
    assert bob.ok("ls", "Work").splitlines() == ["x.txt"]
    got = tmp_path / "got.txt"
    bob.ok("get", "Work/x.txt", str(got))
    assert got.read_bytes() == b"from alice\n"

    out = bob.ok("put", str(write(tmp_path, "bob.txt", b"from bob\n")), "Work/")
    assert "applied: Work/bob.txt" in out
    bob.ok("mkdir", "Work/plans")
    bob.ok("mv", "Work/bob.txt", "Work/plans/")
    bob.ok("get", "-r", "Work", str(tmp_path / "copy"))  # the shared folder's root, whole
    assert (tmp_path / "copy" / "plans" / "bob.txt").read_bytes() == b"from bob\n"
    assert (tmp_path / "copy" / "x.txt").read_bytes() == b"from alice\n"
    assert alice.ok("ls", "Team").splitlines() == ["plans", "x.txt"]
    alice.ok("get", "Team/plans/bob.txt", str(got))
    assert got.read_bytes() == b"from bob\n"

    # A move stays within one namespace; the mount entry itself moves within the home.
    line = one_error_line(bob.run("mv", "Work/x.txt", "/"), ExitCode.USAGE)
    assert "shared folder" in line
    bob.ok("mkdir", "Projects")
    bob.ok("mv", "Work", "Projects/")
    assert bob.ok("ls", "Projects/Work/plans").splitlines() == ["bob.txt"]
    line = one_error_line(bob.run("rm", "-r", "Projects"), ExitCode.USAGE)
    assert "Projects/Work" in line
    line = one_error_line(bob.run("rm", "-r", "Projects/Work"), ExitCode.USAGE)
    assert "boxfs leave" in line
    bob.ok("rm", "Projects/Work/plans/bob.txt")
    assert bob.ok("ls", "Projects/Work/plans") == ""

    # The log of the shared folder names bob, his device and what he did.
    log = bob.ok("log", "Projects/Work")
    assert re.search(r"\s+bob\s+bob-desk\s+", log), log
    assert "alice" in log.splitlines()[-1]  # the first commit: the folder as alice shared it
    assert len(bob.ok("log", "Projects/Work", "-n", "2").splitlines()) == 2
    assert "bob" not in alice.ok("log", "/")  # the home's own history


def test_a_viewer_cannot_write_until_the_owner_makes_them_an_editor(
    people: dict[str, Device], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, carol = people["alice"], people["carol"]
    team_shared(people, tmp_path)
    assert carol.ok("ls", "Team").splitlines() == ["x.txt"]

    recorder = UploadRecorder(monkeypatch)
    big = write(tmp_path, "carol.bin", b"c" * 300_000)
    line = one_error_line(carol.run("put", str(big), "Team/"), ExitCode.AUTH)
    assert "only view" in line
    assert recorder.take() == []  # refused before anything was sent
    for argv in (
        ("mkdir", "Team/new"),
        ("rm", "Team/x.txt"),
        ("mv", "Team/x.txt", "Team/y.txt"),
    ):
        one_error_line(carol.run(*argv), ExitCode.AUTH)
    assert alice.ok("ls", "Team").splitlines() == ["x.txt"]

    out = alice.ok("share", "Team", "--list")
    assert [line.split() for line in out.splitlines()] == [
        ["alice", "owner", "member"],
        ["bob", "editor", "member"],
        ["carol", "viewer", "member"],
    ]
    out = alice.ok("share", "Team", "--role", "editor", "--with", "carol")
    assert "changed the role of carol to editor" in out
    assert "applied: Team/carol.bin" in carol.ok("put", str(big), "Team/")
    assert alice.ok("ls", "Team").splitlines() == ["carol.bin", "x.txt"]

    # Only the owner changes members.
    line = one_error_line(carol.run("share", "Team", "--remove", "bob"), ExitCode.AUTH)
    assert "only the owner" in line
    one_error_line(carol.run("unshare", "Team"), ExitCode.AUTH)


def test_removed_and_leaving_members_lose_the_folder_and_unshare_gives_it_back(
    people: dict[str, Device], tmp_path: Path
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    team_shared(people, tmp_path)
    bob.ok("put", str(write(tmp_path, "bob.txt", b"from bob\n")), "Work/bob.txt")

    assert "removed bob from Team" in alice.ok("share", "Team", "--remove", "bob")
    one_error_line(bob.run("ls", "Work"), ExitCode.NOT_FOUND)
    assert bob.ok("ls") == ""

    assert carol.ok("leave", "Team").strip() == "left Team"
    one_error_line(carol.run("ls", "Team"), ExitCode.NOT_FOUND)
    out = alice.ok("share", "Team", "--list")
    assert [line.split()[0] for line in out.splitlines()] == ["alice"]

    line = one_error_line(alice.run("leave", "Team"), ExitCode.USAGE)
    assert "boxfs unshare" in line
    assert "unshared Team" in alice.ok("unshare", "Team")
    assert " dir " in alice.ok("ls", "-l").splitlines()[0]
    assert alice.ok("ls", "Team").splitlines() == ["bob.txt", "x.txt"]
    got = tmp_path / "got.txt"
    alice.ok("get", "Team/bob.txt", str(got))
    assert got.read_bytes() == b"from bob\n"


def test_withdrawn_and_declined_invitations_give_no_access(
    people: dict[str, Device], tmp_path: Path
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    alice.ok("mkdir", "Team")
    alice.ok("share", "Team", "--with", "bob", "--with", "carol", "--role", "viewer")
    out = alice.ok("share", "Team", "--list")
    assert ["bob", "viewer", "invited"] in [line.split() for line in out.splitlines()]
    assert "changed the invitation of bob to editor" in alice.ok(
        "share", "Team", "--with", "bob", "--role", "editor"
    )
    assert "withdrew the invitation of bob" in alice.ok("share", "Team", "--remove", "bob")
    assert "no invitations" in bob.ok("invitations")
    invitation = invitation_of(carol)
    assert "declined" in carol.ok("decline", invitation)
    one_error_line(carol.run("accept", invitation), ExitCode.NOT_FOUND)
    assert carol.ok("ls") == ""


def test_versions_and_restore_of_a_file_inside_a_shared_folder(
    people: dict[str, Device], tmp_path: Path
) -> None:
    alice, bob = people["alice"], people["bob"]
    team_shared(people, tmp_path)
    bob.ok("put", str(write(tmp_path, "x.txt", b"bob's edit\n")), "Work/x.txt")
    rows = [line.split() for line in bob.ok("versions", "Work/x.txt").splitlines()]
    assert [row[1] for row in rows] == ["bob-desk", "alice-laptop"]
    out = bob.ok("restore", "Work/x.txt", "--at", rows[1][3])
    assert out.startswith("restored: Work/x.txt as of")
    got = tmp_path / "got.txt"
    alice.ok("get", "Team/x.txt", str(got))
    assert got.read_bytes() == b"from alice\n"
    # The mount entry itself has the history of the home: made when alice shared it.
    assert len(alice.ok("versions", "Team").splitlines()) >= 1
    # A viewer restores nothing.
    line = one_error_line(people["carol"].run("restore", "Team/x.txt", "--at", rows[0][3]),
                          ExitCode.AUTH)  # fmt: skip
    assert "only view" in line


def test_bad_sharing_inputs_are_one_line_with_their_exit_code(
    people: dict[str, Device], tmp_path: Path
) -> None:
    alice, bob = people["alice"], people["bob"]
    alice.ok("put", str(write(tmp_path, "f.txt", b"file\n")), "f.txt")
    alice.ok("mkdir", "Team", "Other")

    line = one_error_line(alice.run("share", "Team", "--with", "nobody"), ExitCode.NOT_FOUND)
    assert "nobody" in line
    line = one_error_line(alice.run("share", "f.txt", "--with", "bob"), ExitCode.USAGE)
    assert "takes a folder" in line
    one_error_line(alice.run("share", "missing", "--with", "bob"), ExitCode.NOT_FOUND)
    one_error_line(alice.run("share", "/", "--with", "bob"), ExitCode.USAGE)
    one_error_line(alice.run("share", "Team", "--with", "NOT A NAME"), ExitCode.USAGE)
    one_error_line(alice.run("share", "Team", "--with", "alice"), ExitCode.USAGE)
    one_error_line(alice.run("share", "Team", "--role", "viewer"), ExitCode.USAGE)
    one_error_line(alice.run("share", "Other", "--list"), ExitCode.USAGE)
    one_error_line(alice.run("unshare", "Other"), ExitCode.USAGE)
    one_error_line(alice.run("share", "Other", "--remove", "bob"), ExitCode.USAGE)
    assert " dir " in alice.ok("ls", "-l", "/").splitlines()[0]  # Other: still not shared
    # argparse's own refusal: its usage and one error line, exit 2.
    assert alice.run("share", "Team", "--with", "bob", "--role", "owner").code == ExitCode.USAGE

    alice.ok("share", "Team", "--with", "bob")
    alice.ok("mkdir", "Team/sub")
    line = one_error_line(alice.run("share", "Team/sub", "--with", "bob"), ExitCode.USAGE)
    assert "do not nest" in line
    one_error_line(bob.run("accept", "not-an-id"), ExitCode.USAGE)
    one_error_line(bob.run("accept", "0" * 32), ExitCode.NOT_FOUND)
    one_error_line(bob.run("decline", "0" * 32), ExitCode.NOT_FOUND)
    bob.ok("mkdir", "Taken")
    invitation = invitation_of(bob)
    line = one_error_line(bob.run("accept", invitation, "--at", "Taken"), ExitCode.CONFLICT)
    assert "Taken" in line
    assert "is at Team" in bob.ok("accept", invitation)  # the invitation still stands
    one_error_line(bob.run("log", "-n", "0"), ExitCode.USAGE)

    # A member's mount entry that the server no longer lists reads as not found.
    async def remove_bob() -> None:
        session = Home(alice.home).load_session()
        async with Remote(session.server_url, session.token) as remote:
            info = next(i for i in await remote.namespaces() if not i.home)
            await remote.remove_member(info.namespace_id, "bob")
            with pytest.raises(protocol.BadRequestError):
                await remote.remove_member(info.namespace_id, "alice")

    trio.run(remove_bob)
    one_error_line(bob.run("ls", "Team"), ExitCode.NOT_FOUND)
    one_error_line(bob.run("leave", "Team"), ExitCode.NOT_FOUND)


def test_a_link_to_a_path_in_a_shared_folder_serves_the_folders_file(
    people: dict[str, Device], tmp_path: Path
) -> None:
    team_shared(people, tmp_path)
    bob, carol = people["bob"], people["carol"]
    url = bob.ok("link", "Work/x.txt").splitlines()[0]
    reply = httpx.get(url, timeout=30)
    assert reply.status_code == 200
    assert reply.content == b"from alice\n"
    # A viewer may not publish the folder's content (the server answers 403).
    line = one_error_line(carol.run("link", "Team/x.txt"), ExitCode.AUTH)
    assert "viewer" in line or "forbidden" in line or "needs editor" in line, line


def test_status_of_a_path_says_where_it_is_and_who_else_is_editing_it(
    people: dict[str, Device], tmp_path: Path, server_process: ServerProcess
) -> None:
    team_shared(people, tmp_path)
    alice, bob = people["alice"], people["bob"]
    assert alice.ok("status", "Team/x.txt").splitlines() == [
        "Team/x.txt: in the shared folder at Team, as owner",
        "editing: nobody else",
    ]

    async def bob_edits() -> None:
        # What bob's mount would report while x.txt is open for writing there.
        async with Remote(server_process.url) as remote:
            await remote.login("bob", PASSWORD, "bob-tablet")
            team = next(n for n in await remote.namespaces() if not n.home).namespace_id
            await remote.report_editing(team, [protocol.DrivePath([b"x.txt"])])

    trio.run(bob_edits)
    lines = alice.ok("status", "Team").splitlines()
    assert lines[0] == "Team: in the shared folder at Team, as owner"
    assert re.fullmatch(r"editing: bob \(bob-tablet\) since \S+ \S+ UTC: x\.txt", lines[1]), lines
    assert bob.ok("status", "Work/x.txt").splitlines()[0] == (
        "Work/x.txt: in the shared folder at Work, as editor"
    )
    assert alice.ok("status", "x.txt").splitlines()[0] == "x.txt: in your home drive"
