"""The ``boxfs`` command line against a real server process: accounts, ls/get/put of files
and folders, deduplicated uploads, two devices merging or keeping a conflicted copy,
versions and restore, and every user mistake as one line with its documented exit code.

Each device is its own home (``BOXFS_HOME`` in a temp dir); commands run in-process through
``boxfs.cli.main`` and, for a few cases, as the installed console script.
"""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from boxfs.cli import ExitCode, main
from boxfs.home import Home
from boxfs.remote import Remote
from store.ids import ChunkId, NamespaceId
from tests.integration.server_process import ServerProcess, free_port

PASSWORD = "cli test password"  # noqa: S105  (a test account)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


@dataclass
class Device:
    """One device: its own home, running ``boxfs`` commands in this process."""

    home: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def run(self, *argv: str, stdin: str | None = None) -> Outcome:
        self.monkeypatch.setenv("BOXFS_HOME", str(self.home))
        if stdin is not None:
            self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        self.capsys.readouterr()
        code = main(list(argv))
        captured = self.capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    def ok(self, *argv: str, stdin: str | None = None) -> str:
        outcome = self.run(*argv, stdin=stdin)
        assert outcome.code == 0, outcome
        return outcome.out


def one_error_line(outcome: Outcome, code: ExitCode) -> str:
    """The outcome failed with ``code`` and exactly one ``boxfs: ...`` line on stderr."""
    assert outcome.code == code, outcome
    lines = outcome.err.splitlines()
    assert len(lines) == 1, outcome.err
    assert lines[0].startswith("boxfs: "), outcome.err
    assert "Traceback" not in outcome.err
    return lines[0]


@pytest.fixture
def devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> dict[str, Device]:
    return {
        name: Device(tmp_path / f"home-{name}", monkeypatch, capsys) for name in ("laptop", "phone")
    }


