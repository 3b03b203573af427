"""History (server/history.py): the versions of a path, and restore as a new commit.

In-process through ``TestClient``, with the ``Drive`` harness of ``test_commits``.
"""

from __future__ import annotations

from httpx import Response

from store import protocol
from store.ids import CommitId, NamespaceId
from tests.server.drive import (
    Drive,
    User,
    delete,
    drive_path,
    mkdir,
    move,
    new_key,
    setattr_op,
    statuses,
)


def versions(
    drive: Drive,
    user: User,
    ns: NamespaceId,
    path: str,
    *,
    limit: int = 100,
    cursor: str | None = None,
) -> Response:
    body = protocol.VersionsRequest(path=drive_path(path), cursor=cursor, limit=limit)
    reply: Response = drive.client.post(
        protocol.VERSIONS.fill(namespace_id=ns),
        json=body.model_dump(mode="json", exclude_none=True),
        headers=user.headers,
    )
    return reply


def page(reply: Response) -> protocol.VersionsPage:
    assert reply.status_code == 200, reply.text
    return protocol.VersionsPage.model_validate_json(reply.content)


def restore(
    drive: Drive, user: User, ns: NamespaceId, path: str, at: CommitId, *, key: str | None = None
) -> Response:
    body = protocol.RestoreRequest(
        path=drive_path(path), commit_id=at, idempotency_key=key or new_key()
    )
    reply: Response = drive.client.post(
        protocol.RESTORE.fill(namespace_id=ns),
        json=body.model_dump(mode="json"),
        headers=user.headers,
    )
    return reply


def committed(response: protocol.OpsBatchResponse) -> CommitId:
    assert response.commit_id is not None
    return response.commit_id


# --- versions ---------------------------------------------------------------------------------


def test_versions_list_the_commits_where_the_path_changed_newest_first(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    v1 = drive.put(alice, ns, "a.txt", b"v1\n")
    c1 = committed(drive.apply(alice, ns, [v1]))
    drive.apply(alice, ns, [drive.put(alice, ns, "other.txt", b"unrelated\n")])
    v2 = drive.put(alice, ns, "a.txt", b"v2\n", v1.entry.content_hash)
    c2 = committed(drive.apply(alice, ns, [v2]))
    drive.apply(alice, ns, [setattr_op("a.txt", mode=0o600)])  # attributes: not a version
    c3 = committed(drive.apply(alice, ns, [delete("a.txt")]))
    c4 = committed(drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"v3\n")]))

    listed = page(versions(drive, alice, ns, "a.txt"))
    assert [version.commit_id for version in listed.versions] == [c4, c3, c2, c1]
    assert listed.next_cursor is None
    entries = [version.entry for version in listed.versions]
    assert entries[1] is None
    assert [entry.size if entry else None for entry in entries] == [3, None, 3, 3]
    assert entries[2] is not None and entries[2].content_hash == v2.entry.content_hash
    assert listed.versions[0].author == "alice" and listed.versions[0].device == "laptop"


def test_versions_page_with_a_cursor(drive: Drive, alice: User) -> None:
    ns = alice.home
    put = drive.put(alice, ns, "a.txt", b"0\n")
    made = [committed(drive.apply(alice, ns, [put]))]
    for number in range(1, 5):
        base = put.entry.content_hash
        put = drive.put(alice, ns, "a.txt", f"{number}\n".encode(), base)
        made.append(committed(drive.apply(alice, ns, [put])))
    seen: list[CommitId] = []
    cursor = None
    for _ in range(5):
        listed = page(versions(drive, alice, ns, "a.txt", limit=2, cursor=cursor))
        seen += [version.commit_id for version in listed.versions]
        cursor = listed.next_cursor
        if cursor is None:
            break
    assert seen == made[::-1]


def test_versions_of_a_folder_follow_changes_inside_it(drive: Drive, alice: User) -> None:
    ns = alice.home
    c1 = committed(drive.apply(alice, ns, [mkdir("docs")]))
    c2 = committed(drive.apply(alice, ns, [drive.put(alice, ns, "docs/a.txt", b"a\n")]))
    drive.apply(alice, ns, [drive.put(alice, ns, "elsewhere.txt", b"x\n")])
    listed = page(versions(drive, alice, ns, "docs"))
    assert [version.commit_id for version in listed.versions] == [c2, c1]


def test_versions_of_a_path_that_never_existed_are_empty_and_bad_cursors_refused(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    drive.apply(alice, ns, [mkdir("docs")])
    assert page(versions(drive, alice, ns, "nothing")).versions == ()
    reply = versions(drive, alice, ns, "docs", cursor="not-a-number")
    assert (reply.status_code, reply.json()["code"]) == (400, "bad_request")


def test_a_viewer_may_list_versions_but_not_restore(drive: Drive, alice: User) -> None:
    ns = alice.home
    c1 = committed(drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"a\n")]))
    viewer = drive.register("victor")
    drive.add_member(ns, viewer, "viewer")
    assert len(page(versions(drive, viewer, ns, "a.txt")).versions) == 1
    reply = restore(drive, viewer, ns, "a.txt", c1)
    assert (reply.status_code, reply.json()["code"]) == (403, "forbidden")
    stranger = drive.register("mallory")
    reply = versions(drive, stranger, ns, "a.txt")
    assert (reply.status_code, reply.json()["code"]) == (404, "not_found")


# --- restore -----------------------------------------------------------------------------------


