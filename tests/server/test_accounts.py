"""Accounts, sessions, the login throttle and the audit page, through the app in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher, Type, extract_parameters
from fastapi.testclient import TestClient

import server.accounts
import server.audit
import server.routes.accounts
import server.sessions
import server.state
from server import db as tables
from server.app import create_app
from server.settings import Settings
from server.state import ServerState
from store import protocol

PASSWORD = "correct horse battery"  # noqa: S105
OTHER_PASSWORD = "wrong horse battery!"  # noqa: S105
HOUR_S = 3600


class Clock:
    """The server's notion of now, moved by the test instead of by sleeping."""

    def __init__(self) -> None:
        self.now = server.state.now_ns()

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 10**9)


@pytest.fixture(autouse=True)
def cheap_hasher(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # argon2id with tiny costs: the tests check behaviour, not the cost of a guess.
    monkeypatch.setattr(
        server.accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )
    server.accounts._dummy_hash.cache_clear()
    yield
    server.accounts._dummy_hash.cache_clear()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    for module in (server.state, server.sessions, server.routes.accounts, server.audit):
        monkeypatch.setattr(module, "now_ns", clock)
    return clock


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", session_lifetime_s=HOUR_S)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def state_of(client: TestClient) -> ServerState:
    state = client.app.state.server  # type: ignore[attr-defined]
    assert isinstance(state, ServerState)
    return state


def call(
    client: TestClient,
    route: protocol.Route,
    token: str | None = None,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
    **path: object,
) -> httpx.Response:
    reply: httpx.Response = client.request(
        route.method,
        route.fill(**path),
        headers=protocol.request_headers(token),
        json=body,
        params=params,
    )
    return reply


def register(client: TestClient, username: str, password: str = PASSWORD) -> httpx.Response:
    body = {"username": username, "email": f"{username}@example.com", "password": password}
    return call(client, protocol.REGISTER, body=body)


def attempt_login(
    client: TestClient, username: str, password: str = PASSWORD, device: str = "laptop"
) -> httpx.Response:
    body = {"username": username, "password": password, "device_name": device}
    return call(client, protocol.LOGIN, body=body)


def login(client: TestClient, username: str, device: str = "laptop") -> str:
    reply = attempt_login(client, username, device=device)
    assert reply.status_code == 200, reply.text
    token = protocol.LoginResponse.model_validate_json(reply.content).token
    return token


def new_user(client: TestClient, username: str, device: str = "laptop") -> str:
    assert register(client, username).status_code == 201
    return login(client, username, device)


def error_code(reply: httpx.Response) -> str:
    return protocol.ErrorBody.model_validate_json(reply.content).code


def audit_records(client: TestClient, token: str) -> list[protocol.AuditRecord]:
    reply = call(client, protocol.AUDIT_LOG, token, params={"limit": "1000"})
    assert reply.status_code == 200, reply.text
    return list(protocol.AuditPage.model_validate_json(reply.content).records)


# --- register, login, whoami, logout -------------------------------------------------------


def test_register_login_whoami_logout_cycle_and_token_dies_at_logout(client: TestClient) -> None:
    reply = register(client, "ana")
    assert reply.status_code == 201
    account = protocol.AccountInfo.model_validate_json(reply.content)
    assert (account.username, account.email) == ("ana", "ana@example.com")

    reply = attempt_login(client, "ana", device="laptop")
    assert reply.status_code == 200
    session = protocol.LoginResponse.model_validate_json(reply.content)
    assert len(session.session_id) == 32
    assert session.device_name == "laptop"
    assert session.expires_at is not None

    reply = call(client, protocol.WHOAMI, session.token)
    assert reply.status_code == 200
    assert protocol.WhoAmI.model_validate_json(reply.content) == protocol.WhoAmI(
        username="ana",
        email="ana@example.com",
        session_id=session.session_id,
        device_name="laptop",
    )

    reply = call(client, protocol.LOGOUT, session.token)
    assert reply.status_code == 204
    assert reply.content == b""
    for route in (protocol.WHOAMI, protocol.SESSIONS, protocol.LOGOUT):
        reply = call(client, route, session.token)
        assert reply.status_code == 401
        assert error_code(reply) == "unauthorized"


def test_register_creates_home_namespace_owned_by_the_user(client: TestClient) -> None:
    assert register(client, "ana").status_code == 201
    with state_of(client).db.read() as connection:
        user = connection.execute(
            sa.select(tables.users).where(tables.users.c.username == "ana")
        ).one()
        role = connection.execute(
            sa.select(tables.memberships.c.role).where(
                tables.memberships.c.user_id == user.id,
                tables.memberships.c.namespace_id == user.home_namespace,
            )
        ).scalar_one()
        namespace = connection.execute(
            sa.select(tables.namespaces).where(tables.namespaces.c.id == user.home_namespace)
        ).one()
    assert role == "owner"
    assert namespace.head is None
    assert user.home_namespace != bytes(16)


def test_password_is_stored_as_an_argon2id_hash(client: TestClient) -> None:
    assert register(client, "ana").status_code == 201
    with state_of(client).db.read() as connection:
        stored = connection.execute(sa.select(tables.users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


def test_the_servers_own_hasher_is_argon2id_with_strong_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.undo()  # drop the cheap test hasher
    parameters = extract_parameters(server.accounts.hash_password(PASSWORD))
    assert parameters.type is Type.ID
    # At least OWASP's minimum for argon2id: 19 MiB of memory, 2 passes.
    assert parameters.memory_cost >= 19 * 1024
    assert parameters.time_cost >= 2


def test_duplicate_username_is_409_username_taken(client: TestClient) -> None:
    assert register(client, "ana").status_code == 201
    reply = register(client, "ana", password="another password")  # noqa: S106
    assert reply.status_code == 409
    assert error_code(reply) == "username_taken"
    with state_of(client).db.read() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(tables.users)).scalar()
        namespaces = connection.execute(
            sa.select(sa.func.count()).select_from(tables.namespaces)
        ).scalar()
    assert (count, namespaces) == (1, 1)  # the refused registration left nothing behind


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "ab"),
        ("username", "a" * 33),
        ("username", "Ana"),
        ("username", "ana/bob"),
        ("username", "ana bob"),
        ("email", "not-an-email"),
        ("email", "ana@"),
        ("password", "too short"),
    ],
)
def test_bad_registration_field_is_400_naming_the_field(
    client: TestClient, field: str, value: str
) -> None:
    body = {"username": "ana", "email": "ana@example.com", "password": PASSWORD, field: value}
    reply = call(client, protocol.REGISTER, body=body)
    assert reply.status_code == 400
    error = protocol.ErrorBody.model_validate_json(reply.content)
    assert error.code == "bad_request"
    assert field in error.message
    if field == "password":
        assert value not in reply.text


