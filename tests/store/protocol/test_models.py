"""The JSON bodies and their bounds (``store/protocol/models.py``), other than files."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from store import protocol as p
from store.ids import ChunkId
from store.objects import Commit
from tests.store.protocol.samples import CHUNK, COMMIT, KEY, NS, TREE, code_of_refusal, error_types

REQUEST_SAMPLES: list[tuple[type[p.WireModel], dict[str, Any]]] = [
    (p.RegisterRequest, {"username": "ada", "email": "ada@example.org", "password": "x" * 10}),
    (p.LoginRequest, {"username": "ada", "password": "x" * 10, "device_name": "laptop"}),
    (p.MissingChunksRequest, {"ids": [CHUNK.hex()]}),
    (p.ChunksRequest, {"ids": [CHUNK.hex()]}),
    (p.TreesRequest, {"ids": [TREE.hex()]}),
    (p.CommitsRequest, {"ids": [COMMIT.hex()]}),
    (p.LogQuery, {"limit": 10}),
    (p.AuditQuery, {}),
    (p.VersionsRequest, {"path": "a/b"}),
    (p.RestoreRequest, {"path": "a", "commit_id": COMMIT.hex(), "idempotency_key": KEY}),
    (p.OpsBatch, {"idempotency_key": KEY, "ops": [{"op": "delete", "path": "a"}]}),
    (p.Event, {"namespace_id": NS.hex(), "head": COMMIT.hex(), "sequence": 3}),
    (p.ErrorBody, {"code": "not_found", "message": "gone"}),
]


@pytest.mark.parametrize(
    "model, payload", REQUEST_SAMPLES, ids=lambda x: getattr(x, "__name__", "")
)
def test_models_accept_their_samples_and_refuse_extra_fields(
    model: type[p.WireModel], payload: dict[str, Any]
) -> None:
    parsed = model.model_validate_json(json.dumps(payload))
    assert model.model_validate_json(parsed.model_dump_json()) == parsed
    assert code_of_refusal(model, {**payload, "surprise": 1}) == "bad_request"


def test_models_are_frozen() -> None:
    event = p.Event(namespace_id=NS, head=COMMIT, sequence=1)
    with pytest.raises(ValidationError):
        event.sequence = 2


@pytest.mark.parametrize(
    "username", ["ab", "a" * 33, "Ada", "ada lovelace", "ada/x", "adä", "ada\n"]
)
def test_usernames_outside_the_alphabet_or_length_are_refused(username: str) -> None:
    payload = {"username": username, "email": "ada@example.org", "password": "x" * 10}
    assert code_of_refusal(p.RegisterRequest, payload) == "bad_request"


def test_usernames_at_the_bounds_are_accepted() -> None:
    for username in ("a.b", "a" * 32, "x_y-z.0"):
        p.RegisterRequest(username=username, email="ada@example.org", password="x" * 10)


@pytest.mark.parametrize("password", ["x" * 9, "x" * (p.PASSWORD_MAX_CHARS + 1)])
def test_passwords_outside_the_bounds_are_refused(password: str) -> None:
    payload = {"username": "ada", "email": "ada@example.org", "password": password}
    assert code_of_refusal(p.RegisterRequest, payload) == "bad_request"


def test_a_bad_email_is_refused() -> None:
    payload = {"username": "ada", "email": "not an address", "password": "x" * 10}
    assert code_of_refusal(p.RegisterRequest, payload) == "bad_request"


def test_passwords_and_tokens_stay_out_of_reprs_and_error_bodies() -> None:
    secret = "correct horse battery staple"  # noqa: S105
    login = p.LoginRequest(username="ada", password=secret, device_name="laptop")
    assert secret not in repr(login)
    with pytest.raises(ValidationError) as info:
        p.LoginRequest.model_validate_json(
            json.dumps({"username": "A", "password": secret, "device_name": "x"})
        )
    _, body = p.validation_error_body(info.value.errors())
    assert secret not in body.model_dump_json()
    token = "t" * 43
    response = p.LoginResponse(
        token=token, session_id="0" * 32, username="ada", device_name="laptop"
    )
    assert token not in repr(response)


@pytest.mark.parametrize(
    "device_name", ["", "a/b", "tab\there", "nul\0", " padded", "padded ", "é" * 33, "x" * 65]
)
def test_device_names_that_would_break_a_file_name_are_refused(device_name: str) -> None:
    payload = {"username": "ada", "password": "x" * 10, "device_name": device_name}
    assert code_of_refusal(p.LoginRequest, payload) == "bad_request"


def test_device_names_may_be_unicode_within_64_bytes() -> None:
    p.LoginRequest(username="ada", password="x" * 10, device_name="Adas Büro-Laptop (2)")
    p.LoginRequest(username="ada", password="x" * 10, device_name="é" * 32)


@pytest.mark.parametrize(
    "model, payload",
    [
        (p.MissingChunksRequest, {"ids": [CHUNK.hex()] * (p.MAX_IDS_PER_REQUEST + 1)}),
        (p.TreesRequest, {"ids": [TREE.hex()] * (p.MAX_IDS_PER_REQUEST + 1)}),
        (
            p.OpsBatch,
            {
                "idempotency_key": KEY,
                "ops": [{"op": "delete", "path": "a"}] * (p.MAX_OPS_PER_BATCH + 1),
            },
        ),
    ],
)
def test_over_long_batches_are_batch_too_large(
    model: type[p.WireModel], payload: dict[str, Any]
) -> None:
    assert code_of_refusal(model, payload) == "batch_too_large"


@pytest.mark.parametrize(
    "ids", [["zz"], [CHUNK.hex().upper()], [CHUNK.hex()[:-2]], [CHUNK.hex() + "00"], [5]]
)
def test_malformed_ids_are_invalid_id(ids: list[object]) -> None:
    assert code_of_refusal(p.MissingChunksRequest, {"ids": ids}) == "invalid_id"


def test_an_id_of_the_wrong_kind_is_refused_in_python() -> None:
    with pytest.raises(ValidationError) as info:
        p.MissingChunksRequest(ids=(TREE,))  # type: ignore[arg-type]
    assert "invalid_id" in error_types(info.value)
    request = p.MissingChunksRequest(ids=(CHUNK,))
    assert type(request.ids[0]) is ChunkId
    assert request.model_dump(mode="json") == {"ids": [CHUNK.hex()]}


@pytest.mark.parametrize("limit", [0, p.MAX_PAGE_SIZE + 1])
def test_page_limits_are_bounded(limit: int) -> None:
    with pytest.raises(ValidationError):
        p.LogQuery(limit=limit)


def test_query_params_are_strings_without_unset_fields() -> None:
    assert p.query_params(p.LogQuery(limit=7)) == {"limit": "7"}
    assert p.query_params(p.AuditQuery(cursor="abc.1")) == {"cursor": "abc.1", "limit": "100"}
    assert p.LogQuery.model_validate({"cursor": "abc.1", "limit": "7"}).limit == 7


def test_commit_info_mirrors_a_commit() -> None:
    commit = Commit(NS, TREE, (COMMIT,), "ada", "laptop", 1_700_000_000, "2 files changed")
    info = p.commit_info(COMMIT, commit)
    assert (info.root, info.parents, info.summary) == (TREE, (COMMIT,), "2 files changed")
    assert p.CommitInfo.model_validate_json(info.model_dump_json()) == info


def test_every_model_has_a_json_schema() -> None:
    for route in p.ROUTES:
        for model in (route.request_model, route.query_model, route.response_model):
            if model is not None:
                model.model_json_schema()
                model.model_json_schema(mode="serialization")