def test_restoring_a_file_writes_the_old_content_as_a_new_commit(drive: Drive, alice: User) -> None:
    ns = alice.home
    v1 = drive.put(alice, ns, "a.txt", b"first\n")
    c1 = committed(drive.apply(alice, ns, [v1]))
    drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"second\n", v1.entry.content_hash)])
    reply = restore(drive, alice, ns, "a.txt", c1)
    assert reply.status_code == 200, reply.text
    response = protocol.OpsBatchResponse.model_validate_json(reply.content)
    assert statuses(response) == ["applied"]
    assert response.sequence == 3
    assert drive.read(ns, "a.txt") == b"first\n"
    assert drive.read(ns, "a.txt", at=c1) == b"first\n"  # history is not rewritten
    assert drive.commit_count(ns) == 3
    listed = page(versions(drive, alice, ns, "a.txt"))
    assert listed.versions[0].commit_id == response.commit_id


def test_restoring_a_folder_brings_back_its_whole_content(drive: Drive, alice: User) -> None:
    ns = alice.home
    a = drive.put(alice, ns, "docs/a.txt", b"a1\n")
    ops: list[protocol.Op] = [
        mkdir("docs"),
        a,
        drive.put(alice, ns, "docs/b.txt", b"b1\n"),
        mkdir("docs/sub"),
    ]
    ops.append(drive.put(alice, ns, "docs/sub/c.txt", b"c1\n"))
    c1 = committed(drive.apply(alice, ns, ops))
    later: list[protocol.Op] = [
        drive.put(alice, ns, "docs/a.txt", b"a2\n", a.entry.content_hash),
        delete("docs/b.txt"),
        drive.put(alice, ns, "docs/new.txt", b"new\n"),
        move("docs/sub", "moved"),
    ]
    drive.apply(alice, ns, later)
    response = protocol.OpsBatchResponse.model_validate_json(
        restore(drive, alice, ns, "docs", c1).content
    )
    assert statuses(response) == ["applied"] and response.commit_id is not None
    listing = drive.listing(ns)
    assert sorted(path for path in listing if path.startswith("docs")) == [
        "docs", "docs/a.txt", "docs/b.txt", "docs/sub", "docs/sub/c.txt"
    ]  # fmt: skip
    assert drive.read(ns, "docs/a.txt") == b"a1\n"
    assert drive.read(ns, "docs/sub/c.txt") == b"c1\n"
    assert "moved/c.txt" in listing  # what is outside the folder stays as it is


def test_restoring_a_file_whose_folder_is_gone_recreates_the_folder(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    ops: list[protocol.Op] = [
        mkdir("a", mode=0o700),
        mkdir("a/b"),
        drive.put(alice, ns, "a/b/f.txt", b"f\n"),
    ]
    ops.append(drive.put(alice, ns, "a/other.txt", b"o\n"))
    c1 = committed(drive.apply(alice, ns, ops))
    drive.apply(alice, ns, [delete("a/b/f.txt"), delete("a/b"), delete("a/other.txt"), delete("a")])
    assert drive.listing(ns) == {}
    assert restore(drive, alice, ns, "a/b/f.txt", c1).status_code == 200
    listing = drive.listing(ns)
    assert sorted(listing) == ["a", "a/b", "a/b/f.txt"]
    assert listing["a"].mode == 0o700
    assert drive.read(ns, "a/b/f.txt") == b"f\n"


def test_restore_of_a_path_absent_at_that_commit_or_of_a_foreign_commit_is_not_found(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    c1 = committed(drive.apply(alice, ns, [mkdir("docs")]))
    reply = restore(drive, alice, ns, "nothing.txt", c1)
    assert (reply.status_code, reply.json()["code"]) == (404, "not_found")
    bob = drive.register("bob")
    theirs = committed(drive.apply(bob, bob.home, [mkdir("docs")]))
    reply = restore(drive, alice, ns, "docs", theirs)
    assert (reply.status_code, reply.json()["code"]) == (404, "not_found")
    assert drive.commit_count(ns) == 1


def test_restore_honours_its_idempotency_key_and_an_unchanged_path_makes_no_commit(
    drive: Drive, alice: User
) -> None:
    ns = alice.home
    v1 = drive.put(alice, ns, "a.txt", b"first\n")
    c1 = committed(drive.apply(alice, ns, [v1]))
    drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"second\n", v1.entry.content_hash)])
    key = new_key()
    first = restore(drive, alice, ns, "a.txt", c1, key=key)
    again = restore(drive, alice, ns, "a.txt", c1, key=key)
    assert first.json() == again.json()
    assert drive.commit_count(ns) == 3
    unchanged = protocol.OpsBatchResponse.model_validate_json(
        restore(drive, alice, ns, "a.txt", c1).content
    )
    assert unchanged.commit_id is None and statuses(unchanged) == ["applied"]


def test_a_restore_is_audited(drive: Drive, alice: User) -> None:
    ns = alice.home
    c1 = committed(drive.apply(alice, ns, [drive.put(alice, ns, "a.txt", b"a\n")]))
    drive.apply(alice, ns, [delete("a.txt")])
    restore(drive, alice, ns, "a.txt", c1)
    reply = drive.client.get(protocol.AUDIT_LOG.fill(), headers=alice.headers)
    record = protocol.AuditPage.model_validate_json(reply.content).records[0]
    assert record.action == "restore"
    assert record.detail["from"] == c1.hex() and record.detail["path"] == "a.txt"