def test_extra_registration_field_is_400_naming_it(client: TestClient) -> None:
    body = {
        "username": "ana",
        "email": "ana@example.com",
        "password": PASSWORD,
        "is_admin": True,
    }
    reply = call(client, protocol.REGISTER, body=body)
    assert reply.status_code == 400
    error = protocol.ErrorBody.model_validate_json(reply.content)
    assert error.code == "bad_request"
    assert "is_admin" in error.message


def test_wrong_password_and_unknown_username_get_the_same_reply(client: TestClient) -> None:
    assert register(client, "ana").status_code == 201
    wrong_password = attempt_login(client, "ana", OTHER_PASSWORD)
    unknown_user = attempt_login(client, "nobody", OTHER_PASSWORD)
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.content == unknown_user.content
    assert error_code(wrong_password) == "unauthorized"


# --- sessions -------------------------------------------------------------------------------


def test_second_device_session_is_listed_then_revoked_and_refused(client: TestClient) -> None:
    laptop = new_user(client, "ana", device="laptop")
    phone = login(client, "ana", device="phone")

    reply = call(client, protocol.SESSIONS, laptop)
    assert reply.status_code == 200
    listed = protocol.SessionList.model_validate_json(reply.content).sessions
    assert sorted(s.device_name for s in listed) == ["laptop", "phone"]
    assert [s.device_name for s in listed if s.current] == ["laptop"]
    phone_id = next(s.session_id for s in listed if s.device_name == "phone")

    reply = call(client, protocol.REVOKE_SESSION, laptop, session_id=phone_id)
    assert reply.status_code == 204
    reply = call(client, protocol.WHOAMI, phone)
    assert reply.status_code == 401
    assert error_code(reply) == "unauthorized"

    listed = protocol.SessionList.model_validate_json(
        call(client, protocol.SESSIONS, laptop).content
    ).sessions
    assert [s.device_name for s in listed] == ["laptop"]
    # Revoking again is harmless: the session is the caller's own.
    assert call(client, protocol.REVOKE_SESSION, laptop, session_id=phone_id).status_code == 204


