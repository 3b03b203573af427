"""Share links in an in-process server: the cookie a right password earns, what a link may
be made on, the upload bound counted on the bytes that arrive, and uploads that need their
creator to be an editor still."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server import db as tables
from server import links
from server.app import create_app
from server.settings import Settings
from store import protocol
from store.ids import LinkId, NamespaceId
from tests.server.drive import Drive, User, drive_path

SECOND_NS = 10**9
NOW = 1_800_000_000 * SECOND_NS


def a_link(expires_ns: int | None = None) -> links.Link:
    return links.Link(
        link_id=LinkId(bytes(16)),
        namespace_id=NamespaceId(bytes(16)),
        path=None,
        upload_only=False,
        creator_id=1,
        expires_ns=expires_ns,
        password_hash="$argon2id$...",  # noqa: S106  (never checked here)
        grant_key=bytes(range(32)),
    )


def test_a_grant_cookie_opens_its_link_only_until_it_expires() -> None:
    link = a_link()
    value, lifetime_s = links.grant_cookie(link, NOW)
    assert lifetime_s == protocol.LINK_COOKIE_LIFETIME_S
    assert links.grant_is_valid(link, value, NOW + SECOND_NS)
    assert not links.grant_is_valid(link, value, NOW + (lifetime_s + 1) * SECOND_NS)
    other = dataclasses.replace(link, link_id=LinkId(b"\x01" * 16))
    assert not links.grant_is_valid(other, value, NOW)
    rekeyed = dataclasses.replace(link, grant_key=bytes(32))
    assert not links.grant_is_valid(rekeyed, value, NOW)
    expires, _, mac = value.partition(".")
    assert not links.grant_is_valid(link, f"{int(expires) + 10**12}.{mac}", NOW)
    for junk in ["", "x", ".", "1.", "-1.ab", "9" * 30 + ".ab", None]:
        assert not links.grant_is_valid(link, junk, NOW)


def test_a_grant_never_outlives_its_link() -> None:
    link = a_link(expires_ns=NOW + 60 * SECOND_NS)
    value, lifetime_s = links.grant_cookie(link, NOW)
    assert lifetime_s == 60
    assert not links.grant_is_valid(link, value, NOW + 61 * SECOND_NS)


def create(drive: Drive, user: User, path: str | None, **fields: object) -> int:
    body = protocol.LinkCreateRequest(
        path=drive_path(path) if path is not None else None,
        **fields,  # type: ignore[arg-type]
    )
    reply = drive.client.post(
        protocol.CREATE_LINK.fill(namespace_id=user.home),
        content=body.model_dump_json(),
        headers={**user.headers, "Content-Type": protocol.JSON_MEDIA_TYPE},
    )
    status: int = reply.status_code
    return status


def test_a_link_needs_a_file_or_folder_that_exists(drive: Drive, alice: User) -> None:
    ops = [drive.put(alice, alice.home, "a.txt", b"a\n")]
    drive.apply(alice, alice.home, ops)
    assert create(drive, alice, "a.txt") == protocol.CREATE_LINK.status_code
    assert create(drive, alice, None) == protocol.CREATE_LINK.status_code  # the whole drive
    assert create(drive, alice, "missing.txt") == 404
    assert create(drive, alice, "a.txt", upload_only=True) == 400
    assert create(drive, alice, None, upload_only=True) == protocol.CREATE_LINK.status_code


@pytest.fixture
def small_drive(tmp_path: Path) -> Iterator[Drive]:
    settings = Settings(data_dir=tmp_path / "data", link_upload_max_bytes=4096)
    with TestClient(create_app(settings)) as client:
        yield Drive(client)


def upload_only_link(drive: Drive, user: User) -> str:
    body = protocol.LinkCreateRequest(upload_only=True)
    reply = drive.client.post(
        protocol.CREATE_LINK.fill(namespace_id=user.home),
        content=body.model_dump_json(),
        headers={**user.headers, "Content-Type": protocol.JSON_MEDIA_TYPE},
    )
    assert reply.status_code == 201, reply.text
    return protocol.LinkCreated.model_validate_json(reply.content).token


def form_body(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "boundary1234"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_an_upload_over_the_bound_is_refused_by_the_bytes_that_arrive(
    small_drive: Drive,
) -> None:
    alice = small_drive.register("alice")
    token = upload_only_link(small_drive, alice)
    body, content_type = form_body("big.bin", b"x" * 10_000)

    def chunked() -> Iterator[bytes]:  # no Content-Length: only counting can tell
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    reply = small_drive.client.post(
        protocol.LINK_UPLOAD.fill(token=token),
        content=chunked(),
        headers={"Content-Type": content_type},
    )
    assert reply.status_code == 413
    assert reply.headers["content-type"].startswith("text/html")
    assert small_drive.commit_count(alice.home) == 0

    small, content_type = form_body("small.txt", b"fits\n")
    reply = small_drive.client.post(
        protocol.LINK_UPLOAD.fill(token=token),
        content=small,
        headers={"Content-Type": content_type},
    )
    assert reply.status_code == 200, reply.text
    assert small_drive.read(alice.home, "small.txt") == b"fits\n"


def test_uploads_through_a_link_stop_when_its_creator_is_no_editor(drive: Drive) -> None:
    owner, editor = drive.register("olga"), drive.register("eddy")
    drive.add_member(owner.home, editor, "editor")
    body = protocol.LinkCreateRequest(upload_only=True)
    reply = drive.client.post(
        protocol.CREATE_LINK.fill(namespace_id=owner.home),
        content=body.model_dump_json(),
        headers={**editor.headers, "Content-Type": protocol.JSON_MEDIA_TYPE},
    )
    token = protocol.LinkCreated.model_validate_json(reply.content).token
    with drive.state.db.write() as connection:
        connection.execute(
            tables.memberships.update()
            .where(tables.memberships.c.user_id == editor.user_id)
            .values(role="viewer")
        )
    form, content_type = form_body("late.txt", b"late\n")
    reply = drive.client.post(
        protocol.LINK_UPLOAD.fill(token=token), content=form, headers={"Content-Type": content_type}
    )
    assert reply.status_code == 403
    assert drive.entry(owner.home, "late.txt") is None


def test_a_file_request_whose_folder_became_a_file_takes_nothing(drive: Drive, alice: User) -> None:
    drive.apply(alice, alice.home, [protocol.MkdirOp(
        path=drive_path("inbox"),
        attrs=protocol.AttrsModel(mode=0o755, uid=0, gid=0, mtime_ns=0),
    )])  # fmt: skip
    body = protocol.LinkCreateRequest(path=drive_path("inbox"), upload_only=True)
    reply = drive.client.post(
        protocol.CREATE_LINK.fill(namespace_id=alice.home),
        content=body.model_dump_json(),
        headers={**alice.headers, "Content-Type": protocol.JSON_MEDIA_TYPE},
    )
    token = protocol.LinkCreated.model_validate_json(reply.content).token
    drive.apply(alice, alice.home, [protocol.DeleteOp(path=drive_path("inbox"))])
    drive.apply(alice, alice.home, [drive.put(alice, alice.home, "inbox", b"a file now\n")])
    commits_before = drive.commit_count(alice.home)
    form, content_type = form_body("late.txt", b"late\n")
    reply = drive.client.post(
        protocol.LINK_UPLOAD.fill(token=token), content=form, headers={"Content-Type": content_type}
    )
    assert reply.status_code == 409
    assert "late.txt" not in reply.text
    assert drive.commit_count(alice.home) == commits_before
    assert drive.read(alice.home, "inbox") == b"a file now\n"


def test_a_folder_zip_of_members_past_the_zip64_bound_stays_readable(
    drive: Drive, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend the zip64 bound is a few KiB, so small members take the zip64 path (a size
    # in the data descriptor and extra fields) that members over 4 GiB take for real.
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 4096)
    files = {"a.bin": bytes(range(256)) * 40, "b/c.bin": b"c" * 9000, "small.txt": b"hi\n"}
    ops: list[protocol.Op] = [protocol.MkdirOp(
        path=drive_path("b"), attrs=protocol.AttrsModel(mode=0o755, uid=0, gid=0, mtime_ns=0)
    )]  # fmt: skip
    ops += [drive.put(alice, alice.home, name, data) for name, data in files.items()]
    drive.apply(alice, alice.home, ops)
    body = protocol.LinkCreateRequest()
    reply = drive.client.post(
        protocol.CREATE_LINK.fill(namespace_id=alice.home),
        content=body.model_dump_json(),
        headers={**alice.headers, "Content-Type": protocol.JSON_MEDIA_TYPE},
    )
    token = protocol.LinkCreated.model_validate_json(reply.content).token
    zipped = drive.client.get(protocol.LINK_PAGE.fill(token=token), params={"format": "zip"})
    assert zipped.status_code == 200
    assert b"PK\x06\x06" in zipped.content  # a zip64 end of central directory
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        got = {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}
    assert got == files