def sign_up(device: Device, url: str, username: str, device_name: str) -> None:
    device.ok(
        "register", "--server", url, username, "--email", f"{username}@example.com",
        "--password-stdin", stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    log_in(device, url, username, device_name)


def log_in(device: Device, url: str, username: str, device_name: str) -> None:
    device.ok(
        "login", "--server", url, username, "--device", device_name, "--password-stdin",
        stdin=f"{PASSWORD}\n",
    )  # fmt: skip


def pseudo_random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("boxfs")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from boxfs.cli import main; sys.exit(main())"]


def run_script(
    home: Path, *argv: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "BOXFS_HOME": str(home)}
    return subprocess.run(
        [*cli_command(), *argv], input=stdin, capture_output=True, env=env, timeout=60, check=False
    )


class UploadRecorder:
    """Wraps ``Remote.upload_chunks`` to count what every upload sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[tuple[ChunkId, int]] = []
        original = Remote.upload_chunks

        async def recording(
            remote: Remote, namespace_id: NamespaceId, frames: Iterable[tuple[ChunkId, bytes]]
        ) -> list[ChunkId]:
            frames = list(frames)
            self.sent.extend((chunk_id, len(frame)) for chunk_id, frame in frames)
            return await original(remote, namespace_id, frames)

        monkeypatch.setattr(Remote, "upload_chunks", recording)

    def take(self) -> list[tuple[ChunkId, int]]:
        sent, self.sent = self.sent, []
        return sent


# --- accounts ---------------------------------------------------------------------------------


def test_register_login_whoami_logout_and_whoami_after_logout_is_exit_3(
    server_process: ServerProcess, devices: dict[str, Device]
) -> None:
    laptop = devices["laptop"]
    out = laptop.ok(
        "register", "--server", server_process.url, "ann", "--email", "ann@example.com",
        "--password-stdin", stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    assert "registered ann" in out
    out = laptop.ok(
        "login", "--server", server_process.url, "ann", "--device", "laptop", "--password-stdin",
        stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    assert "logged in" in out
    session_file = laptop.home / "session.json"
    assert session_file.stat().st_mode & 0o777 == 0o600
    assert laptop.home.stat().st_mode & 0o777 == 0o700

    assert laptop.ok("whoami").strip() == (
        f"ann <ann@example.com> on {server_process.url} (device laptop)"
    )
    assert "logged out ann" in laptop.ok("logout")

    line = one_error_line(laptop.run("whoami"), ExitCode.AUTH)
    assert "boxfs login" in line
    one_error_line(laptop.run("logout"), ExitCode.AUTH)
    # The server is remembered: logging in again needs no --server.
    laptop.ok("login", "ann", "--password-stdin", stdin=f"{PASSWORD}\n")
    assert laptop.ok("whoami").startswith("ann <ann@example.com>")

    # A session revoked from another device: one line, exit 3, and what to do.
    phone = devices["phone"]
    log_in(phone, server_process.url, "ann", "phone")
    phone_session = Home(phone.home).load_session()
    laptop_session = Home(laptop.home).load_session()

    async def revoke() -> None:
        async with Remote(server_process.url, laptop_session.token) as remote:
            await remote.revoke_session(phone_session.session_id)

    trio.run(revoke)
    line = one_error_line(phone.run("ls"), ExitCode.AUTH)
    assert "run `boxfs login` again" in line


def test_the_server_given_to_register_is_the_one_login_uses(
    server_process: ServerProcess, devices: dict[str, Device]
) -> None:
    laptop = devices["laptop"]
    out = laptop.ok(
        "register", "--server", server_process.url, "reg", "--email", "reg@example.com",
        "--password-stdin", stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    assert "boxfs login reg" in out
    assert "logged in" in laptop.ok("login", "reg", "--password-stdin", stdin=f"{PASSWORD}\n")
    assert (
        laptop.ok("whoami")
        .strip()
        .endswith(
            f"on {server_process.url} (device "
            + (Home(laptop.home).load_session().device_name + ")")
        )
    )


# --- files --------------------------------------------------------------------------------------


def test_put_then_get_of_a_small_and_a_multi_chunk_file_is_byte_identical(
    server_process: ServerProcess,
    devices: dict[str, Device],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    laptop = devices["laptop"]
    sign_up(laptop, server_process.url, "bea", "laptop")
    recorder = UploadRecorder(monkeypatch)
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_bytes(b"hello, drive\n")
    big.write_bytes(pseudo_random(5 * MIB, seed=1))

    assert laptop.ok("put", str(small), "/notes/small.txt").startswith("applied: notes/small.txt")
    assert laptop.ok("put", str(big), "big.bin").startswith("applied: big.bin")
    sent = recorder.take()
    assert len(sent) >= 3  # the small file's chunk and several of the big one's

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    laptop.ok("get", "notes/small.txt", str(out_dir / "small.txt"))
    laptop.ok("get", "/big.bin", str(out_dir))  # into a folder: keeps its name
    assert (out_dir / "small.txt").read_bytes() == small.read_bytes()
    assert (out_dir / "big.bin").read_bytes() == big.read_bytes()
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no temp left

    script = run_script(laptop.home, "get", "notes/small.txt", "-")
    assert script.returncode == 0, script.stderr
    assert script.stdout == small.read_bytes()


def test_putting_content_the_drive_holds_uploads_no_chunk_bytes(
    server_process: ServerProcess,
    devices: dict[str, Device],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    laptop = devices["laptop"]
    sign_up(laptop, server_process.url, "cid", "laptop")
    recorder = UploadRecorder(monkeypatch)
    big = tmp_path / "big.bin"
    big.write_bytes(pseudo_random(5 * MIB, seed=2))

    laptop.ok("put", str(big), "big.bin")
    first = recorder.take()
    assert sum(size for _, size in first) >= 5 * MIB  # random bytes do not compress

    assert laptop.ok("put", str(big), "big.bin").startswith("unchanged: big.bin")
    assert recorder.take() == []
    out = laptop.ok("put", str(big), "copy.bin")
    assert out.startswith("applied: copy.bin")
    assert "sent 0 B in 0 new chunks" in out
    assert recorder.take() == []


def test_put_of_a_folder_tree_then_ls_and_ls_long(
    server_process: ServerProcess,
    devices: dict[str, Device],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    laptop = devices["laptop"]
    sign_up(laptop, server_process.url, "dee", "laptop")
    tree = tmp_path / "project"
    (tree / "src" / "deep").mkdir(parents=True)
    (tree / "README").write_text("read me\n")
    (tree / "src" / "main.py").write_text("print('hi')\n")
    (tree / "src" / "deep" / "data.bin").write_bytes(pseudo_random(300_000, seed=3))
    (tree / "link").symlink_to("README")

    out = laptop.ok("put", str(tree), "/")  # the root: the folder goes in under its name
    assert "put 4 files and 2 folders into project" in out
    assert laptop.ok("ls").splitlines() == ["project"]
    assert laptop.ok("ls", "project").splitlines() == ["README", "link", "src"]
    assert laptop.ok("ls", "/project/src/").splitlines() == ["deep", "main.py"]

    long_lines = laptop.ok("ls", "-l", "project").splitlines()
    pattern = re.compile(
        r"^(?P<mode>[-dl][-rwxsStT]{9})  (?P<kind>\w+)\s+(?P<size>\d+|-)  "
        r"(?P<mtime>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)  (?P<name>.+)$"
    )
    rows = [pattern.match(line) for line in long_lines]
    assert all(rows), long_lines
    by_name = {row["name"]: row for row in rows if row}
    assert by_name["README"]["kind"] == "file"
    assert by_name["README"]["size"] == "8"
    assert by_name["README"]["mode"].startswith("-rw")
    assert by_name["src"]["kind"] == "dir"
    assert by_name["src"]["size"] == "-"
    assert by_name["link -> README"]["kind"] == "symlink"
    one_file = laptop.ok("ls", "-l", "project/src/deep/data.bin").strip()
    assert one_file.endswith("  project/src/deep/data.bin")
    assert "  300000  " in one_file

    # Putting it again changes nothing; one edited file is the only thing sent.
    recorder = UploadRecorder(monkeypatch)
    assert "(4 unchanged)" in laptop.ok("put", str(tree), "project")
    assert recorder.take() == []
    (tree / "src" / "main.py").write_text("print('hello')\n")
    laptop.ok("put", str(tree), "project")
    assert len(recorder.take()) == 1
    got = tmp_path / "main.py"
    laptop.ok("get", "project/src/main.py", str(got))
    assert got.read_text() == "print('hello')\n"


def test_folders_are_made_moved_downloaded_and_removed_without_a_mount(
    server_process: ServerProcess, devices: dict[str, Device], tmp_path: Path
) -> None:
    laptop = devices["laptop"]
    sign_up(laptop, server_process.url, "edd", "laptop")
    one_error_line(laptop.run("mkdir", "a/b"), ExitCode.NOT_FOUND)  # no parent: exit 4
    laptop.ok("mkdir", "-p", "a/b/c", "notes")
    assert laptop.ok("ls", "a/b").splitlines() == ["c"]
    one_error_line(laptop.run("mkdir", "notes"), ExitCode.CONFLICT)  # exists: exit 5
    laptop.ok("mkdir", "-p", "notes")  # -p: an existing folder is fine
    tree = tmp_path / "local"
    tree.mkdir()
    (tree / "x.txt").write_text("ex\n")
    (tree / "y.bin").write_bytes(pseudo_random(200_000, seed=7))
    (tree / "to-x").symlink_to("x.txt")
    laptop.ok("put", str(tree), "a/b/c/")

    # mv: a rename, then into an existing folder under its own name.
    laptop.ok("mv", "a/b/c/local", "a/b/c/files")
    laptop.ok("mv", "notes", "a")
    assert laptop.ok("ls", "a").splitlines() == ["b", "notes"]
    one_error_line(laptop.run("mv", "a", "a/b/inside"), ExitCode.USAGE)
    one_error_line(laptop.run("mv", "nowhere", "x"), ExitCode.NOT_FOUND)

    # get -r: the whole folder, byte for byte, symlinks as symlinks.
    copy_root = tmp_path / "copy"
    copy_root.mkdir()
    laptop.ok("get", "-r", "a", str(copy_root))
    files = copy_root / "a" / "b" / "c" / "files"
    assert (files / "x.txt").read_text() == "ex\n"
    assert (files / "y.bin").read_bytes() == (tree / "y.bin").read_bytes()
    assert os.readlink(files / "to-x") == "x.txt"
    assert (copy_root / "a" / "notes").is_dir()
    one_error_line(laptop.run("get", "a", str(tmp_path / "nope")), ExitCode.USAGE)

    # rm: a folder needs -r; then everything below goes, deepest first, in one command.
    one_error_line(laptop.run("rm", "a"), ExitCode.USAGE)
    laptop.ok("rm", "a/b/c/files/x.txt")
    assert laptop.ok("ls", "a/b/c/files").splitlines() == ["to-x", "y.bin"]
    laptop.ok("rm", "-r", "a")
    assert laptop.ok("ls").splitlines() == []
    one_error_line(laptop.run("rm", "a"), ExitCode.NOT_FOUND)
    one_error_line(laptop.run("rm", "/"), ExitCode.USAGE)


def test_devices_lists_the_sessions_and_revokes_one(
    server_process: ServerProcess, devices: dict[str, Device]
) -> None:
    laptop, phone = devices["laptop"], devices["phone"]
    sign_up(laptop, server_process.url, "fen", "laptop")
    log_in(phone, server_process.url, "fen", "phone\u202egnp.exe")  # a hostile device name
    lines = laptop.ok("devices").splitlines()
    assert len(lines) == 2, lines
    mine = [line for line in lines if line.endswith("(this device)")]
    assert len(mine) == 1 and "  laptop  " in mine[0] + "  "
    other = next(line for line in lines if line not in mine)
    assert "\u202e" not in other and "phone\\u202egnp.exe" in other
    phone_session = Home(phone.home).load_session().session_id
    assert other.split()[0] == phone_session
    assert laptop.ok("devices", "--revoke", phone_session).strip() == f"revoked {phone_session}"
    one_error_line(phone.run("ls"), ExitCode.AUTH)
    assert len(laptop.ok("devices").splitlines()) == 1
    one_error_line(laptop.run("devices", "--revoke", "not-an-id"), ExitCode.USAGE)


# --- two devices --------------------------------------------------------------------------------

BASE_TEXT = "".join(f"line {number}\n" for number in range(1, 21))


def edited(text: str, line: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[line - 1] = f"{new}\n"
    return "".join(lines)


def test_two_devices_putting_over_the_same_base_merge_or_keep_a_conflicted_copy(
    server_process: ServerProcess, devices: dict[str, Device], tmp_path: Path
) -> None:
    laptop, phone = devices["laptop"], devices["phone"]
    sign_up(laptop, server_process.url, "eve", "laptop")
    log_in(phone, server_process.url, "eve", "phone")
    work = {name: tmp_path / name for name in ("laptop", "phone")}
    for folder in work.values():
        folder.mkdir()
    (work["laptop"] / "notes.txt").write_text(BASE_TEXT)
    laptop.ok("put", str(work["laptop"] / "notes.txt"), "notes.txt")
    phone.ok("get", "notes.txt", str(work["phone"]))  # both devices now hold the same base

    (work["laptop"] / "notes.txt").write_text(edited(BASE_TEXT, 2, "laptop was here"))
    (work["phone"] / "notes.txt").write_text(edited(BASE_TEXT, 19, "phone was here"))
    assert laptop.ok("put", str(work["laptop"] / "notes.txt"), "notes.txt").startswith("applied")
    out = phone.ok("put", str(work["phone"] / "notes.txt"), "notes.txt")
    assert out.startswith("merged: notes.txt")
    merged = tmp_path / "merged.txt"
    laptop.ok("get", "notes.txt", str(merged))
    assert "laptop was here" in merged.read_text()
    assert "phone was here" in merged.read_text()

    # The same line edited on both: the second is kept beside, and the exit code says so.
    laptop.ok("get", "notes.txt", str(work["laptop"]))
    phone.ok("get", "notes.txt", str(work["phone"]))
    (work["laptop"] / "notes.txt").write_text(edited(merged.read_text(), 5, "five, laptop"))
    (work["phone"] / "notes.txt").write_text(edited(merged.read_text(), 5, "five, phone"))
    laptop.ok("put", str(work["laptop"] / "notes.txt"), "notes.txt")
    outcome = phone.run("put", str(work["phone"] / "notes.txt"), "notes.txt")
    assert outcome.code == ExitCode.CONFLICT
    assert outcome.out.startswith("conflicted copy: notes.txt was changed elsewhere; ")
    copy_name = outcome.out.splitlines()[0].split("this version is at ", 1)[1]
    assert copy_name.startswith("notes (conflicted copy from phone ")
    assert sorted(laptop.ok("ls").splitlines()) == sorted([copy_name, "notes.txt"])
    copy = tmp_path / "copy.txt"
    laptop.ok("get", copy_name, str(copy))
    assert "five, phone" in copy.read_text()


# --- history ----------------------------------------------------------------------------------


def test_versions_lists_each_version_and_restore_brings_the_old_content_back(
    server_process: ServerProcess, devices: dict[str, Device], tmp_path: Path
) -> None:
    laptop = devices["laptop"]
    sign_up(laptop, server_process.url, "fay", "laptop")
    doc = tmp_path / "doc.txt"
    contents = ["first draft\n", "second draft, longer\n", "third\n"]
    for number, text in enumerate(contents):
        if number:
            time.sleep(1.05)  # versions show whole seconds: keep them apart
        doc.write_text(text)
        laptop.ok("put", str(doc), "doc.txt")

    rows = [line.split() for line in laptop.ok("versions", "doc.txt").splitlines()]
    assert len(rows) == 3
    assert [row[1] for row in rows] == ["laptop"] * 3
    assert [int(row[2]) for row in rows] == [len(text) for text in reversed(contents)]
    assert all(re.fullmatch(r"[0-9a-f]{12}", row[3]) for row in rows)
    times = [row[0] for row in rows]
    assert times == sorted(times, reverse=True)

    got = tmp_path / "got.txt"
    out = laptop.ok("restore", "doc.txt", "--at", times[2])  # by time: the first draft
    assert out.startswith(f"restored: doc.txt as of {times[2]}")
    laptop.ok("get", "doc.txt", str(got))
    assert got.read_text() == contents[0]

    laptop.ok("restore", "/doc.txt", "--at", rows[1][3][:8])  # by commit id prefix
    laptop.ok("get", "doc.txt", str(got))
    assert got.read_text() == contents[1]
    assert len(laptop.ok("versions", "doc.txt").splitlines()) == 5  # history only grows

    one_error_line(
        laptop.run("restore", "doc.txt", "--at", "2001-01-01T00:00:00Z"), ExitCode.NOT_FOUND
    )
    one_error_line(laptop.run("versions", "never.txt"), ExitCode.NOT_FOUND)


# --- mistakes ---------------------------------------------------------------------------------


def test_user_mistakes_are_one_line_and_a_documented_exit_code(
    server_process: ServerProcess, devices: dict[str, Device], tmp_path: Path
) -> None:
    laptop = devices["laptop"]
    one_error_line(laptop.run("ls"), ExitCode.AUTH)  # not logged in yet
    line = one_error_line(
        laptop.run(
            "register", "--server", server_process.url, "gus", "--email", "gus@example.com",
            "--password-stdin", stdin="short\n",
        ),
        ExitCode.USAGE,
    )  # fmt: skip
    assert "password" in line
    assert "10 characters" in line
    sign_up(laptop, server_process.url, "gus", "laptop")

    line = one_error_line(
        laptop.run(
            "login", "--server", server_process.url, "gus", "--password-stdin",
            stdin="not the password\n",
        ),
        ExitCode.AUTH,
    )  # fmt: skip
    assert "wrong username or password" in line

    line = one_error_line(laptop.run("get", "../x", str(tmp_path / "x")), ExitCode.USAGE)
    assert "'..'" in line
    one_error_line(laptop.run("put", str(tmp_path / "x"), "a/../../b"), ExitCode.USAGE)
    line = one_error_line(laptop.run("put", str(tmp_path / "missing.txt"), "m"), ExitCode.NOT_FOUND)
    assert "missing.txt" in line
    line = one_error_line(laptop.run("get", "nothing.txt", str(tmp_path)), ExitCode.NOT_FOUND)
    assert "nothing.txt" in line
    one_error_line(laptop.run("ls", "no/such/folder"), ExitCode.NOT_FOUND)
    one_error_line(laptop.run("restore", "x", "--at", "yesterday-ish"), ExitCode.USAGE)
    assert laptop.run("frobnicate").code == ExitCode.USAGE  # argparse's own

    (tmp_path / "dir").mkdir()
    (tmp_path / "file.txt").write_text("x\n")
    laptop.ok("put", str(tmp_path / "dir"), "dir")
    line = one_error_line(laptop.run("get", "dir", str(tmp_path / "y")), ExitCode.USAGE)
    assert "folder" in line
    laptop.ok("put", str(tmp_path / "file.txt"), "plain")
    one_error_line(laptop.run("put", str(tmp_path / "file.txt"), "plain/inside"), ExitCode.CONFLICT)


def test_a_server_that_is_not_running_is_exit_6_with_one_line(
    devices: dict[str, Device], tmp_path: Path
) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}"
    script = run_script(
        tmp_path / "home-script", "login", "--server", dead_url, "hal", "--password-stdin",
        stdin=f"{PASSWORD}\n".encode(),
    )  # fmt: skip
    assert script.returncode == ExitCode.UNAVAILABLE, script
    lines = script.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"boxfs: cannot reach {dead_url}")

    laptop = devices["laptop"]
    line = one_error_line(
        laptop.run(
            "register", "--server", dead_url, "hal", "--email", "hal@example.com",
            "--password-stdin", stdin=f"{PASSWORD}\n",
        ),
        ExitCode.UNAVAILABLE,
    )  # fmt: skip
    assert dead_url in line