def test_revoking_the_current_session_logs_it_out(client: TestClient) -> None:
    token = new_user(client, "ana")
    me = protocol.WhoAmI.model_validate_json(call(client, protocol.WHOAMI, token).content)
    reply = call(client, protocol.REVOKE_SESSION, token, session_id=me.session_id)
    assert reply.status_code == 204
    assert call(client, protocol.WHOAMI, token).status_code == 401


def test_user_cannot_list_or_revoke_another_users_sessions(client: TestClient) -> None:
    ana = new_user(client, "ana")
    bob = new_user(client, "bob")
    ana_me = protocol.WhoAmI.model_validate_json(call(client, protocol.WHOAMI, ana).content)

    bob_sessions = protocol.SessionList.model_validate_json(
        call(client, protocol.SESSIONS, bob).content
    ).sessions
    assert ana_me.session_id not in {s.session_id for s in bob_sessions}

    reply = call(client, protocol.REVOKE_SESSION, bob, session_id=ana_me.session_id)
    unknown = call(client, protocol.REVOKE_SESSION, bob, session_id="0" * 32)
    assert reply.status_code == unknown.status_code == 404
    assert error_code(reply) == "not_found"
    # The answer for another user's session is the answer for no session at all.
    assert reply.json()["message"].replace(ana_me.session_id, "") == unknown.json()[
        "message"
    ].replace("0" * 32, "")
    assert call(client, protocol.WHOAMI, ana).status_code == 200


def test_malformed_session_id_is_400_invalid_id(client: TestClient) -> None:
    token = new_user(client, "ana")
    reply = client.request(
        protocol.REVOKE_SESSION.method,
        protocol.REVOKE_SESSION.template.format(session_id="not-hex"),
        headers=protocol.request_headers(token),
    )
    assert reply.status_code == 400
    assert error_code(reply) == "invalid_id"


def test_expired_token_is_401_token_expired(client: TestClient, clock: Clock) -> None:
    old = new_user(client, "ana", device="old")
    clock.advance(HOUR_S / 2)
    fresh = login(client, "ana", device="fresh")
    clock.advance(HOUR_S / 2 + 1)

    reply = call(client, protocol.WHOAMI, old)
    assert reply.status_code == 401
    assert error_code(reply) == "token_expired"
    listed = protocol.SessionList.model_validate_json(
        call(client, protocol.SESSIONS, fresh).content
    ).sessions
    assert [s.device_name for s in listed] == ["fresh"]


def test_login_reply_expiry_follows_the_session_lifetime(client: TestClient, clock: Clock) -> None:
    assert register(client, "ana").status_code == 201
    session = protocol.LoginResponse.model_validate_json(attempt_login(client, "ana").content)
    assert session.expires_at is not None
    expires_ns = int(session.expires_at.timestamp()) * 10**9
    assert abs(expires_ns - (clock.now + HOUR_S * 10**9)) < 2 * 10**9


# --- the login throttle ---------------------------------------------------------------------


