"""Sample ids and helpers shared by the protocol tests."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from pydantic import ValidationError

from store import protocol as p
from store.ids import ChunkId, CommitId, NamespaceId, TreeId

NS = NamespaceId(bytes(range(16)))
CHUNK = ChunkId(bytes(range(32)))
TREE = TreeId(bytes(range(1, 33)))
COMMIT = CommitId(bytes(range(2, 34)))
KEY = "batch-0123456789abcdef"


def path(raw: bytes) -> p.DrivePath:
    return p.DrivePath.from_bytes(raw)


def error_types(exc: ValidationError) -> set[str]:
    return {error["type"] for error in exc.errors()}


def code_of_refusal(model: type[p.WireModel], payload: Any) -> str:
    """The error code a server would answer for this JSON body."""
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(payload))
    status, body = p.validation_error_body(info.value.errors())
    assert status == p.status_for(body.code)
    return body.code


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]
