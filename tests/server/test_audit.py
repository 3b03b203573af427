"""The audit log module on its own: what ``append`` stores and how ``read_page`` pages it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from server import audit
from server import db as tables
from server.db import Database
from server.sessions import Caller
from store import protocol
from store.ids import NamespaceId

ANA = Caller(
    user_id=1, username="ana", session_id="a" * 32, device_name="laptop", address="10.0.0.7"
)
NAMESPACE = NamespaceId(bytes(range(16)))


def page(
    database: Database, user_id: int, cursor: str | None = None, limit: int = 100
) -> protocol.AuditPage:
    with database.read() as connection:
        return audit.read_page(connection, user_id, cursor, limit)


def test_commit_and_every_documented_action_can_be_recorded(database: Database) -> None:
    assert "commit" in protocol.AUDIT_ACTIONS
    with database.write() as connection:
        for action in protocol.AUDIT_ACTIONS:
            audit.append(connection, action=action, caller=ANA)
    actions = [record.action for record in page(database, ANA.user_id).records]
    assert actions == list(reversed(protocol.AUDIT_ACTIONS))


def test_caller_fills_the_who_fields_and_explicit_keywords_win(database: Database) -> None:
    with database.write() as connection:
        audit.append(
            connection,
            action="upload",
            caller=ANA,
            namespace_id=NAMESPACE,
            detail={"chunks": "12"},
            time_ns=1_700_000_000_123_456_789,
        )
        audit.append(connection, action="download", caller=ANA, device_name="phone")
    download, upload = page(database, ANA.user_id).records
    assert upload == protocol.AuditRecord(
        sequence=upload.sequence,
        time=datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC),
        action="upload",
        outcome="success",
        username="ana",
        device_name="laptop",
        session_id="a" * 32,
        namespace_id=NAMESPACE,
        remote_address="10.0.0.7",
        detail={"chunks": "12"},
    )
    assert download.device_name == "phone"
    assert download.sequence > upload.sequence


def test_fields_default_to_none_and_outcome_to_success(database: Database) -> None:
    with database.write() as connection:
        audit.append(connection, action="share", user_id=5)
    (record,) = page(database, 5).records
    assert record.outcome == "success"
    assert (record.username, record.device_name, record.session_id) == (None, None, None)
    assert (record.namespace_id, record.remote_address, record.detail) == (None, None, {})


def test_unknown_action_is_a_bug_and_writes_nothing(database: Database) -> None:
    with (
        pytest.raises(ValueError, match="unknown audit action"),
        database.write() as connection,
    ):
        audit.append(connection, action="format_disk", caller=ANA)
    assert page(database, ANA.user_id).records == ()


def test_too_many_detail_items_is_a_bug(database: Database) -> None:
    detail = {f"k{n}": "v" for n in range(protocol.MAX_AUDIT_DETAIL_ITEMS + 1)}
    with database.write() as connection, pytest.raises(ValueError, match="detail"):
        audit.append(connection, action="upload", caller=ANA, detail=detail)


def test_long_values_are_cut_to_the_wire_bounds(database: Database) -> None:
    with database.write() as connection:
        audit.append(
            connection,
            action="restore",
            caller=ANA,
            address="x" * 200,
            detail={"k" * 100: "v" * 5000},
        )
    (record,) = page(database, ANA.user_id).records
    assert record.remote_address == "x" * 64
    assert record.detail == {"k" * 64: "v" * 1024}


def test_a_page_holds_only_the_users_own_records(database: Database) -> None:
    with database.write() as connection:
        audit.append(connection, action="login", caller=ANA)
        audit.append(connection, action="login", user_id=2, username="bob")
        audit.append(connection, action="login_failed", outcome="failure", username="ghost")
    assert [r.username for r in page(database, ANA.user_id).records] == ["ana"]
    assert [r.username for r in page(database, 2).records] == ["bob"]
    with database.read() as connection:
        stored = connection.execute(sa.select(sa.func.count()).select_from(tables.audit))
        assert stored.scalar() == 3  # the unknown user's record is kept, for operators


def test_pages_walk_newest_first_to_the_oldest(database: Database) -> None:
    with database.write() as connection:
        for n in range(7):
            audit.append(connection, action="upload", caller=ANA, detail={"n": str(n)})
    seen: list[str] = []
    cursor = None
    while True:
        current = page(database, ANA.user_id, cursor, limit=3)
        seen.extend(record.detail["n"] for record in current.records)
        if current.next_cursor is None:
            break
        cursor = current.next_cursor
    assert seen == [str(n) for n in reversed(range(7))]
    # A page that ends exactly at the oldest record says so.
    assert page(database, ANA.user_id, limit=7).next_cursor is None


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "9" * 20, "9" * 19, str(2**63), "\u0663"])
def test_a_cursor_the_server_did_not_make_is_bad_request(database: Database, cursor: str) -> None:
    with pytest.raises(protocol.BadRequestError, match="cursor"):
        page(database, ANA.user_id, cursor)
