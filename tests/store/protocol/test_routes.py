"""Routes and request headers (``store/protocol/routes.py``)."""

from __future__ import annotations

import pytest

from store import protocol as p
from store.ids import ChunkId, LinkId, NamespaceId
from tests.store.protocol.samples import CHUNK, NS, TREE


def test_routes_fill_ids_as_hex() -> None:
    assert p.COMMITS.fill(namespace_id=NS) == f"/v1/namespaces/{NS.hex()}/commits"
    assert p.CHUNK.fill(namespace_id=NS, chunk_id=CHUNK) == (
        f"/v1/namespaces/{NS.hex()}/chunks/{CHUNK.hex()}"
    )
    assert p.REVOKE_SESSION.fill(session_id="ab" * 16) == "/v1/accounts/me/sessions/" + "ab" * 16
    assert p.HEALTH.fill() == "/healthz"


@pytest.mark.parametrize(
    "route, params, error",
    [
        (p.COMMITS, {}, ValueError),
        (p.CHUNK, {"namespace_id": NS}, ValueError),
        (p.WHOAMI, {"namespace_id": NS}, ValueError),
        (p.COMMITS, {"namespace_id": NS.hex()}, TypeError),
        (p.COMMITS, {"namespace_id": bytes(NS)}, TypeError),
        (p.CHUNK, {"namespace_id": NS, "chunk_id": TREE}, TypeError),
        (p.REVOKE_SESSION, {"session_id": "../../admin"}, ValueError),
        (p.REVOKE_SESSION, {"session_id": "AB" * 16}, ValueError),
    ],
)
def test_routes_refuse_unfilled_extra_or_mistyped_placeholders(
    route: p.Route, params: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        route.fill(**params)


def test_route_table_is_consistent() -> None:
    assert len({(route.method, route.template) for route in p.ROUTES}) == len(p.ROUTES)
    for route in p.ROUTES:
        assert route.template.startswith(("/v1/", "/healthz", "/l/"))
        assert "{" not in route.fill(**{name: sample(name) for name in route.placeholders})
        if route.request_model is not None:
            assert route.request_media_type == p.JSON_MEDIA_TYPE
        if route.response_model is not None:
            assert route.response_media_type == p.JSON_MEDIA_TYPE
        if route.method == "GET":
            assert route.request_model is None and route.request_media_type is None
    public = {route.name for route in p.ROUTES if not route.auth}
    assert public == {"register", "login", "health", *(route.name for route in p.LINK_ROUTES)}
    assert all(route.template.startswith("/l/") for route in p.LINK_ROUTES)


def sample(name: str) -> object:
    samples = {
        "namespace_id": NS, "chunk_id": CHUNK, "session_id": "0" * 32,
        "invitation_id": "a" * 32, "username": "bob", "link_id": LinkId(bytes(16)),
        "token": "A" * 22, "subpath": p.DrivePath((b"a", b"b c")),
    }  # fmt: skip
    return samples[name]


@pytest.mark.parametrize(
    ("name", "value"),
    [("username", "Bob"), ("username", "../x"), ("invitation_id", "A" * 32), ("invitation_id", "")],
)
def test_string_placeholders_refuse_what_their_pattern_does_not_allow(
    name: str, value: str
) -> None:
    route = p.REMOVE_MEMBER if name == "username" else p.DECLINE_INVITATION
    params: dict[str, object] = {"namespace_id": NS} if name == "username" else {}
    with pytest.raises(ValueError, match=f"not a valid {name.replace('_', ' ')}"):
        route.fill(**params, **{name: value})


def test_headers_carry_the_version_and_the_token() -> None:
    token = "A" * 43
    headers = p.request_headers(token)
    assert headers == {"Boxfs-Protocol": "1", "Authorization": f"Bearer {token}"}
    p.check_protocol_version(headers[p.PROTOCOL_HEADER])
    assert p.parse_bearer(headers[p.AUTHORIZATION_HEADER]) == token
    with pytest.raises(p.UnsupportedProtocolError) as info:
        p.check_protocol_version("2")
    assert info.value.detail["supported"] == [1]
    with pytest.raises(p.UnsupportedProtocolError):
        p.check_protocol_version(None)
    for bad in (None, "", "Basic abc", "Bearer", "Bearer short", f"Bearer {token} x"):
        with pytest.raises(p.UnauthorizedError):
            p.parse_bearer(bad)


def test_path_parameters_parse_to_typed_ids() -> None:
    assert p.parse_id(NamespaceId, NS.hex()) == NS
    with pytest.raises(p.InvalidIdError):
        p.parse_id(ChunkId, "00")
    with pytest.raises(p.InvalidIdError):
        p.parse_session_id("x")