def test_lock_delay_doubles_from_one_second_and_is_capped() -> None:
    free = server.accounts.FREE_FAILURES
    delays = [server.accounts.lock_delay_ns(free + n) // 10**9 for n in range(12)]
    assert delays == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert server.accounts.lock_delay_ns(10**6) == server.accounts.MAX_DELAY_NS


def test_repeated_failures_lock_the_username_with_a_growing_delay(
    client: TestClient, clock: Clock
) -> None:
    assert register(client, "ana").status_code == 201
    for _ in range(server.accounts.FREE_FAILURES):
        assert attempt_login(client, "ana", OTHER_PASSWORD).status_code == 401
    # The first failure beyond the free ones locks the username for 1 s.
    assert attempt_login(client, "ana", OTHER_PASSWORD).status_code == 401

    locked = attempt_login(client, "ana", OTHER_PASSWORD)
    assert locked.status_code == 429
    assert error_code(locked) == "rate_limited"
    assert locked.headers[protocol.RETRY_AFTER_HEADER] == "1"
    assert locked.json()["detail"]["retry_after_s"] == 1
    # The right password does not open a locked username either.
    assert attempt_login(client, "ana").status_code == 429

    clock.advance(1.1)
    assert attempt_login(client, "ana", OTHER_PASSWORD).status_code == 401  # now locked 2 s
    clock.advance(1.1)
    during = attempt_login(client, "ana")
    assert during.status_code == 429
    assert during.headers[protocol.RETRY_AFTER_HEADER] == "1"
    clock.advance(1.0)
    assert attempt_login(client, "ana").status_code == 200

    # A success clears the count: the free failures are free again.
    for _ in range(server.accounts.FREE_FAILURES + 1):
        assert attempt_login(client, "ana", OTHER_PASSWORD).status_code == 401
    assert attempt_login(client, "ana", OTHER_PASSWORD).status_code == 429


def test_unknown_username_is_throttled_exactly_like_a_real_one(
    client: TestClient, clock: Clock
) -> None:
    assert register(client, "ana").status_code == 201
    real = [attempt_login(client, "ana", OTHER_PASSWORD) for _ in range(6)]
    ghost = [attempt_login(client, "ghost", OTHER_PASSWORD) for _ in range(6)]
    assert [r.status_code for r in real] == [r.status_code for r in ghost]
    assert [r.content for r in real] == [r.content for r in ghost]
    assert [r.headers.get(protocol.RETRY_AFTER_HEADER) for r in real] == [
        r.headers.get(protocol.RETRY_AFTER_HEADER) for r in ghost
    ]
    assert 429 in {r.status_code for r in real}


def test_throttle_counts_per_username_so_other_accounts_are_unaffected(
    client: TestClient, clock: Clock
) -> None:
    assert register(client, "ana").status_code == 201
    assert register(client, "bob").status_code == 201
    for _ in range(server.accounts.FREE_FAILURES + 2):
        attempt_login(client, "ana", OTHER_PASSWORD)
    assert attempt_login(client, "ana").status_code == 429
    assert attempt_login(client, "bob").status_code == 200


def test_an_old_run_of_failures_is_forgotten(client: TestClient, clock: Clock) -> None:
    assert register(client, "ana").status_code == 201
    for _ in range(server.accounts.FREE_FAILURES + 1):
        attempt_login(client, "ana", OTHER_PASSWORD)
    clock.advance(2 * HOUR_S)
    # One typo long after an attack does not lock the owner out.
    assert attempt_login(client, "ana", OTHER_PASSWORD).status_code == 401
    assert attempt_login(client, "ana").status_code == 200


# --- the audit page -------------------------------------------------------------------------


def test_audit_page_shows_account_events_with_address_and_device(client: TestClient) -> None:
    assert register(client, "ana").status_code == 201
    assert attempt_login(client, "ana", OTHER_PASSWORD, device="phone").status_code == 401
    first = login(client, "ana", device="phone")
    assert call(client, protocol.LOGOUT, first).status_code == 204
    token = login(client, "ana", device="laptop")

    records = audit_records(client, token)
    assert [r.action for r in records] == ["login", "logout", "login", "login_failed", "register"]
    assert [r.sequence for r in records] == sorted((r.sequence for r in records), reverse=True)
    assert all(r.remote_address == "testclient" for r in records)
    assert all(r.username == "ana" for r in records)
    assert [r.device_name for r in records] == ["laptop", "phone", "phone", "phone", None]
    assert [r.outcome for r in records].count("failure") == 1
    assert records[3].detail == {"reason": "wrong_credentials"}
    assert records[0].session_id is not None
    assert records[1].session_id == records[2].session_id
    assert records[4].namespace_id is not None  # the home namespace made at registration


def test_revoking_another_device_is_audited_as_session_revoked(client: TestClient) -> None:
    laptop = new_user(client, "ana", device="laptop")
    login(client, "ana", device="phone")
    listed = protocol.SessionList.model_validate_json(
        call(client, protocol.SESSIONS, laptop).content
    ).sessions
    phone_id = next(s.session_id for s in listed if s.device_name == "phone")
    assert call(client, protocol.REVOKE_SESSION, laptop, session_id=phone_id).status_code == 204
    newest = audit_records(client, laptop)[0]
    assert newest.action == "session_revoked"
    assert newest.device_name == "laptop"
    assert newest.detail == {"session_id": phone_id, "device": "phone"}


def test_locked_attempts_are_audited_for_the_accounts_owner(
    client: TestClient, clock: Clock
) -> None:
    assert register(client, "ana").status_code == 201
    for _ in range(server.accounts.FREE_FAILURES + 2):
        attempt_login(client, "ana", OTHER_PASSWORD, device="attacker")
    clock.advance(HOUR_S)
    token = login(client, "ana")
    failed = [r for r in audit_records(client, token) if r.action == "login_failed"]
    reasons = [r.detail["reason"] for r in failed]
    assert reasons.count("rate_limited") == 1
    assert reasons.count("wrong_credentials") == server.accounts.FREE_FAILURES + 1
    assert {r.device_name for r in failed} == {"attacker"}


def test_audit_records_are_private_to_their_user(client: TestClient) -> None:
    ana = new_user(client, "ana")
    bob = new_user(client, "bob")
    # Bob trying Ana's account is Ana's business, not Bob's.
    assert attempt_login(client, "ana", OTHER_PASSWORD, device="bobs-pc").status_code == 401

    bob_records = audit_records(client, bob)
    assert {r.username for r in bob_records} == {"bob"}
    assert "login_failed" not in {r.action for r in bob_records}
    ana_records = audit_records(client, ana)
    assert {r.username for r in ana_records} == {"ana"}
    assert ana_records[0].action == "login_failed"
    assert ana_records[0].device_name == "bobs-pc"


def test_audit_page_is_paged_newest_first_with_a_cursor(client: TestClient) -> None:
    token = new_user(client, "ana")
    for device in ("a", "b", "c"):
        login(client, "ana", device=device)
    everything = audit_records(client, token)
    assert len(everything) == 5

    seen: list[protocol.AuditRecord] = []
    params = {"limit": "2"}
    while True:
        reply = call(client, protocol.AUDIT_LOG, token, params=params)
        assert reply.status_code == 200
        page = protocol.AuditPage.model_validate_json(reply.content)
        seen.extend(page.records)
        if page.next_cursor is None:
            break
        params = {"limit": "2", "cursor": page.next_cursor}
    assert seen == everything


@pytest.mark.parametrize(
    "params", [{"cursor": "abc"}, {"cursor": "1" * 30}, {"limit": "0"}, {"limit": "5000"}]
)
def test_bad_audit_query_is_400(client: TestClient, params: dict[str, str]) -> None:
    token = new_user(client, "ana")
    reply = call(client, protocol.AUDIT_LOG, token, params=params)
    assert reply.status_code == 400
    assert error_code(reply) == "bad_request"


def test_passwords_never_appear_in_replies_or_audit_records(
    client: TestClient, clock: Clock
) -> None:
    replies = [
        register(client, "ana"),
        register(client, "ana"),  # taken
        call(
            client,
            protocol.REGISTER,
            body={"username": "bob", "email": "nope", "password": PASSWORD},
        ),
        attempt_login(client, "ana", OTHER_PASSWORD),
        attempt_login(client, "ghost", OTHER_PASSWORD),
    ]
    for _ in range(server.accounts.FREE_FAILURES + 1):
        replies.append(attempt_login(client, "ana", OTHER_PASSWORD))
    clock.advance(HOUR_S)
    replies.append(attempt_login(client, "ana"))
    token = replies[-1].json()["token"]
    for route in (protocol.WHOAMI, protocol.SESSIONS, protocol.AUDIT_LOG):
        replies.append(call(client, route, token))
    for reply in replies:
        assert PASSWORD not in reply.text
        assert OTHER_PASSWORD not in reply.text

    with state_of(client).db.read() as connection:
        rows = connection.execute(sa.select(tables.audit)).all()
        throttle = connection.execute(sa.select(tables.login_throttle)).all()
        sessions = connection.execute(sa.select(tables.sessions.c.token_hash)).all()
    stored = json.dumps([list(map(str, row)) for row in [*rows, *throttle]])
    assert PASSWORD not in stored
    assert OTHER_PASSWORD not in stored
    assert token.encode() not in b"".join(bytes(row.token_hash) for row in sessions)
