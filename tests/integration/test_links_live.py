"""Share links against a real server process: made, listed and revoked with the ``boxfs``
command line, and their public pages fetched with the ``curl`` binary, as a browser-less
visitor would: passwords (refused, rate limited, Basic and the form's cookie), expiry and
revocation (410), unknown tokens (404), byte ranges, folder listings and zips (byte for
byte), file-request uploads that reveal nothing, hostile sub-paths, and who may make,
see and revoke a link.
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
import trio

from boxfs.cli import ExitCode, main
from boxfs.home import Home
from boxfs.remote import Remote
from store import protocol
from store.errors import NotFoundError
from store.ids import LinkId, NamespaceId
from tests.integration.server_process import ServerProcess

PASSWORD = "links test password"  # noqa: S105  (a test account)
LINK_PASSWORD = "open sesame, please"  # noqa: S105  (a test link)
MIB = 1024 * 1024


# --- the command line ----------------------------------------------------------------------------


@dataclass
class Device:
    home: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def run(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        self.monkeypatch.setenv("BOXFS_HOME", str(self.home))
        if stdin is not None:
            self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        self.capsys.readouterr()
        code = main(list(argv))
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def ok(self, *argv: str, stdin: str | None = None) -> str:
        code, out, err = self.run(*argv, stdin=stdin)
        assert code == 0, (code, out, err)
        return out

    @property
    def token(self) -> str:
        return Home(self.home).load_session().token


DeviceFactory = Callable[[str], Device]


@pytest.fixture
def device_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> DeviceFactory:
    def make(name: str) -> Device:
        return Device(tmp_path / f"home-{name}", monkeypatch, capsys)

    return make


def signed_up(make: DeviceFactory, url: str, username: str) -> Device:
    device = make(username)
    device.ok(
        "register", "--server", url, username, "--email", f"{username}@example.com",
        "--password-stdin", stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    device.ok(
        "login", "--server", url, username, "--device", "laptop", "--password-stdin",
        stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    return device


def make_link(device: Device, *argv: str, stdin: str | None = None) -> str:
    """``boxfs link ...``: the URL it printed."""
    out = device.ok("link", *argv, stdin=stdin)
    url = out.splitlines()[0]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/l/[A-Za-z0-9_-]{22}", url), out
    return url


def random_bytes(size: int, seed: str) -> bytes:
    return blake3.blake3(seed.encode()).digest(length=size)


# --- curl ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; the last value of each
    set_cookies: list[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def curl(*args: str, scratch: Path) -> Reply:
    """One request with the ``curl`` binary (paths sent as they are, no redirects)."""
    headers_file, body_file = scratch / "curl-headers", scratch / "curl-body"
    completed = subprocess.run(
        ["curl", "-sS", "--path-as-is", "-D", str(headers_file), "-o", str(body_file), *args],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    blocks = headers_file.read_bytes().decode("latin-1").split("\r\n\r\n")
    block = [b for b in blocks if b.strip() and not b.startswith("HTTP/1.1 100")][-1]
    status_line, *lines = block.split("\r\n")
    headers: dict[str, str] = {}
    cookies = []
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
        if name.strip().lower() == "set-cookie":
            cookies.append(value.strip())
    return Reply(int(status_line.split()[1]), headers, cookies, body_file.read_bytes())


def audit_actions(url: str, token: str) -> list[protocol.AuditRecord]:
    async def read() -> list[protocol.AuditRecord]:
        async with Remote(url, token) as remote:
            return list((await remote.audit(limit=200)).records)

    return trio.run(read)


# --- passwords -----------------------------------------------------------------------------------


def test_a_password_link_refuses_without_the_password_and_downloads_with_it(
    server_process: ServerProcess, device_factory: DeviceFactory, tmp_path: Path
) -> None:
    ann = signed_up(device_factory, server_process.url, "ann")
    report = tmp_path / "report.txt"
    report.write_text("the quarterly report\n")
    ann.ok("put", str(report), "report.txt")
    url = make_link(ann, "report.txt", "--password-stdin", stdin=f"{LINK_PASSWORD}\n")

    refused = curl(url, scratch=tmp_path)
    assert refused.status == 401
    assert refused.headers["content-type"].startswith("text/html")
    assert b"quarterly" not in refused.body
    assert 'type=password name="password"' in refused.text
    wrong = curl("-u", ":not the password", url, scratch=tmp_path)
    assert wrong.status == 401
    assert b"quarterly" not in wrong.body

    got = curl("-u", f":{LINK_PASSWORD}", url, scratch=tmp_path)
    assert got.status == 200
    assert got.body == report.read_bytes()
    assert got.headers["content-type"].startswith("text/plain")
    assert got.headers["content-disposition"].startswith('attachment; filename="report.txt"')
    content_hash = blake3.blake3(report.read_bytes()).hexdigest()
    assert got.headers["etag"] == f'"{content_hash}"'
    assert got.headers["accept-ranges"] == "bytes"

    # The form: a right password earns a cookie for this link's path only.
    jar = tmp_path / "cookies"
    unlocked = curl("-c", str(jar), "-d", f"password={LINK_PASSWORD}", f"{url}/unlock",
                    scratch=tmp_path)  # fmt: skip
    assert unlocked.status == 303
    assert unlocked.headers["location"] == url.removeprefix(server_process.url)
    (cookie,) = unlocked.set_cookies
    token_path = url.removeprefix(server_process.url)
    assert f"Path={token_path}" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    with_cookie = curl("-b", str(jar), url, scratch=tmp_path)
    assert with_cookie.status == 200
    assert with_cookie.body == report.read_bytes()
    forged = curl("-b", "boxfs_link=99999999999999999999.00ff", url, scratch=tmp_path)
    assert forged.status == 401

    actions = [record.action for record in audit_actions(server_process.url, ann.token)]
    assert "link_created" in actions
    assert "link_password_failed" in actions
    used = [r for r in audit_actions(server_process.url, ann.token) if r.action == "link_used"]
    assert used and all(record.remote_address == "127.0.0.1" for record in used)
    assert {record.detail["use"] for record in used} == {"download"}


def test_wrong_link_passwords_are_rate_limited_per_link_and_address(
    server_process: ServerProcess, device_factory: DeviceFactory, tmp_path: Path
) -> None:
    bea = signed_up(device_factory, server_process.url, "bea")
    note = tmp_path / "note.txt"
    note.write_text("a note\n")
    bea.ok("put", str(note), "note.txt")
    url = make_link(bea, "note.txt", "--password-stdin", stdin=f"{LINK_PASSWORD}\n")

    statuses = []
    limited: Reply | None = None
    for attempt in range(8):
        reply = curl("-u", f":wrong guess {attempt}", url, scratch=tmp_path)
        statuses.append(reply.status)
        if reply.status == 429:
            limited = reply
            break
    assert limited is not None, statuses
    assert statuses[:3] == [401, 401, 401]  # the first few cost nothing more
    assert int(limited.headers["retry-after"]) >= 1
    assert "Too many attempts" in limited.text
    # While locked, even the right password waits.
    assert curl("-u", f":{LINK_PASSWORD}", url, scratch=tmp_path).status == 429
    time.sleep(int(limited.headers["retry-after"]) + 0.2)
    assert curl("-u", f":{LINK_PASSWORD}", url, scratch=tmp_path).body == note.read_bytes()
    failures = [
        record
        for record in audit_actions(server_process.url, bea.token)
        if record.action == "link_password_failed"
    ]
    assert {record.detail["reason"] for record in failures} == {"wrong_password", "rate_limited"}


# --- expiry, revocation, unknown tokens ----------------------------------------------------------


def test_an_expired_or_revoked_link_answers_410_and_an_unknown_token_404(
    server_process: ServerProcess, device_factory: DeviceFactory, tmp_path: Path
) -> None:
    cid = signed_up(device_factory, server_process.url, "cid")
    doc = tmp_path / "doc.txt"
    doc.write_text("doc\n")
    cid.ok("put", str(doc), "doc.txt")
    short = make_link(cid, "doc.txt", "--expires", "2s")
    lasting = make_link(cid, "doc.txt", "--expires", "7d")
    assert curl(short, scratch=tmp_path).body == b"doc\n"
    time.sleep(2.2)
    expired = curl(short, scratch=tmp_path)
    assert expired.status == 410
    assert expired.headers["content-type"].startswith("text/html")
    assert "no longer available" in expired.text
    assert curl(lasting, scratch=tmp_path).status == 200

    listed = cid.ok("link", "--list").splitlines()
    assert len(listed) == 2
    by_expiry = {line.split()[3]: line.split()[0] for line in listed}
    assert "expired" in by_expiry
    lasting_id = next(link_id for expiry, link_id in by_expiry.items() if expiry != "expired")
    assert cid.ok("link", "--revoke", lasting_id).strip() == f"revoked {lasting_id}"
    revoked = curl(lasting, scratch=tmp_path)
    assert revoked.status == 410
    assert "revoked" in revoked.text
    assert "revoked" in cid.ok("link", "--list")
    (record,) = [
        r for r in audit_actions(server_process.url, cid.token) if r.action == "link_revoked"
    ]
    assert record.detail["link_id"] == lasting_id

    base = short.rsplit("/", 1)[0]
    unknown = curl(f"{base}/AAAAAAAAAAAAAAAAAAAAAA", scratch=tmp_path)
    assert unknown.status == 404
    assert unknown.headers["content-type"].startswith("text/html")
    assert curl(f"{base}/not-a-token", scratch=tmp_path).text == unknown.text
    assert curl(f"{base}/AAAAAAAAAAAAAAAAAAAAAA/x.txt", scratch=tmp_path).status == 404


# --- folders: listings, zips, ranges, hostile paths ----------------------------------------------


def put_project(device: Device, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path / "project"
    (root / "src" / "deep").mkdir(parents=True)
    files = {
        "README.md": b"# project\n",
        "<b>&\"quote'.txt": b"a hostile name\n",
        "src/main.py": b"print('hi')\n",
        "src/deep/big.bin": random_bytes(5 * MIB + 12345, "big"),
        "empty.txt": b"",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "empty-folder").mkdir()
    device.ok("put", str(root), "/")
    return root, files


def test_a_folder_zip_holds_exactly_the_folder_and_its_listing_escapes_names(
    server_process: ServerProcess, device_factory: DeviceFactory, tmp_path: Path
) -> None:
    dee = signed_up(device_factory, server_process.url, "dee")
    _root, files = put_project(dee, tmp_path)
    url = make_link(dee, "project")

    listing = curl(url, scratch=tmp_path)
    assert listing.status == 200
    assert listing.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in listing.headers["content-security-policy"]
    assert "&lt;b&gt;&amp;&quot;quote&#x27;.txt" in listing.text
    assert "<b>" not in listing.text
    token_path = url.removeprefix(server_process.url)
    assert f'href="{token_path}/src/"' in listing.text
    assert f'href="{token_path}/%3Cb%3E%26%22quote%27.txt"' in listing.text
    hostile = curl(f"{url}/%3Cb%3E%26%22quote%27.txt", scratch=tmp_path)
    assert hostile.body == files["<b>&\"quote'.txt"]
    sub = curl(f"{url}/src/", scratch=tmp_path)
    assert "main.py" in sub.text and "deep/" in sub.text and "README" not in sub.text
    assert curl(f"{url}/src/main.py", scratch=tmp_path).body == files["src/main.py"]

    zipped = curl(f"{url}?format=zip", scratch=tmp_path)
    assert zipped.status == 200
    assert zipped.headers["content-type"] == "application/zip"
    assert 'filename="project.zip"' in zipped.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(zipped.body)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        contents = {
            info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()
        }
        folders = {info.filename for info in archive.infolist() if info.is_dir()}
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    assert contents == files
    assert folders == {"src/", "src/deep/", "empty-folder/"}
    assert len(names) == len(set(names))

    sub_zip = curl(f"{url}/src/?format=zip", scratch=tmp_path)
    with zipfile.ZipFile(io.BytesIO(sub_zip.body)) as archive:
        assert sorted(archive.namelist()) == ["deep/", "deep/big.bin", "main.py"]
        assert archive.read("deep/big.bin") == files["src/deep/big.bin"]
    uses = [r.detail["use"] for r in audit_actions(server_process.url, dee.token)
            if r.action == "link_used"]  # fmt: skip
    assert {"listing", "zip", "download"} <= set(uses)


def test_a_range_request_returns_exactly_those_bytes(
    server_process: ServerProcess, device_factory: DeviceFactory, tmp_path: Path
) -> None:
    eve = signed_up(device_factory, server_process.url, "eve")
    data = random_bytes(6 * MIB + 777, "ranges")
    big = tmp_path / "video.mp4"
    big.write_bytes(data)
    eve.ok("put", str(big), "video.mp4")
    url = make_link(eve, "video.mp4")

    whole = curl(url, scratch=tmp_path)
    assert whole.status == 200
    assert whole.body == data
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-length"] == str(len(data))
    for spec, start, end in [
        ("100-199", 100, 199),
        ("1048000-5300000", 1048000, 5300000),  # across several chunks
        (f"{len(data) - 10}-", len(data) - 10, len(data) - 1),
        ("-4096", len(data) - 4096, len(data) - 1),
        (f"0-{10 * len(data)}", 0, len(data) - 1),  # an end past the file: up to its end
    ]:
        part = curl("-r", spec, url, scratch=tmp_path)
        assert part.status == 206, spec
        assert part.body == data[start : end + 1], spec
        assert part.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
        assert part.headers["content-length"] == str(end - start + 1)
    beyond = curl("-r", f"{len(data)}-", url, scratch=tmp_path)
    assert beyond.status == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    etag = whole.headers["etag"]
    assert curl("-H", f"If-None-Match: {etag}", url, scratch=tmp_path).status == 304


def test_hostile_sub_paths_get_a_clean_4xx_and_nothing_outside_the_link(
    server_process: ServerProcess, device_factory: DeviceFactory, tmp_path: Path
) -> None:
    fay = signed_up(device_factory, server_process.url, "fay")
    put_project(fay, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the link\n")
    fay.ok("put", str(secret), "secret.txt")
    url = make_link(fay, "project/src")
    for rest in [
        "/../README.md",
        "/../../secret.txt",
        "/%2e%2e/README.md",
        "/deep/..%2f..%2fREADME.md",
        "/deep%2Fbig.bin",
        "/main.py%00.txt",
        "//main.py",
        "/./main.py",
        "/" + "x" * 300,
        "/" + "/".join(["d"] * 300),
    ]:
        reply = curl(f"{url}{rest}", scratch=tmp_path)
        assert 400 <= reply.status < 500, (rest, reply.status)
        assert reply.headers["content-type"].startswith("text/html"), rest
        assert b"outside the link" not in reply.body, rest
        assert b"# project" not in reply.body, rest
    assert curl(f"{url}/nothing-here.txt", scratch=tmp_path).status == 404
    assert curl(f"{url}/main.py/inside", scratch=tmp_path).status == 404
    assert curl(f"{url}?format=tar", scratch=tmp_path).status == 400


def test_a_link_follows_its_path_in_the_current_head(
    server_process: ServerProcess, device_factory: DeviceFactory, tmp_path: Path
) -> None:
    gus = signed_up(device_factory, server_process.url, "gus")
    (tmp_path / "shelf").mkdir()
    (tmp_path / "shelf" / "a.txt").write_text("first\n")
    gus.ok("put", str(tmp_path / "shelf"), "/")
    folder_url = make_link(gus, "shelf")
    file_url = make_link(gus, "shelf/a.txt")
    assert "a.txt" in curl(folder_url, scratch=tmp_path).text

    (tmp_path / "a.txt").write_text("second\n")
    gus.ok("put", str(tmp_path / "a.txt"), "shelf/a.txt")
    assert curl(file_url, scratch=tmp_path).body == b"second\n"
    gus.ok("rm", "shelf/a.txt")
    gone = curl(file_url, scratch=tmp_path)
    assert gone.status == 404
    assert gone.headers["content-type"].startswith("text/html")

    gus.ok("rm", "-r", "shelf")
    (tmp_path / "shelf-file").write_text("now a file\n")
    gus.ok("put", str(tmp_path / "shelf-file"), "shelf")
    assert curl(folder_url, scratch=tmp_path).body == b"now a file\n"


# --- file requests -------------------------------------------------------------------------------


def test_an_upload_only_link_takes_files_as_commits_and_reveals_no_names(
    server_process: ServerProcess, device_factory: DeviceFactory, tmp_path: Path
) -> None:
    hal = signed_up(device_factory, server_process.url, "hal")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "secret-plan.txt").write_text("the secret plan\n")
    hal.ok("put", str(inbox), "/")
    url = make_link(hal, "inbox", "--upload-only")

    page = curl(url, scratch=tmp_path)
    assert page.status == 200
    assert 'enctype="multipart/form-data"' in page.text
    assert "secret" not in page.text
    for rest in ["/", "/secret-plan.txt", "/nothing.txt", "?format=zip", "/?format=zip"]:
        probe = curl(f"{url}{rest}", scratch=tmp_path)
        assert probe.status == 404, rest
        assert "secret" not in probe.text, rest
    assert (
        curl(f"{url}/secret-plan.txt", scratch=tmp_path).text
        == curl(f"{url}/nothing.txt", scratch=tmp_path).text
    )

    dropped = tmp_path / "dropped.bin"
    dropped.write_bytes(random_bytes(5 * MIB, "dropped"))
    other = tmp_path / "secret-plan.txt"
    other.write_text("a visitor's file with a taken name\n")
    sent = curl("-F", f"file=@{dropped}", "-F", f"file=@{other}", f"{url}/upload",
                scratch=tmp_path)  # fmt: skip
    assert sent.status == 200, sent.text
    assert "2 files received" in sent.text
    assert "secret" not in sent.text and "dropped" not in sent.text
    listing = hal.ok("ls", "inbox").splitlines()
    assert "dropped.bin" in listing
    assert "secret-plan.txt" in listing
    copies = [name for name in listing if name.startswith("secret-plan (conflicted copy from ")]
    assert len(copies) == 1, listing
    out = tmp_path / "out"
    out.mkdir()
    hal.ok("get", "inbox/dropped.bin", str(out / "dropped.bin"))
    assert (out / "dropped.bin").read_bytes() == dropped.read_bytes()
    hal.ok("get", "inbox/secret-plan.txt", str(out / "plan.txt"))
    assert (out / "plan.txt").read_text() == "the secret plan\n"  # never overwritten
    hal.ok("get", f"inbox/{copies[0]}", str(out / "copy.txt"))
    assert (out / "copy.txt").read_bytes() == other.read_bytes()

    async def authors() -> list[str]:
        async with Remote(server_process.url, hal.token) as remote:
            home = (await remote.home()).namespace_id
            return [commit.author for commit in (await remote.log(home)).commits]

    link_id = hal.ok("link", "--list").split()[0]
    assert trio.run(authors)[0] == f"link:{link_id}"

    # Over the bound: 413, before the body is read.
    too_big = curl("-H", "Content-Length: 99999999999", "-H",
                   "Content-Type: multipart/form-data; boundary=x", "--data-binary", "x",
                   f"{url}/upload", scratch=tmp_path)  # fmt: skip
    assert too_big.status == 413
    not_a_form = curl("--data-binary", "x", "-H", "Content-Type: multipart/form-data",
                      f"{url}/upload", scratch=tmp_path)  # fmt: skip
    assert 400 <= not_a_form.status < 500
    # A folder link that is not a file request takes no uploads.
    plain = make_link(hal, "inbox")
    assert curl("-F", f"file=@{other}", f"{plain}/upload", scratch=tmp_path).status == 404


# --- who may make, see and revoke a link ---------------------------------------------------------


def add_member(server: ServerProcess, namespace_id: NamespaceId, username: str, role: str) -> None:
    """Make ``username`` a member of the namespace, in the server's own database (sharing
    has no routes of its own yet)."""
    with sqlite3.connect(server.data_dir / "meta.sqlite3", timeout=10) as connection:
        (user_id,) = connection.execute(
            "SELECT id FROM users WHERE username = ?", (username,)
        ).fetchone()
        connection.execute(
            "INSERT INTO memberships (namespace_id, user_id, role) VALUES (?, ?, ?)",
            (bytes(namespace_id), user_id, role),
        )


def test_a_viewer_cannot_make_a_link_and_only_the_creator_or_owner_revokes(
    server_process: ServerProcess, device_factory: DeviceFactory, tmp_path: Path
) -> None:
    owner = signed_up(device_factory, server_process.url, "ida")
    viewer = signed_up(device_factory, server_process.url, "jay")
    editor = signed_up(device_factory, server_process.url, "kim")
    stranger = signed_up(device_factory, server_process.url, "lou")
    (tmp_path / "shared.txt").write_text("shared\n")
    owner.ok("put", str(tmp_path / "shared.txt"), "shared.txt")

    async def main_() -> None:
        async with Remote(server_process.url, owner.token) as remote:
            home = (await remote.home()).namespace_id
        add_member(server_process, home, "jay", "viewer")
        add_member(server_process, home, "kim", "editor")
        request = protocol.LinkCreateRequest(path=protocol.DrivePath((b"shared.txt",)))
        async with Remote(server_process.url, viewer.token) as remote:
            with pytest.raises(protocol.ForbiddenError):
                await remote.create_link(home, request)
        async with Remote(server_process.url, stranger.token) as remote:
            with pytest.raises(NotFoundError):
                await remote.create_link(home, request)
        async with Remote(server_process.url, editor.token) as remote:
            made = await remote.create_link(home, request)
            assert made.link.creator == "kim"
        link_id = made.link.link_id
        async with Remote(server_process.url, viewer.token) as remote:
            assert (await remote.links()).links == ()
            with pytest.raises(NotFoundError):
                await remote.revoke_link(link_id)
        async with Remote(server_process.url, owner.token) as remote:
            (seen,) = (await remote.links()).links
            assert seen.link_id == link_id
            await remote.revoke_link(link_id)
        async with Remote(server_process.url, editor.token) as remote:
            (seen,) = (await remote.links()).links
            assert seen.revoked_at is not None
            with pytest.raises(NotFoundError):
                await remote.revoke_link(LinkId(bytes(16)))

    trio.run(main_)
    code, _out, err = viewer.run("link", "--revoke", "zz")
    assert code == ExitCode.USAGE and err.startswith("boxfs: ")


def test_link_list_and_revoke_through_the_installed_cli(
    server_process: ServerProcess, device_factory: DeviceFactory, tmp_path: Path
) -> None:
    max_ = signed_up(device_factory, server_process.url, "max")
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "x.txt").write_text("x\n")
    max_.ok("put", str(tmp_path / "box"), "/")
    env_home = {"BOXFS_HOME": str(max_.home)}
    script = Path(sys.executable).with_name("boxfs")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "boxfs.cli"]

    def run(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*command, *argv], input=stdin, capture_output=True, env={**os.environ, **env_home},
            timeout=60, check=False,
        )  # fmt: skip

    made = run("link", "box", "--upload-only", "--expires", "12h", "--password-stdin",
               stdin=f"{LINK_PASSWORD}\n".encode())  # fmt: skip
    assert made.returncode == 0, made.stderr
    url = made.stdout.decode().splitlines()[0]
    listed = run("link", "--list")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.decode().splitlines()
    link_id, path, kind, expires, upload, password, created, uses = line.split()
    assert re.fullmatch(r"[0-9a-f]{32}", link_id)
    assert (path, kind, upload, password, uses) == ("box", "folder", "upload-only", "password", "0")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", expires)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)
    assert curl("-u", f":{LINK_PASSWORD}", url, scratch=tmp_path).status == 200
    assert run("link", "--list").stdout.decode().split()[7] == "0"  # the form is no use
    sent = tmp_path / "sent.txt"
    sent.write_text("sent\n")
    assert curl("-u", f":{LINK_PASSWORD}", "-F", f"file=@{sent}", f"{url}/upload",
                scratch=tmp_path).status == 200  # fmt: skip
    assert curl("-F", f"file=@{sent}", f"{url}/upload", scratch=tmp_path).status == 401
    assert run("link", "--list").stdout.decode().split()[7] == "1"

    revoked = run("link", "--revoke", link_id)
    assert revoked.returncode == 0 and revoked.stdout.decode().strip() == f"revoked {link_id}"
    assert curl(url, scratch=tmp_path).status == 410
    missing = run("link", "nowhere.txt")
    assert missing.returncode == ExitCode.NOT_FOUND
    assert missing.stderr.decode().startswith("boxfs: ")
    file_upload = run("link", "box/x.txt", "--upload-only")
    assert file_upload.returncode == ExitCode.USAGE
    assert len(file_upload.stderr.decode().splitlines()) == 1
    bad_expiry = run("link", "box", "--expires", "soon")
    assert bad_expiry.returncode == ExitCode.USAGE
    nothing = run("link")
    assert nothing.returncode == ExitCode.USAGE
